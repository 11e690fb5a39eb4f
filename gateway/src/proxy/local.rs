//! The local listener: applications call services here by their MCS or cluster-pinned name.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Request, Response, header};
use hyper::body::Incoming;
use tracing::Instrument;

use super::body::{self, Body};
use super::headers;
use crate::federation::wire;
use crate::reason::Reason;
use crate::route::Destination;
use crate::state::State;

/// Routes one request from a local client and returns the response to send back.
pub(crate) async fn handle(state: Arc<State>, request: Request<Incoming>) -> Response<Body> {
    state.stats.local_requests.fetch_add(1, Ordering::Relaxed);
    // An absolute-form target's authority wins over `Host` (RFC 9112 section 3.2.2).
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or_default()
        .to_owned();
    let span = tracing::debug_span!(
        "request",
        authority = %authority,
        method = %request.method(),
        path = %request.uri().path(),
        svc = tracing::field::Empty,
        peer.cluster = tracing::field::Empty,
    );
    async move {
        let (mut parts, incoming) = request.into_parts();
        let client_version = parts.version;
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::strip_untrusted(&mut parts.headers);
        headers::append_via(&mut parts.headers, parts.version, &state.pseudonym);
        let request = Request::from_parts(parts, body::incoming(incoming));

        let port = port_of(&authority);
        let routed = if headers::section_size(&request) > wire::MAX_FIELD_SECTION_SIZE {
            Err(Reason::HeadersTooLarge)
        } else {
            state.routes().route(&authority, state.next_backend())
        };
        let result = match routed {
            Err(reason) => Err(reason),
            Ok(Destination::Local(service)) => {
                tracing::Span::current().record("svc", tracing::field::display(&service));
                state.forward_local(&service, port, request).await
            }
            Ok(Destination::Peer { peer, service }) => {
                let span = tracing::Span::current();
                span.record("svc", tracing::field::display(&service));
                span.record("peer.cluster", tracing::field::display(&peer));
                match state.peers.get(&peer) {
                    Some(client) => client.forward(request, &service, port).await,
                    None => Err(Reason::UnknownService),
                }
            }
        };
        let mut response = match result {
            Ok(response) => {
                tracing::debug!(status = %response.status(), "forwarded");
                state.forwarded(response)
            }
            Err(reason) => {
                tracing::debug!(%reason, "refused");
                reason.response()
            }
        };
        // The response may have arrived over HTTP/3; it leaves in the client's HTTP version.
        *response.version_mut() = client_version;
        response
    }
    .instrument(span)
    .await
}

/// The port an authority names, if any.
fn port_of(authority: &str) -> Option<u16> {
    authority.rsplit_once(':')?.1.parse().ok()
}
