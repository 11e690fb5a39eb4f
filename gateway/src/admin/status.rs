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
use crate::moves::{Move, Phase, Strategy, millis};
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
    /// The moves this gateway owns, under way or ended.
    pub(crate) moves: Vec<MoveView>,
}

/// A move this gateway owns, as the page draws it.
#[derive(Debug, Serialize)]
pub(crate) struct MoveView {
    pub(crate) service: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) strategy: &'static str,
    /// `running`, `paused`, `completed`, `rolled back`, `aborted`.
    pub(crate) phase: String,
    /// Why it paused or rolled back.
    pub(crate) reason: Option<String>,
    pub(crate) stage: usize,
    /// Green's share at each stage.
    pub(crate) shares: Vec<u8>,
    pub(crate) green_percent: u32,
    /// Until the stage's hold ends.
    pub(crate) hold_left_seconds: f64,
    pub(crate) stage_requests: u64,
    pub(crate) min_requests: u64,
    pub(crate) max_error_rate: f64,
    pub(crate) max_p99_ms: Option<u64>,
    /// The last judgement of the gates.
    pub(crate) error_rate: Option<f64>,
    pub(crate) p99_ms: Option<u64>,
    pub(crate) gate_failed: Option<String>,
}

/// A peer gateway, as this gateway sees it.
#[derive(Debug, Serialize)]
pub(crate) struct PeerStatus {
    pub(crate) name: String,
    pub(crate) trust_domain: String,
    pub(crate) address: String,
    /// Whether one of this gateway's QUIC connections to it is up (the round-trip time is the
    /// least of theirs, lost packets their sum).
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
    /// The split in force (of a move, or set by hand), which overrides the policy's routes.
    pub(crate) split: Option<SplitView>,
}

/// A split in force.
#[derive(Debug, Serialize)]
pub(crate) struct SplitView {
    /// The gateway that owns it.
    pub(crate) owner: String,
    /// Whether a move is under way behind it.
    pub(crate) moving: bool,
    pub(crate) weights: Vec<BackendShare>,
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

/// The status as of `now`, with `moves` (those this gateway owns).
pub(crate) fn status(
    state: &State,
    catalogs: &Catalogs,
    moves: &[Move],
    now: SystemTime,
) -> Status {
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
    let in_force = state.moving.splits();
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
                split: key
                    .as_ref()
                    .and_then(|k| in_force.get(k))
                    .map(|f| SplitView {
                        owner: f.published.owner.to_string(),
                        moving: f.published.observed,
                        weights: f
                            .published
                            .split
                            .weights
                            .iter()
                            .map(|(cluster, weight)| BackendShare {
                                cluster: cluster.to_string(),
                                subset: None,
                                weight: *weight,
                            })
                            .collect(),
                    }),
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
        moves: moves.iter().map(|m| view(m, now)).collect(),
    }
}

fn view(m: &Move, now: SystemTime) -> MoveView {
    let spec = &m.spec;
    let reading = m.last_reading.as_ref();
    MoveView {
        service: spec.service.to_string(),
        from: spec.blue.to_string(),
        to: spec.green.to_string(),
        strategy: match spec.strategy {
            Strategy::Canary(_) => "canary",
            Strategy::BlueGreen { .. } => "blue-green",
        },
        phase: m.phase.to_string(),
        reason: match &m.phase {
            Phase::Paused { reason } | Phase::RolledBack { reason } => Some(reason.clone()),
            _ => None,
        },
        stage: m.stage,
        shares: spec.shares(),
        green_percent: m.split().map_or(0, |s| s.weight(&spec.green)),
        hold_left_seconds: match m.is_active() {
            true => m
                .hold_ends()
                .duration_since(now)
                .unwrap_or_default()
                .as_secs_f64(),
            false => 0.0,
        },
        stage_requests: m.stage_window.requests,
        min_requests: spec.gates.min_requests,
        max_error_rate: spec.gates.max_error_rate,
        max_p99_ms: spec.gates.max_p99.map(millis),
        error_rate: reading.and_then(|r| r.error_rate),
        p99_ms: reading.and_then(|r| r.p99).map(millis),
        gate_failed: reading.and_then(|r| r.failed.clone()),
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
