//! The DNS zones a gateway serves, from the catalog of what each cluster exports.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use meshfed_discovery::catalog::{
    ClusterCatalog, Endpoint, Imports, ServiceExport, ServicePort, merge,
};
use meshfed_discovery::dns::{Clusterset, ZoneError, ZoneSet};

use crate::config::{Config, Export};

/// This cluster's exports as a catalog: what the clusterset sees of it. Endpoints are named by
/// address and taken as ready (health checks come with the endpoint sources).
pub(crate) fn own_catalog(config: &Config, exported_at: u64) -> ClusterCatalog {
    let services = config
        .exports
        .iter()
        .map(|export| (export.service.clone(), service_export(export, exported_at)))
        .collect();
    ClusterCatalog {
        cluster: config.cluster.clone(),
        version: 1,
        services,
    }
}

/// What each peer is known to export, from the config's `peers[].services`: names only, until
/// the catalog exchange tells us the rest. Such an export never wins a conflict.
pub(crate) fn configured_peer_catalogs(config: &Config) -> Vec<ClusterCatalog> {
    config
        .peers
        .iter()
        .map(|peer| ClusterCatalog {
            cluster: peer.name.clone(),
            version: 1,
            services: peer
                .services
                .iter()
                .map(|service| (service.clone(), unknown_export()))
                .collect(),
        })
        .collect()
}

/// Both zones for the merged catalogs; every name answers with `address`.
pub(crate) fn zones(
    config: &Config,
    catalogs: &[ClusterCatalog],
    address: IpAddr,
    nameserver: IpAddr,
    serial: u32,
) -> Result<Arc<ZoneSet>, ZoneError> {
    let imports: Imports = merge(catalogs);
    let ttl = u32::try_from(config.dns.ttl.as_secs()).unwrap_or(u32::MAX);
    let zones = Clusterset {
        zone: &config.dns.zone,
        pinned_zone: &config.dns.pinned_zone,
        ttl,
        serial,
        address,
        nameserver,
        imports: &imports,
    }
    .zones()?;
    for (key, service) in &imports.services {
        for conflict in &service.conflicts {
            tracing::warn!(service = %key, %conflict, "exports of one service disagree");
        }
    }
    Ok(Arc::new(zones))
}

fn service_export(export: &Export, exported_at: u64) -> ServiceExport {
    let ports = export
        .ports
        .iter()
        .map(|port| ServicePort {
            name: port.name.clone(),
            number: port.port,
            protocol: port.protocol,
        })
        .collect();
    // Every port lists the same endpoint addresses (with their own port numbers).
    let mut endpoints: BTreeMap<_, Endpoint> = BTreeMap::new();
    for address in export.ports.iter().flat_map(|p| &p.endpoints) {
        let hostname = Endpoint::hostname_of(address.ip());
        endpoints.entry(hostname.clone()).or_insert(Endpoint {
            hostname,
            ready: true,
            labels: BTreeMap::new(),
        });
    }
    ServiceExport {
        headless: export.headless,
        exported_at,
        ports,
        endpoints: endpoints.into_values().collect(),
    }
}

fn unknown_export() -> ServiceExport {
    ServiceExport {
        headless: false,
        exported_at: u64::MAX,
        ports: Vec::new(),
        endpoints: Vec::new(),
    }
}
