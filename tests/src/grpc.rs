//! A gRPC upstream for tests (tonic, over HTTP/2): `Say` answers with the endpoint's name, so
//! that a test can see where each call landed; `Chat` echoes a stream back message by message.

use std::net::SocketAddr;
use std::pin::Pin;

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

use proto::echo_server::{Echo, EchoServer};
use proto::{ChatMessage, SayReply, SayRequest};

/// A running gRPC echo server; it stops when dropped.
#[derive(Debug)]
pub struct GrpcEcho {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl GrpcEcho {
    /// Starts a server named `name` on a free loopback port.
    pub async fn start(name: &'static str) -> std::io::Result<GrpcEcho> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let signal = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(EchoServer::new(Named(name)), incoming, signal)
                .await;
            if let Err(error) = served {
                eprintln!("grpc echo {name} failed: {error}");
            }
        });
        Ok(GrpcEcho { addr, stop })
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
