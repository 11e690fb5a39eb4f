//! An HTTP upstream for tests (HTTP/1.1, and HTTP/2 with prior knowledge): it says who it is
//! and what it received.
//!
//! - `GET` answers `<name>` on the first line, then one `header: value` line per request header;
//! - `GET /slow` does the same after [`SLOW`], to keep a request in flight;
//! - any other method echoes the request body back, streamed.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use meshfed_gateway::proxy::body::{self, Body};
use meshfed_gateway::proxy::serve::{Versions, serve_http};
use tokio_util::sync::CancellationToken;

/// How long `GET /slow` takes to answer.
pub const SLOW: Duration = Duration::from_millis(500);

/// A running echo server; it stops when dropped.
#[derive(Debug)]
pub struct Echo {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Echo {
    /// Starts an echo server named `name` on a free loopback port.
    pub async fn start(name: &'static str) -> std::io::Result<Echo> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        tokio::spawn(serve_http(
            listener,
            Versions::Http1And2,
            move |request| answer(name, request),
            stop.clone(),
            Duration::from_millis(100),
        ));
        Ok(Echo { addr, stop })
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

async fn answer(name: &str, request: Request<Incoming>) -> Response<Body> {
    if request.method() != Method::GET {
        return Response::new(body::incoming(request.into_body()));
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
