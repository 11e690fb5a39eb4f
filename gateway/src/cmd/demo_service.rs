//! The demo's upstream services: each answers with its name, version and cluster, and the path
//! the request took (its `Via`). A `POST` echoes its body back.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, header};
use hyper::body::Incoming;
use meshfed_gateway::proxy::body::{self, Body};
use meshfed_gateway::proxy::serve::{Versions, serve_http};
use tokio_util::sync::CancellationToken;

/// Who a demo service says it is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Identity {
    pub(crate) service: &'static str,
    pub(crate) version: &'static str,
    pub(crate) cluster: &'static str,
}

/// Serves `identity` on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    identity: Identity,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    serve_http(
        listener,
        Versions::Http1And2,
        move |request| async move { answer(request, identity) },
        shutdown,
        Duration::from_secs(1),
    )
    .await;
    Ok(())
}

fn answer(request: Request<Incoming>, identity: Identity) -> Response<Body> {
    if request.method() == Method::POST {
        return Response::new(body::incoming(request.into_body()));
    }
    let via: Vec<&str> = request
        .headers()
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let via = if via.is_empty() {
        "(direct)".to_owned()
    } else {
        via.join(", ")
    };
    let text = format!(
        "{} {} in cluster {}, reached via {via}\n",
        identity.service, identity.version, identity.cluster
    );
    let mut response = Response::new(body::full(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
