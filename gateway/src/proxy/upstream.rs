//! Connections to a service's local endpoints: pooled HTTP/1.1 keep-alive ([`http1`]), or
//! HTTP/2 (h2c, prior knowledge) with every request multiplexed on one connection per endpoint.
//!
//! A request whose endpoint refuses the connection moves on to the next endpoint: that is
//! safe because nothing of it was sent. Unless it is the last endpoint to try, the body is
//! handed to hyper through a [`Deferred`] that takes it out of a shared slot only when hyper
//! first polls it, so after a failed connect it is still there to go to the next endpoint,
//! streamed, never buffered. The last try (the only one, for a service with one endpoint)
//! gets the head and body themselves.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::balancer::Balancer;
use super::body::{self, Body, BoxError};
use super::http1;
use crate::config::Protocol;
use crate::policy::outlier::OutlierDetection;
use crate::reason::Reason;

/// A local endpoint that does not accept a connection within this time is unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 keep-alive to endpoints, so that a dead connection is found before a request is.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// A TCP connection to a local endpoint (for HTTP/1.1 or a tunnel), within [`CONNECT_TIMEOUT`],
/// with Nagle's algorithm off: what the gateway writes is already whole.
pub(crate) async fn connect(endpoint: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(endpoint))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The client side towards local endpoints.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    http1: Arc<http1::Pool>,
    http2: Client<HttpConnector, Body>,
}

impl Upstream {
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(http1::IDLE_TIMEOUT)
            .http2_only(true)
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(H2_KEEP_ALIVE)
            .http2_keep_alive_while_idle(true);
        let http2 = builder.build(connector);
        Upstream {
            http1: Arc::default(),
            http2,
        }
    }

    /// Sends `request` to the first of `endpoints` (in the balancer's order), moving on while
    /// an endpoint refuses the connection. Its `Host` header (the service's name) is kept.
    /// Each attempt is counted in the endpoint's load while it runs (with the response body),
    /// and its outcome recorded: an answer that is not 5xx with its latency, or a failure.
    pub(crate) async fn forward(
        &self,
        request: Request<Body>,
        endpoints: &[SocketAddr],
        protocol: Protocol,
        balancer: &Arc<Balancer>,
        outlier: Option<&OutlierDetection>,
    ) -> Result<Response<Body>, Reason> {
        let (mut head, body) = request.into_parts();
        let path = head
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let multiplexed = matches!(protocol, Protocol::Http2 | Protocol::Grpc);
        head.version = match multiplexed {
            true => Version::HTTP_2,
            false => Version::HTTP_11,
        };
        let mut head = Some(head);
        let mut body = Held::Here(body);
        for (index, &endpoint) in endpoints.iter().enumerate() {
            // The last try takes the head and body themselves; an earlier one, copies and a
            // body it can leave untouched.
            let last = index + 1 == endpoints.len();
            let head = match last {
                true => head.take(),
                false => head.clone(),
            };
            // Taken only by the last try, after which there is no other.
            let Some(head) = head else { break };
            let mut request = Request::from_parts(head, body.lend(last));
            let mut in_flight = balancer.start(endpoint);
            let answer = match multiplexed {
                // Each way boxed: its future is KBs, made once on the heap instead of copied
                // into this one and every future above it, at every request.
                true => Box::pin(self.send_http2(endpoint, request, &path)).await,
                false => {
                    // Origin form: the `Host` header names the service.
                    *request.uri_mut() = Uri::from(path.clone());
                    Box::pin(self.http1.send(endpoint, request)).await
                }
            };
            let ok = matches!(&answer, Ok(response) if !response.status().is_server_error());
            in_flight.answered(ok, outlier);
            match answer {
                Ok(response) => return Ok(response.map(|b| body::guarded(b, in_flight))),
                Err(SendError::Connect(error)) if !last && body.untouched() => {
                    tracing::debug!(%endpoint, %error, "endpoint refused the connection; trying the next");
                }
                Err(SendError::Connect(error)) => {
                    tracing::debug!(%endpoint, %error, "endpoint unavailable");
                    return Err(Reason::UpstreamUnavailable);
                }
                Err(SendError::Failed(error)) => {
                    tracing::debug!(%endpoint, %error, "endpoint failed");
                    return Err(Reason::UpstreamFailed);
                }
            }
        }
        Err(Reason::UpstreamUnavailable)
    }

    /// Sends `request` to `endpoint` over HTTP/2, multiplexed on hyper's pooled connection.
    async fn send_http2(
        &self,
        endpoint: SocketAddr,
        mut request: Request<Body>,
        path: &PathAndQuery,
    ) -> Result<Response<Body>, SendError> {
        *request.uri_mut() = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(endpoint.to_string())
            .path_and_query(path.clone())
            .build()
            .map_err(|e| SendError::Failed(e.into()))?;
        match self.http2.request(request).await {
            Ok(response) => Ok(response.map(body::incoming)),
            Err(error) if error.is_connect() => Err(SendError::Connect(error.into())),
            Err(error) => Err(SendError::Failed(error.into())),
        }
    }
}

/// Why a request could not be sent to an endpoint.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made: nothing of the request was sent.
    Connect(BoxError),
    /// The connection failed while the request was sent or its response head awaited.
    Failed(BoxError),
}

/// A request's body across its tries.
enum Held {
    /// Not yet sent anywhere.
    Here(Body),
    /// Lent to a try through a slot: still there while that try has not polled it.
    Lent(Arc<Mutex<Option<Body>>>),
    /// Given to the last try.
    Gone,
}

impl Held {
    /// The body for the next try: the body itself for the `last` one, which no other try
    /// follows; for an earlier one, a [`Deferred`] that leaves it in place until polled. An
    /// empty body is made anew for each try instead.
    fn lend(&mut self, last: bool) -> Body {
        match std::mem::replace(self, Held::Gone) {
            Held::Here(body) if http_body::Body::is_end_stream(&body) => {
                *self = Held::Here(body);
                body::empty()
            }
            Held::Here(body) if last => body,
            Held::Here(body) => {
                let slot = Arc::new(Mutex::new(Some(body)));
                *self = Held::Lent(slot.clone());
                Deferred::new(&slot).boxed()
            }
            // Only an untouched body goes on to another try: it is still in the slot.
            Held::Lent(slot) if last => {
                let taken = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                taken.unwrap_or_else(body::empty)
            }
            Held::Lent(slot) => {
                let body = Deferred::new(&slot).boxed();
                *self = Held::Lent(slot);
                body
            }
            Held::Gone => body::empty(),
        }
    }

    /// Whether no try has polled the body, so that it can still go to another endpoint.
    fn untouched(&self) -> bool {
        match self {
            Held::Here(_) => true,
            Held::Lent(slot) => Deferred::untouched(slot),
            Held::Gone => false,
        }
    }
}

/// A body that stays in a shared slot until it is first polled.
struct Deferred {
    slot: Arc<Mutex<Option<Body>>>,
    taken: Option<Body>,
}

impl Deferred {
    fn new(slot: &Arc<Mutex<Option<Body>>>) -> Self {
        Deferred {
            slot: slot.clone(),
            taken: None,
        }
    }

    /// Whether the body in `slot` was never polled, so that it can still be sent elsewhere.
    fn untouched(slot: &Mutex<Option<Body>>) -> bool {
        slot.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn peek<T>(&self, f: impl FnOnce(&Body) -> T, otherwise: T) -> T {
        match &self.taken {
            Some(body) => f(body),
            None => match &*self.slot.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(body) => f(body),
                None => otherwise,
            },
        }
    }
}

impl http_body::Body for Deferred {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.taken.is_none() {
            let body = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            self.taken = body;
        }
        match &mut self.taken {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.peek(|body| body.is_end_stream(), true)
    }

    fn size_hint(&self) -> SizeHint {
        self.peek(|body| body.size_hint(), SizeHint::with_exact(0))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;

    /// An HTTP/1.1 endpoint (hyper's server) that answers each request with the body it got.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let echo = service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let body = request.into_body().collect().await.map(|b| b.to_bytes());
                    Ok::<_, Infallible>(Response::new(Full::new(body.unwrap_or_default())))
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), echo);
                tokio::spawn(connection);
            }
        });
        address
    }

    /// An address that refuses connections: a port bound and let go.
    fn refusing() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    }

    async fn forward(endpoints: &[SocketAddr], request: Request<Body>) -> Result<Bytes, Reason> {
        let balancer = Arc::new(Balancer::default());
        let response = Upstream::new()
            .forward(request, endpoints, Protocol::Http, &balancer, None)
            .await?;
        Ok(response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes())
    }

    fn post(body: &'static [u8]) -> Request<Body> {
        Request::post("/echo")
            .header(http::header::HOST, "echo.test")
            .body(body::full(Bytes::from_static(body)))
            .expect("request")
    }

    /// Refused twice, the body is still whole for the third endpoint: lent untouched to each
    /// refused try, then given to the last.
    #[tokio::test]
    async fn a_refused_connection_moves_on_with_the_body() {
        let endpoints = [refusing(), refusing(), echo().await];
        let echoed = forward(&endpoints, post(b"hello")).await;
        assert_eq!(echoed.expect("answered by the third"), "hello");
    }

    /// A request without a body is sent to each try as one, with no slot to keep it in.
    #[tokio::test]
    async fn a_bodiless_request_moves_on_too() {
        let endpoints = [refusing(), echo().await];
        let request = Request::get("/")
            .header(http::header::HOST, "echo.test")
            .body(body::empty())
            .expect("request");
        let echoed = forward(&endpoints, request).await;
        assert_eq!(echoed.expect("answered by the second"), "");
    }

    /// The last endpoint refusing too ends the request, after every endpoint was tried.
    #[tokio::test]
    async fn every_endpoint_refusing_is_unavailable() {
        let endpoints = [refusing(), refusing()];
        let answer = forward(&endpoints, post(b"hello")).await;
        assert!(
            matches!(answer, Err(Reason::UpstreamUnavailable)),
            "{answer:?}"
        );
    }
}
