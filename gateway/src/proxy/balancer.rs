//! The load and health of local endpoints and of peer clusters, as requests find them: updated
//! by every request's outcome and read by the next request's choice. The decisions themselves
//! are the policy core's ([`crate::policy::balance`], [`crate::policy::outlier`],
//! [`crate::policy::locality`]); this keeps their state and the clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use meshfed_discovery::{Label, ServiceKey};

use crate::policy::balance::{self, Algorithm, Candidate, Load, PeakEwma};
use crate::policy::outlier::{self, Health, OutlierDetection, Recorded};
use crate::policy::retry::{BudgetConfig, RetryBudget};
use crate::policy::{CircuitBreaker, Dice, ServicePolicy};
use crate::reason::Reason;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shared by every request of a gateway.
#[derive(Debug, Default)]
pub(crate) struct Balancer {
    endpoints: Mutex<HashMap<SocketAddr, Tracked>>,
    /// By service, then cluster: looked up without cloning either.
    clusters: Mutex<ByDestination<Health>>,
    budgets: Mutex<HashMap<ServiceKey, RetryBudget>>,
    /// Each destination's circuit breaker; a changed policy's new limits start a new one.
    gates: Mutex<ByDestination<Option<Arc<Gate>>>>,
    /// Counts each service port's requests, for round robin.
    turns: Mutex<HashMap<(ServiceKey, u16), u64>>,
}

#[derive(Debug)]
struct Tracked {
    load: Load,
    health: Health,
}

/// A request in flight to an endpoint: counted in its load until dropped (with the response
/// body, so that a long stream counts for as long as it runs).
#[derive(Debug)]
pub(crate) struct InFlight {
    balancer: Arc<Balancer>,
    endpoint: SocketAddr,
    sent: Instant,
    /// Whether its answer was recorded; one dropped before (a timeout, a client that hung
    /// up) counts the time it waited as its latency, so that a hanging endpoint is shunned.
    answered: bool,
}

impl InFlight {
    /// Records the try's outcome: answered (not 5xx) after the time since it was sent, or
    /// failed.
    pub(crate) fn answered(&mut self, ok: bool, outlier: Option<&OutlierDetection>) {
        self.answered = true;
        let latency = ok.then(|| self.sent.elapsed());
        self.balancer.record(self.endpoint, latency, outlier);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let waited = self.sent.elapsed();
        let now = Instant::now();
        if let Some(tracked) = self.balancer.endpoints().get_mut(&self.endpoint) {
            tracked.load.pending = tracked.load.pending.saturating_sub(1);
            if !self.answered {
                tracked.load.latency.observe(waited, now);
            }
        }
    }
}

/// State per destination: by service, then cluster, so that a lookup clones neither.
type ByDestination<V> = HashMap<ServiceKey, HashMap<Label, V>>;

/// A destination's requests in flight and waiting.
#[derive(Debug)]
struct Gate {
    limits: CircuitBreaker,
    in_flight: Arc<Semaphore>,
    waiting: AtomicU32,
}

/// A request counted among those waiting at a gate, until dropped.
struct Waiting<'g> {
    gate: &'g Gate,
    /// How many were waiting before it.
    ahead: u32,
}

impl<'g> Waiting<'g> {
    fn enter(gate: &'g Gate) -> Self {
        let ahead = gate.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting { gate, ahead }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.gate.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request's place among its destination's requests in flight, held until it is done.
#[derive(Debug)]
pub(crate) struct Admitted(#[allow(dead_code)] OwnedSemaphorePermit);

impl Balancer {
    /// Admits a request to `service` in `cluster` under `limits`: at once if fewer than
    /// `max_requests` are in flight, after a wait if fewer than `max_pending` are waiting,
    /// else not at all.
    pub(crate) async fn admit(
        &self,
        service: &ServiceKey,
        cluster: &Label,
        limits: &CircuitBreaker,
    ) -> Result<Admitted, Reason> {
        let gate = {
            let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
            let gate = entry(&mut gates, service, cluster);
            if gate.as_ref().is_none_or(|g| g.limits != *limits) {
                // New, or the policy changed the limits: requests under the old ones keep
                // their places in the old gate, which goes when they are done.
                *gate = Some(Arc::new(Gate {
                    limits: *limits,
                    in_flight: Arc::new(Semaphore::new(limits.max_requests as usize)),
                    waiting: AtomicU32::new(0),
                }));
            }
            gate.clone().expect("just set")
        };
        if let Ok(permit) = gate.in_flight.clone().try_acquire_owned() {
            return Ok(Admitted(permit));
        }
        // Counted while waiting, and uncounted however the wait ends (a timeout or a client
        // that hangs up drops it midway).
        let waiting = Waiting::enter(&gate);
        if waiting.ahead >= limits.max_pending {
            tracing::debug!(svc = %service, peer.cluster = %cluster, "circuit breaker: overloaded");
            return Err(Reason::Overloaded);
        }
        let permit = gate.in_flight.clone().acquire_owned().await;
        drop(waiting);
        permit.map(Admitted).map_err(|_| Reason::Overloaded)
    }

    /// Forgets endpoints for which `keep` is false (gone from the exports), so that churn in
    /// endpoint addresses does not grow the table for ever.
    pub(crate) fn retain_endpoints(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.endpoints().retain(|endpoint, _| keep(endpoint));
    }

    /// Counts a first try of a request to `service` in its retry budget.
    pub(crate) fn deposit(&self, service: &ServiceKey) {
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match budgets.get_mut(service) {
            Some(budget) => budget.deposit(now),
            None => budgets.entry(service.clone()).or_default().deposit(now),
        }
    }

    /// Takes a retry of a request to `service` out of its budget, if one is left.
    pub(crate) fn withdraw(&self, service: &ServiceKey, config: &BudgetConfig) -> bool {
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        let granted = budgets
            .get_mut(service)
            .is_some_and(|budget| budget.withdraw(Instant::now(), config));
        if !granted {
            tracing::debug!(svc = %service, "retry budget spent; not retrying");
        }
        granted
    }

    /// The order in which to try `endpoints` (not empty) for one request of a service with
    /// `policy`: the balancer's choice first, then the others from there on (for a refused
    /// connection), endpoints ejected by outlier detection last. Over HTTP/1.1 (`one_per_request`)
    /// an endpoint with as many requests in flight as the circuit breaker's `max_connections`
    /// is left out; if all are, the request is refused.
    pub(crate) fn order(
        &self,
        (service, port): (&ServiceKey, u16),
        endpoints: &[SocketAddr],
        policy: &ServicePolicy,
        one_per_request: bool,
        key: Option<u64>,
        dice: &mut impl Dice,
    ) -> Result<Vec<SocketAddr>, Reason> {
        let now = Instant::now();
        let turn = match policy.load_balancer {
            Algorithm::RoundRobin => {
                let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
                let turn = turns.entry((service.clone(), port)).or_default();
                *turn += 1;
                *turn - 1
            }
            _ => 0,
        };
        let mut table = self.endpoints();
        let limit = policy.circuit_breaker.max_connections;
        // One vector, which becomes the order: this runs for every request.
        let mut order: Vec<SocketAddr> = endpoints
            .iter()
            .filter(|e| !one_per_request || table.get(e).is_none_or(|t| t.load.pending < limit))
            .copied()
            .collect();
        if order.is_empty() {
            tracing::debug!("circuit breaker: every endpoint has max_connections in flight");
            return Err(Reason::Overloaded);
        }
        let ejected = |e: &SocketAddr| table.get(e).is_some_and(|t| t.health.is_ejected(now));
        // How many lead the order as eligible; the ejected follow, in their own order.
        let up = match &policy.outlier_detection {
            Some(config) => {
                let kept = order.iter().filter(|e| !ejected(e)).count();
                match kept < order.len() && outlier::ejections_hold(order.len(), kept, config) {
                    true => {
                        order.sort_by_key(ejected);
                        kept
                    }
                    false => order.len(),
                }
            }
            None => order.len(),
        };
        // A new endpoint starts as good as the best known one.
        let best = order[..up]
            .iter()
            .filter_map(|e| table.get(e))
            .map(|t| t.load.latency.at(now))
            .min_by(|a, b| a.estimate().total_cmp(&b.estimate()));
        for endpoint in &order[..up] {
            table.entry(*endpoint).or_insert_with(|| Tracked {
                load: Load {
                    pending: 0,
                    latency: best.map_or_else(|| PeakEwma::new(now), |b| PeakEwma::like(&b, now)),
                },
                health: Health::default(),
            });
        }
        let first = match up {
            0 | 1 => 0,
            _ => {
                let candidates: Vec<Candidate> = order[..up]
                    .iter()
                    .map(|endpoint| {
                        let load = tracked(&mut table, *endpoint, now).load;
                        Candidate {
                            id: endpoint_id(endpoint),
                            load: Load {
                                pending: load.pending,
                                latency: load.latency.at(now),
                            },
                        }
                    })
                    .collect();
                balance::pick(&policy.load_balancer, &candidates, key, turn, dice)
            }
        };
        drop(table);
        order[..up].rotate_left(first);
        Ok(order)
    }

    /// Counts a request sent to `endpoint` until the returned guard drops.
    pub(crate) fn start(self: &Arc<Self>, endpoint: SocketAddr) -> InFlight {
        let now = Instant::now();
        tracked(&mut self.endpoints(), endpoint, now).load.pending += 1;
        InFlight {
            balancer: self.clone(),
            endpoint,
            sent: now,
            answered: false,
        }
    }

    /// Records how a request to `endpoint` went: answered (not 5xx) after `latency`, or failed.
    fn record(
        &self,
        endpoint: SocketAddr,
        answered: Option<Duration>,
        outlier: Option<&OutlierDetection>,
    ) {
        let now = Instant::now();
        let mut table = self.endpoints();
        let tracked = tracked(&mut table, endpoint, now);
        if let Some(latency) = answered {
            tracked.load.latency.observe(latency, now);
        }
        let Some(config) = outlier else { return };
        if let Recorded::Ejected(length) = tracked.health.record(answered.is_some(), now, config) {
            tracing::info!(%endpoint, ejected_for = ?length, "endpoint ejected after failures in a row");
        }
    }

    /// Whether outlier detection has taken `cluster` out for `service`.
    pub(crate) fn cluster_ejected(&self, service: &ServiceKey, cluster: &Label) -> bool {
        let clusters = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        clusters
            .get(service)
            .and_then(|by_cluster| by_cluster.get(cluster))
            .is_some_and(|h| h.is_ejected(Instant::now()))
    }

    /// Records how a request to `service` in the peer `cluster` went.
    pub(crate) fn record_cluster(
        &self,
        service: &ServiceKey,
        cluster: &Label,
        ok: bool,
        outlier: &OutlierDetection,
    ) {
        let mut clusters = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        let health = entry(&mut clusters, service, cluster);
        if let Recorded::Ejected(length) = health.record(ok, Instant::now(), outlier) {
            tracing::info!(svc = %service, peer.cluster = %cluster, ejected_for = ?length, "peer cluster ejected after failures in a row");
        }
    }

    fn endpoints(&self) -> MutexGuard<'_, HashMap<SocketAddr, Tracked>> {
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stable identity of an endpoint for hashing: its address and port, hashed.
fn endpoint_id(endpoint: &SocketAddr) -> u64 {
    let mut bytes = [0u8; 18];
    match endpoint.ip() {
        std::net::IpAddr::V4(ip) => bytes[..4].copy_from_slice(&ip.octets()),
        std::net::IpAddr::V6(ip) => bytes[..16].copy_from_slice(&ip.octets()),
    }
    bytes[16..].copy_from_slice(&endpoint.port().to_be_bytes());
    balance::hash_bytes(&bytes)
}

/// The slot for `service` in `cluster`, cloning the keys only to insert a new one (this runs
/// for every request).
fn entry<'m, V: Default>(
    map: &'m mut ByDestination<V>,
    service: &ServiceKey,
    cluster: &Label,
) -> &'m mut V {
    if !map.contains_key(service) {
        map.insert(service.clone(), HashMap::new());
    }
    let by_cluster = map.get_mut(service).expect("inserted above");
    if !by_cluster.contains_key(cluster) {
        by_cluster.insert(cluster.clone(), V::default());
    }
    by_cluster.get_mut(cluster).expect("inserted above")
}

fn tracked(
    table: &mut HashMap<SocketAddr, Tracked>,
    endpoint: SocketAddr,
    now: Instant,
) -> &mut Tracked {
    table.entry(endpoint).or_insert_with(|| Tracked {
        load: Load::new(now),
        health: Health::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_given_up_leaves_its_place_to_the_next() {
        let balancer = Balancer::default();
        let limits = CircuitBreaker {
            max_requests: 1,
            max_pending: 1,
            max_connections: 1,
        };
        let service: ServiceKey = "greeter.demo".parse().expect("service");
        let cluster: Label = "east".parse().expect("cluster");
        let admit = || balancer.admit(&service, &cluster, &limits);
        let held = admit().await.expect("room");
        // One waits, and gives up (a timeout); then another may wait in its place, where a
        // leaked place would have it refused at once.
        let short = Duration::from_millis(20);
        assert!(
            tokio::time::timeout(short, admit()).await.is_err(),
            "waited"
        );
        assert!(
            tokio::time::timeout(short, admit()).await.is_err(),
            "waited again"
        );
        // Two at once: one waits, the other is refused.
        let (first, second) = tokio::join!(
            tokio::time::timeout(short, admit()),
            tokio::time::timeout(short, admit())
        );
        let refused = [first, second]
            .into_iter()
            .filter(|r| matches!(r, Ok(Err(Reason::Overloaded))))
            .count();
        assert_eq!(refused, 1);
        drop(held);
        assert!(admit().await.is_ok());
    }

    #[test]
    fn a_try_dropped_unanswered_counts_its_wait_as_latency() {
        let balancer = Arc::new(Balancer::default());
        let endpoint: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let in_flight = balancer.start(endpoint);
        std::thread::sleep(Duration::from_millis(50));
        drop(in_flight);
        let table = balancer.endpoints();
        let tracked = table.get(&endpoint).expect("tracked");
        assert_eq!(tracked.load.pending, 0);
        assert!(
            tracked.load.latency.estimate() >= 40e6,
            "{}",
            tracked.load.latency.estimate()
        );
    }
}
