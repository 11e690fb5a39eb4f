//! The way in from peers: accept QUIC connections, identify the peer by its verified SVID, and
//! serve its HTTP/3 requests from local endpoints of services exported to it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use meshfed_discovery::Label;
use rustls::pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::probe::{Probed, TailProbe};
use super::wire;
use crate::metrics::Direction;
use crate::observe::TcpExchange;
use crate::proxy::body::H3Send as _;
use crate::proxy::{body, tunnel};
use crate::reason::Reason;
use crate::state::{Inbound, PeerRequest, State};
use crate::workers::Workers;

/// QUIC application error code sent when closing a connection from an unknown peer.
const CLOSE_UNKNOWN_PEER: u32 = 0x0101; // H3_GENERAL_PROTOCOL_ERROR
/// Bounds on how long a closing connection waits for its last bytes to be acknowledged.
const LINGER_MIN: Duration = Duration::from_millis(10);
const LINGER_MAX: Duration = Duration::from_secs(1);
/// QUIC application error code sent when a peer opens more connections than it may.
const CLOSE_TOO_MANY_CONNECTIONS: u32 = 0x0107; // H3_EXCESSIVE_LOAD
/// QUIC application error code for an orderly close.
pub(crate) const CLOSE_NO_ERROR: u32 = 0x0100; // H3_NO_ERROR

/// Accepts peers on `endpoint` until `shutdown`. Each connection is accepted on, and served
/// from, the worker carrying the fewest connections: quinn runs a connection's driver on the
/// runtime that accepts it, so the connection, its streams and the HTTP/1.1 and TCP
/// connections they open to endpoints all live on that worker (an HTTP/2 endpoint's
/// connection is shared by every worker).
pub(crate) async fn serve(
    endpoint: quinn::Endpoint,
    state: Arc<State>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    workers: Arc<Workers>,
) {
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        // Address validation (RFC 9000 section 8.1): an Initial without a Retry token gets a
        // Retry, so that a spoofed source address cannot make us send more than it sent, nor
        // hold handshake state. It costs a new connection one round trip; connections between
        // gateways are long-lived.
        if !incoming.remote_address_validated() && incoming.may_retry() {
            state.stats.peer_retries.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = incoming.retry() {
                tracing::debug!(%error, "could not send Retry");
            }
            continue;
        }
        let span = tracing::debug_span!(
            "peer_conn",
            peer.addr = %incoming.remote_address(),
            peer.cluster = tracing::field::Empty,
        );
        let (state, shutdown, tracker) = (state.clone(), shutdown.clone(), tracker.clone());
        let tracked = tracker.token();
        workers.place(move || {
            let connection = connection(incoming, state, shutdown, tracker).instrument(span);
            async move {
                let _tracked = tracked;
                connection.await;
            }
        });
    }
}

async fn connection(
    incoming: quinn::Incoming,
    state: Arc<State>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    // A handshake still going when shutdown begins is abandoned, not waited for.
    let handshake = tokio::select! {
        handshake = incoming.into_future() => handshake,
        () = shutdown.cancelled() => return,
    };
    let connection = match handshake {
        Ok(connection) => connection,
        Err(error) => {
            tracing::info!(%error, "peer handshake failed");
            return;
        }
    };
    let Some(peer) = identify(&connection, &state) else {
        connection.close(CLOSE_UNKNOWN_PEER.into(), b"unknown peer");
        return;
    };
    tracing::Span::current().record("peer.cluster", tracing::field::display(&peer));
    // Cancelled by a trust re-check that finds the peer's certificate no longer good.
    let drain = CancellationToken::new();
    let Some(_registered) = state.register(Inbound {
        peer: peer.clone(),
        connection: connection.clone(),
        drain: drain.clone(),
    }) else {
        tracing::info!(peer.cluster = %peer, limit = crate::state::MAX_INBOUND_PER_PEER, "refusing a connection: the peer has as many open as it may");
        connection.close(CLOSE_TOO_MANY_CONNECTIONS.into(), b"too many connections");
        return;
    };
    state
        .stats
        .peer_connections_accepted
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(peer.cluster = %peer, "peer connected");

    let quic = connection.clone();
    let h3 = h3::server::builder()
        .max_field_section_size(wire::MAX_FIELD_SECTION_SIZE)
        .build::<_, Bytes>(h3_quinn::Connection::new(connection))
        .await;
    let mut h3 = match h3 {
        Ok(h3) => h3,
        Err(error) => {
            tracing::info!(peer.cluster = %peer, %error, "HTTP/3 setup with peer failed");
            return;
        }
    };
    let probe = TailProbe::default();
    tokio::select! {
        () = accept_requests(&mut h3, &peer, &state, &probe, (&shutdown, &drain), &tracker) => {}
        () = probe.run(&quic) => {} // never: it probes for as long as it is polled
    }
    linger(&quic).await;
}

/// Serves `peer`'s requests on `h3` until the connection ends, or until shutdown or a drain
/// (GOAWAY, then the requests already sent) has finished.
async fn accept_requests(
    h3: &mut h3::server::Connection<h3_quinn::Connection, Bytes>,
    peer: &Label,
    state: &Arc<State>,
    probe: &TailProbe,
    (shutdown, drain): (&CancellationToken, &CancellationToken),
    tracker: &TaskTracker,
) {
    // This connection's requests, so that shutdown can wait for exactly them.
    let requests = TaskTracker::new();
    let mut draining = false;
    loop {
        let accepted = tokio::select! {
            accepted = h3.accept() => accepted,
            () = first(shutdown, drain), if !draining => {
                // GOAWAY: the peer opens no new requests; every request up to the last one
                // accepted is served. Keep accepting meanwhile, for requests already on their way.
                draining = true;
                if let Err(error) = h3.shutdown(1).await {
                    tracing::debug!(%error, "could not send GOAWAY");
                }
                requests.close();
                continue;
            }
            () = requests.wait(), if draining => break,
        };
        match accepted {
            Ok(Some(resolver)) => {
                // The task holds only the resolver: the request's future (a few KB) is made
                // on the heap when it first runs, not copied into the task's cell.
                let (peer, state, probe) = (peer.clone(), state.clone(), probe.clone());
                let request = async move { Box::pin(request(resolver, peer, state, probe)).await }
                    .in_current_span();
                tracker.spawn(requests.track_future(request));
            }
            Ok(None) => break,
            Err(error) => {
                if !error.is_h3_no_error() {
                    tracing::debug!(%error, "peer connection ended");
                }
                break;
            }
        }
    }
    requests.close();
    requests.wait().await;
}

/// Resolves when either token is cancelled.
async fn first(a: &CancellationToken, b: &CancellationToken) {
    tokio::select! {
        () = a.cancelled() => {}
        () = b.cancelled() => {}
    }
}

/// Dropping the HTTP/3 connection closes the QUIC connection, and closing discards data not yet
/// sent. Give the last response bytes a few round trips to be delivered and acknowledged first,
/// unless the peer closes sooner.
async fn linger(connection: &quinn::Connection) {
    let linger = (connection.rtt() * 3).clamp(LINGER_MIN, LINGER_MAX);
    let _ = tokio::time::timeout(linger, connection.closed()).await;
}

async fn request(
    resolver: h3::server::RequestResolver<h3_quinn::Connection, Bytes>,
    peer: Label,
    state: Arc<State>,
    probe: TailProbe,
) {
    // Boxed: h3's future is large, and this one is copied whole into its task when spawned.
    let (request, stream) = match Box::pin(resolver.resolve_request()).await {
        Ok(resolved) => resolved,
        Err(error) => {
            tracing::debug!(%error, "malformed request from peer");
            return;
        }
    };
    if request.method() == http::Method::CONNECT {
        // Boxed: a tunnel's future is large, and requests would carry room for it.
        return Box::pin(tunnel(request, stream, &peer, &state, probe)).await;
    }
    let (mut send, recv) = stream.split();
    let response = state.serve_peer(request, recv, &peer).await;
    let (parts, body) = response.into_parts();
    if let Err(error) = send.send_response(Response::from_parts(parts, ())).await {
        tracing::debug!(%error, "could not send response head to peer");
        return;
    }
    if let Err(error) = body::send_to_h3(body, Probed::new(send, probe)).await {
        tracing::debug!(%error, "response body to peer failed");
    }
}

/// Serves a `CONNECT` from `peer`: a TCP connection to an endpoint of the service's TCP port
/// the `:authority` names, answered 200 once connected and then spliced to the stream.
async fn tunnel(
    request: http::Request<()>,
    stream: h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
    peer: &Label,
    state: &State,
    probe: TailProbe,
) {
    state.stats.peer_requests.fetch_add(1, Ordering::Relaxed);
    let target = request
        .uri()
        .authority()
        .and_then(|a| wire::service_of(a.as_str()));
    let mut exchange = target
        .as_ref()
        .map(|(service, _)| TcpExchange::begin(Direction::Inbound, service.clone(), peer.clone()));
    let connected = match &target {
        Some((service, Some(port))) => match state.exported_to(service, peer).and_then(|()| {
            let access = PeerRequest {
                service,
                port: *port,
                method: request.method(),
                path: None,
            };
            state.authorize(peer, request.headers(), &access)
        }) {
            Ok(_) => {
                if let Some(exchange) = &mut exchange {
                    exchange.destination_cluster = Some(state.cluster().clone());
                    exchange.opened(state);
                }
                match state.tcp_endpoints(service, *port) {
                    Ok(endpoints) => tunnel::connect(&endpoints).await,
                    Err(reason) => Err(reason),
                }
            }
            Err(reason) => Err(reason),
        },
        // A CONNECT names a port; without one it names no TCP service.
        _ => Err(Reason::UnknownService),
    };
    let (mut send, recv) = stream.split();
    let upstream = match connected {
        Ok(upstream) => upstream,
        Err(reason) => {
            tracing::debug!(%reason, "tunnel refused");
            if let Some(exchange) = exchange {
                exchange.finish(state, (0, 0), Some(reason));
            }
            let (parts, _) = reason.response().into_parts();
            if send
                .send_response(Response::from_parts(parts, ()))
                .await
                .is_ok()
            {
                let _ = Probed::new(send, probe).finish().await;
            }
            return;
        }
    };
    // Connected means a service was named.
    let Some(exchange) = exchange else { return };
    if let Err(error) = send.send_response(Response::new(())).await {
        tracing::debug!(%error, "could not answer the tunnel");
        exchange.finish(state, (0, 0), Some(Reason::PeerStreamFailed));
        return;
    }
    match tunnel::splice(upstream, Probed::new(send, probe), recv).await {
        Ok(carried) => {
            tracing::debug!(
                sent = carried.sent,
                received = carried.received,
                "tunnel done"
            );
            // Seen from the client: what it sent came in on the stream.
            exchange.finish(state, (carried.received, carried.sent), None);
        }
        Err(error) => {
            tracing::debug!(%error, "tunnel failed");
            exchange.finish(state, (0, 0), Some(Reason::PeerStreamFailed));
        }
    }
}

/// The configured peer this connection's verified SVID belongs to.
fn identify(connection: &quinn::Connection, state: &State) -> Option<Label> {
    let chain = connection
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    state.identify_peer(&chain)
}
