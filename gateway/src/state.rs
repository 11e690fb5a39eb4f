//! What every request handler shares: routes, exports, peers, the upstream pool.
//!
//! Built once from a validated config and never mutated; a config change will build a new
//! `State` and swap it whole.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use meshfed_discovery::{Label, ServiceKey};
use meshfed_trust::{SpiffeId, TrustDomain};

use crate::config::{Config, Export};
use crate::credentials::gateway_id_of;
use crate::federation::client::PeerClient;
use crate::federation::wire;
use crate::observe::{self, Exchange};
use crate::policy::authz::Access;
use crate::policy::runtime_faults::RuntimeFaults;
use crate::policy::{
    self, Dice, Labels, Policy, RequestView, ServicePolicy, SplitMix64, balance, locality,
    path as canonical,
};
use crate::proxy::balancer::Balancer;
use crate::proxy::body::{self, Body};
use crate::proxy::headers;
use crate::proxy::upstream::Upstream;
use crate::reason::Reason;
use crate::route::{self, Destination, RouteTable};
use crate::stats::{Outcome, Stats};

/// The rule name under which a denial for an origin outside the peer's trust domain is counted
/// (not a DNS label, so no configured rule can have it).
const FOREIGN_ORIGIN_RULE: &str = "origin_outside_peer_trust_domain";
/// The rule name under which a denial for matching none of the `allow` rules is counted.
const NO_ALLOW_RULE: &str = "no_allow_rule_matched";
/// The most QUIC connections one peer may have open to us: its lanes
/// ([`crate::federation::client::MAX_LANES`]) and as many again retiring beside their
/// replacements.
pub(crate) const MAX_INBOUND_PER_PEER: usize = 2 * crate::federation::client::MAX_LANES;

/// What a peer asks for, as authorization needs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerRequest<'a> {
    pub(crate) service: &'a ServiceKey,
    /// The service port.
    pub(crate) port: u16,
    pub(crate) method: &'a http::Method,
    /// The canonical path; `None` for a TCP tunnel.
    pub(crate) path: Option<&'a str>,
}

#[derive(Debug)]
pub(crate) struct State {
    /// This gateway's cluster.
    cluster: Label,
    /// This cluster's trust domain.
    pub(crate) trust_domain: TrustDomain,
    /// How this gateway names itself in `Via`.
    pub(crate) via: headers::Via,
    /// Swapped whole when the catalogs change; a request routes on the table it read.
    routes: std::sync::RwLock<Arc<RouteTable>>,
    pub(crate) peers: BTreeMap<Label, PeerClient>,
    pub(crate) stats: Arc<Stats>,
    /// Records spans, when traces are configured.
    pub(crate) tracer: Option<crate::trace::Tracer>,
    /// Takes a line per request and per TCP connection, when configured.
    pub(crate) access_log: Option<crate::access_log::AccessLog>,
    /// This cluster's exports, each port listing the endpoints that take traffic now; swapped
    /// whole when endpoints are found or change health.
    exports: std::sync::RwLock<Arc<BTreeMap<ServiceKey, Export>>>,
    peers_by_trust_domain: BTreeMap<TrustDomain, Label>,
    /// Each peer's gateway ID, the source of its requests unless it asserts an origin.
    peer_gateways: BTreeMap<Label, SpiffeId>,
    upstream: Upstream,
    /// The load and health of local endpoints and peer clusters.
    pub(crate) balancer: Arc<Balancer>,
    /// Peers' connections to us, by QUIC connection id, so that a trust change can re-check them.
    inbound: std::sync::Mutex<BTreeMap<usize, Inbound>>,
    /// The traffic policy; swapped whole on reload, a request keeps the one it read.
    policy: std::sync::RwLock<Arc<Policy>>,
    /// Seeds each request's dice: a counter, mixed, so requests' draws are independent.
    dice: AtomicU64,
    /// Faults set through the admin API; swapped whole on each change.
    runtime_faults: std::sync::RwLock<Arc<RuntimeFaults>>,
    /// The splits of moved services, and what is observed of them.
    pub(crate) moving: crate::mover::Moving,
}

/// Where the gateway records what it does: counters and metrics, spans, access log lines.
#[derive(Debug)]
pub(crate) struct Telemetry {
    pub(crate) stats: Arc<Stats>,
    pub(crate) tracer: Option<crate::trace::Tracer>,
    pub(crate) access_log: Option<crate::access_log::AccessLog>,
}

/// A peer's connection to us, as the registry holds it.
#[derive(Clone, Debug)]
pub(crate) struct Inbound {
    pub(crate) peer: Label,
    pub(crate) connection: quinn::Connection,
    /// Cancelled to make the connection drain: GOAWAY, finish what is in flight, close.
    pub(crate) drain: tokio_util::sync::CancellationToken,
}

/// Keeps an inbound connection in [`State`]'s registry while it lives.
#[derive(Debug)]
pub(crate) struct Registered<'a> {
    state: &'a State,
    id: usize,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.state.inbound_lock().remove(&self.id);
    }
}

impl State {
    pub(crate) fn new(
        config: &Config,
        exports: Arc<BTreeMap<ServiceKey, Export>>,
        routes: Arc<RouteTable>,
        peers: BTreeMap<Label, PeerClient>,
        telemetry: Telemetry,
        policy: Arc<Policy>,
        seed: u64,
    ) -> Self {
        State {
            cluster: config.cluster.clone(),
            trust_domain: config.trust_domain.clone(),
            via: headers::Via::new(&format!("meshfed-{}", config.cluster)),
            routes: std::sync::RwLock::new(routes),
            peers,
            stats: telemetry.stats,
            tracer: telemetry.tracer,
            access_log: telemetry.access_log,
            exports: std::sync::RwLock::new(exports),
            peer_gateways: config
                .peers
                .iter()
                .map(|p| (p.name.clone(), gateway_id_of(&p.trust_domain, &p.name)))
                .collect(),
            peers_by_trust_domain: config
                .peers
                .iter()
                .map(|p| (p.trust_domain.clone(), p.name.clone()))
                .collect(),
            upstream: Upstream::new(),
            balancer: Arc::default(),
            inbound: std::sync::Mutex::default(),
            policy: std::sync::RwLock::new(policy),
            dice: AtomicU64::new(seed),
            runtime_faults: std::sync::RwLock::default(),
            moving: crate::mover::Moving::default(),
        }
    }

    /// The faults set at run time.
    pub(crate) fn runtime_faults(&self) -> Arc<RuntimeFaults> {
        self.runtime_faults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the faults set at run time with `change`, and puts the result in force.
    pub(crate) fn change_runtime_faults<R>(
        &self,
        change: impl FnOnce(&mut RuntimeFaults) -> R,
    ) -> R {
        let mut faults = self
            .runtime_faults
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut changed = RuntimeFaults::clone(&faults);
        let result = change(&mut changed);
        *faults = Arc::new(changed);
        result
    }

    /// This gateway's cluster.
    pub(crate) fn cluster(&self) -> &Label {
        &self.cluster
    }

    /// The traffic policy in force.
    pub(crate) fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Decides by `policy` from now on; requests under way keep the one they started with.
    pub(crate) fn set_policy(&self, policy: Arc<Policy>) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    /// Dice for one request's decisions, independent of every other request's.
    pub(crate) fn dice(&self) -> SplitMix64 {
        let turn = self.dice.fetch_add(1, Ordering::Relaxed);
        SplitMix64::new(SplitMix64::new(turn).roll())
    }

    /// The current route table.
    pub(crate) fn routes(&self) -> Arc<RouteTable> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Routes from now on by `routes`.
    pub(crate) fn set_routes(&self, routes: Arc<RouteTable>) {
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = routes;
    }

    /// Registers a peer's connection to us until the returned guard drops.
    ///
    /// `None` when the peer already has [`MAX_INBOUND_PER_PEER`] connections: each may hold a
    /// connection window of buffered data, so their number is what bounds a peer's memory.
    pub(crate) fn register(&self, inbound: Inbound) -> Option<Registered<'_>> {
        let id = inbound.connection.stable_id();
        let mut registered = self.inbound_lock();
        let from_peer = registered
            .values()
            .filter(|other| other.peer == inbound.peer)
            .count();
        if from_peer >= MAX_INBOUND_PER_PEER {
            return None;
        }
        registered.insert(id, inbound);
        Some(Registered { state: self, id })
    }

    /// The peers' connections to us.
    pub(crate) fn inbound(&self) -> Vec<Inbound> {
        self.inbound_lock().values().cloned().collect()
    }

    fn inbound_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, Inbound>> {
        self.inbound.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spans exported, failed and dropped, and access log lines dropped, so far.
    pub(crate) fn telemetry_totals(&self) -> [u64; 4] {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let spans = self.tracer.as_ref().map(|t| &t.counts);
        [
            spans.map_or(0, |c| load(&c.exported)),
            spans.map_or(0, |c| load(&c.failed)),
            spans.map_or(0, |c| load(&c.dropped)),
            self.access_log.as_ref().map_or(0, |l| load(&l.dropped)),
        ]
    }

    /// Each peer's QUIC connections as the metrics read them (`None` when none is open).
    pub(crate) fn peer_connections(
        &self,
    ) -> impl Iterator<Item = (&str, Option<crate::metrics::PeerConnection>)> {
        self.peers.iter().map(|(name, client)| {
            let connections = client.connections();
            let summary = (!connections.is_empty()).then(|| crate::metrics::PeerConnection {
                connections: connections.len() as u64,
                open_streams: client.open_streams(),
                rtt: connections
                    .iter()
                    .map(|c| c.rtt())
                    .min()
                    .unwrap_or_default(),
                congestion_window: connections.iter().map(|c| c.stats().path.cwnd).sum(),
                lost_packets: connections
                    .iter()
                    .map(|c| c.stats().path.lost_packets)
                    .sum(),
            });
            (name.as_str(), summary)
        })
    }

    /// The peer cluster whose gateway `id` is: the trust domain must be a peer's, and the path
    /// that peer's gateway path. Any other workload of a peer trust domain is not the peer.
    pub(crate) fn trust_domain_of(&self, peer: &Label) -> Option<TrustDomain> {
        self.peers_by_trust_domain
            .iter()
            .find(|(_, name)| *name == peer)
            .map(|(td, _)| td.clone())
    }

    /// The configured peer whose gateway a verified client certificate chain names (QUIC and
    /// the control channel alike). The TLS verifier has already checked the chain against the
    /// roots of the trust domain the SVID names; the ID must also be that peer's gateway, not
    /// some other workload of its trust domain. A refusal is counted.
    pub(crate) fn identify_peer(
        &self,
        chain: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Option<Label> {
        let id = meshfed_trust::x509::spiffe_id(chain.first()?).ok()?;
        let peer = self.peer_of(&id);
        if peer.is_none() {
            self.stats.peer_certificates_refused.refuse(
                meshfed_trust::verify::Rejection::WrongId,
                "client",
                &format_args!("{id} is not a peer gateway"),
            );
        }
        peer
    }

    pub(crate) fn peer_of(&self, id: &SpiffeId) -> Option<Label> {
        let peer = self.peers_by_trust_domain.get(id.trust_domain())?;
        (gateway_id_of(id.trust_domain(), peer) == *id).then(|| peer.clone())
    }

    /// Sends a request to one of this cluster's endpoints of `service`, on the HTTP port
    /// numbered `port` if the service has one, else on its first HTTP port. The endpoint sees
    /// the service's MCS name as `Host`, whichever name the client used and wherever it came
    /// from. Its response may not pose as the gateway: `x-meshfed-*` headers are removed.
    /// Only endpoints whose labels include `selector` may serve it (all, if it is empty).
    /// The endpoint is chosen by the service's policy: its load balancer (with the request's
    /// hash `key`, if it hashes) among endpoints outlier detection has not ejected.
    pub(crate) async fn forward_local(
        &self,
        service: &ServiceKey,
        port: Option<u16>,
        selector: &Labels,
        key: Option<u64>,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, Reason> {
        let exports = self.exports();
        let export = exports.get(service).ok_or(Reason::UnknownService)?;
        let port = export.http_port(port).ok_or(Reason::UnknownService)?;
        if port.endpoints.is_empty() || !route::selects(selector, &export.labels) {
            return Err(Reason::NoReadyEndpoints);
        }
        if let Ok(host) =
            HeaderValue::from_maybe_shared(Bytes::from(wire::authority(service, None)))
        {
            request.headers_mut().insert(header::HOST, host);
        }
        let policy = self.policy();
        let service_policy = policy.service(service);
        let one_per_request = port.protocol == crate::config::Protocol::Http;
        let order = self.balancer.order(
            (service, port.port),
            &port.endpoints,
            service_policy,
            one_per_request,
            key,
            &mut self.dice(),
        )?;
        let outlier = service_policy.outlier_detection.as_ref();
        let mut response = self
            .upstream
            .forward(request, &order, port.protocol, &self.balancer, outlier)
            .await?;
        headers::strip_untrusted(response.headers_mut());
        Ok(response)
    }

    /// The endpoints of `service`'s TCP port `port`, in the order to try them.
    pub(crate) fn tcp_endpoints(
        &self,
        service: &ServiceKey,
        port: u16,
    ) -> Result<Vec<SocketAddr>, Reason> {
        let exports = self.exports();
        let export = exports.get(service).ok_or(Reason::UnknownService)?;
        let port = export.tcp_port(port).ok_or(Reason::UnknownService)?;
        if port.endpoints.is_empty() {
            return Err(Reason::NoReadyEndpoints);
        }
        let policy = self.policy();
        self.balancer.order(
            (service, port.port),
            &port.endpoints,
            policy.service(service),
            false,
            None,
            &mut self.dice(),
        )
    }

    /// This cluster's exports as they are now.
    fn exports(&self) -> Arc<BTreeMap<ServiceKey, Export>> {
        self.exports
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forwards to `exports`' endpoints from now on.
    pub(crate) fn set_exports(&self, exports: Arc<BTreeMap<ServiceKey, Export>>) {
        let current: std::collections::BTreeSet<SocketAddr> = exports
            .values()
            .flat_map(|e| &e.ports)
            .flat_map(|p| p.endpoints.iter().copied())
            .collect();
        *self.exports.write().unwrap_or_else(|e| e.into_inner()) = exports;
        self.balancer.retain_endpoints(|e| current.contains(e));
    }

    /// Whether `peer` may reach `service`. A refusal is answered as unknown, so
    /// that a peer cannot map what it is not given; the log keeps the distinction.
    pub(crate) fn exported_to(&self, service: &ServiceKey, peer: &Label) -> Result<(), Reason> {
        let exports = self.exports();
        let Some(export) = exports.get(service) else {
            tracing::debug!(%service, "peer asked for a service we do not export");
            return Err(Reason::UnknownService);
        };
        if !export.export_to.contains(peer) {
            tracing::debug!(%service, peer.cluster = %peer, reason = %Reason::NotExported, "refused");
            return Err(Reason::UnknownService);
        }
        Ok(())
    }

    /// Serves one request from `peer`: only services exported to that peer are reachable.
    pub(crate) async fn serve_peer(
        self: &Arc<Self>,
        request: Request<()>,
        body: h3::server::RequestStream<h3_quinn::RecvStream, bytes::Bytes>,
        peer: &Label,
    ) -> Response<Body> {
        self.stats.peer_requests.fetch_add(1, Ordering::Relaxed);
        // A body from here on, even for a request refused unread: dropped, it reads on to the
        // stream's end (its FIN may still be on its way) rather than stopping the stream, which
        // the peer's client would take for a failed request rather than for the refusal.
        let body = body::from_h3(body);
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let mut exchange = Exchange::begin(
            self,
            crate::metrics::Direction::Inbound,
            peer.clone(),
            &request,
            &authority,
        );
        let response = match wire::service_of(&authority) {
            None => Reason::UnknownService.response(),
            Some((service, port)) => {
                self.serve_exported(request, body, peer, (service, port), &mut exchange)
                    .await
            }
        };
        exchange.finish(&response);
        response
    }

    /// Serves a peer's request for a service, if it is exported to the peer.
    async fn serve_exported(
        &self,
        request: Request<()>,
        body: Body,
        peer: &Label,
        (service, port): (ServiceKey, Option<u16>),
        exchange: &mut Exchange,
    ) -> Response<Body> {
        if let Err(reason) = self.exported_to(&service, peer) {
            return reason.response();
        }
        // Only now, for a service exported to the peer: a peer cannot mint metric labels.
        exchange.service = Some(service.clone());
        exchange.destination_cluster = Some(self.cluster.clone());
        let (mut parts, ()) = request.into_parts();
        // Set by the peer gateway (its clients' x-meshfed-* headers never cross); an ill-formed
        // one selects nothing rather than everything.
        let selector = match parts.headers.get(wire::ENDPOINT_LABELS) {
            None => Some(Labels::new()),
            Some(value) => value.to_str().ok().and_then(wire::parse_labels),
        };
        let Some(selector) = selector else {
            tracing::debug!(peer.cluster = %peer, "ill-formed endpoint labels from peer");
            return Reason::NoReadyEndpoints.response();
        };
        match canonical::canonical_uri(&parts.uri) {
            Ok(Some(uri)) => parts.uri = uri,
            Ok(None) => {}
            Err(_) => return Reason::BadPath.response(),
        }
        let Some(number) = self
            .exports()
            .get(&service)
            .and_then(|e| Some(e.http_port(port)?.port))
        else {
            return Reason::UnknownService.response();
        };
        let access = PeerRequest {
            service: &service,
            port: number,
            method: &parts.method,
            path: Some(parts.uri.path()),
        };
        let source = match self.authorize(peer, &parts.headers, &access) {
            Ok(source) => source,
            Err(reason) => return reason.response(),
        };
        let key = self.policy().service(&service).key(&RequestView {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            client: None,
        });
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::strip_untrusted(&mut parts.headers);
        headers::set_client_identity(&mut parts.headers, &source);
        exchange.source = Some(source);
        self.via.append(&mut parts.headers, parts.version);
        let mut request = Request::from_parts(parts, body);
        let span = observe::try_span(
            self,
            exchange.span.as_ref(),
            &mut request,
            (&service, &self.cluster),
            1,
        );
        // Boxed, as a local client's try is (proxy::forward): made once, never copied.
        let forwarded = Box::pin(self.forward_local(&service, port, &selector, key, request)).await;
        span.done(&forwarded);
        match forwarded {
            Ok(response) => self.forwarded(response),
            Err(reason) => reason.response(),
        }
    }

    /// Whether `peer` may make the request `access` describes (the service already known to be
    /// exported to it), and as whom: the peer gateway's own ID, or the origin it asserts in
    /// [`wire::ORIGIN`], which must be in the peer's trust domain. Every decision is counted;
    /// a denial is logged with the rule that made it.
    pub(crate) fn authorize(
        &self,
        peer: &Label,
        headers: &http::HeaderMap,
        access: &PeerRequest<'_>,
    ) -> Result<SpiffeId, Reason> {
        let Some(gateway) = self.peer_gateways.get(peer) else {
            return Err(Reason::UnknownService);
        };
        let source = match headers.get(wire::ORIGIN) {
            None => gateway.clone(),
            Some(value) => {
                let asserted = value.to_str().ok().and_then(|v| v.parse::<SpiffeId>().ok());
                match asserted {
                    Some(id) if id.trust_domain() == gateway.trust_domain() => id,
                    _ => {
                        self.stats
                            .authorized(Outcome::Denied, Some(FOREIGN_ORIGIN_RULE));
                        tracing::info!(
                            peer.cluster = %peer,
                            origin = ?value,
                            svc = %access.service,
                            "denied: the peer asserted an origin outside its own trust domain"
                        );
                        return Err(Reason::Denied);
                    }
                }
            }
        };
        let policy = self.policy();
        let verdict = policy.authorization.decide(&Access {
            source: &source,
            service: access.service,
            port: access.port,
            method: access.method,
            path: access.path,
        });
        if verdict.is_allowed() {
            self.stats.authorized(Outcome::Allowed, verdict.rule());
            return Ok(source);
        }
        let rule = verdict.rule().unwrap_or(NO_ALLOW_RULE);
        self.stats.authorized(Outcome::Denied, Some(rule));
        tracing::info!(
            peer.cluster = %peer,
            source = %source,
            svc = %access.service,
            port = access.port,
            method = %access.method,
            path = access.path.unwrap_or(""),
            rule,
            "denied"
        );
        Err(Reason::Denied)
    }

    /// The cluster a request for `service` goes to when no route gives weights: by the
    /// service's locality preference over the clusters with ready endpoints, leaving out peer
    /// clusters that outlier detection has ejected; by the hash `key` if the service hashes.
    pub(crate) fn spread(
        &self,
        routes: &RouteTable,
        service: &ServiceKey,
        policy: &ServicePolicy,
        key: Option<u64>,
        dice: &mut impl Dice,
    ) -> Result<Destination, Reason> {
        let mut clusters = routes.health(service)?;
        if policy.outlier_detection.is_some() {
            for cluster in &mut clusters {
                cluster.ejected = self.balancer.cluster_ejected(service, cluster.cluster);
            }
        }
        let shares = locality::shares(&self.cluster, policy.locality.as_ref(), &clusters);
        let chosen = match key {
            Some(key) => balance::rendezvous(
                key,
                shares
                    .iter()
                    .map(|(c, w)| (balance::hash_bytes(c.as_str().as_bytes()), *w)),
            ),
            None => policy::weighted(shares.iter().map(|(_, w)| *w), dice),
        };
        match chosen {
            Some(i) => routes.to_cluster(service, shares[i].0, &Labels::new()),
            None => Err(routes.unavailable(service)),
        }
    }

    /// Readies a response received from the next hop to be sent back to the previous one.
    pub(crate) fn forwarded(&self, mut response: Response<Body>) -> Response<Body> {
        let version = response.version();
        headers::strip_hop_by_hop(response.headers_mut());
        self.via.append(response.headers_mut(), version);
        response
    }
}
