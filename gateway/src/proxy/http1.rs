//! HTTP/1.1 connections to local endpoints: kept alive in a pool, and driven by the request
//! that holds one rather than by a task of their own.
//!
//! An HTTP/1.1 connection carries one request at a time, so whoever sends a request on it can
//! also do its I/O: the request's future polls the connection until the response head
//! arrives, and the response body polls it while the body streams. hyper's pooled client
//! instead gives each connection a task and hands every request and response across to it,
//! which costs two task wake-ups a request, often on another thread.
//!
//! A connection goes back to the pool when its response has been read to the end and hyper
//! says it can take another request (neither side asked to close it). A response dropped
//! before its end takes its connection with it: the rest of that response would otherwise be
//! read as the next one's. An idle connection that the endpoint closed is noticed when it is
//! next taken (its EOF is read then) and replaced; one idle longer than [`IDLE_TIMEOUT`] is
//! closed instead of used.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::{Body, BoxError};
use super::upstream::SendError as Error;
use crate::workers::Workers;

/// Idle connections are closed after this long (endpoints commonly keep them 60 s or more).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most idle connections kept to one endpoint from one worker; more are closed as they
/// come back.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// Idle HTTP/1.1 connections, by endpoint and worker thread: a connection's socket is watched
/// by the runtime it was opened on, so it is handed only to requests on that worker.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<IdleConns>,
}

#[derive(Debug, Default)]
struct IdleConns {
    /// Oldest first.
    by_endpoint: HashMap<(SocketAddr, Option<usize>), Vec<Idle>>,
    /// When connections past their time were last closed for every endpoint.
    swept: Option<Instant>,
}

#[derive(Debug)]
struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// One connection: the handle requests are sent through, and the connection's I/O, which
/// whoever holds it polls. Boxed wherever it goes: hyper's connection state is large, and it
/// moves at every request, from the pool to the request's future, its response body and back.
#[derive(Debug)]
struct Conn {
    send: SendRequest<Body>,
    /// `None` once finished (the connection closed or failed): dropping it hands a request
    /// still queued on it back, unsent.
    io: Option<Connection<TokioIo<TcpStream>, Body>>,
}

impl Pool {
    /// Sends `request` (its URI in origin form, its `Host` set) to `endpoint`, on an idle
    /// connection or a new one, and returns the response, whose body drives the connection.
    pub(crate) async fn send(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, Error> {
        loop {
            let (mut conn, reused) = match self.checkout(endpoint) {
                Some(conn) => (conn, true),
                None => (connect(endpoint).await?, false),
            };
            let sent = std::pin::pin!(conn.send.try_send_request(request));
            match conn.drive_until(sent).await {
                Ok(response) => {
                    let pool = Arc::downgrade(self);
                    return Ok(response.map(|body| Driven::body(body, conn, pool, endpoint)));
                }
                Err(mut error) => match error.take_message() {
                    // An idle connection the endpoint closed as we took it: the request was
                    // not sent, so it can go on a new connection.
                    Some(unsent) if reused => {
                        tracing::debug!(%endpoint, error = %error.error(), "pooled connection was closed; opening another");
                        request = unsent;
                    }
                    // A new connection the endpoint closed at once: nothing was sent, as
                    // when it refuses, so the request may go to another endpoint.
                    Some(_) => return Err(Error::Connect(error.into_error().into())),
                    None => return Err(Error::Failed(error.into_error().into())),
                },
            }
        }
    }

    /// The most recently used idle connection to `endpoint` that is still open.
    fn checkout(&self, endpoint: SocketAddr) -> Option<Box<Conn>> {
        loop {
            let Idle { mut conn, since } = self
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .by_endpoint
                .get_mut(&(endpoint, Workers::current()))?
                .pop()?;
            // Polling reads an EOF the endpoint sent while the connection was idle.
            if since.elapsed() < IDLE_TIMEOUT && conn.poll_io_now() && conn.send.is_ready() {
                return Some(conn);
            }
        }
    }

    fn checkin(&self, endpoint: SocketAddr, conn: Box<Conn>) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Now and then, close what is past its time for every endpoint, including endpoints
        // no longer used (gone in a rollout): their connections are not polled, and an
        // endpoint's close would otherwise leave them half-closed for good.
        if idle
            .swept
            .is_none_or(|swept| now.duration_since(swept) >= IDLE_TIMEOUT / 4)
        {
            idle.swept = Some(now);
            idle.by_endpoint.retain(|_, list| {
                list.retain(|i| now.duration_since(i.since) < IDLE_TIMEOUT);
                !list.is_empty()
            });
        }
        let list = idle
            .by_endpoint
            .entry((endpoint, Workers::current()))
            .or_default();
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push(Idle { conn, since: now });
        }
    }
}

async fn connect(endpoint: SocketAddr) -> Result<Box<Conn>, Error> {
    let stream = super::upstream::connect(endpoint)
        .await
        .map_err(|e| Error::Connect(e.into()))?;
    let (send, io) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::Failed(e.into()))?;
    Ok(Box::new(Conn { send, io: Some(io) }))
}

impl Conn {
    /// Polls the connection's I/O: whether it is still open.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(io) = &mut self.io
            && Pin::new(io).poll(cx).is_ready()
        {
            self.io = None;
        }
        self.io.is_some()
    }

    /// Polls the connection's I/O once, waiting for nothing: whether it is still open.
    fn poll_io_now(&mut self) -> bool {
        self.poll_io(&mut Context::from_waker(Waker::noop()))
    }

    /// Drives the connection until `sent` (a request sent on it) resolves.
    async fn drive_until<T>(&mut self, mut sent: Pin<&mut impl Future<Output = T>>) -> T {
        std::future::poll_fn(|cx| {
            self.poll_io(cx);
            sent.as_mut().poll(cx)
        })
        .await
    }
}

/// A response body that drives its connection while it is read, and gives the connection back
/// to the pool once read to the end.
struct Driven {
    body: Incoming,
    conn: Option<Box<Conn>>,
    pool: Weak<Pool>,
    endpoint: SocketAddr,
}

impl Driven {
    fn body(body: Incoming, conn: Box<Conn>, pool: Weak<Pool>, endpoint: SocketAddr) -> Body {
        // hyper's connection is not `Sync`; a body is only polled through `&mut`.
        super::body::unsync(Driven {
            body,
            conn: Some(conn),
            pool,
            endpoint,
        })
    }

    /// Returns the connection to the pool if it can take another request.
    fn release(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // One more turn lets hyper finish the exchange and ask for the next request.
        if conn.poll_io_now()
            && conn.send.is_ready()
            && let Some(pool) = self.pool.upgrade()
        {
            pool.checkin(self.endpoint, conn);
        }
    }
}

impl http_body::Body for Driven {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(conn) = &mut this.conn {
            conn.poll_io(cx);
        }
        let frame = match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(frame) => frame,
        };
        match &frame {
            None => this.release(),
            // A failed body leaves the connection in no state to reuse.
            Some(Err(_)) => this.conn = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        // A reader that knew the body's length may stop without reading its end: the
        // connection is still good then.
        if http_body::Body::is_end_stream(&self.body) {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    const KEEP_ALIVE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";

    /// An endpoint that answers `answers` requests on each connection with `response` and then
    /// closes it, as a server whose keep-alive ran out does; it counts the connections it
    /// accepted. Written here rather than a real server, to close connections exactly then.
    async fn answering(answers: usize, response: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut received = Vec::new();
                    for _ in 0..answers {
                        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0; 1024];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => received.extend_from_slice(&chunk[..n]),
                            }
                        }
                        received.clear();
                        if stream.write_all(response).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (address, accepted)
    }

    async fn get(pool: &Arc<Pool>, endpoint: SocketAddr) -> Response<Body> {
        let request = Request::get("/")
            .header(http::header::HOST, "web.shop")
            .body(super::super::body::empty())
            .expect("request");
        pool.send(endpoint, request).await.expect("response")
    }

    async fn text(response: Response<Body>) -> Bytes {
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
    }

    #[tokio::test]
    async fn a_connection_read_to_the_end_carries_the_next_request() {
        let (endpoint, accepted) = answering(usize::MAX, KEEP_ALIVE).await;
        let pool = Arc::new(Pool::default());
        for _ in 0..5 {
            assert_eq!(text(get(&pool, endpoint).await).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_reader_that_knew_the_length_returns_the_connection_too() {
        let (endpoint, accepted) = answering(usize::MAX, KEEP_ALIVE).await;
        let pool = Arc::new(Pool::default());
        for _ in 0..3 {
            // Read the two bytes the length announced, then drop the body without asking
            // for its end, as hyper's server does.
            let mut body = get(&pool, endpoint).await.into_body();
            let frame = body.frame().await.expect("frame").expect("data");
            assert_eq!(frame.into_data().expect("data"), "ok");
            assert!(http_body::Body::is_end_stream(&body));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_response_dropped_unread_takes_its_connection_with_it() {
        let (endpoint, accepted) = answering(usize::MAX, KEEP_ALIVE).await;
        let pool = Arc::new(Pool::default());
        drop(get(&pool, endpoint).await);
        assert_eq!(text(get(&pool, endpoint).await).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_either_side_closes_is_not_reused() {
        // The endpoint says `Connection: close`.
        let (endpoint, accepted) = answering(usize::MAX, CLOSE).await;
        let pool = Arc::new(Pool::default());
        for _ in 0..3 {
            assert_eq!(text(get(&pool, endpoint).await).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        // The endpoint closes an idle connection without saying so beforehand: the next
        // request finds it closed and goes on a new one. Not a race on a slow machine: this
        // runtime has one thread, so while the test sleeps the endpoint's task closes the
        // socket (loopback delivers the FIN within the close) and the I/O driver reads the
        // event before the timer wakes the test.
        let (endpoint, accepted) = answering(1, KEEP_ALIVE).await;
        for _ in 0..3 {
            assert_eq!(text(get(&pool, endpoint).await).await, "ok");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_endpoint_that_closes_at_once_fails_the_request_without_a_hang() {
        let (endpoint, accepted) = answering(0, KEEP_ALIVE).await;
        let pool = Arc::new(Pool::default());
        for _ in 0..20 {
            let request = Request::get("/")
                .header(http::header::HOST, "web.shop")
                .body(super::super::body::empty())
                .expect("request");
            let sent = tokio::time::timeout(Duration::from_secs(5), pool.send(endpoint, request))
                .await
                .expect("an answer, not a hang");
            assert!(sent.is_err());
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 20);
    }

    #[tokio::test]
    async fn an_endpoint_that_refuses_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = listener.local_addr().expect("address");
        drop(listener);
        let pool = Arc::new(Pool::default());
        let request = Request::get("/")
            .body(super::super::body::empty())
            .expect("request");
        assert!(matches!(
            pool.send(endpoint, request).await,
            Err(Error::Connect(_))
        ));
    }
}
