//! Serving HTTP/1.1 on a TCP listener, with a graceful end.
//!
//! Used by the local listener and the admin listener. On shutdown the listener closes at once
//! and connections finish the request in flight (hyper sends `Connection: close`). When the
//! grace period ends this returns; connections still open are no longer waited for and end
//! with the process.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::body::Body;

/// A client must send its whole request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed accept (out of file descriptors, say), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `handler` on `listener` until `shutdown` is cancelled, then drains for up to `grace`.
pub async fn serve_http1<F, Fut>(
    listener: TcpListener,
    handler: F,
    shutdown: CancellationToken,
    grace: Duration,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, remote) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let response = handler(request);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let span = tracing::debug_span!("conn", client.addr = %remote);
        tokio::spawn(
            async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection ended with an error");
                }
            }
            .instrument(span),
        );
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
