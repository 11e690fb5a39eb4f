//! The federation port over TCP: the control channel and the bundle endpoint, told apart by
//! the ALPN protocol a client offers.
//!
//! The control channel is gRPC (HTTP/2) over TLS 1.3 with mutual authentication and ALPN
//! `meshfed-control/1`: each side presents its gateway SVID, verified against its own trust
//! domain's roots, exactly as on QUIC. It carries the catalog exchange
//! ([`meshfed_discovery::exchange`]): we serve each peer the catalog exported to it, and follow
//! each peer's. A client offering any other protocol (or none) is a bundle fetcher, served by
//! the bundle endpoint if this gateway has one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use meshfed_discovery::Label;
use meshfed_discovery::exchange::proto::WatchCatalogRequest;
use meshfed_discovery::exchange::proto::federation_client::FederationClient;
use meshfed_discovery::exchange::proto::federation_server::FederationServer;
use meshfed_discovery::exchange::{Caller, CatalogService, Limits, follow};
use meshfed_trust::verify::Rejections;
use meshfed_trust::{Svid, TrustStore, tls};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

// Dialling a peer, and then starting the watch, each get as long as a QUIC handshake.
use super::client::{CONNECT_TIMEOUT, jittered};
use crate::bundles::endpoint::{CLIENT_TIMEOUT, Published, serve_client};
use crate::catalogs::Catalogs;
use crate::config::Peer;
use crate::credentials::gateway_id_of;
use crate::mover::Mover;

use super::moves;
use crate::state::State;

/// The path prefix of the moves service on the control channel.
const MOVES_PATH: &str = "/meshfed.federation.v1.Moves/";

/// How soon a broken follow of a peer's splits is tried again (the catalog watch goes on).
const SPLITS_RETRY: Duration = Duration::from_secs(1);

/// The control channel's ALPN protocol.
pub const ALPN: &[u8] = b"meshfed-control/1";
/// HTTP/2 pings on a control connection: a peer that stops answering is given up after the
/// interval and the timeout, and its services leave the routes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Redialling a peer: from the first delay, doubling, to the last; jittered.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_LAST: Duration = Duration::from_secs(5);
/// A watch that lasted this long was healthy: the next failure starts the backoff over.
const HEALTHY_WATCH: Duration = Duration::from_secs(10);
/// A watch up this long that breaks is followed again at once, its catalog kept; one that
/// breaks sooner counts as a failure (so that a broken peer cannot make us spin).
const SETTLED_WATCH: Duration = Duration::from_secs(5);

/// The control channel's TLS configurations, rebuilt whole with the QUIC ones on every
/// credential or trust change.
#[derive(Debug)]
pub(crate) struct ControlTls {
    server: RwLock<Arc<ServerConfig>>,
    clients: RwLock<BTreeMap<Label, Arc<ClientConfig>>>,
}

/// Configurations built from one SVID and trust store, not yet in use.
#[derive(Debug)]
pub(crate) struct ControlConfigs {
    server: Arc<ServerConfig>,
    clients: BTreeMap<Label, Arc<ClientConfig>>,
}

impl ControlConfigs {
    /// The server side and a client side towards each of `peers`, as for QUIC (`tls.rs`).
    pub(crate) fn build(
        svid: &Svid,
        trust: &Arc<TrustStore>,
        peers: &[Peer],
        rejections: &Arc<Rejections>,
    ) -> Result<Self, tls::TlsError> {
        let server = Arc::new(tls::server_config(svid, trust, &[ALPN], rejections)?);
        let mut clients = BTreeMap::new();
        for peer in peers {
            let id = gateway_id_of(&peer.trust_domain, &peer.name);
            let config = tls::client_config(
                svid,
                trust.clone(),
                peer.trust_domain.clone(),
                Some(id),
                &[ALPN],
                rejections,
            )?;
            clients.insert(peer.name.clone(), Arc::new(config));
        }
        Ok(ControlConfigs { server, clients })
    }
}

impl ControlTls {
    pub(crate) fn new(configs: ControlConfigs) -> Self {
        ControlTls {
            server: RwLock::new(configs.server),
            clients: RwLock::new(configs.clients),
        }
    }

    /// Uses `configs` for every handshake from now on; connections up keep theirs.
    pub(crate) fn set(&self, configs: ControlConfigs) {
        *self.server.write().unwrap_or_else(|e| e.into_inner()) = configs.server;
        *self.clients.write().unwrap_or_else(|e| e.into_inner()) = configs.clients;
    }

    fn server(&self) -> Arc<ServerConfig> {
        self.server
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn client(&self, peer: &Label) -> Option<Arc<ClientConfig>> {
        self.clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .cloned()
    }
}

/// What the federation port serves over TCP.
pub(crate) struct Served {
    pub(crate) catalogs: Arc<Catalogs>,
    pub(crate) mover: Arc<Mover>,
    pub(crate) bundle: Option<Arc<Published>>,
}

/// Serves the federation port over TCP until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    control: Arc<ControlTls>,
    served: Served,
    shutdown: CancellationToken,
) {
    let service = CatalogService::new(served.catalogs.exported());
    let moves = moves::server(served.mover);
    while let Some((stream, remote)) = crate::proxy::serve::accept(&listener, &shutdown).await {
        let client = Client {
            state: state.clone(),
            control: control.clone(),
            service: service.clone(),
            moves: moves.clone(),
            bundle: served.bundle.clone(),
        };
        let span = tracing::debug_span!("federation_tcp", client.addr = %remote);
        tokio::spawn(client.serve(stream, shutdown.clone()).instrument(span));
    }
}

/// One accepted TCP connection and what it may be served.
struct Client {
    state: Arc<State>,
    control: Arc<ControlTls>,
    service: CatalogService,
    moves: moves::proto::moves_server::MovesServer<moves::MovesService>,
    bundle: Option<Arc<Published>>,
}

impl Client {
    async fn serve(self, stream: TcpStream, shutdown: CancellationToken) {
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
        let start = match tokio::time::timeout(CLIENT_TIMEOUT, acceptor).await {
            Ok(Ok(start)) => start,
            Ok(Err(error)) => return tracing::debug!(%error, "no TLS ClientHello"),
            Err(_) => return tracing::debug!("no TLS ClientHello in time"),
        };
        let control = start
            .client_hello()
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ALPN));
        if !control {
            match &self.bundle {
                Some(bundle) => serve_client(start, bundle).await,
                None => tracing::debug!("not a control client, and no bundle endpoint here"),
            }
            return;
        }
        let handshake = start.into_stream(self.control.server());
        let stream = match tokio::time::timeout(CLIENT_TIMEOUT, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return tracing::debug!(%error, "control handshake failed"),
            Err(_) => return tracing::debug!("control handshake too slow"),
        };
        let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
        let Some(peer) = self.state.identify_peer(chain) else {
            return;
        };
        tracing::debug!(peer.cluster = %peer, "control channel open");
        let grpc = FederationServer::new(self.service);
        let moves = self.moves;
        // Two services on one connection, told apart by path (gRPC routes by path anyway).
        let service =
            hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(Caller(peer.clone()));
                let (mut grpc, mut moves) = (grpc.clone(), moves.clone());
                async move {
                    if request.uri().path().starts_with(MOVES_PATH) {
                        tower_service::Service::call(&mut moves, request).await
                    } else {
                        tower_service::Service::call(&mut grpc, request).await
                    }
                }
            });
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .max_concurrent_streams(16);
        let connection = http2.serve_connection(TokioIo::new(stream), service);
        // Watches never end by themselves: at shutdown the connection is dropped, and the
        // peer takes our catalog out of its routes at once.
        tokio::select! {
            () = shutdown.cancelled() => {}
            result = connection => if let Err(error) = result {
                tracing::debug!(%error, "control connection ended");
            },
        }
    }
}

/// Follows `peer`'s catalog until `shutdown`: dials its federation port over TCP, watches, and
/// dials again when the watch ends. A watch that breaks is retried at once, the catalog kept
/// meanwhile, so that a stream lost to a passing hiccup (a keepalive missed on a busy host)
/// does not take the peer's services away; only a peer that cannot be reached is marked lost
/// (nothing is routed to it), and then redialled with backoff.
pub(crate) async fn follow_peer(
    peer: Label,
    address: SocketAddr,
    control: Arc<ControlTls>,
    (catalogs, mover): (Arc<Catalogs>, Arc<Mover>),
    shutdown: CancellationToken,
) {
    let limits = Limits::default();
    let mut delay = RETRY_FIRST;
    loop {
        let started = Instant::now();
        let watch = watch_once(&peer, address, &control, (&catalogs, &mover), &limits);
        let ended = tokio::select! {
            () = shutdown.cancelled() => return,
            ended = watch => ended,
        };
        if started.elapsed() >= HEALTHY_WATCH {
            delay = RETRY_FIRST;
        }
        match ended {
            Ended::Broke(error) if started.elapsed() >= SETTLED_WATCH => {
                tracing::debug!(peer.cluster = %peer, %error, "catalog stream broke; following again");
                continue;
            }
            Ended::Broke(error) | Ended::Unreachable(error) => {
                catalogs.lose_peer(&peer);
                mover.lose_peer(&peer);
                tracing::debug!(peer.cluster = %peer, %error, retry_in = ?delay, "peer catalog lost");
            }
        }
        let pause = jittered(delay);
        delay = (delay * 2).min(RETRY_LAST);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Why a watch ended.
enum Ended {
    /// The peer could not be reached, or refused the watch.
    Unreachable(String),
    /// The watch was up and its stream broke.
    Broke(String),
}

/// One watch of `peer`'s catalog; returns why it ended.
async fn watch_once(
    peer: &Label,
    address: SocketAddr,
    control: &ControlTls,
    (catalogs, mover): (&Catalogs, &Mover),
    limits: &Limits,
) -> Ended {
    let Some(config) = control.client(peer) else {
        return Ended::Unreachable("no TLS configuration for this peer".to_owned());
    };
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{address}")) {
        Ok(endpoint) => endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true),
        Err(error) => return Ended::Unreachable(error.to_string()),
    };
    let connector = Connector {
        address,
        config,
        name: peer.to_string(),
    };
    let channel = match endpoint.connect_with_connector(connector).await {
        Ok(channel) => channel,
        Err(error) => return Ended::Unreachable(format!("cannot connect: {error}")),
    };
    let mut client = FederationClient::new(channel.clone());
    let call = tokio::time::timeout(
        CONNECT_TIMEOUT,
        client.watch_catalog(WatchCatalogRequest {}),
    );
    let mut stream = match call.await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return Ended::Unreachable(format!("refused: {status}")),
        Err(_) => return Ended::Unreachable("no answer to the watch".to_owned()),
    };
    tracing::debug!(peer.cluster = %peer, "following the peer's catalog");
    let catalog = follow(&mut stream, peer, limits, |catalog| {
        catalogs.set_peer(peer, catalog);
    });
    // The peer's splits and our reports to it ride the same connection; if they fail (a peer
    // without moves, say), the catalog is still followed, and the splits tried again.
    let splits = async {
        loop {
            let why = moves::follow(peer, channel.clone(), mover).await;
            tracing::debug!(peer.cluster = %peer, %why, "following the peer's splits again shortly");
            tokio::time::sleep(jittered(SPLITS_RETRY)).await;
        }
    };
    tokio::select! {
        error = catalog => Ended::Broke(error.to_string()),
        never = splits => never,
    }
}

/// Dials a peer's federation port over TCP and completes the control channel's TLS handshake.
#[derive(Clone)]
struct Connector {
    address: SocketAddr,
    config: Arc<ClientConfig>,
    name: String,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let Connector {
            address,
            config,
            name,
        } = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(address).await?;
            let _ = tcp.set_nodelay(true);
            // The verifier checks the peer's SPIFFE ID; the name only has to be well formed.
            let name = ServerName::try_from(name).map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
