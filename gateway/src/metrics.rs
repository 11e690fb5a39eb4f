//! Prometheus metrics, served as OpenMetrics text on the admin listener at `/metrics`.
//!
//! Names and labels follow Istio's standard metrics where they fit (`source_cluster`,
//! `destination_service`, `destination_cluster`, `response_code`), so that existing
//! dashboards adapt easily; units are Prometheus' base units (seconds). `docs/observability.md`
//! lists them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshfed_discovery::{Label, ServiceKey};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which way a request went through this gateway.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// From a local client, to a local endpoint or a peer.
    Outbound,
    /// From a peer gateway, to a local endpoint.
    Inbound,
}

/// A cluster as a label value: its name, or empty for none. It shares the request's
/// [`Label`]: recording a request's metrics copies no strings.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct ClusterValue(pub Option<Label>);

/// A service as a label value, `<name>.<namespace>`, shared as [`ClusterValue`] is.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ServiceValue(pub ServiceKey);

/// The labels of a request's metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `outbound` (from a local client) or `inbound` (from a peer gateway).
    pub direction: &'static str,
    /// The cluster the request came from.
    pub source_cluster: ClusterValue,
    /// The service, `<name>.<namespace>`.
    pub destination_service: ServiceValue,
    /// The cluster that served it (empty when no cluster was chosen).
    pub destination_cluster: ClusterValue,
    /// The response's status code.
    pub response_code: u16,
    /// `http`, `grpc`.
    pub protocol: &'static str,
}

/// The labels of a TCP connection's metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// `outbound` (from a local client) or `inbound` (a tunnel from a peer gateway).
    pub direction: &'static str,
    /// The cluster the connection came from.
    pub source_cluster: ClusterValue,
    /// The service, `<name>.<namespace>`.
    pub destination_service: ServiceValue,
    /// The cluster that served it.
    pub destination_cluster: ClusterValue,
}

impl EncodeLabelValue for ClusterValue {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(self.0.as_ref().map_or("", Label::as_str))
    }
}

impl EncodeLabelValue for ServiceValue {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        write!(encoder, "{}", self.0)
    }
}

/// The labels of a split's weights.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SplitLabels {
    /// The service, `<name>.<namespace>`.
    pub destination_service: String,
    /// A cluster of the split.
    pub destination_cluster: String,
    /// The gateway (cluster) that owns the split.
    pub owner: String,
}

/// The labels of a move's gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MoveLabels {
    /// The service moved.
    pub destination_service: String,
}

/// The labels of a move's phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// The service moved.
    pub destination_service: String,
    /// `running`, `paused`, `completed`, `rolled_back` or `aborted`.
    pub phase: String,
}

/// The labels of span counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpanLabels {
    /// `exported`, `failed` or `dropped`.
    pub outcome: &'static str,
}

/// The labels of DNS answers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RcodeLabels {
    /// The response code, `NOERROR`, `NXDOMAIN`, ...
    pub rcode: &'static str,
}

/// The labels of an authorization decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// The rule that decided, or empty when the export did.
    pub rule: String,
}

/// The labels of a peer's connection metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The peer cluster.
    pub peer: String,
}

/// What the metrics read of a peer's QUIC connection when scraped.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PeerConnection {
    /// QUIC connections open to the peer (at least one).
    pub connections: u64,
    /// Streams open to the peer (requests in flight, tunnels).
    pub open_streams: u64,
    /// The smoothed round-trip time (the least of the connections').
    pub rtt: Duration,
    /// The congestion windows, in bytes, summed over the connections.
    pub congestion_window: u64,
    /// Packets the connections have lost, summed.
    pub lost_packets: u64,
}

/// Every metric the gateway keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests, by where they went and how they ended.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to the response head, with the same labels as `requests`.
    pub request_duration: Family<RequestLabels, Histogram>,
    /// Authorization decisions on peers' requests.
    pub authorization: Family<DecisionLabels, Counter>,
    tcp_opened: Family<TcpLabels, Counter>,
    spans: Family<SpanLabels, Counter>,
    access_log_dropped: Counter,
    /// The telemetry totals already added to `spans` and `access_log_dropped`.
    telemetry_seen: std::sync::Mutex<[u64; 4]>,
    tcp_closed: Family<TcpLabels, Counter>,
    tcp_sent: Family<TcpLabels, Counter>,
    tcp_received: Family<TcpLabels, Counter>,
    dns_queries: Family<RcodeLabels, Counter>,
    /// The DNS counts already added to `dns_queries`, by response code.
    dns_seen: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    svid_expiry: Gauge<f64, AtomicU64>,
    /// When the SVID in use expires, in seconds since the Unix epoch.
    svid_not_after: AtomicU64,
    peer_connected: Family<PeerLabels, Gauge>,
    peer_quic_connections: Family<PeerLabels, Gauge>,
    peer_rtt: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    peer_congestion_window: Family<PeerLabels, Gauge>,
    peer_lost_packets: Family<PeerLabels, Gauge>,
    peer_open_streams: Family<PeerLabels, Gauge>,
    split_weight: Family<SplitLabels, Gauge>,
    move_stage: Family<MoveLabels, Gauge>,
    move_green_percent: Family<MoveLabels, Gauge>,
    move_phase: Family<PhaseLabels, Gauge>,
    move_stage_requests: Family<MoveLabels, Gauge>,
    move_gate_error_rate: Family<MoveLabels, Gauge<f64, AtomicU64>>,
    move_gate_p99: Family<MoveLabels, Gauge<f64, AtomicU64>>,
    peer_bundle_age: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    /// When each peer's bundle was last fetched (or the gateway started, before the first).
    bundle_fetched: std::sync::Mutex<std::collections::BTreeMap<String, SystemTime>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        // 0.5 ms to about 16 s, doubling.
        let request_duration =
            Family::<RequestLabels, Histogram>::new_with_constructor(new_duration_histogram);
        let authorization = Family::<DecisionLabels, Counter>::default();
        let mut registry = Registry::with_prefix("meshfed");
        registry.register(
            "requests",
            "Requests through the gateway, by direction, source and destination, and response code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response head",
            request_duration.clone(),
        );
        registry.register(
            "authorization_decisions",
            "Authorization decisions on peers' requests and tunnels, by decision and rule",
            authorization.clone(),
        );
        let spans = Family::<SpanLabels, Counter>::default();
        registry.register(
            "trace_spans",
            "Spans recorded: exported, failed (the collector refused or was unreachable), or dropped (the export queue was full)",
            spans.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_lines_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let tcp_opened = Family::<TcpLabels, Counter>::default();
        registry.register(
            "tcp_connections_opened",
            "TCP connections (and tunnels) opened; with the closed count, the connections open now",
            tcp_opened.clone(),
        );
        let tcp_closed = Family::<TcpLabels, Counter>::default();
        let tcp_sent = Family::<TcpLabels, Counter>::default();
        let tcp_received = Family::<TcpLabels, Counter>::default();
        registry.register(
            "tcp_connections_closed",
            "TCP connections (and tunnels) that ended, carried to the end or failed",
            tcp_closed.clone(),
        );
        registry.register(
            "tcp_sent_bytes",
            "Bytes from the client to the service over TCP, counted when a connection ends",
            tcp_sent.clone(),
        );
        registry.register(
            "tcp_received_bytes",
            "Bytes from the service to the client over TCP, counted when a connection ends",
            tcp_received.clone(),
        );
        let dns_queries = Family::<RcodeLabels, Counter>::default();
        registry.register(
            "dns_queries",
            "DNS queries answered by the gateway's DNS server, by response code",
            dns_queries.clone(),
        );
        let svid_expiry = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "svid_expiry_seconds",
            "Seconds until the gateway's SVID in use expires (negative once it has)",
            svid_expiry.clone(),
        );
        let peer_connected = Family::<PeerLabels, Gauge>::default();
        let peer_quic_connections = Family::<PeerLabels, Gauge>::default();
        let peer_rtt = Family::<PeerLabels, Gauge<f64, AtomicU64>>::default();
        let peer_congestion_window = Family::<PeerLabels, Gauge>::default();
        let peer_lost_packets = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "peer_connected",
            "Whether a QUIC connection to the peer gateway is up (1) or none is (0)",
            peer_connected.clone(),
        );
        registry.register(
            "peer_quic_connections",
            "QUIC connections open to the peer gateway (one per runtime thread when all are up)",
            peer_quic_connections.clone(),
        );
        registry.register(
            "peer_rtt_seconds",
            "Smoothed round-trip time to the peer gateway (the least of its QUIC connections')",
            peer_rtt.clone(),
        );
        registry.register(
            "peer_congestion_window_bytes",
            "Congestion windows of the QUIC connections to the peer gateway, summed",
            peer_congestion_window.clone(),
        );
        registry.register(
            "peer_connection_lost_packets",
            "Packets lost by the current QUIC connections to the peer gateway, summed",
            peer_lost_packets.clone(),
        );
        let peer_open_streams = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "peer_open_streams",
            "Streams open to the peer gateway: requests until their response ends, tunnels until they close",
            peer_open_streams.clone(),
        );
        let split_weight = Family::<SplitLabels, Gauge>::default();
        registry.register(
            "split_weight",
            "The weight of each cluster in the split in force for a moved (or hand-split) service, and the gateway that owns it",
            split_weight.clone(),
        );
        let move_stage = Family::<MoveLabels, Gauge>::default();
        registry.register(
            "move_stage",
            "The stage (from 0) of each move this gateway owns",
            move_stage.clone(),
        );
        let move_green_percent = Family::<MoveLabels, Gauge>::default();
        registry.register(
            "move_green_percent",
            "Green's share of the requests, in percent, of each move this gateway owns",
            move_green_percent.clone(),
        );
        let move_phase = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "move_phase",
            "1 for the phase each move this gateway owns is in (running, paused, completed, rolled_back, aborted)",
            move_phase.clone(),
        );
        let move_stage_requests = Family::<MoveLabels, Gauge>::default();
        registry.register(
            "move_stage_requests",
            "Green's requests so far in the current stage of each move this gateway owns, from every gateway",
            move_stage_requests.clone(),
        );
        let move_gate_error_rate = Family::<MoveLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "move_gate_error_rate",
            "Green's error rate (0 to 1) at the last judgement of each move's gates",
            move_gate_error_rate.clone(),
        );
        let move_gate_p99 = Family::<MoveLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "move_gate_p99_seconds",
            "Green's p99 latency at the last judgement of each move's gates",
            move_gate_p99.clone(),
        );
        let peer_bundle_age = Family::<PeerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "peer_bundle_age_seconds",
            "Seconds since the peer's trust bundle was last fetched from its bundle endpoint (since start, before the first fetch)",
            peer_bundle_age.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            authorization,
            tcp_opened,
            spans,
            access_log_dropped,
            telemetry_seen: std::sync::Mutex::default(),
            tcp_closed,
            tcp_sent,
            tcp_received,
            dns_queries,
            dns_seen: std::sync::Mutex::default(),
            svid_expiry,
            svid_not_after: AtomicU64::new(0),
            peer_connected,
            peer_quic_connections,
            peer_rtt,
            peer_congestion_window,
            peer_lost_packets,
            peer_open_streams,
            split_weight,
            move_stage,
            move_green_percent,
            move_phase,
            move_stage_requests,
            move_gate_error_rate,
            move_gate_p99,
            peer_bundle_age,
            bundle_fetched: std::sync::Mutex::default(),
        }
    }
}

fn new_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    /// Counts one request that took `elapsed` to its response head.
    pub fn request(&self, labels: RequestLabels, elapsed: Duration) {
        self.request_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts a TCP connection opened.
    pub fn tcp_opened(&self, labels: TcpLabels) {
        self.tcp_opened.get_or_create(&labels).inc();
    }

    /// Counts a TCP connection that ended (carried to the end or failed) after carrying `sent`
    /// bytes from the client and `received` to it.
    pub fn tcp_closed(&self, labels: TcpLabels, sent: u64, received: u64) {
        self.tcp_sent.get_or_create(&labels).inc_by(sent);
        self.tcp_received.get_or_create(&labels).inc_by(received);
        self.tcp_closed.get_or_create(&labels).inc();
    }

    /// Brings the DNS counters up to `answered` (each response code's total so far).
    pub fn dns(&self, answered: impl IntoIterator<Item = (&'static str, u64)>) {
        let mut seen = self.dns_seen.lock().unwrap_or_else(|e| e.into_inner());
        for (rcode, total) in answered {
            let before = seen.entry(rcode).or_default();
            let labels = RcodeLabels { rcode };
            self.dns_queries
                .get_or_create(&labels)
                .inc_by(total.saturating_sub(*before));
            *before = total.max(*before);
        }
    }

    /// Brings the telemetry counters up to these totals: spans exported, failed and dropped,
    /// and access log lines dropped.
    pub fn telemetry(&self, totals: [u64; 4]) {
        let mut seen = self
            .telemetry_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let outcomes = ["exported", "failed", "dropped"];
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let labels = SpanLabels { outcome };
            self.spans
                .get_or_create(&labels)
                .inc_by(totals[i].saturating_sub(seen[i]));
        }
        self.access_log_dropped
            .inc_by(totals[3].saturating_sub(seen[3]));
        for (seen, total) in seen.iter_mut().zip(totals) {
            *seen = total.max(*seen);
        }
    }

    /// Notes that the SVID in use now expires at `not_after`.
    pub fn svid_in_use(&self, not_after: SystemTime) {
        let seconds = not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.svid_not_after.store(seconds, Ordering::Relaxed);
    }

    /// Sets the gauges that are read at scrape time, for `now`.
    pub fn at(&self, now: SystemTime) {
        self.svid_expiry.set(self.svid_expires_in(now));
        let peers: Vec<String> = self
            .bundle_fetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for peer in peers {
            let age = self.bundle_age(&peer, now).unwrap_or_default();
            let labels = PeerLabels { peer };
            self.peer_bundle_age.get_or_create(&labels).set(age);
        }
    }

    /// Seconds until the SVID in use expires, at `now` (negative once it has).
    pub fn svid_expires_in(&self, now: SystemTime) -> f64 {
        let not_after =
            UNIX_EPOCH + Duration::from_secs(self.svid_not_after.load(Ordering::Relaxed));
        match not_after.duration_since(now) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        }
    }

    /// Seconds since `peer`'s bundle was last fetched, at `now`, if it has a bundle endpoint.
    pub fn bundle_age(&self, peer: &str, now: SystemTime) -> Option<f64> {
        let fetched = self
            .bundle_fetched
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let at = fetched.get(peer)?;
        Some(now.duration_since(*at).unwrap_or_default().as_secs_f64())
    }

    /// Sets the split and move gauges from what is in force now (label sets of splits and
    /// moves that are gone are dropped).
    pub(crate) fn moves(
        &self,
        splits: &std::collections::BTreeMap<
            meshfed_discovery::ServiceKey,
            std::sync::Arc<crate::mover::InForce>,
        >,
        moves: &[crate::moves::Move],
    ) {
        self.split_weight.clear();
        for (service, in_force) in splits {
            for (cluster, weight) in &in_force.published.split.weights {
                let labels = SplitLabels {
                    destination_service: service.to_string(),
                    destination_cluster: cluster.to_string(),
                    owner: in_force.published.owner.to_string(),
                };
                self.split_weight
                    .get_or_create(&labels)
                    .set(i64::from(*weight));
            }
        }
        for family in [
            &self.move_stage,
            &self.move_green_percent,
            &self.move_stage_requests,
        ] {
            family.clear();
        }
        self.move_phase.clear();
        self.move_gate_error_rate.clear();
        self.move_gate_p99.clear();
        for m in moves {
            let labels = MoveLabels {
                destination_service: m.spec.service.to_string(),
            };
            let saturating = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.move_stage
                .get_or_create(&labels)
                .set(saturating(m.stage as u64));
            let green = m.split().map_or(0, |s| s.weight(&m.spec.green));
            self.move_green_percent
                .get_or_create(&labels)
                .set(i64::from(green));
            self.move_stage_requests
                .get_or_create(&labels)
                .set(saturating(m.stage_window.requests));
            let phase = PhaseLabels {
                destination_service: m.spec.service.to_string(),
                phase: m.phase.to_string().replace(' ', "_"),
            };
            self.move_phase.get_or_create(&phase).set(1);
            if let Some(reading) = &m.last_reading {
                if let Some(rate) = reading.error_rate {
                    self.move_gate_error_rate.get_or_create(&labels).set(rate);
                }
                if let Some(p99) = reading.p99 {
                    let p99 = p99.min(Duration::from_secs(86_400)).as_secs_f64();
                    self.move_gate_p99.get_or_create(&labels).set(p99);
                }
            }
        }
    }

    /// Notes that `peer`'s bundle was fetched from its bundle endpoint at `at` (or, at start,
    /// that the one kept or configured is in use).
    pub fn bundle_fetched(&self, peer: &str, at: SystemTime) {
        let mut fetched = self
            .bundle_fetched
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        fetched.insert(peer.to_owned(), at);
    }

    /// Sets the peer gauges from what the connections say now (`None`: not connected).
    pub fn peers<'p>(&self, peers: impl IntoIterator<Item = (&'p str, Option<PeerConnection>)>) {
        for (peer, connection) in peers {
            let labels = PeerLabels {
                peer: peer.to_owned(),
            };
            let connection = connection.as_ref();
            self.peer_connected
                .get_or_create(&labels)
                .set(i64::from(connection.is_some()));
            let saturating = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.peer_quic_connections
                .get_or_create(&labels)
                .set(saturating(connection.map_or(0, |c| c.connections)));
            let Some(connection) = connection else {
                continue;
            };
            self.peer_rtt
                .get_or_create(&labels)
                .set(connection.rtt.as_secs_f64());
            self.peer_congestion_window
                .get_or_create(&labels)
                .set(saturating(connection.congestion_window));
            self.peer_lost_packets
                .get_or_create(&labels)
                .set(saturating(connection.lost_packets));
            self.peer_open_streams
                .get_or_create(&labels)
                .set(saturating(connection.open_streams));
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Direction {
    /// Its label value.
    pub fn label(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// The `protocol` label of a request with these headers.
pub fn protocol_of(headers: &http::HeaderMap) -> &'static str {
    let grpc = headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    match grpc {
        true => "grpc",
        false => "http",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_with_their_labels() {
        let metrics = Metrics::default();
        let labels = RequestLabels {
            direction: Direction::Outbound.label(),
            source_cluster: ClusterValue("east".parse().ok()),
            destination_service: ServiceValue("greeter.demo".parse().expect("service")),
            destination_cluster: ClusterValue("west".parse().ok()),
            response_code: 200,
            protocol: "http",
        };
        metrics.request(labels.clone(), Duration::from_millis(3));
        metrics.request(labels, Duration::from_millis(3));
        let text = metrics.encode();
        let line = "meshfed_requests_total{direction=\"outbound\",source_cluster=\"east\",\
                    destination_service=\"greeter.demo\",destination_cluster=\"west\",\
                    response_code=\"200\",protocol=\"http\"} 2";
        assert!(text.lines().any(|l| l == line), "{text}");
        assert!(
            text.contains("meshfed_request_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
