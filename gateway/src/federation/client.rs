//! The way out to one peer: one long-lived QUIC connection, reused by every request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version, header};
use meshfed_discovery::{Label, ServiceKey};
use tokio::sync::Mutex;
use tracing::Instrument;

use super::wire;
use crate::proxy::body::{self, Body};
use crate::reason::Reason;
use crate::stats::Stats;

/// A handshake that takes longer than this fails, so that a dead peer gives a fast 503.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed connect, requests fail at once for this long instead of each waiting for a
/// handshake of its own.
const FAILURE_HOLD_DOWN: Duration = Duration::from_secs(1);

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// One peer gateway, and the connection to it when there is one.
#[derive(Debug)]
pub(crate) struct PeerClient {
    name: Label,
    address: SocketAddr,
    server_name: String,
    endpoint: quinn::Endpoint,
    /// Replaced whole when the SVID or trust changes; read at each connect.
    config: std::sync::RwLock<quinn::ClientConfig>,
    session: Mutex<Session>,
    stats: Arc<Stats>,
}

#[derive(Debug, Default)]
struct Session {
    live: Option<Live>,
    last_failure: Option<Instant>,
}

struct Live {
    connection: quinn::Connection,
    requests: SendRequest,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("connection", &self.connection.stable_id())
            .finish_non_exhaustive()
    }
}

impl PeerClient {
    pub(crate) fn new(
        name: Label,
        address: SocketAddr,
        server_name: String,
        endpoint: quinn::Endpoint,
        config: quinn::ClientConfig,
        stats: Arc<Stats>,
    ) -> Self {
        PeerClient {
            name,
            address,
            server_name,
            endpoint,
            config: std::sync::RwLock::new(config),
            session: Mutex::new(Session::default()),
            stats,
        }
    }

    /// Sends `request` for `service` to this peer and returns its response, whose body streams.
    pub(crate) async fn forward(
        &self,
        request: Request<Body>,
        service: &ServiceKey,
    ) -> Result<Response<Body>, Reason> {
        let mut requests = self.requests().await?;
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(Scheme::HTTPS)
            .authority(wire::authority(service))
            .path_and_query(path)
            .build()
            .map_err(|_| Reason::UnknownService)?;
        parts.version = Version::HTTP_3;
        parts.headers.remove(header::HOST);
        let stream = requests
            .send_request(Request::from_parts(parts, ()))
            .await
            .map_err(|error| {
                tracing::debug!(%error, "peer refused the stream");
                Reason::PeerStreamFailed
            })?;
        let (send, mut recv) = stream.split();
        tokio::spawn(
            async move {
                if let Err(error) = body::send_to_h3(body, send).await {
                    tracing::debug!(%error, "request body to peer failed");
                }
            }
            .in_current_span(),
        );
        let response = recv.recv_response().await.map_err(|error| {
            tracing::debug!(%error, "no response from peer");
            Reason::PeerStreamFailed
        })?;
        let (parts, ()) = response.into_parts();
        Ok(Response::from_parts(parts, body::from_h3(recv)))
    }

    /// A handle on the live connection, connecting first if there is none.
    async fn requests(&self) -> Result<SendRequest, Reason> {
        // Held across the handshake, so that concurrent requests share one connect.
        let mut session = self.session.lock().await;
        if let Some(live) = &session.live {
            if live.connection.close_reason().is_none() {
                return Ok(live.requests.clone());
            }
            session.live = None;
        }
        if session
            .last_failure
            .is_some_and(|at| at.elapsed() < FAILURE_HOLD_DOWN)
        {
            return Err(Reason::PeerUnavailable);
        }
        match self.connect().await {
            Ok(live) => {
                let requests = live.requests.clone();
                session.live = Some(live);
                session.last_failure = None;
                Ok(requests)
            }
            Err(error) => {
                tracing::info!(peer.cluster = %self.name, peer.addr = %self.address, %error, "cannot connect to peer");
                session.last_failure = Some(Instant::now());
                Err(Reason::PeerUnavailable)
            }
        }
    }

    /// Uses `config` for connections made from now on.
    pub(crate) fn set_config(&self, config: quinn::ClientConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    async fn connect(&self) -> Result<Live, ConnectError> {
        let config = self
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let connecting = self
            .endpoint
            .connect_with(config, self.address, &self.server_name)?;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let (mut driver, requests) = h3::client::builder()
            .max_field_section_size(wire::MAX_FIELD_SECTION_SIZE)
            .build::<_, _, Bytes>(h3_quinn::Connection::new(connection.clone()))
            .await?;
        let peer = self.name.clone();
        tokio::spawn(async move {
            let error = driver.wait_idle().await;
            tracing::debug!(peer.cluster = %peer, %error, "peer connection closed");
        });
        self.stats
            .peer_connections_opened
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer.cluster = %self.name, peer.addr = %self.address, "connected to peer");
        Ok(Live {
            connection,
            requests,
        })
    }
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
    #[error("HTTP/3 setup failed: {0}")]
    H3(#[from] h3::error::ConnectionError),
}
