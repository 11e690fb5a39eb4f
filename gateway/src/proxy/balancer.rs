//! The load and health of local endpoints and of peer clusters, as requests find them: updated
//! by every request's outcome and read by the next request's choice. The decisions themselves
//! are the policy core's ([`crate::policy::balance`], [`crate::policy::outlier`],
//! [`crate::policy::locality`]); this keeps their state and the clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use meshfed_discovery::{Label, ServiceKey};

use crate::policy::balance::{self, Candidate, Load, PeakEwma};
use crate::policy::outlier::{self, Health, OutlierDetection, Recorded};
use crate::policy::retry::{BudgetConfig, RetryBudget};
use crate::policy::{CircuitBreaker, Dice, ServicePolicy};
use crate::reason::Reason;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shared by every request of a gateway.
#[derive(Debug, Default)]
pub(crate) struct Balancer {
    endpoints: Mutex<HashMap<SocketAddr, Tracked>>,
    clusters: Mutex<HashMap<(ServiceKey, Label), Health>>,
    budgets: Mutex<HashMap<ServiceKey, RetryBudget>>,
    /// Each destination's circuit breaker, by its limits too: a changed policy starts afresh.
    gates: Mutex<HashMap<(ServiceKey, Label, CircuitBreaker), Arc<Gate>>>,
    /// Counts requests, for round robin.
    turn: AtomicU64,
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
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(tracked) = self.balancer.endpoints().get_mut(&self.endpoint) {
            tracked.load.pending = tracked.load.pending.saturating_sub(1);
        }
    }
}

/// A destination's requests in flight and waiting.
#[derive(Debug)]
struct Gate {
    in_flight: Arc<Semaphore>,
    waiting: AtomicU32,
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
        let gate = self
            .gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((service.clone(), cluster.clone(), *limits))
            .or_insert_with(|| {
                Arc::new(Gate {
                    in_flight: Arc::new(Semaphore::new(limits.max_requests as usize)),
                    waiting: AtomicU32::new(0),
                })
            })
            .clone();
        if let Ok(permit) = gate.in_flight.clone().try_acquire_owned() {
            return Ok(Admitted(permit));
        }
        if gate.waiting.fetch_add(1, Ordering::AcqRel) >= limits.max_pending {
            gate.waiting.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(svc = %service, peer.cluster = %cluster, "circuit breaker: overloaded");
            return Err(Reason::Overloaded);
        }
        let permit = gate.in_flight.clone().acquire_owned().await;
        gate.waiting.fetch_sub(1, Ordering::AcqRel);
        permit.map(Admitted).map_err(|_| Reason::Overloaded)
    }

    /// Counts a first try of a request to `service` in its retry budget.
    pub(crate) fn deposit(&self, service: &ServiceKey) {
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        budgets
            .entry(service.clone())
            .or_default()
            .deposit(Instant::now());
    }

    /// Takes a retry of a request to `service` out of its budget, if one is left.
    pub(crate) fn withdraw(&self, service: &ServiceKey, config: &BudgetConfig) -> bool {
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        let granted = budgets
            .entry(service.clone())
            .or_default()
            .withdraw(Instant::now(), config);
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
        endpoints: &[SocketAddr],
        policy: &ServicePolicy,
        one_per_request: bool,
        key: Option<u64>,
        dice: &mut impl Dice,
    ) -> Result<Vec<SocketAddr>, Reason> {
        let now = Instant::now();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let mut table = self.endpoints();
        let limit = policy.circuit_breaker.max_connections;
        let endpoints: Vec<SocketAddr> = endpoints
            .iter()
            .filter(|e| !one_per_request || table.get(e).is_none_or(|t| t.load.pending < limit))
            .copied()
            .collect();
        if endpoints.is_empty() {
            tracing::debug!("circuit breaker: every endpoint has max_connections in flight");
            return Err(Reason::Overloaded);
        }
        let eligible = match &policy.outlier_detection {
            Some(config) => outlier::eligible(
                endpoints.iter().map(|e| table.get(e).map(|t| &t.health)),
                now,
                config,
            ),
            None => vec![true; endpoints.len()],
        };
        let (mut up, mut out) = (Vec::new(), Vec::new());
        for (endpoint, eligible) in endpoints.iter().zip(eligible) {
            match eligible {
                true => up.push(*endpoint),
                false => out.push(*endpoint),
            }
        }
        // A new endpoint starts as good as the best known one.
        let best = up
            .iter()
            .filter_map(|e| table.get(e))
            .map(|t| t.load.latency.at(now))
            .min_by(|a, b| a.estimate().total_cmp(&b.estimate()));
        for endpoint in &up {
            table.entry(*endpoint).or_insert_with(|| Tracked {
                load: Load {
                    pending: 0,
                    latency: best.map_or_else(|| PeakEwma::new(now), |b| PeakEwma::like(&b, now)),
                },
                health: Health::default(),
            });
        }
        let candidates: Vec<Candidate> = up
            .iter()
            .map(|endpoint| {
                let load = tracked(&mut table, *endpoint, now).load;
                Candidate {
                    id: balance::hash_bytes(endpoint.to_string().as_bytes()),
                    load: Load {
                        pending: load.pending,
                        latency: load.latency.at(now),
                    },
                }
            })
            .collect();
        drop(table);
        let first = match candidates.is_empty() {
            true => 0,
            false => balance::pick(&policy.load_balancer, &candidates, key, turn, dice),
        };
        let mut order: Vec<SocketAddr> = up[first..].iter().chain(&up[..first]).copied().collect();
        order.extend(out);
        Ok(order)
    }

    /// Counts a request sent to `endpoint` until the returned guard drops.
    pub(crate) fn start(self: &Arc<Self>, endpoint: SocketAddr) -> InFlight {
        let now = Instant::now();
        tracked(&mut self.endpoints(), endpoint, now).load.pending += 1;
        InFlight {
            balancer: self.clone(),
            endpoint,
        }
    }

    /// Records how a request to `endpoint` went: answered (not 5xx) after `latency`, or failed.
    pub(crate) fn record(
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
            .get(&(service.clone(), cluster.clone()))
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
        let health = clusters
            .entry((service.clone(), cluster.clone()))
            .or_default();
        if let Recorded::Ejected(length) = health.record(ok, Instant::now(), outlier) {
            tracing::info!(svc = %service, peer.cluster = %cluster, ejected_for = ?length, "peer cluster ejected after failures in a row");
        }
    }

    fn endpoints(&self) -> MutexGuard<'_, HashMap<SocketAddr, Tracked>> {
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }
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
