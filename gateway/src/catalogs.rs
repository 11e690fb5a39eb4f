//! The catalogs this gateway knows: its own exports, and each peer's as the catalog exchange
//! brings it. Every change rebuilds the route table and the DNS zones from the merged catalogs
//! and swaps both in whole; requests and queries see the old set or the new, never a mix.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use meshfed_discovery::catalog::{ClusterCatalog, Imports, ServiceExport};
use meshfed_discovery::dns::{Clusterset, ClustersetZones, ZoneError, ZoneSet};
use meshfed_discovery::exchange::ExportedCatalog;
use meshfed_discovery::{Label, ServiceKey, catalog};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Dns};
use crate::route::RouteTable;
use crate::services::{ClusterReport, PortReport, ServiceReport, ServicesReport};
use crate::state::State;

/// Our exports and the peers' catalogs, and where a change is published.
#[derive(Debug)]
pub(crate) struct Catalogs {
    exported: watch::Sender<Arc<ExportedCatalog>>,
    peers: Mutex<BTreeMap<Label, PeerCatalog>>,
    changed: Notify,
    /// The DNS zones, kept up to date with the merged catalogs.
    zones: Mutex<ClustersetZones>,
    dns: Dns,
    /// The merged catalogs that the routes and zones in force were built from.
    in_force: watch::Sender<Arc<InForce>>,
}

/// What the routes and zones in force were built from.
#[derive(Debug, Default)]
struct InForce {
    imports: Arc<Imports>,
    unreachable: BTreeSet<Label>,
}

/// A peer's catalog as last received, and whether it is current.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PeerCatalog {
    catalog: ClusterCatalog,
    /// False once the peer's stream broke: its services stay known (so that a request for one
    /// is told the peer is unavailable, not that the service does not exist), but none of its
    /// endpoints is ready until it returns.
    reachable: bool,
}

/// The first routes and zones, built before anything serves.
#[derive(Debug)]
pub(crate) struct Built {
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) zones: Arc<ZoneSet>,
    in_force: Arc<InForce>,
}

impl Catalogs {
    /// Our exports from `config`, no peer catalog yet, and the routes and zones they give.
    pub(crate) fn new(
        config: &Config,
        own: BTreeMap<ServiceKey, ServiceExport>,
        address: IpAddr,
        nameserver: IpAddr,
        now: u64,
    ) -> Result<(Self, Built), ZoneError> {
        let visible_to = config
            .exports
            .iter()
            .map(|export| {
                let peers: BTreeSet<Label> = export.export_to.iter().cloned().collect();
                (export.service.clone(), peers)
            })
            .collect();
        let exported = ExportedCatalog {
            catalog: ClusterCatalog {
                cluster: config.cluster.clone(),
                version: 1,
                services: own,
            },
            visible_to,
        };
        let catalogs = Catalogs {
            exported: watch::Sender::new(Arc::new(exported)),
            peers: Mutex::default(),
            changed: Notify::new(),
            zones: Mutex::new(ClustersetZones::new(
                Clusterset {
                    zone: config.dns.zone.clone(),
                    pinned_zone: config.dns.pinned_zone.clone(),
                    ttl: u32::try_from(config.dns.ttl.as_secs()).unwrap_or(u32::MAX),
                    address,
                    nameserver,
                },
                // The SOA serial starts at the time, so that it grows across restarts too.
                u32::try_from(now).unwrap_or(u32::MAX),
            )?),
            dns: config.dns.clone(),
            in_force: watch::Sender::new(Arc::default()),
        };
        let built = catalogs.build()?;
        catalogs.in_force.send_replace(built.in_force.clone());
        Ok((catalogs, built))
    }

    /// Our exports with their endpoints as they are now: peers watching us are sent the
    /// change, and our own routes and zones are rebuilt.
    pub(crate) fn set_own(&self, services: BTreeMap<ServiceKey, ServiceExport>) {
        let changed = self.exported.send_if_modified(|exported| {
            let mut next = ExportedCatalog::clone(exported);
            if next.catalog.update(services).is_none() {
                return false;
            }
            *exported = Arc::new(next);
            true
        });
        if changed {
            self.changed.notify_one();
        }
    }

    /// Our exports as peers watch them.
    pub(crate) fn exported(&self) -> watch::Receiver<Arc<ExportedCatalog>> {
        self.exported.subscribe()
    }

    /// Sets what `peer` exports to us, as its stream just said.
    pub(crate) fn set_peer(&self, peer: &Label, catalog: &ClusterCatalog) {
        let fresh = PeerCatalog {
            catalog: catalog.clone(),
            reachable: true,
        };
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let changed = peers.insert(peer.clone(), fresh.clone()).as_ref() != Some(&fresh);
        drop(peers);
        if changed {
            self.changed.notify_one();
        }
    }

    /// Marks `peer`'s catalog as no longer current (its stream broke): nothing is routed to it
    /// until it returns.
    pub(crate) fn lose_peer(&self, peer: &Label) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let changed = peers
            .get_mut(peer)
            .is_some_and(|held| std::mem::replace(&mut held.reachable, false));
        drop(peers);
        if changed {
            self.changed.notify_one();
        }
    }

    /// The services the routes and DNS zones in force know, merged from every cluster's
    /// catalog.
    pub(crate) fn in_force(&self) -> Arc<Imports> {
        self.in_force.borrow().imports.clone()
    }

    /// The services in force, for `GET /services` and `meshfed services`.
    pub(crate) fn report(&self) -> ServicesReport {
        let in_force = self.in_force.borrow().clone();
        let exported = self.exported.borrow().clone();
        let own = &exported.catalog.cluster;
        let services = in_force
            .imports
            .services
            .iter()
            .map(|(key, service)| ServiceReport {
                service: key.to_string(),
                headless: service.headless,
                ports: service
                    .ports
                    .iter()
                    .map(|p| PortReport {
                        name: p.name.as_ref().map(Label::to_string),
                        port: p.number,
                        protocol: p.protocol.to_string(),
                    })
                    .collect(),
                clusters: service
                    .clusters
                    .iter()
                    .map(|(cluster, endpoints)| ClusterReport {
                        cluster: cluster.to_string(),
                        local: cluster == own,
                        reachable: !in_force.unreachable.contains(cluster),
                        endpoints: endpoints.len(),
                        ready: endpoints.iter().filter(|e| e.ready).count(),
                    })
                    .collect(),
                exported_to: exported
                    .visible_to
                    .get(key)
                    .into_iter()
                    .flatten()
                    .map(Label::to_string)
                    .collect(),
                conflicts: service.conflicts.iter().map(ToString::to_string).collect(),
            })
            .collect();
        ServicesReport {
            cluster: own.to_string(),
            services,
        }
    }

    /// Every cluster's catalog merged, as it is now (an unreachable peer's endpoints not
    /// ready), and the unreachable peers.
    fn imports(&self) -> (Imports, BTreeSet<Label>) {
        let own = self.exported.borrow().catalog.clone();
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut unreachable = BTreeSet::new();
        let mut catalogs = vec![own];
        for (name, held) in peers.iter() {
            let mut catalog = held.catalog.clone();
            if !held.reachable {
                unreachable.insert(name.clone());
                for endpoint in catalog.services.values_mut().flat_map(|s| &mut s.endpoints) {
                    endpoint.ready = false;
                }
            }
            catalogs.push(catalog);
        }
        (catalog::merge(&catalogs), unreachable)
    }

    /// Rebuilds the routes and zones after every change, until `shutdown`. Changes that arrive
    /// during a rebuild are taken together by the next one.
    pub(crate) async fn publish(
        self: Arc<Self>,
        state: Arc<State>,
        zones: watch::Sender<Arc<ZoneSet>>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.changed.notified() => {}
            }
            let catalogs = self.clone();
            let built = tokio::task::spawn_blocking(move || catalogs.build()).await;
            match built {
                Ok(Ok(built)) => {
                    state.set_routes(built.routes);
                    zones.send_replace(built.zones);
                    self.in_force.send_replace(built.in_force);
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cannot rebuild the DNS zones; keeping the last ones")
                }
                Err(error) => tracing::warn!(%error, "zone rebuild failed; keeping the last ones"),
            }
        }
    }

    /// Routes and zones for the catalogs as they are now; only the services that changed
    /// since the last build are encoded again.
    fn build(&self) -> Result<Built, ZoneError> {
        let (imports, unreachable) = self.imports();
        let cluster = self.exported.borrow().catalog.cluster.clone();
        let dns = &self.dns;
        let zones = self
            .zones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(&imports)?;
        // Each conflict is logged once, when it appears, not at every rebuild after it.
        let before = self.in_force.borrow().imports.clone();
        for (key, service) in &imports.services {
            let known = before
                .services
                .get(key)
                .map(|s| &s.conflicts[..])
                .unwrap_or(&[]);
            for conflict in service.conflicts.iter().filter(|c| !known.contains(c)) {
                tracing::warn!(service = %key, %conflict, "exports of one service disagree");
            }
        }
        let routes = RouteTable::new(cluster, &dns.zone, &dns.pinned_zone, &imports, &unreachable);
        tracing::debug!(
            services = imports.services.len(),
            "routes and zones rebuilt"
        );
        Ok(Built {
            routes: Arc::new(routes),
            zones: Arc::new(zones),
            in_force: Arc::new(InForce {
                imports: Arc::new(imports),
                unreachable,
            }),
        })
    }
}
