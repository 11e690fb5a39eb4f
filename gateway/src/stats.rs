//! Counters the gateway keeps about itself. Prometheus export comes with the metrics work;
//! these are what tests and the admin endpoint read today.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use meshfed_discovery::{Label, ServiceKey};
use meshfed_trust::verify::Rejections;

/// Running totals since start.
#[derive(Debug, Default)]
pub struct Stats {
    /// QUIC connections this gateway opened to peers.
    pub peer_connections_opened: AtomicU64,
    /// QUIC Retry packets sent to validate a new peer connection's address.
    pub peer_retries: AtomicU64,
    /// QUIC connections from peers this gateway accepted (after identifying the peer).
    pub peer_connections_accepted: AtomicU64,
    /// Requests served from peers.
    pub peer_requests: AtomicU64,
    /// Requests served from local clients.
    pub local_requests: AtomicU64,
    /// Times new credentials were put in use (SVID renewals and reloads).
    pub credential_updates: AtomicU64,
    /// Peer bundles fetched from bundle endpoints and put in use.
    pub bundle_updates: AtomicU64,
    /// Policy file versions put in force after the first.
    pub policy_reloads: AtomicU64,
    /// Policy file versions refused for a problem (the policy in force was kept).
    pub policy_reloads_rejected: AtomicU64,
    /// Peer requests authorization let through.
    pub authorization_allowed: AtomicU64,
    /// Peer requests authorization refused.
    pub authorization_denied: AtomicU64,
    /// Authorization decisions made by a rule, by rule and outcome.
    pub authorization_by_rule: Mutex<BTreeMap<(String, Outcome), u64>>,
    /// DNS answers by response code, counted by the DNS server.
    pub dns: Arc<meshfed_discovery::dns::DnsStats>,
    /// The Prometheus metrics (`/metrics`).
    pub metrics: crate::metrics::Metrics,
    /// Peer certificates refused, by reason.
    pub peer_certificates_refused: Arc<Rejections>,
    /// Outbound requests answered, by service and the cluster that served them.
    pub routed: Routed,
}

/// Outbound requests answered, by service and the cluster that served them: the split as it
/// is, for the status page. Counting takes a read lock and an atomic add; the write lock only
/// when a service or cluster is seen for the first time.
#[derive(Debug, Default)]
pub struct Routed(std::sync::RwLock<HashMap<ServiceKey, HashMap<Label, AtomicU64>>>);

impl Routed {
    /// Counts one request for `service` served by `cluster`.
    pub fn add(&self, service: &ServiceKey, cluster: &Label) {
        let counts = self.0.read().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get(service).and_then(|c| c.get(cluster)) {
            count.fetch_add(1, Ordering::Relaxed);
            return;
        }
        drop(counts);
        let mut counts = self.0.write().unwrap_or_else(|e| e.into_inner());
        counts
            .entry(service.clone())
            .or_default()
            .entry(cluster.clone())
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The requests for `service` so far, by cluster.
    pub fn of(&self, service: &ServiceKey) -> BTreeMap<String, u64> {
        let counts = self.0.read().unwrap_or_else(|e| e.into_inner());
        counts
            .get(service)
            .into_iter()
            .flatten()
            .map(|(cluster, n)| (cluster.to_string(), n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// An authorization outcome, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Let through.
    Allowed,
    /// Refused.
    Denied,
}

impl Outcome {
    /// Its name in counters.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
        }
    }
}

impl Stats {
    /// Counts one authorization decision, made by `rule` if a rule made it.
    pub fn authorized(&self, outcome: Outcome, rule: Option<&str>) {
        let total = match outcome {
            Outcome::Allowed => &self.authorization_allowed,
            Outcome::Denied => &self.authorization_denied,
        };
        total.fetch_add(1, Ordering::Relaxed);
        let decision = match outcome {
            Outcome::Allowed => "allow",
            Outcome::Denied => "deny",
        };
        let labels = crate::metrics::DecisionLabels {
            decision,
            rule: rule.unwrap_or_default().to_owned(),
        };
        self.metrics.authorization.get_or_create(&labels).inc();
        if let Some(rule) = rule {
            let mut by_rule = self
                .authorization_by_rule
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *by_rule.entry((rule.to_owned(), outcome)).or_default() += 1;
        }
    }
}
