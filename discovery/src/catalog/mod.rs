//! The service catalog: what each cluster exports, and how the exports of several clusters
//! merge into the services a gateway imports. No I/O.
//!
//! A cluster offers each peer a [`ClusterCatalog`]: the services it exports *to that peer*,
//! with their ports and endpoints. The catalog is versioned; a change travels as a
//! [`CatalogDiff`] from one version to the next, and [`ClusterCatalog::apply`] refuses a diff
//! that does not start where the catalog is, so a receiver that missed one asks for a full
//! copy instead of drifting.
//!
//! [`merge`] combines the catalogs of every cluster (our own exports included) into
//! [`Imports`] by the Multi-Cluster Services rules: namespace sameness (`checkout.shop` is one
//! service wherever it is exported), ports as the union of every cluster's ports, and a
//! conflict resolved in favour of the oldest export, reported rather than hidden.

mod diff;
mod merge;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use crate::name::{Label, ServiceKey};

pub use diff::{CatalogDiff, StaleDiff};
pub use merge::{Conflict, ImportedService, Imports, merge};

/// What one cluster exports to one importer, at one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterCatalog {
    /// The exporting cluster.
    pub cluster: Label,
    /// Grows by one with every change; a fresh catalog is version 0.
    pub version: u64,
    /// The exported services.
    pub services: BTreeMap<ServiceKey, ServiceExport>,
}

/// One exported service as its cluster describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceExport {
    /// Headless services are resolved to their endpoints one by one; the others to a single
    /// address (in meshfed, the importing gateway's).
    pub headless: bool,
    /// When the service was first exported, in seconds since the Unix epoch: the oldest
    /// export wins a conflict.
    pub exported_at: u64,
    /// The service's ports, ordered by number.
    pub ports: Vec<ServicePort>,
    /// The service's endpoints, ordered by hostname.
    pub endpoints: Vec<Endpoint>,
}

/// A port of a service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    /// The port's name (`http`, `grpc`). Only named ports get DNS SRV records.
    pub name: Option<Label>,
    /// The service port number.
    pub number: u16,
    /// What the port speaks.
    pub protocol: Protocol,
}

/// The application protocol of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// HTTP/1.1 to the endpoints (any HTTP version from clients).
    Http,
    /// Cleartext HTTP/2 with prior knowledge to the endpoints (`h2c`).
    Http2,
    /// gRPC: HTTP/2 to the endpoints, as `http2`.
    Grpc,
    /// Opaque TCP: bytes both ways, crossing as an HTTP/3 `CONNECT` stream.
    Tcp,
}

/// One endpoint of a service, as a peer sees it: a name, whether it takes traffic, and its
/// labels. Its address stays in its own cluster; peers reach it through that cluster's gateway.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// Unique within the service in its cluster: the endpoint's own hostname, or one derived
    /// from its address ([`Endpoint::hostname_of`]).
    pub hostname: Label,
    /// Whether the endpoint passes its health checks and takes traffic.
    pub ready: bool,
    /// Labels such as `version`, for routing to a subset.
    pub labels: BTreeMap<String, String>,
}

// === impl ClusterCatalog ===

impl ClusterCatalog {
    /// An empty catalog at version 0.
    pub fn new(cluster: Label) -> Self {
        ClusterCatalog {
            cluster,
            version: 0,
            services: BTreeMap::new(),
        }
    }

    /// Replaces the services, moving to the next version if anything changed. Returns the diff
    /// from the old version to the new one, or `None` when nothing changed.
    pub fn update(&mut self, services: BTreeMap<ServiceKey, ServiceExport>) -> Option<CatalogDiff> {
        let mut next = ClusterCatalog {
            cluster: self.cluster.clone(),
            version: self.version + 1,
            services,
        };
        let diff = self.diff(&next);
        if diff.is_empty() {
            return None;
        }
        std::mem::swap(self, &mut next);
        Some(diff)
    }
}

// === impl Protocol ===

impl Protocol {
    /// Whether requests (as opposed to opaque bytes) cross on this port.
    pub fn is_http(self) -> bool {
        !matches!(self, Protocol::Tcp)
    }

    /// The name config and the wire give this protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        }
    }

    /// The protocol named `name`, as [`Protocol::as_str`] writes it.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Protocol::Http,
            Protocol::Http2,
            Protocol::Grpc,
            Protocol::Tcp,
        ]
        .into_iter()
        .find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Endpoint ===

impl Endpoint {
    /// The hostname Kubernetes would give an endpoint that has none: its address with `-` for
    /// every `.` or `:` (`10-1-2-3`, `fd00--1`). Unique per address, and a valid DNS label.
    pub fn hostname_of(address: IpAddr) -> Label {
        let text: String = address
            .to_string()
            .chars()
            .map(|c| if c == '.' || c == ':' { '-' } else { c })
            .collect();
        // An IPv6 address may start or end with `::`, which would make a label start or end
        // with `-`; pad it with a zero, as the expanded address would.
        let text = match (text.starts_with('-'), text.ends_with('-')) {
            (true, true) => format!("0{text}0"),
            (true, false) => format!("0{text}"),
            (false, true) => format!("{text}0"),
            (false, false) => text,
        };
        // Digits, lower-case hex and `-`, at most 45 bytes, padded above: always a label.
        Label::from_checked(text)
    }
}

#[cfg(test)]
mod tests;
