//! Serving HTTP on a TCP listener, with limits and a graceful end.
//!
//! The local listener takes HTTP/1.1 and cleartext HTTP/2 with prior knowledge (gRPC) on one
//! port, told apart by the connection preface; the admin listener takes HTTP/1.1 only. On
//! shutdown the listener closes at once and connections finish the request in flight (hyper
//! sends `Connection: close`, or GOAWAY). When the grace period ends this returns; connections
//! still open are no longer waited for and end with the process.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::body::Body;
use crate::workers::Workers;

/// A client must send its whole request head within this time (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most an HTTP/1.1 request line and header section may take, in bytes: hyper answers
/// 431 beyond it. Header sections travel on to peers, whose limit is 16 KiB
/// (`federation::wire::MAX_FIELD_SECTION_SIZE`); the local handler checks that.
const MAX_HTTP1_HEAD: usize = 64 * 1024;
/// The most headers an HTTP/1.1 request may have.
const MAX_HTTP1_HEADERS: usize = 100;
/// The largest HTTP/2 header list accepted (decoded), as on the wire between gateways.
const MAX_HTTP2_HEADER_LIST: u32 = 16 * 1024;
/// Concurrent streams one HTTP/2 client may have open.
const MAX_HTTP2_STREAMS: u32 = 1024;
/// Streams a client may reset before we accept them (rapid reset, CVE-2023-44487): past this,
/// the connection is closed with GOAWAY.
const MAX_HTTP2_PENDING_RESETS: usize = 20;
/// HTTP/2 pings find dead clients; one unanswered for this long closes the connection.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed accept (out of file descriptors, say), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Which HTTP versions a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versions {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/1.1, and HTTP/2 with prior knowledge.
    Http1And2,
}

/// Serves `handler` on `listener` until `shutdown` is cancelled, then drains for up to `grace`.
/// Connections are served on the runtime this runs on.
pub async fn serve_http<F, Fut>(
    listener: TcpListener,
    versions: Versions,
    handler: F,
    shutdown: CancellationToken,
    grace: Duration,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = move |request, _client| handler(request);
    serve_http_on(listener, versions, handler, shutdown, grace, None).await;
}

/// As [`serve_http`], with each connection served on one of `workers`, if given, and the
/// handler told the address each request's client connected from.
pub(crate) async fn serve_http_on<F, Fut>(
    listener: TcpListener,
    versions: Versions,
    handler: F,
    shutdown: CancellationToken,
    grace: Duration,
    workers: Option<Arc<Workers>>,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HTTP1_HEAD)
        .max_headers(MAX_HTTP1_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HTTP2_HEADER_LIST)
        .max_concurrent_streams(MAX_HTTP2_STREAMS)
        .max_pending_accept_reset_streams(MAX_HTTP2_PENDING_RESETS)
        .keep_alive_interval(HTTP2_KEEP_ALIVE)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT);
    if versions == Versions::Http1 {
        builder = builder.http1_only();
    }
    let graceful = GracefulShutdown::new();
    while let Some((stream, remote)) = accept(&listener, &shutdown).await {
        // Responses go out in several writes (head, body, trailers): Nagle's algorithm would
        // hold the later ones for the client's delayed ACK, 40 ms a request.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            // Boxed: the handler's future (a few KB) is made once on the heap, not copied
            // into this future and then into hyper's connection state.
            let response = Box::pin(handler(request, remote));
            async move { Ok::<_, Infallible>(response.await) }
        });
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let span = tracing::debug_span!("conn", client.addr = %remote);
        let serve = |stream| {
            async move {
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                if let Err(error) = watcher.watch(connection).await {
                    tracing::debug!(%error, "connection ended with an error");
                }
            }
            .instrument(span)
        };
        match &workers {
            None => drop(tokio::spawn(serve(stream))),
            Some(workers) => place(workers, stream, serve),
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "connections still open at the end of the grace period were cut"
        );
    }
}

/// Serves an accepted connection with `serve` on the worker carrying the fewest connections:
/// the socket moves to that worker's runtime, where its readiness is then watched.
pub(crate) fn place<S, F>(workers: &Workers, stream: tokio::net::TcpStream, serve: S)
where
    S: FnOnce(tokio::net::TcpStream) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "cannot hand an accepted connection to a worker");
            return;
        }
    };
    workers.place(move || async move {
        match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => serve(stream).await,
            Err(error) => tracing::warn!(%error, "a worker cannot take an accepted connection"),
        }
    });
}

/// The next connection on `listener`, or `None` once `shutdown` is cancelled. A failed accept
/// (out of file descriptors, say) is logged and retried after a pause, not returned: the
/// listener must outlive a passing shortage.
pub(crate) async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(error) => {
                    tracing::warn!(%error, listener = ?listener.local_addr().ok(), "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
}
