//! The status page: `/` serves a self-contained page (no outside assets: the admin port may
//! have no internet) that draws the federation from `/status.json`, which it fetches again
//! every two seconds.
//!
//! `/status.json` is this gateway's view: its cluster, each peer with its connection's health,
//! each service with where it runs, how its policy splits it and where this gateway's requests
//! actually went, and the moves in progress.

use std::time::SystemTime;

use serde::Serialize;

use crate::catalogs::Catalogs;
use crate::policy::Policy;
use crate::services::ServiceReport;
use crate::state::State;

/// The page, as served.
pub(crate) const PAGE: &str = include_str!("status.html");

/// Everything the page draws.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub(crate) cluster: String,
    pub(crate) trust_domain: String,
    pub(crate) version: &'static str,
    /// Seconds until this gateway's SVID expires.
    pub(crate) svid_expires_in_seconds: f64,
    pub(crate) peers: Vec<PeerStatus>,
    pub(crate) services: Vec<ServiceStatus>,
    /// Moves in progress (issue 7 fills this in).
    pub(crate) moves: Vec<serde_json::Value>,
}

/// A peer gateway, as this gateway sees it.
#[derive(Debug, Serialize)]
pub(crate) struct PeerStatus {
    pub(crate) name: String,
    pub(crate) trust_domain: String,
    pub(crate) address: String,
    /// Whether this gateway's QUIC connection to it is up.
    pub(crate) connected: bool,
    pub(crate) rtt_ms: Option<f64>,
    pub(crate) lost_packets: Option<u64>,
    pub(crate) open_streams: u64,
    /// Seconds since its bundle was last fetched, for a peer with a bundle endpoint.
    pub(crate) bundle_age_seconds: Option<f64>,
}

/// A service: where it runs, and how its requests are split.
#[derive(Debug, Serialize)]
pub(crate) struct ServiceStatus {
    #[serde(flatten)]
    pub(crate) report: ServiceReport,
    /// The policy's routes that send it somewhere by weight; none when it is spread over every
    /// cluster that serves it.
    pub(crate) routes: Vec<RouteSplit>,
    /// This gateway's requests for it so far, by the cluster that served them.
    pub(crate) requests: std::collections::BTreeMap<String, u64>,
}

/// A route's weighted backends.
#[derive(Debug, Serialize)]
pub(crate) struct RouteSplit {
    pub(crate) route: String,
    /// Whether the route matches only some requests.
    pub(crate) conditional: bool,
    pub(crate) backends: Vec<BackendShare>,
}

/// One weighted backend of a route.
#[derive(Debug, Serialize)]
pub(crate) struct BackendShare {
    pub(crate) cluster: String,
    pub(crate) subset: Option<String>,
    pub(crate) weight: u32,
}

/// The status as of `now`.
pub(crate) fn status(state: &State, catalogs: &Catalogs, now: SystemTime) -> Status {
    let metrics = &state.stats.metrics;
    let peers = state
        .peer_connections()
        .map(|(name, connection)| {
            let label = name.parse().ok();
            PeerStatus {
                name: name.to_owned(),
                trust_domain: label
                    .as_ref()
                    .and_then(|l| state.trust_domain_of(l))
                    .map(|td| td.to_string())
                    .unwrap_or_default(),
                address: label
                    .as_ref()
                    .and_then(|l| state.peers.get(l))
                    .map(|p| p.address().to_string())
                    .unwrap_or_default(),
                connected: connection.is_some(),
                rtt_ms: connection.as_ref().map(|c| c.rtt.as_secs_f64() * 1000.0),
                lost_packets: connection.as_ref().map(|c| c.lost_packets),
                open_streams: connection.as_ref().map_or(0, |c| c.open_streams),
                bundle_age_seconds: metrics.bundle_age(name, now),
            }
        })
        .collect();
    let policy = state.policy();
    let services = catalogs
        .report()
        .services
        .into_iter()
        .map(|report| {
            let key = report.service.parse().ok();
            ServiceStatus {
                routes: key.as_ref().map(|k| splits(&policy, k)).unwrap_or_default(),
                requests: key
                    .as_ref()
                    .map(|k| state.stats.routed.of(k))
                    .unwrap_or_default(),
                report,
            }
        })
        .collect();
    Status {
        cluster: state.cluster().to_string(),
        trust_domain: state.trust_domain.to_string(),
        version: env!("CARGO_PKG_VERSION"),
        svid_expires_in_seconds: metrics.svid_expires_in(now),
        peers,
        services,
        moves: Vec::new(),
    }
}

/// The routes of `service`'s policy that give weights.
fn splits(policy: &Policy, service: &meshfed_discovery::ServiceKey) -> Vec<RouteSplit> {
    let Some(service) = policy.services.get(service) else {
        return Vec::new();
    };
    service
        .routes
        .iter()
        .filter(|route| !route.backends.is_empty())
        .map(|route| RouteSplit {
            route: route.name.clone(),
            conditional: !route.matches.is_empty(),
            backends: route
                .backends
                .iter()
                .map(|b| BackendShare {
                    cluster: b.cluster.to_string(),
                    subset: b.subset.as_ref().map(|(name, _)| name.clone()),
                    weight: b.weight,
                })
                .collect(),
        })
        .collect()
}
