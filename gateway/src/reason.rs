//! Stable reason codes for every failure a client can meet.
//!
//! A reason travels in the `x-meshfed-error` response header, in logs (`reason` field) and later
//! in metrics. The codes are an interface: never rename one. `docs/operations.md` says what each
//! means and what to do about it.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::proxy::body::{self, Body};

/// The response header that carries a reason code.
pub const ERROR_HEADER: &str = "x-meshfed-error";

/// Why the gateway answered a request itself instead of forwarding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The request has no `Host` (or `:authority`).
    MissingAuthority,
    /// The request's header section is larger than a peer would accept.
    HeadersTooLarge,
    /// The authority is outside the gateway's zones: the request was sent to the wrong place.
    NotOurZone,
    /// The authority is in our zones but names no service we can route.
    UnknownService,
    /// A peer asked for a service that is not exported to it. Logged only: the peer is answered
    /// [`Reason::UnknownService`], so that it cannot learn what exists but is not its to reach.
    NotExported,
    /// The peer gateway cannot be reached (connect failed, handshake refused, timed out).
    PeerUnavailable,
    /// The peer gateway was reached but the stream failed before a response arrived.
    PeerStreamFailed,
    /// No local endpoint of the service accepted a connection.
    UpstreamUnavailable,
    /// The service is known, but no cluster that exports it has a ready endpoint.
    NoReadyEndpoints,
    /// A local endpoint was reached but failed before a response arrived.
    UpstreamFailed,
    /// The request's path cannot be made canonical (a bad `%` escape, or not beginning with `/`).
    BadPath,
    /// A trusted client's `x-meshfed-cluster` override does not name a cluster.
    BadOverride,
    /// The route's timeout passed before the response head arrived.
    Timeout,
    /// The receiving gateway's authorization refused the request: a `deny` rule matched, no
    /// `allow` rule for the service did, or the peer asserted an origin outside its trust domain.
    Denied,
    /// The destination (the service in one cluster) has as many requests in flight and waiting
    /// as its circuit breaker allows, or every endpoint as many connections.
    Overloaded,
    /// A TCP connection was closed because a move took its service away from the cluster it
    /// went to, and asked for open connections to be drained.
    Drained,
}

impl Reason {
    /// Every reason, for tables and lookups.
    pub const ALL: [Reason; 16] = [
        Reason::MissingAuthority,
        Reason::HeadersTooLarge,
        Reason::NotOurZone,
        Reason::UnknownService,
        Reason::NotExported,
        Reason::PeerUnavailable,
        Reason::PeerStreamFailed,
        Reason::UpstreamUnavailable,
        Reason::UpstreamFailed,
        Reason::NoReadyEndpoints,
        Reason::BadPath,
        Reason::BadOverride,
        Reason::Timeout,
        Reason::Denied,
        Reason::Overloaded,
        Reason::Drained,
    ];

    /// The stable code, as sent in `x-meshfed-error`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MissingAuthority => "missing_authority",
            Reason::HeadersTooLarge => "headers_too_large",
            Reason::NotOurZone => "not_our_zone",
            Reason::UnknownService => "unknown_service",
            Reason::NotExported => "not_exported",
            Reason::PeerUnavailable => "peer_unavailable",
            Reason::PeerStreamFailed => "peer_stream_failed",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::UpstreamFailed => "upstream_failed",
            Reason::NoReadyEndpoints => "no_ready_endpoints",
            Reason::BadPath => "bad_path",
            Reason::BadOverride => "bad_override",
            Reason::Timeout => "timeout",
            Reason::Denied => "denied",
            Reason::Overloaded => "overloaded",
            Reason::Drained => "drained",
        }
    }

    /// The reason whose code is `code`, for a code a peer sent back.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The HTTP status the gateway answers with.
    pub fn status(self) -> StatusCode {
        match self {
            Reason::MissingAuthority | Reason::BadPath | Reason::BadOverride => {
                StatusCode::BAD_REQUEST
            }
            Reason::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Reason::Denied => StatusCode::FORBIDDEN,
            Reason::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reason::NotOurZone => StatusCode::MISDIRECTED_REQUEST,
            Reason::UnknownService | Reason::NotExported => StatusCode::NOT_FOUND,
            Reason::PeerUnavailable
            | Reason::UpstreamUnavailable
            | Reason::NoReadyEndpoints
            | Reason::Overloaded
            | Reason::Drained => StatusCode::SERVICE_UNAVAILABLE,
            Reason::PeerStreamFailed | Reason::UpstreamFailed => StatusCode::BAD_GATEWAY,
        }
    }

    /// The gateway's own response for this reason: status, reason header and a one-line body.
    pub fn response(self) -> Response<Body> {
        let text = format!("meshfed: {}\n", self.code());
        let mut response = Response::new(body::full(Bytes::from(text)));
        *response.status_mut() = self.status();
        response
            .headers_mut()
            .insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}
