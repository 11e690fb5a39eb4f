//! The DNS zones a gateway serves, derived from what it can route.

use std::net::IpAddr;

use meshfed_discovery::dns::{Zone, ZoneError, ZoneSet};

use crate::route::RouteTable;

/// Every routable service under its MCS name, and under a cluster-pinned name for each cluster
/// that serves it; every name answers with `address`, the gateway's local listener.
pub(crate) fn zones(
    routes: &RouteTable,
    address: IpAddr,
    ttl: u32,
    serial: u32,
) -> Result<ZoneSet, ZoneError> {
    let mut clusterset = Zone::new(routes.zone(), ttl, serial)?;
    let mut pinned = Zone::new(routes.pinned_zone(), ttl, serial)?;
    for (service, backends) in routes.services() {
        let name = format!(
            "{}.{}.svc.{}",
            service.name,
            service.namespace,
            routes.zone()
        );
        clusterset.add_address(&name, address)?;
        for backend in backends {
            let cluster = routes.cluster_of(backend);
            let name = format!(
                "{}.{}.{cluster}.{}",
                service.name,
                service.namespace,
                routes.pinned_zone()
            );
            pinned.add_address(&name, address)?;
        }
    }
    let mut zones = ZoneSet::default();
    zones.insert(clusterset);
    zones.insert(pinned);
    Ok(zones)
}
