//! A gRPC upstream for tests (tonic, over HTTP/2): `Say` answers with the endpoint's name, so
//! that a test can see where each call landed; `Chat` echoes a stream back message by message.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use http_body_util::BodyExt as _;
use meshfed_gateway::proxy::serve::{Versions, serve_http};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tower_service::Service as _;

use tokio_stream::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// The generated messages, client and server.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod proto {
    tonic::include_proto!("meshfed.test.echo.v1");
}

use meshfed_discovery::sources::grpc_health::health_check_response::ServingStatus;
use meshfed_discovery::sources::grpc_health::health_server::{Health, HealthServer};
use meshfed_discovery::sources::grpc_health::{HealthCheckRequest, HealthCheckResponse};
use proto::echo_server::{Echo, EchoServer};
use proto::{ChatMessage, SayReply, SayRequest};

/// A running gRPC echo server; it stops when dropped.
#[derive(Debug)]
pub struct GrpcEcho {
    addr: SocketAddr,
    stop: CancellationToken,
    serving: Arc<AtomicBool>,
}

impl GrpcEcho {
    /// Starts a server named `name` on a free loopback port. It also answers the gRPC health
    /// protocol: `SERVING` until [`GrpcEcho::set_serving`] says otherwise.
    pub async fn start(name: &'static str) -> std::io::Result<GrpcEcho> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let serving = Arc::new(AtomicBool::new(true));
        // Two services on one port without tonic's router (which would bring axum): the
        // path picks the service, as gRPC's routing is by path anyway.
        let echo = EchoServer::new(Named(name));
        let health = HealthServer::new(Serving(serving.clone()));
        tokio::spawn(serve_http(
            listener,
            Versions::Http1And2,
            move |request: http::Request<hyper::body::Incoming>| {
                let (mut echo, mut health) = (echo.clone(), health.clone());
                async move {
                    let response = if request.uri().path().starts_with("/grpc.health.v1.Health/") {
                        health.call(request).await
                    } else {
                        echo.call(request).await
                    };
                    match response {
                        Ok(response) => response.map(synced),
                        Err(never) => match never {},
                    }
                }
            },
            stop.clone(),
            Duration::from_millis(100),
        ));
        Ok(GrpcEcho {
            addr,
            stop,
            serving,
        })
    }

    /// What the health protocol answers from now on: `SERVING` or `NOT_SERVING`.
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for GrpcEcho {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Named(&'static str);

/// A tonic response body as the test servers' body type.
pub(crate) fn synced(body: tonic::body::Body) -> meshfed_gateway::proxy::body::Body {
    Synced(std::sync::Mutex::new(body)).boxed()
}

/// A tonic response body made `Sync` for the test server's boxed body type: the mutex is only
/// reached through `&mut`, so it is never contended.
struct Synced(std::sync::Mutex<tonic::body::Body>);

impl http_body::Body for Synced {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let body = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        Pin::new(body).poll_frame(cx).map_err(Into::into)
    }
}

/// The gRPC health service (`grpc.health.v1.Health`), answering for the server as a whole.
struct Serving(Arc<AtomicBool>);

type HealthStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for Serving {
    type WatchStream = HealthStream;

    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let status = match self.0.load(Ordering::Relaxed) {
            true => ServingStatus::Serving,
            false => ServingStatus::NotServing,
        };
        Ok(Response::new(HealthCheckResponse {
            status: status.into(),
        }))
    }

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthStream>, Status> {
        Err(Status::unimplemented("only Check is served here"))
    }
}

type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for Named {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        Ok(Response::new(SayReply {
            endpoint: self.0.to_owned(),
            text: request.into_inner().text,
        }))
    }

    type ChatStream = ChatStream;

    async fn chat(
        &self,
        request: Request<Streaming<ChatMessage>>,
    ) -> Result<Response<ChatStream>, Status> {
        let incoming = request.into_inner();
        Ok(Response::new(Box::pin(incoming.map(|message| message))))
    }
}
