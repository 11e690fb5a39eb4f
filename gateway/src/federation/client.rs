//! The way out to one peer: a few long-lived QUIC connections (lanes), which requests take in
//! turn.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version, header};
use http_body::Body as _;
use meshfed_discovery::{Label, ServiceKey};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::probe::{Probed, TailProbe};
use super::wire;
use crate::proxy::body::{self, Body, H3Send as _};
use crate::reason::Reason;
use crate::stats::Stats;
use crate::workers::Workers;

/// A handshake that takes longer than this fails, so that a dead peer gives a fast 503.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed connect, requests fail at once for this long instead of each waiting for a
/// handshake of its own.
const FAILURE_HOLD_DOWN: Duration = Duration::from_secs(1);

/// The keeper's first wait before dialling a lost peer again, doubled after each failure up
/// to the second.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// How long a retired connection may go on carrying the requests it had.
const RETIRE_GRACE: Duration = Duration::from_secs(30);
/// How long a peer has to start answering a request (its response head).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;
type RequestStream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;
/// The sending half of a stream to a peer.
pub(crate) type SendHalf = Probed<h3::client::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>>;
/// The receiving half of a stream from a peer.
pub(crate) type RecvHalf = h3::client::RequestStream<h3_quinn::RecvStream, Bytes>;

/// The most connections kept to one peer, whatever the number of workers.
pub(crate) const MAX_LANES: usize = 8;
/// For a request that has no lane of its own (off the workers, on a worker past the eighth, or
/// its worker's lane down): the streams a lane takes before new ones go to the next. Lanes
/// fill in order, as an HTTP/2 connection pool fills a connection before using the next.
const LANE_STREAMS_BEFORE_NEXT: u64 = 16;

/// An endpoint that dials peers, and the worker its driver runs on, where the connections it
/// dials run too.
#[derive(Clone, Debug)]
pub(crate) struct Dialer {
    /// The endpoint, on an ephemeral port of its own.
    pub(crate) endpoint: quinn::Endpoint,
    /// The worker's runtime.
    pub(crate) worker: tokio::runtime::Handle,
}

/// One peer gateway, and the connections to it.
#[derive(Debug)]
pub(crate) struct PeerClient {
    name: Label,
    address: SocketAddr,
    server_name: String,
    /// The endpoints lanes dial from, lane `i` from the `i`th: each worker's own, whose driver
    /// runs on that worker beside the lane's connection. Taken away at shutdown, so that the
    /// sockets close even if a task still holds this client.
    dialers: std::sync::Mutex<Option<Arc<[Dialer]>>>,
    /// Replaced whole when the SVID or trust changes; read at each connect.
    config: std::sync::RwLock<quinn::ClientConfig>,
    /// The connections to the peer, each dialled and kept open by a keeper of its own.
    /// A request takes its worker's own lane, and others fill them in order
    /// ([`PeerClient::next_lane`]): one QUIC connection is driven
    /// by one task, so one connection's packet work runs on one thread at a time, and a busy
    /// peer needs a connection per worker to keep them all working.
    lanes: Box<[Lane]>,
    /// Turns among lanes, for the one to dial when none is live.
    next: AtomicUsize,
    /// When a connect last failed, cleared by the next that succeeds. Within
    /// [`FAILURE_HOLD_DOWN`] of it, requests that find no live connection fail at once.
    failed: std::sync::Mutex<Option<Instant>>,
    stats: Arc<Stats>,
    /// Streams open to the peer now: requests until their response body ends, tunnels
    /// until they close.
    open_streams: Arc<AtomicU64>,
}

/// Counts a stream as open, to the peer and on its lane, until dropped.
#[derive(Debug)]
pub(crate) struct OpenStream([Arc<AtomicU64>; 2]);

impl OpenStream {
    fn new(peer: &Arc<AtomicU64>, lane: &Lane) -> OpenStream {
        let counts = [peer.clone(), lane.open_streams.clone()];
        for count in &counts {
            count.fetch_add(1, Ordering::Relaxed);
        }
        OpenStream(counts)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        for count in &self.0 {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One connection to the peer, when there is one.
#[derive(Debug, Default)]
struct Lane {
    /// Which lane this is: it dials from the dialer of the same index.
    index: usize,
    /// Read on every request without waiting: a plain lock held only to clone a handle, never
    /// across an await.
    live: std::sync::RwLock<Option<Live>>,
    /// Held across a handshake, so that concurrent requests (and the keeper) share one connect.
    dialing: Mutex<()>,
    /// Signalled when the lane's connection is retired, so that its keeper dials anew at once
    /// rather than when the retired connection finally closes.
    retired: tokio::sync::Notify,
    /// Streams open on the lane (on its connection, and on retired ones still finishing).
    open_streams: Arc<AtomicU64>,
}

impl Lane {
    /// Whether the lane has an open connection.
    fn is_live(&self) -> bool {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.as_ref()
            .is_some_and(|live| live.connection.close_reason().is_none())
    }

    /// A handle on the lane's connection, if it is open.
    fn current(&self) -> Option<Live> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.as_ref()
            .filter(|live| live.connection.close_reason().is_none())
            .cloned()
    }
}

/// A lane's connection: handles on it, cheap to clone.
#[derive(Clone)]
struct Live {
    connection: quinn::Connection,
    requests: SendRequest,
    probe: TailProbe,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("connection", &self.connection.stable_id())
            .finish_non_exhaustive()
    }
}

impl PeerClient {
    /// A client for the peer `name` at `address` that keeps a connection to it from each of
    /// `dialers` (at most [`MAX_LANES`]; at least one lane, even with none, which then cannot
    /// dial) once [`PeerClient::keep_connected`] runs for each.
    pub(crate) fn new(
        name: Label,
        address: SocketAddr,
        server_name: String,
        dialers: Arc<[Dialer]>,
        config: quinn::ClientConfig,
        stats: Arc<Stats>,
    ) -> Self {
        let lanes = dialers.len().clamp(1, MAX_LANES);
        PeerClient {
            name,
            address,
            server_name,
            dialers: std::sync::Mutex::new(Some(dialers)),
            config: std::sync::RwLock::new(config),
            lanes: (0..lanes)
                .map(|index| Lane {
                    index,
                    ..Lane::default()
                })
                .collect(),
            next: AtomicUsize::new(0),
            failed: std::sync::Mutex::new(None),
            stats,
            open_streams: Arc::default(),
        }
    }

    /// How many connections this client keeps to the peer.
    pub(crate) fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// The peer gateway's federation address.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// How many streams are open to the peer now.
    pub(crate) fn open_streams(&self) -> u64 {
        self.open_streams.load(Ordering::Relaxed)
    }

    /// Sends `request` for `service` (on `port`, if the client named one) to this peer and
    /// returns its response, whose body streams.
    pub(crate) async fn forward(
        &self,
        request: Request<Body>,
        service: &ServiceKey,
        port: Option<u16>,
    ) -> Result<Response<Body>, Reason> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(Scheme::HTTPS)
            .authority(wire::authority(service, port))
            .path_and_query(path)
            .build()
            .map_err(|_| Reason::UnknownService)?;
        parts.version = Version::HTTP_3;
        parts.headers.remove(header::HOST);
        // Boxed: opening (dialling, if need be) is a large future, and so would this be.
        let (stream, lane, probe) = Box::pin(self.open_retrying(&parts)).await?;
        let open = OpenStream::new(&self.open_streams, lane);
        let (send, mut recv) = stream.split();
        let mut send = Probed::new(send, probe);
        if body.is_end_stream() {
            // No body (most GETs): finish the stream here rather than spawn a pump for nothing.
            if let Err(error) = send.finish().await {
                tracing::debug!(%error, "could not finish the request stream");
            }
        } else {
            tokio::spawn(
                async move {
                    if let Err(error) = body::send_to_h3(body, send).await {
                        tracing::debug!(%error, "request body to peer failed");
                    }
                }
                .in_current_span(),
            );
        }
        let response = tokio::time::timeout(RESPONSE_TIMEOUT, recv.recv_response())
            .await
            .map_err(|_| {
                // Returning drops the stream, which stops it (no explicit stop_sending: a read
                // is pending inside h3-quinn, and it panics on one then).
                tracing::debug!(timeout = ?RESPONSE_TIMEOUT, "no response head from peer in time");
                Reason::PeerStreamFailed
            })?
            .map_err(|error| {
                tracing::debug!(%error, "no response from peer");
                Reason::PeerStreamFailed
            })?;
        let (parts, ()) = response.into_parts();
        let body = body::guarded(body::from_h3(recv), open);
        Ok(Response::from_parts(parts, body))
    }

    /// Opens a TCP tunnel to `service`'s port `port` at this peer: an HTTP/3 `CONNECT` stream,
    /// ready for bytes once the peer has answered 200, counted open while the guard lives.
    pub(crate) async fn connect_tcp(
        &self,
        service: &ServiceKey,
        port: u16,
        origin: Option<&meshfed_trust::SpiffeId>,
    ) -> Result<(SendHalf, RecvHalf, OpenStream), Reason> {
        let authority = wire::authority(service, Some(port));
        let uri = Uri::builder()
            .authority(authority)
            .build()
            .map_err(|_| Reason::UnknownService)?;
        let (mut parts, ()) = Request::connect(uri)
            .body(())
            .map_err(|_| Reason::UnknownService)?
            .into_parts();
        parts.version = Version::HTTP_3;
        if let Some(origin) =
            origin.and_then(|id| http::HeaderValue::from_str(&id.to_string()).ok())
        {
            parts.headers.insert(wire::ORIGIN, origin);
        }
        let (mut stream, lane, probe) = self.open_retrying(&parts).await?;
        let open = OpenStream::new(&self.open_streams, lane);
        let response = tokio::time::timeout(RESPONSE_TIMEOUT, stream.recv_response())
            .await
            .map_err(|_| Reason::PeerStreamFailed)?
            .map_err(|error| {
                tracing::debug!(%error, "no answer to CONNECT from peer");
                Reason::PeerStreamFailed
            })?;
        if !response.status().is_success() {
            let reason = response
                .headers()
                .get(crate::reason::ERROR_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(Reason::from_code)
                .unwrap_or(Reason::PeerStreamFailed);
            tracing::debug!(status = %response.status(), %reason, "peer refused the tunnel");
            return Err(reason);
        }
        let (send, recv) = stream.split();
        Ok((Probed::new(send, probe), recv, open))
    }

    /// Opens a stream for a request with head `parts`, on the lane [`PeerClient::next_lane`]
    /// picks.
    /// A request the peer refused before reading it (it sent GOAWAY, or the connection had just
    /// died) is safe to send again, once: on a fresh connection dialled in the same lane, not
    /// on another live one, which a draining peer has most likely sent GOAWAY on too.
    async fn open_retrying(
        &self,
        parts: &http::request::Parts,
    ) -> Result<(RequestStream, &Lane, TailProbe), Reason> {
        let lane = self.next_lane().await?;
        let (stream, probe) = match self.open(lane, head(parts)).await {
            Err(Reason::PeerStreamFailed) => self.open(lane, head(parts)).await,
            opened => opened,
        }?;
        Ok((stream, lane, probe))
    }

    /// Opens a request stream on `lane`'s connection, dialling one if it has none. If the
    /// connection refuses the stream, it is retired (left to finish what it carries).
    async fn open(
        &self,
        lane: &Lane,
        head: Request<()>,
    ) -> Result<(RequestStream, TailProbe), Reason> {
        let Live {
            connection,
            mut requests,
            probe,
        } = self.live_or_connect(lane, true).await?;
        match requests.send_request(head).await {
            Ok(stream) => Ok((stream, probe)),
            Err(error) => {
                tracing::debug!(%error, "peer refused the stream; retiring the connection");
                self.retire(connection.stable_id());
                Err(Reason::PeerStreamFailed)
            }
        }
    }

    /// The lane for the next stream:
    ///
    /// - this worker's own lane (lane `i` is kept from worker `i`, and its connection runs
    ///   there), if it is live: a request then never leaves its thread;
    /// - else the first live lane (in order) with fewer than [`LANE_STREAMS_BEFORE_NEXT`]
    ///   streams open, else the live lane with the fewest;
    /// - with none live, the next lane in turn, once it has dialled (or the dial under way has
    ///   ended).
    async fn next_lane(&self) -> Result<&Lane, Reason> {
        if let Some(own) = Workers::current().and_then(|worker| self.lanes.get(worker))
            && own.is_live()
        {
            return Ok(own);
        }
        let mut least: Option<(&Lane, u64)> = None;
        for lane in self.lanes.iter().filter(|lane| lane.is_live()) {
            let open = lane.open_streams.load(Ordering::Relaxed);
            if open < LANE_STREAMS_BEFORE_NEXT {
                return Ok(lane);
            }
            if least.is_none_or(|(_, fewest)| open < fewest) {
                least = Some((lane, open));
            }
        }
        if let Some((lane, _)) = least {
            return Ok(lane);
        }
        let lane = &self.lanes[self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len()];
        self.live_or_connect(lane, true).await?;
        Ok(lane)
    }

    /// Stops using the connection `id` for new requests. It stays open for what it carries,
    /// until the peer closes it or [`RETIRE_GRACE`] has passed.
    pub(crate) fn retire(&self, id: usize) {
        let Some(retired) = self.lanes.iter().find_map(|lane| {
            let mut live = lane.live.write().unwrap_or_else(|e| e.into_inner());
            let retired = match &*live {
                Some(current) if current.connection.stable_id() == id => live.take(),
                _ => None,
            };
            if retired.is_some() {
                lane.retired.notify_one();
            }
            retired
        }) else {
            return;
        };
        tokio::spawn(async move {
            if tokio::time::timeout(RETIRE_GRACE, retired.connection.closed())
                .await
                .is_err()
            {
                retired
                    .connection
                    .close(super::server::CLOSE_NO_ERROR.into(), b"retired");
            }
            drop(retired);
        });
    }

    /// `lane`'s live connection, or a new one. Only one handshake per lane is in progress at
    /// a time; a request that finds none live waits for it. With `hold_down` (requests, not
    /// keepers, which have their own backoff), fails at once within [`FAILURE_HOLD_DOWN`] of a
    /// failed connect on any lane instead.
    async fn live_or_connect(&self, lane: &Lane, hold_down: bool) -> Result<Live, Reason> {
        if let Some(handle) = lane.current() {
            return Ok(handle);
        }
        let _dialing = lane.dialing.lock().await;
        // Another task may have connected while this one waited.
        if let Some(handle) = lane.current() {
            return Ok(handle);
        }
        if hold_down
            && self
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|at| at.elapsed() < FAILURE_HOLD_DOWN)
        {
            return Err(Reason::PeerUnavailable);
        }
        // Boxed: the handshake's future is large and rarely needed, and every request's future
        // would otherwise carry room for it.
        match Box::pin(self.connect(lane.index)).await {
            Ok(live) => {
                let handle = live.clone();
                *lane.live.write().unwrap_or_else(|e| e.into_inner()) = Some(live);
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Ok(handle)
            }
            Err(error) => {
                tracing::info!(peer.cluster = %self.name, peer.addr = %self.address, %error, "cannot connect to peer");
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                Err(Reason::PeerUnavailable)
            }
        }
    }

    /// Keeps connection `lane` (of [`PeerClient::lanes`]) to the peer open until `shutdown`:
    /// dials at once, and again whenever the connection is lost or retired, backing off
    /// exponentially (with jitter) while the peer cannot be reached. Requests never wait for
    /// the keeper; they use what it opened.
    pub(crate) async fn keep_connected(&self, lane: usize, shutdown: CancellationToken) {
        let Some(lane) = self.lanes.get(lane) else {
            return;
        };
        let mut backoff = RECONNECT_MIN;
        loop {
            let wait = match self.live_or_connect(lane, false).await {
                Ok(Live { connection, .. }) => {
                    backoff = RECONNECT_MIN;
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = connection.closed() => {}
                        () = lane.retired.notified() => {}
                    }
                    // A connection that closes at once must not make a busy loop.
                    RECONNECT_MIN
                }
                Err(_) => {
                    let wait = jittered(backoff);
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                    wait
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The peer's cluster name.
    pub(crate) fn name(&self) -> &Label {
        &self.name
    }

    /// The open connections to the peer (a closed one stays in its lane until the keeper
    /// dials anew, but is not listed).
    pub(crate) fn connections(&self) -> Vec<quinn::Connection> {
        self.lanes
            .iter()
            .filter_map(|lane| lane.current().map(|live| live.connection))
            .collect()
    }

    /// Gives up the dialers: no connection is made from now on.
    pub(crate) fn release(&self) {
        self.dialers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Uses `config` for connections made from now on.
    pub(crate) fn set_config(&self, config: quinn::ClientConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    async fn connect(&self, lane: usize) -> Result<Live, ConnectError> {
        let config = self
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let dialer = self
            .dialers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|dialers| dialers.get(lane).cloned())
            .ok_or(ConnectError::ShuttingDown)?;
        // quinn spawns the connection's driver on the runtime it is called in: the lane's
        // worker's, whoever dials (its keeper, or a request on another worker that found no
        // live lane), so that the lane's connection always runs beside its dialler.
        let connecting = {
            let _worker = dialer.worker.enter();
            dialer
                .endpoint
                .connect_with(config, self.address, &self.server_name)?
        };
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let (mut driver, requests) = h3::client::builder()
            .max_field_section_size(wire::MAX_FIELD_SECTION_SIZE)
            .build::<_, _, Bytes>(h3_quinn::Connection::new(connection.clone()))
            .await?;
        let peer = self.name.clone();
        let quic = connection.clone();
        let probe = TailProbe::default();
        let prober = probe.clone();
        dialer.worker.spawn(async move {
            let error = tokio::select! {
                error = driver.wait_idle() => error,
                () = prober.run(&quic) => return, // never: it probes for as long as it is polled
            };
            let path = quic.stats().path;
            tracing::debug!(
                peer.cluster = %peer,
                %error,
                rtt = ?path.rtt,
                sent_packets = path.sent_packets,
                lost_packets = path.lost_packets,
                "peer connection closed"
            );
        });
        self.stats
            .peer_connections_opened
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer.cluster = %self.name, peer.addr = %self.address, "connected to peer");
        Ok(Live {
            connection,
            requests,
            probe,
        })
    }
}

/// A copy of a request head, to send it a second time.
fn head(parts: &http::request::Parts) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = parts.method.clone();
    *head.uri_mut() = parts.uri.clone();
    *head.version_mut() = parts.version;
    *head.headers_mut() = parts.headers.clone();
    head
}

/// Why a connection to a peer could not be made.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("cannot start a connection: {0}")]
    Start(#[from] quinn::ConnectError),
    #[error("handshake failed: {0}")]
    Handshake(#[from] quinn::ConnectionError),
    #[error("handshake timed out after {CONNECT_TIMEOUT:?}")]
    Timeout,
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("HTTP/3 setup failed: {0}")]
    H3(#[from] h3::error::ConnectionError),
}

/// `wait` give or take a fifth, so that gateways that lost a peer together do not dial it in
/// lockstep.
pub(crate) fn jittered(wait: Duration) -> Duration {
    use std::hash::{BuildHasher as _, Hasher as _};
    // Each RandomState has fresh keys, so this is a new number each call: no RNG crate needed
    // for a jitter.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    );
    let unit = (hasher.finish() % 1_000) as f64 / 1_000.0; // 0.0 to 1.0
    wait.mul_f64(0.8 + 0.4 * unit)
}
