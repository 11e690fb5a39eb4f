//! Catalog messages to and from the model, with every field checked on the way in: a peer's
//! update is believed only if it is well formed and within limits, and a bad one changes
//! nothing.

use std::collections::{BTreeMap, BTreeSet};

use super::proto;
use crate::catalog::{CatalogDiff, ClusterCatalog, Endpoint, Protocol, ServiceExport, ServicePort};
use crate::name::{Label, ServiceKey};

/// Bounds on what a peer may send, so that a hostile or broken peer cannot make us hold
/// unbounded state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Services in one catalog.
    pub services: usize,
    /// Ports of one service.
    pub ports: usize,
    /// Endpoints of one service.
    pub endpoints: usize,
    /// Labels of one endpoint.
    pub labels: usize,
    /// Bytes in one label key or value.
    pub label_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            services: 100_000,
            ports: 64,
            endpoints: 10_000,
            labels: 32,
            label_bytes: 253,
        }
    }
}

/// A catalog update that is not believed: what is wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {reason}")]
pub struct InvalidUpdate {
    /// Where in the update, e.g. `upserts[3].ports[0].protocol`.
    pub at: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A checked update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Received {
    /// A whole catalog, replacing what the receiver held.
    Full(ClusterCatalog),
    /// A change to the catalog the receiver holds.
    Diff(CatalogDiff),
}

/// A whole catalog as an update.
pub(super) fn full(catalog: &ClusterCatalog) -> proto::CatalogUpdate {
    proto::CatalogUpdate {
        cluster: catalog.cluster.to_string(),
        full: true,
        from_version: 0,
        to_version: catalog.version,
        upserts: catalog
            .services
            .iter()
            .map(|(key, export)| service(key, export))
            .collect(),
        removals: Vec::new(),
    }
}

/// A change as an update.
pub(super) fn diff(cluster: &Label, diff: &CatalogDiff) -> proto::CatalogUpdate {
    proto::CatalogUpdate {
        cluster: cluster.to_string(),
        full: false,
        from_version: diff.from,
        to_version: diff.to,
        upserts: diff
            .upserts
            .iter()
            .map(|(key, export)| service(key, export))
            .collect(),
        removals: diff.removals.iter().map(name).collect(),
    }
}

/// Checks an update from `cluster`'s gateway.
pub(super) fn received(
    update: proto::CatalogUpdate,
    cluster: &Label,
    limits: &Limits,
) -> Result<Received, InvalidUpdate> {
    if update.cluster != cluster.as_str() {
        return Err(invalid(
            "cluster",
            format!("{:?} is not the peer's cluster, {cluster}", update.cluster),
        ));
    }
    let count = update.upserts.len() + update.removals.len();
    if count > limits.services {
        return Err(too_many_services(count, limits));
    }
    let mut seen = BTreeSet::new();
    let mut upserts = Vec::with_capacity(update.upserts.len());
    for (i, raw) in update.upserts.into_iter().enumerate() {
        let at = format!("upserts[{i}]");
        let (key, export) = checked_service(&at, raw, limits)?;
        if !seen.insert(key.clone()) {
            return Err(invalid(&at, format!("{key} appears twice")));
        }
        upserts.push((key, export));
    }
    let mut removals = Vec::with_capacity(update.removals.len());
    for (i, raw) in update.removals.into_iter().enumerate() {
        let at = format!("removals[{i}]");
        let key = checked_name(&at, &raw)?;
        if !seen.insert(key.clone()) {
            return Err(invalid(&at, format!("{key} appears twice")));
        }
        removals.push(key);
    }
    if update.full {
        if !removals.is_empty() {
            return Err(invalid("removals", "a full catalog removes nothing".into()));
        }
        return Ok(Received::Full(ClusterCatalog {
            cluster: cluster.clone(),
            version: update.to_version,
            services: upserts.into_iter().collect(),
        }));
    }
    if update.to_version <= update.from_version {
        return Err(invalid(
            "to_version",
            format!(
                "{} does not follow from_version {}",
                update.to_version, update.from_version
            ),
        ));
    }
    Ok(Received::Diff(CatalogDiff {
        from: update.from_version,
        to: update.to_version,
        upserts,
        removals,
    }))
}

fn service(key: &ServiceKey, export: &ServiceExport) -> proto::Service {
    proto::Service {
        service: Some(name(key)),
        headless: export.headless,
        exported_at: export.exported_at,
        ports: export
            .ports
            .iter()
            .map(|port| proto::Port {
                name: port.name.as_ref().map(Label::to_string).unwrap_or_default(),
                number: u32::from(port.number),
                protocol: port.protocol.as_str().to_owned(),
            })
            .collect(),
        endpoints: export
            .endpoints
            .iter()
            .map(|endpoint| proto::Endpoint {
                hostname: endpoint.hostname.to_string(),
                ready: endpoint.ready,
                labels: endpoint.labels.clone().into_iter().collect(),
            })
            .collect(),
    }
}

fn name(key: &ServiceKey) -> proto::ServiceName {
    proto::ServiceName {
        name: key.name.to_string(),
        namespace: key.namespace.to_string(),
    }
}

fn checked_service(
    at: &str,
    raw: proto::Service,
    limits: &Limits,
) -> Result<(ServiceKey, ServiceExport), InvalidUpdate> {
    let key = match &raw.service {
        Some(service) => checked_name(&format!("{at}.service"), service)?,
        None => return Err(invalid(&format!("{at}.service"), "missing".into())),
    };
    if raw.ports.len() > limits.ports {
        return Err(invalid(
            &format!("{at}.ports"),
            format!("{} ports; at most {}", raw.ports.len(), limits.ports),
        ));
    }
    if raw.endpoints.len() > limits.endpoints {
        return Err(invalid(
            &format!("{at}.endpoints"),
            format!(
                "{} endpoints; at most {}",
                raw.endpoints.len(),
                limits.endpoints
            ),
        ));
    }
    let mut ports = Vec::with_capacity(raw.ports.len());
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, port) in raw.ports.into_iter().enumerate() {
        let at = format!("{at}.ports[{i}]");
        let port = checked_port(&at, port)?;
        let fresh_name = port.name.as_ref().is_none_or(|n| names.insert(n.clone()));
        if !fresh_name || !numbers.insert(port.number) {
            return Err(invalid(&at, "a port name or number appears twice".into()));
        }
        ports.push(port);
    }
    ports.sort_by_key(|p| p.number);
    let mut endpoints = BTreeMap::new();
    for (i, endpoint) in raw.endpoints.into_iter().enumerate() {
        let at = format!("{at}.endpoints[{i}]");
        let endpoint = checked_endpoint(&at, endpoint, limits)?;
        if endpoints.contains_key(&endpoint.hostname) {
            return Err(invalid(
                &at,
                format!("hostname {} appears twice", endpoint.hostname),
            ));
        }
        endpoints.insert(endpoint.hostname.clone(), endpoint);
    }
    Ok((
        key,
        ServiceExport {
            headless: raw.headless,
            exported_at: raw.exported_at,
            ports,
            endpoints: endpoints.into_values().collect(),
        },
    ))
}

fn checked_name(at: &str, raw: &proto::ServiceName) -> Result<ServiceKey, InvalidUpdate> {
    let name = raw
        .name
        .parse()
        .map_err(|e| invalid(&format!("{at}.name"), format!("{:?} {e}", raw.name)))?;
    let namespace = raw.namespace.parse().map_err(|e| {
        invalid(
            &format!("{at}.namespace"),
            format!("{:?} {e}", raw.namespace),
        )
    })?;
    Ok(ServiceKey { name, namespace })
}

fn checked_port(at: &str, raw: proto::Port) -> Result<ServicePort, InvalidUpdate> {
    let name = match raw.name.as_str() {
        "" => None,
        text => Some(
            text.parse()
                .map_err(|e| invalid(&format!("{at}.name"), format!("{text:?} {e}")))?,
        ),
    };
    let number = u16::try_from(raw.number)
        .ok()
        .filter(|n| *n != 0)
        .ok_or_else(|| {
            invalid(
                &format!("{at}.number"),
                format!("{} is not a port", raw.number),
            )
        })?;
    let protocol = Protocol::from_name(&raw.protocol).ok_or_else(|| {
        invalid(
            &format!("{at}.protocol"),
            format!("unknown protocol {:?}", raw.protocol),
        )
    })?;
    Ok(ServicePort {
        name,
        number,
        protocol,
    })
}

fn checked_endpoint(
    at: &str,
    raw: proto::Endpoint,
    limits: &Limits,
) -> Result<Endpoint, InvalidUpdate> {
    let hostname = raw
        .hostname
        .parse()
        .map_err(|e| invalid(&format!("{at}.hostname"), format!("{:?} {e}", raw.hostname)))?;
    if raw.labels.len() > limits.labels {
        return Err(invalid(
            &format!("{at}.labels"),
            format!("{} labels; at most {}", raw.labels.len(), limits.labels),
        ));
    }
    if let Some((key, _)) = raw
        .labels
        .iter()
        .find(|(k, v)| k.is_empty() || k.len() > limits.label_bytes || v.len() > limits.label_bytes)
    {
        return Err(invalid(
            &format!("{at}.labels"),
            format!(
                "label {key:?}: keys are 1 to {0} bytes, values at most {0}",
                limits.label_bytes
            ),
        ));
    }
    Ok(Endpoint {
        hostname,
        ready: raw.ready,
        labels: raw.labels.into_iter().collect(),
    })
}

/// The refusal of an update, or of the catalog it makes, with `count` services.
pub(super) fn too_many_services(count: usize, limits: &Limits) -> InvalidUpdate {
    invalid(
        "upserts",
        format!("{count} services; at most {} are accepted", limits.services),
    )
}

fn invalid(at: &str, reason: String) -> InvalidUpdate {
    InvalidUpdate {
        at: at.to_owned(),
        reason,
    }
}
