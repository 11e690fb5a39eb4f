//! An HTTP upstream that is itself a client: for each request it calls another service through
//! its cluster's gateway, propagating `baggage` (and nothing else), as an application
//! instrumented with OpenTelemetry does. It answers its own name on the first line, then the
//! downstream's answer. It is how a test builds a call chain.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use meshfed_gateway::proxy::body::{self, Body};
use meshfed_gateway::proxy::serve::{Versions, serve_http};
use tokio_util::sync::CancellationToken;

use crate::client;

/// A running caller; it stops when dropped.
#[derive(Debug)]
pub struct Caller {
    addr: SocketAddr,
    gateway: Arc<OnceLock<SocketAddr>>,
    stop: CancellationToken,
}

impl Caller {
    /// Starts a caller named `name` on a free loopback port, which will call `next` (a host
    /// name, such as `greeter.demo.svc.clusterset.local`) once told its gateway.
    pub async fn start(name: &'static str, next: &'static str) -> std::io::Result<Caller> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let gateway = Arc::new(OnceLock::new());
        let to = gateway.clone();
        tokio::spawn(serve_http(
            listener,
            Versions::Http1And2,
            move |request| call(name, next, to.get().copied(), request),
            stop.clone(),
            Duration::from_millis(100),
        ));
        Ok(Caller {
            addr,
            gateway,
            stop,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls on through the gateway whose local listener is `gateway` from now on.
    pub fn set_gateway(&self, gateway: SocketAddr) {
        let _ = self.gateway.set(gateway);
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn call(
    name: &'static str,
    next: &'static str,
    gateway: Option<SocketAddr>,
    request: Request<Incoming>,
) -> Response<Body> {
    let Some(gateway) = gateway else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{name}: no gateway yet\n"),
        );
    };
    let baggage: Vec<(&str, &str)> = request
        .headers()
        .get_all("baggage")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| ("baggage", v))
        .collect();
    let path = request.uri().path();
    let sent = client::send(
        gateway,
        http::Method::GET,
        next,
        path,
        &baggage,
        Bytes::new(),
    );
    match sent.await {
        Ok(reply) => text(reply.status, format!("{name}\n{}", reply.text())),
        Err(error) => text(StatusCode::BAD_GATEWAY, format!("{name}: {error}\n")),
    }
}

fn text(status: StatusCode, text: String) -> Response<Body> {
    let mut response = Response::new(body::full(Bytes::from(text)));
    *response.status_mut() = status;
    response
}
