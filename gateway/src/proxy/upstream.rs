//! Connections to a service's local endpoints: pooled HTTP/1.1 keep-alive.

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::{self, Body};
use crate::reason::Reason;

/// A local endpoint that does not accept a connection within this time is unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle pooled connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The client side towards local endpoints.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    client: Client<HttpConnector, Body>,
}

impl Upstream {
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Upstream { client }
    }

    /// Sends `request` to `endpoint`. Its `Host` header (the service's name) is kept.
    pub(crate) async fn forward(
        &self,
        mut request: Request<Body>,
        endpoint: SocketAddr,
    ) -> Result<Response<Body>, Reason> {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(endpoint.to_string())
            .path_and_query(path)
            .build()
            .map_err(|_| Reason::UpstreamFailed)?;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        match self.client.request(request).await {
            Ok(response) => Ok(response.map(body::incoming)),
            Err(error) if error.is_connect() => {
                tracing::debug!(%endpoint, %error, "endpoint unavailable");
                Err(Reason::UpstreamUnavailable)
            }
            Err(error) => {
                tracing::debug!(%endpoint, %error, "endpoint failed");
                Err(Reason::UpstreamFailed)
            }
        }
    }
}
