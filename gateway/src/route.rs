//! Request routing: from a `Host` to a destination. No I/O.
//!
//! Two kinds of name reach the local listener:
//!
//! - `<svc>.<ns>.svc.<zone>` (the MCS clusterset name): any cluster that serves the service;
//! - `<svc>.<ns>.<cluster>.<pinned_zone>`: that cluster only.
//!
//! A [`RouteTable`] is an immutable snapshot. It says which clusters serve a service and how
//! many of their endpoints are ready; choosing among them is the policy's (`State::spread`,
//! by locality and outlier detection, or a route's weighted backends).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use meshfed_discovery::{Label, ServiceKey};

use crate::policy::Labels;
use crate::policy::locality::ClusterHealth;
use crate::reason::Reason;
use meshfed_discovery::catalog::Imports;

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// This cluster's own endpoints of the service.
    Local(ServiceKey),
    /// A peer gateway that serves the service.
    Peer {
        /// The peer's cluster name.
        peer: Label,
        /// The service.
        service: ServiceKey,
    },
}

impl Destination {
    /// The service it is for.
    pub fn service(&self) -> &ServiceKey {
        match self {
            Destination::Local(service) | Destination::Peer { service, .. } => service,
        }
    }
}

/// A cluster that serves a service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Backend {
    /// This cluster.
    Local,
    /// A peer cluster, by name.
    Peer(Label),
}

/// What the gateway can route: every service and the clusters that serve it.
#[derive(Clone, Debug)]
pub struct RouteTable {
    cluster: Label,
    zone: String,
    pinned_zone: String,
    services: BTreeMap<ServiceKey, Backends>,
    /// Each service by its name (`<svc>.<ns>`), so that a request's name is looked up as it
    /// comes rather than parsed into a key first.
    names: HashMap<Box<str>, ServiceKey>,
}

/// The clusters that export a service, and those of them with a ready endpoint.
#[derive(Clone, Debug, Default)]
struct Backends {
    exporting: Vec<Backend>,
    ready: Vec<Backend>,
    /// Exporting peers whose catalog stream broke: known, but unavailable.
    lost: Vec<Backend>,
    /// The distinct label sets of each cluster's ready endpoints, for subsets (empty for a
    /// cluster without one); `ready` is the clusters with any.
    ready_labels: BTreeMap<Backend, Vec<Labels>>,
    /// Each exporting cluster's endpoints: how many are ready, and how many there are.
    counts: BTreeMap<Backend, (u32, u32)>,
}

/// A service a request names, and the cluster it pins, if it uses a cluster-pinned name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    /// The service.
    pub service: ServiceKey,
    /// The cluster a `<svc>.<ns>.<cluster>.<pinned zone>` name pins.
    pub pinned: Option<Backend>,
}

impl RouteTable {
    /// The routes to every imported service: to each cluster that has a ready endpoint of it,
    /// this one (`cluster`) included. `unreachable` peers are known but lost: a service only
    /// they export is unavailable rather than without endpoints.
    pub fn new(
        cluster: Label,
        zone: &str,
        pinned_zone: &str,
        imports: &Imports,
        unreachable: &BTreeSet<Label>,
    ) -> Self {
        let backend = |c: &Label| match c == &cluster {
            true => Backend::Local,
            false => Backend::Peer(c.clone()),
        };
        let services: BTreeMap<ServiceKey, Backends> = imports
            .services
            .iter()
            .map(|(key, service)| {
                let mut exporting: Vec<Backend> = service.clusters.keys().map(backend).collect();
                exporting.sort();
                let lost = exporting
                    .iter()
                    .filter(|b| matches!(b, Backend::Peer(p) if unreachable.contains(p)))
                    .cloned()
                    .collect();
                let ready_labels: BTreeMap<Backend, Vec<Labels>> = service
                    .clusters
                    .iter()
                    .map(|(cluster, endpoints)| {
                        let mut sets: Vec<Labels> = endpoints
                            .iter()
                            .filter(|e| e.ready)
                            .map(|e| e.labels.clone())
                            .collect();
                        sets.sort();
                        sets.dedup();
                        (backend(cluster), sets)
                    })
                    .collect();
                // In order (a map's keys are sorted), so that `spread` is stable.
                let ready = ready_labels
                    .iter()
                    .filter(|(_, sets)| !sets.is_empty())
                    .map(|(backend, _)| backend.clone())
                    .collect();
                let counts = service
                    .clusters
                    .iter()
                    .map(|(cluster, endpoints)| {
                        let ready = endpoints.iter().filter(|e| e.ready).count();
                        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                        (backend(cluster), (count(ready), count(endpoints.len())))
                    })
                    .collect();
                let backends = Backends {
                    exporting,
                    ready,
                    lost,
                    ready_labels,
                    counts,
                };
                (key.clone(), backends)
            })
            .collect();
        let names = services
            .keys()
            .map(|key| (key.to_string().into_boxed_str(), key.clone()))
            .collect();
        RouteTable {
            cluster,
            zone: zone.to_owned(),
            pinned_zone: pinned_zone.to_owned(),
            services,
            names,
        }
    }

    /// The service (and pinned cluster) a `Host`/`:authority` names (a port, trailing dot and
    /// case are ignored).
    pub fn resolve(&self, authority: &str) -> Result<Named, Reason> {
        let host = normalize(authority);
        if host.is_empty() {
            return Err(Reason::MissingAuthority);
        }
        if let Some(rest) = within(&host, &self.zone) {
            let service = rest
                .strip_suffix(".svc")
                .and_then(|name| self.names.get(name))
                .ok_or(Reason::UnknownService)?;
            return Ok(Named {
                service: service.clone(),
                pinned: None,
            });
        }
        if let Some(rest) = within(&host, &self.pinned_zone) {
            let (service, cluster) = rest.rsplit_once('.').ok_or(Reason::UnknownService)?;
            let service: ServiceKey = service.parse().map_err(|_| Reason::UnknownService)?;
            let cluster: Label = cluster.parse().map_err(|_| Reason::UnknownService)?;
            let backend = self.backend_of(&cluster);
            let backends = self.services.get(&service).ok_or(Reason::UnknownService)?;
            if !backends.exporting.contains(&backend) {
                return Err(Reason::UnknownService);
            }
            return Ok(Named {
                service,
                pinned: Some(backend),
            });
        }
        Err(Reason::NotOurZone)
    }

    /// Whether `cluster` has a ready endpoint of `service` whose labels include `selector`.
    pub fn available(&self, service: &ServiceKey, cluster: &Label, selector: &Labels) -> bool {
        let backend = self.backend_of(cluster);
        self.services
            .get(service)
            .and_then(|b| b.ready_labels.get(&backend))
            .is_some_and(|sets| sets.iter().any(|labels| selects(selector, labels)))
    }

    /// The destination for `service` in `cluster`, among endpoints selected by `selector`.
    pub fn to_cluster(
        &self,
        service: &ServiceKey,
        cluster: &Label,
        selector: &Labels,
    ) -> Result<Destination, Reason> {
        self.to_backend(service, &self.backend_of(cluster), selector)
    }

    /// The destination for `service` at `backend` (a cluster a name pinned), among endpoints
    /// selected by `selector`.
    pub fn to_backend(
        &self,
        service: &ServiceKey,
        backend: &Backend,
        selector: &Labels,
    ) -> Result<Destination, Reason> {
        let backends = self.services.get(service).ok_or(Reason::UnknownService)?;
        if !backends.exporting.contains(backend) {
            return Err(Reason::UnknownService);
        }
        let ready = backends
            .ready_labels
            .get(backend)
            .is_some_and(|sets| sets.iter().any(|labels| selects(selector, labels)));
        if !ready {
            return Err(match backends.lost.contains(backend) {
                true => Reason::PeerUnavailable,
                false => Reason::NoReadyEndpoints,
            });
        }
        Ok(self.destination(backend, service.clone()))
    }

    fn backend_of(&self, cluster: &Label) -> Backend {
        match cluster == &self.cluster {
            true => Backend::Local,
            false => Backend::Peer(cluster.clone()),
        }
    }

    /// The clusters that export `service` (but lost peers), each with its ready and total
    /// endpoints, for the locality choice.
    pub fn health(&self, service: &ServiceKey) -> Result<Vec<ClusterHealth<'_>>, Reason> {
        let backends = self.services.get(service).ok_or(Reason::UnknownService)?;
        Ok(backends
            .counts
            .iter()
            .filter(|(backend, _)| !backends.lost.contains(backend))
            .map(|(backend, (ready, total))| ClusterHealth {
                cluster: match backend {
                    Backend::Local => &self.cluster,
                    Backend::Peer(peer) => peer,
                },
                ready: *ready,
                total: *total,
                ejected: false,
            })
            .collect())
    }

    /// Why no cluster can take a request for `service` now.
    pub fn unavailable(&self, service: &ServiceKey) -> Reason {
        match self.services.get(service) {
            None => Reason::UnknownService,
            Some(known) if known.ready.is_empty() && !known.lost.is_empty() => {
                Reason::PeerUnavailable
            }
            Some(_) => Reason::NoReadyEndpoints,
        }
    }

    /// Routes a request for `service` to the `spread`-th cluster with a ready endpoint (for
    /// the tests of the table, which check which clusters it offers).
    #[cfg(test)]
    fn route_service(&self, service: &ServiceKey, spread: u64) -> Result<Destination, Reason> {
        let known = self.services.get(service).ok_or(Reason::UnknownService)?;
        if known.ready.is_empty() {
            return Err(self.unavailable(service));
        }
        let index = (spread % known.ready.len() as u64) as usize;
        Ok(self.destination(&known.ready[index], service.clone()))
    }

    fn destination(&self, backend: &Backend, service: ServiceKey) -> Destination {
        match backend {
            Backend::Local => Destination::Local(service),
            Backend::Peer(peer) => Destination::Peer {
                peer: peer.clone(),
                service,
            },
        }
    }
}

/// Whether an endpoint with `labels` is selected by `selector` (every pair of it is there).
pub fn selects(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Lower-cases and drops a port and a trailing dot.
fn normalize(authority: &str) -> Cow<'_, str> {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    lowercase(host.trim_end_matches('.'))
}

/// `name` in ASCII lower case, copied only if it has an upper-case letter (names on the wire
/// almost never do, and this runs for every request).
pub(crate) fn lowercase(name: &str) -> Cow<'_, str> {
    match name.bytes().any(|b| b.is_ascii_uppercase()) {
        true => Cow::Owned(name.to_ascii_lowercase()),
        false => Cow::Borrowed(name),
    }
}

/// The part of `host` before `zone`, if `host` is in `zone` (empty for the apex itself).
fn within<'a>(host: &'a str, zone: &str) -> Option<&'a str> {
    if host == zone {
        return Some("");
    }
    host.strip_suffix(zone)?.strip_suffix('.')
}

#[cfg(test)]
mod tests {
    use meshfed_discovery::catalog::{ClusterCatalog, Endpoint, ServiceExport, merge};

    use super::*;

    /// East exports greeter and checkout; west exports greeter, only-west, and a service
    /// with no ready endpoint.
    fn table() -> RouteTable {
        let catalog = |cluster: &str, services: &[(&str, bool)]| ClusterCatalog {
            cluster: cluster.parse().expect("label"),
            version: 1,
            services: services
                .iter()
                .map(|(service, ready)| {
                    let export = ServiceExport {
                        headless: false,
                        exported_at: 1,
                        ports: Vec::new(),
                        endpoints: vec![Endpoint {
                            hostname: "pod".parse().expect("label"),
                            ready: *ready,
                            labels: Default::default(),
                        }],
                    };
                    (key(service), export)
                })
                .collect(),
        };
        let east = catalog("east", &[("greeter.demo", true), ("checkout.shop", true)]);
        let west = catalog(
            "west",
            &[
                ("greeter.demo", true),
                ("only-west.demo", true),
                ("down.demo", false),
            ],
        );
        let north = catalog("north", &[("lost.demo", false)]);
        let imports = merge([&east, &west, &north]);
        RouteTable::new(
            "east".parse().expect("label"),
            "clusterset.local",
            "meshfed.internal",
            &imports,
            &BTreeSet::from(["north".parse().expect("label")]),
        )
    }

    /// Where a request for `authority` goes when no policy applies, as the local listener
    /// routes it: a pinned cluster, or the clusters that serve the service by `spread`.
    fn route(table: &RouteTable, authority: &str, spread: u64) -> Result<Destination, Reason> {
        let named = table.resolve(authority)?;
        match &named.pinned {
            Some(backend) => table.to_backend(&named.service, backend, &Labels::new()),
            None => table.route_service(&named.service, spread),
        }
    }

    fn key(s: &str) -> ServiceKey {
        s.parse().expect("key")
    }

    fn peer(name: &str, service: &str) -> Destination {
        Destination::Peer {
            peer: name.parse().expect("label"),
            service: key(service),
        }
    }

    #[test]
    fn routes_by_authority() {
        let table = table();
        let cases = [
            (
                "checkout.shop.svc.clusterset.local",
                Ok(Destination::Local(key("checkout.shop"))),
            ),
            (
                "Checkout.Shop.svc.clusterset.local.:15080",
                Ok(Destination::Local(key("checkout.shop"))),
            ),
            (
                "only-west.demo.svc.clusterset.local",
                Ok(peer("west", "only-west.demo")),
            ),
            (
                "greeter.demo.west.meshfed.internal",
                Ok(peer("west", "greeter.demo")),
            ),
            (
                "greeter.demo.east.meshfed.internal",
                Ok(Destination::Local(key("greeter.demo"))),
            ),
            (
                "checkout.shop.west.meshfed.internal",
                Err(Reason::UnknownService),
            ),
            (
                "checkout.shop.north.meshfed.internal",
                Err(Reason::UnknownService),
            ),
            (
                "nope.shop.svc.clusterset.local",
                Err(Reason::UnknownService),
            ),
            (
                "down.demo.svc.clusterset.local",
                Err(Reason::NoReadyEndpoints),
            ),
            (
                "down.demo.west.meshfed.internal",
                Err(Reason::NoReadyEndpoints),
            ),
            (
                "lost.demo.svc.clusterset.local",
                Err(Reason::PeerUnavailable),
            ),
            (
                "lost.demo.north.meshfed.internal",
                Err(Reason::PeerUnavailable),
            ),
            ("a.b.c.svc.clusterset.local", Err(Reason::UnknownService)),
            ("svc.clusterset.local", Err(Reason::UnknownService)),
            ("clusterset.local", Err(Reason::UnknownService)),
            ("meshfed.internal", Err(Reason::UnknownService)),
            ("west.meshfed.internal", Err(Reason::UnknownService)),
            ("checkout.shop.svc.cluster.local", Err(Reason::NotOurZone)),
            ("example.com", Err(Reason::NotOurZone)),
            ("", Err(Reason::MissingAuthority)),
        ];
        for (authority, want) in cases {
            assert_eq!(route(&table, authority, 0), want, "{authority}");
        }
    }

    #[test]
    fn spread_reaches_every_cluster_that_serves_a_service() {
        let table = table();
        let seen: std::collections::BTreeSet<String> = (0..4)
            .map(|i| {
                format!(
                    "{:?}",
                    route(&table, "greeter.demo.svc.clusterset.local", i)
                )
            })
            .collect();
        assert_eq!(seen.len(), 2, "{seen:?}");
    }
}
