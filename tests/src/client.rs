//! A plain HTTP/1.1 client for talking to a gateway's local listener, as an application would.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// What came back.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The name of the test upstream that answered (its `x-served-by`), or `(none)`.
    pub fn served_by(&self) -> String {
        self.headers
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(none)")
            .to_owned()
    }

    /// The `x-meshfed-error` reason code, if any.
    pub fn reason(&self) -> Option<&str> {
        self.headers.get("x-meshfed-error")?.to_str().ok()
    }
}

/// Sends one request to `gateway` (its local listener) for `host`, with extra `headers`.
pub async fn send(
    gateway: SocketAddr,
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<Reply> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{gateway}{path}"))
        .header(header::HOST, host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(Full::new(body))?).await?;
    let (parts, body) = response.into_parts();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

/// `GET host/path` through `gateway`.
pub async fn get(gateway: SocketAddr, host: &str, path: &str) -> anyhow::Result<Reply> {
    send(gateway, Method::GET, host, path, &[], Bytes::new()).await
}
