//! An HTTP upstream for tests (HTTP/1.1, and HTTP/2 with prior knowledge): it says who it is
//! and what it received.
//!
//! - `GET` answers `<name>` on the first line, then one `header: value` line per request header;
//! - `GET /slow` does the same after [`SLOW`], to keep a request in flight;
//! - `GET /bytes/<n>` answers `n` bytes of [`Pattern`], streamed;
//! - `POST /digest` answers `<length> <sha256 hex>` of the request body;
//! - any other method echoes the request body back, streamed;
//! - every response names the server in `x-served-by`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use meshfed_gateway::proxy::body::{self, Body};
use tokio_stream::wrappers::ReceiverStream;

use crate::pattern::{Pattern, hex};
use meshfed_gateway::proxy::serve::{Versions, serve_http};
use tokio_util::sync::CancellationToken;

/// How long `GET /slow` takes to answer.
pub const SLOW: Duration = Duration::from_millis(500);

/// A running echo server; it stops when dropped.
#[derive(Debug)]
pub struct Echo {
    addr: SocketAddr,
    stop: CancellationToken,
    mode: Arc<Mode>,
}

/// How an echo server misbehaves, changeable while it runs.
#[derive(Debug, Default)]
struct Mode {
    /// Answer every request with this status and nothing else (0: behave).
    failing: AtomicU16,
    /// Wait this long before every answer.
    delay_ms: AtomicU64,
    /// Requests received.
    requests: AtomicU64,
}

impl Echo {
    /// Starts an echo server named `name` on a free loopback port.
    pub async fn start(name: &'static str) -> std::io::Result<Echo> {
        Echo::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts an echo server named `name` on `addr`.
    pub async fn start_on(name: &'static str, addr: SocketAddr) -> std::io::Result<Echo> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let mode = Arc::new(Mode::default());
        let shared = mode.clone();
        tokio::spawn(serve_http(
            listener,
            Versions::Http1And2,
            move |request| answer(name, shared.clone(), request),
            stop.clone(),
            Duration::from_millis(100),
        ));
        Ok(Echo { addr, stop, mode })
    }

    /// From now on, answers every request (health checks too) with `status`, or behaves again
    /// with `None`.
    pub fn fail_with(&self, status: Option<http::StatusCode>) {
        let code = status.map_or(0, |s| s.as_u16());
        self.mode.failing.store(code, Ordering::Relaxed);
    }

    /// How many requests it has received (health checks included).
    pub fn requests(&self) -> u64 {
        self.mode.requests.load(Ordering::Relaxed)
    }

    /// From now on, waits `delay` before every answer.
    pub fn delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.mode.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The answer, with the server's name in `x-served-by` whatever the method.
async fn answer(name: &'static str, mode: Arc<Mode>, request: Request<Incoming>) -> Response<Body> {
    mode.requests.fetch_add(1, Ordering::Relaxed);
    let delay = mode.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let failing = mode.failing.load(Ordering::Relaxed);
    let mut response = match http::StatusCode::from_u16(failing) {
        Ok(status) if failing > 0 => {
            let mut response = Response::new(body::full(Bytes::from(format!("{name} failing\n"))));
            *response.status_mut() = status;
            response
        }
        _ => respond(name, request).await,
    };
    response
        .headers_mut()
        .insert("x-served-by", http::HeaderValue::from_static(name));
    response
}

async fn respond(name: &str, request: Request<Incoming>) -> Response<Body> {
    if request.method() == Method::POST && request.uri().path() == "/digest" {
        return digest(request.into_body()).await;
    }
    if request.method() != Method::GET {
        return Response::new(body::incoming(request.into_body()));
    }
    if let Some(len) = request.uri().path().strip_prefix("/bytes/") {
        let len = len.parse().unwrap_or(0);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut pattern = Pattern::default();
            let mut left: usize = len;
            while left > 0 {
                let chunk = Bytes::from(pattern.next_chunk(left.min(64 * 1024)));
                left -= chunk.len();
                if tx
                    .send(Ok::<_, body::BoxError>(Frame::data(chunk)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let stream = StreamBody::new(ReceiverStream::new(rx));
        return Response::new(BodyExt::boxed(stream));
    }
    if request.uri().path() == "/slow" {
        tokio::time::sleep(SLOW).await;
    }
    let mut text = format!("{name}\n");
    for (header, value) in request.headers() {
        text.push_str(&format!(
            "{header}: {}\n",
            value.to_str().unwrap_or("<binary>")
        ));
    }
    Response::new(body::full(Bytes::from(text)))
}

/// `<length> <sha256 hex>` of a request body, read as it streams.
async fn digest(mut incoming: Incoming) -> Response<Body> {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut length = 0usize;
    while let Some(frame) = incoming.frame().await {
        let Ok(frame) = frame else {
            return Response::new(body::full(Bytes::from_static(b"body failed")));
        };
        if let Ok(data) = frame.into_data() {
            length += data.len();
            digest.update(&data);
        }
    }
    let text = format!("{length} {}", hex(digest.finish().as_ref()));
    Response::new(body::full(Bytes::from(text)))
}
