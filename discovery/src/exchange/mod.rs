//! The catalog exchange between gateways: the `meshfed.federation.v1.Federation` gRPC service
//! (`discovery/proto/`), by which each gateway streams to each peer the services it exports to
//! that peer.
//!
//! This module owns the protocol: what a peer may see ([`ExportedCatalog::view`]), the server
//! side ([`CatalogService`]), and following a peer's stream ([`follow`]), with every message
//! checked before it is believed. It does not own the connection: the gateway authenticates
//! the peer (mutual TLS on the federation port), tells the service who is calling by putting a
//! [`Caller`] in the request's extensions, and dials peers itself.

mod convert;
mod follow;
mod service;

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::ClusterCatalog;
use crate::name::{Label, ServiceKey};

pub use convert::{InvalidUpdate, Limits};
pub use follow::{FollowError, follow};
pub use service::{Caller, CatalogService};

/// The generated messages, client and server.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod proto {
    tonic::include_proto!("meshfed.federation.v1");
}

/// What this cluster exports, and to whom: the catalog of every export, and for each service
/// the peers (by cluster name) allowed to see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedCatalog {
    /// Every exported service.
    pub catalog: ClusterCatalog,
    /// Which peers may see each service; a service not listed is seen by nobody.
    pub visible_to: BTreeMap<ServiceKey, BTreeSet<Label>>,
}

impl ExportedCatalog {
    /// What `peer` may see: the services exported to it, at the catalog's version.
    pub fn view(&self, peer: &Label) -> ClusterCatalog {
        let services = self
            .catalog
            .services
            .iter()
            .filter(|(key, _)| self.visible_to.get(*key).is_some_and(|p| p.contains(peer)))
            .map(|(key, export)| (key.clone(), export.clone()))
            .collect();
        ClusterCatalog {
            cluster: self.catalog.cluster.clone(),
            version: self.catalog.version,
            services,
        }
    }
}

#[cfg(test)]
mod tests;
