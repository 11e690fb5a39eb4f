//! Traffic policy: for a request to a service, which route it takes, to which cluster and
//! subset of endpoints, with which header changes, timeout and injected faults.
//!
//! This is the decision core. It does no I/O and holds no clock or random source: the caller
//! gives it the request's view, which backends are available now, and the [`Dice`]. The proxy
//! (`proxy::local`) acts on the [`Decision`]. A [`Policy`] is an immutable snapshot, parsed and
//! validated whole from the policy file (`config::policy`), and swapped whole on reload; a
//! request keeps the snapshot it started with.

pub mod authz;
pub mod baggage;
pub mod balance;
pub mod dice;
pub mod fault;
pub mod headers;
pub mod locality;
pub mod matching;
pub mod outlier;
pub mod path;
pub mod retry;
pub mod runtime_faults;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use meshfed_discovery::{Label, ServiceKey};

pub use dice::{Chance, Dice, SplitMix64};
pub use fault::{Abort, AbortStatus, Delay, Fault, Injected};
pub use headers::HeaderChanges;
pub use matching::{Match, RequestView};

/// Endpoint labels, or a selector of them: an endpoint is in a subset when its labels include
/// every pair of the subset's.
pub type Labels = BTreeMap<String, String>;

/// The whole traffic policy of a gateway.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Per service: its subsets and routes. A service not here is spread over every cluster
    /// that serves it.
    pub services: BTreeMap<ServiceKey, ServicePolicy>,
    /// Who may pin a request's destination.
    pub overrides: Overrides,
    /// Which peers' requests this gateway serves, beyond what it exports to them.
    pub authorization: authz::Authorization,
    /// The identities this gateway asserts to peers for its local clients, first match wins.
    pub origins: Vec<Origin>,
}

/// An identity asserted for local clients: requests from these networks reach peers as `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The clients' networks.
    pub clients: Vec<Cidr>,
    /// The identity, always in this gateway's own trust domain.
    pub id: meshfed_trust::SpiffeId,
}

/// One service's policy.
#[derive(Clone, Debug, Default)]
pub struct ServicePolicy {
    /// Named groups of endpoints, by label.
    pub subsets: BTreeMap<String, Labels>,
    /// Tried in order; the first that matches applies. A request that matches none is spread
    /// over every cluster that serves the service, as without a policy.
    pub routes: Vec<Route>,
    /// How an endpoint (and, when hashing, a weighted backend) is chosen.
    pub load_balancer: balance::Algorithm,
    /// When endpoints and peer clusters are ejected; `None` to never eject.
    pub outlier_detection: Option<outlier::OutlierDetection>,
    /// The preference for the local cluster, when no route gives weights.
    pub locality: Option<locality::Locality>,
    /// How large a share of requests may be retries.
    pub retry_budget: retry::BudgetConfig,
    /// Limits on what one destination (the service in one cluster) is sent at once.
    pub circuit_breaker: CircuitBreaker,
}

/// Limits on the requests one destination (a service in one cluster) is sent at once, so that
/// an overloaded one is not buried (Envoy's circuit breakers, with its defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CircuitBreaker {
    /// Requests in flight to the destination.
    pub max_requests: u32,
    /// Requests waiting for one of those to finish; past this, 503 `overloaded`.
    pub max_pending: u32,
    /// Connections to one local endpoint: over HTTP/1.1, each request in flight holds one.
    pub max_connections: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            max_requests: 1024,
            max_pending: 1024,
            max_connections: 1024,
        }
    }
}

impl ServicePolicy {
    /// `request`'s consistent-hash key, when this service hashes and the request has one.
    pub fn key(&self, request: &RequestView<'_>) -> Option<u64> {
        match &self.load_balancer {
            balance::Algorithm::Hash(on) => balance::key(on, request),
            _ => None,
        }
    }
}

/// The policy of a service that has no entry: the defaults.
static DEFAULT_SERVICE: std::sync::LazyLock<ServicePolicy> =
    std::sync::LazyLock::new(|| ServicePolicy {
        outlier_detection: Some(outlier::OutlierDetection::default()),
        ..ServicePolicy::default()
    });

/// A route: which requests, and what happens to them.
#[derive(Clone, Debug)]
pub struct Route {
    /// Its name, for logs and metrics (`routes[2]` when the config gives none).
    pub name: String,
    /// Applies when any of these does; to every request when empty.
    pub matches: Vec<Match>,
    /// Where the requests go, by weight; when empty, to any cluster that serves the service.
    pub backends: Vec<Backend>,
    /// Changes to the request before it is forwarded.
    pub request_headers: HeaderChanges,
    /// Changes to the response before it is returned.
    pub response_headers: HeaderChanges,
    /// How long the whole request may take, until the response head arrives.
    pub timeout: Option<Duration>,
    /// Faults injected.
    pub fault: Fault,
    /// How failed tries are retried; the defaults ([`retry::Retries::default`]) if `None`.
    pub retries: Option<retry::Retries>,
}

/// A weighted destination: a cluster, and optionally a subset of its endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// The cluster (this gateway's own, or a peer's).
    pub cluster: Label,
    /// The subset, by name and selector.
    pub subset: Option<(String, Labels)>,
    /// Its share against the route's other backends.
    pub weight: u32,
}

/// Who may pin a request to a cluster with `x-meshfed-cluster` or `baggage`.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Local clients, by source address. Nobody when empty.
    pub trusted_clients: Vec<Cidr>,
}

/// An IP network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network's address (host bits zero).
    pub network: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

/// A destination a request asks for, honoured from a trusted source only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The cluster.
    pub cluster: Label,
    /// A subset of the service's, by name.
    pub subset: Option<String>,
}

/// What the policy decided for one request.
#[derive(Clone, Debug)]
pub struct Decision<'a> {
    /// The service's policy (its defaults if it has none).
    pub service: &'a ServicePolicy,
    /// The request's consistent-hash key, when the service hashes and the request has one.
    pub key: Option<u64>,
    /// The route that matched, if any.
    pub route: Option<&'a Route>,
    /// Where the request goes.
    pub target: Target,
    /// The faults drawn for it.
    pub injected: Injected,
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Any cluster that serves the service (no route, or a route without backends).
    Spread,
    /// This cluster, with endpoints selected by these labels (all endpoints if empty).
    Cluster(Label, Labels),
    /// The route's backends are all unavailable, or a pin names a subset that does not exist.
    Unavailable,
}

impl Policy {
    /// Decides where a request to `service` goes. `available` says whether a cluster has a
    /// ready endpoint with the given labels; `pin` is a trusted override of the destination.
    pub fn decide<'a>(
        &'a self,
        service: &ServiceKey,
        request: &RequestView<'_>,
        pin: Option<&Pin>,
        available: impl Fn(&Label, &Labels) -> bool,
        dice: &mut impl Dice,
    ) -> Decision<'a> {
        let Some(policy) = self.services.get(service) else {
            // A service without policy has no subsets: a pin that names one pins nothing.
            let target = match pin {
                None => Target::Spread,
                Some(Pin {
                    subset: Some(_), ..
                }) => Target::Unavailable,
                Some(pin) => pinned(pin, &Labels::new()),
            };
            return Decision {
                service: &DEFAULT_SERVICE,
                key: None,
                route: None,
                target,
                injected: Injected::default(),
            };
        };
        let key = policy.key(request);
        let route = policy.routes.iter().find(|r| r.applies_to(request));
        let target = match (pin, route) {
            (Some(pin), _) => match &pin.subset {
                None => pinned(pin, &Labels::new()),
                Some(name) => match policy.subsets.get(name) {
                    Some(labels) => pinned(pin, labels),
                    None => Target::Unavailable,
                },
            },
            (None, Some(route)) => route.choose(&available, key, dice),
            (None, None) => Target::Spread,
        };
        let injected = route.map(|r| r.fault.roll(dice)).unwrap_or_default();
        Decision {
            service: policy,
            key,
            route,
            target,
            injected,
        }
    }
}

impl Policy {
    /// `service`'s policy, or the defaults if it has none.
    pub fn service(&self, service: &ServiceKey) -> &ServicePolicy {
        self.services.get(service).unwrap_or(&DEFAULT_SERVICE)
    }

    /// The identity to assert for a local client at `ip`, if it has one.
    pub fn origin_of(&self, ip: IpAddr) -> Option<&meshfed_trust::SpiffeId> {
        self.origins
            .iter()
            .find(|o| o.clients.iter().any(|net| net.contains(ip)))
            .map(|o| &o.id)
    }
}

fn pinned(pin: &Pin, labels: &Labels) -> Target {
    Target::Cluster(pin.cluster.clone(), labels.clone())
}

impl Route {
    /// Whether this route applies to `request`.
    pub fn applies_to(&self, request: &RequestView<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(request))
    }

    /// A backend by weight among the available ones. Weights are renormalised over what is
    /// available: a split whose one side has no ready endpoint sends everything to the other.
    /// With a hash `key` the choice is weighted rendezvous hashing, so that a key keeps its
    /// backend while the weights stay, and moves only towards a backend whose weight grows.
    fn choose(
        &self,
        available: &impl Fn(&Label, &Labels) -> bool,
        key: Option<u64>,
        dice: &mut impl Dice,
    ) -> Target {
        if self.backends.is_empty() {
            return Target::Spread;
        }
        let up: Vec<&Backend> = self
            .backends
            .iter()
            .filter(|b| b.weight > 0 && available(&b.cluster, b.selector()))
            .collect();
        let chosen = match key {
            Some(key) => balance::rendezvous(key, up.iter().map(|b| (b.id(), b.weight))),
            None => weighted(up.iter().map(|b| b.weight), dice),
        };
        match chosen {
            Some(i) => Target::Cluster(up[i].cluster.clone(), up[i].selector().clone()),
            None => Target::Unavailable,
        }
    }
}

/// An index drawn by `weights` (`None` if they are all 0).
pub fn weighted(weights: impl Iterator<Item = u32> + Clone, dice: &mut impl Dice) -> Option<usize> {
    let total: u64 = weights.clone().map(u64::from).sum();
    if total == 0 {
        return None;
    }
    let mut roll = dice.below(total);
    for (index, weight) in weights.enumerate() {
        let weight = u64::from(weight);
        if roll < weight {
            return Some(index);
        }
        roll -= weight;
    }
    None
}

impl Backend {
    /// A stable identity for hashing: its cluster and subset.
    fn id(&self) -> u64 {
        let subset = self.subset.as_ref().map_or("", |(name, _)| name.as_str());
        balance::hash_bytes(format!("{}/{subset}", self.cluster).as_bytes())
    }

    /// The labels its endpoints must have: its subset's, or none.
    pub fn selector(&self) -> &Labels {
        static ANY: Labels = Labels::new();
        self.subset.as_ref().map_or(&ANY, |(_, labels)| labels)
    }
}

impl Overrides {
    /// Whether the local client at `ip` may pin its requests.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_clients.iter().any(|net| net.contains(ip))
    }
}

impl Cidr {
    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `fd00::/8`, or a bare address (a host network).
    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            "" => max,
            p => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{p:?} is not a prefix length from 0 to {max}"))?,
        };
        let cidr = Cidr { network, prefix };
        if !cidr.contains(network) || host_bits_set(&cidr) {
            return Err(format!("{text} has bits set past its /{prefix} prefix"));
        }
        Ok(cidr)
    }
}

fn host_bits_set(cidr: &Cidr) -> bool {
    let octets: Vec<u8> = match cidr.network {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    octets.iter().enumerate().any(|(i, byte)| {
        let start = i as u32 * 8;
        let keep = u32::from(cidr.prefix).saturating_sub(start).min(8);
        let mask = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        byte & !mask != 0
    })
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let whole = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[whole] & mask) == (b[whole] & mask)
}
