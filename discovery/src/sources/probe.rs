//! The checks: one attempt against one endpoint address, passed or failed within a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::grpc_health::HealthCheckRequest;
use super::grpc_health::health_check_response::ServingStatus;
use super::grpc_health::health_client::HealthClient;

/// What a check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Opens a TCP connection.
    Tcp,
    /// `GET <path>` over HTTP/1.1; any 2xx passes.
    Http {
        /// The path, starting with `/`.
        path: String,
    },
    /// `grpc.health.v1.Health/Check` for `service`; `SERVING` passes.
    Grpc {
        /// The service asked about; empty for the server as a whole.
        service: String,
    },
}

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(String),
    /// An HTTP status other than 2xx.
    #[error("http status {0}")]
    Status(u16),
    /// The gRPC call failed.
    #[error("grpc: {0}")]
    Grpc(String),
    /// The endpoint answered, but not `SERVING`.
    #[error("grpc health status {0:?}")]
    NotServing(ServingStatus),
}

impl Probe {
    /// Checks the endpoint at `address` once.
    pub async fn check(&self, address: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
        tokio::time::timeout(timeout, self.attempt(address))
            .await
            .map_err(|_| ProbeError::Timeout(timeout))?
    }

    async fn attempt(&self, address: SocketAddr) -> Result<(), ProbeError> {
        match self {
            Probe::Tcp => TcpStream::connect(address)
                .await
                .map(drop)
                .map_err(ProbeError::Connect),
            Probe::Http { path } => http(address, path).await,
            Probe::Grpc { service } => grpc(address, service).await,
        }
    }
}

async fn http(address: SocketAddr, path: &str) -> Result<(), ProbeError> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(ProbeError::Connect)?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ProbeError::Http(e.to_string()))?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, address.to_string())
        .header(http::header::USER_AGENT, "meshfed-health-check")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ProbeError::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ProbeError::Http(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(ProbeError::Status(status.as_u16()));
    }
    Ok(())
}

async fn grpc(address: SocketAddr, service: &str) -> Result<(), ProbeError> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| ProbeError::Grpc(e.to_string()))?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| ProbeError::Grpc(e.to_string()))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|status| ProbeError::Grpc(status.to_string()))?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(ProbeError::NotServing(other)),
    }
}
