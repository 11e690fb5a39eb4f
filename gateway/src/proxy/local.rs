//! The local listener: applications call services here by their MCS or cluster-pinned name.
//!
//! A request goes through these steps, in order:
//!
//! 1. hop-by-hop and identity headers are removed (an override header is read first, and kept
//!    only if the client is trusted with overrides);
//! 2. its path is made canonical ([`crate::policy::path`]); the endpoint is sent that form;
//! 3. the `Host` names a service (and maybe pins a cluster);
//! 4. the traffic policy picks a route, a cluster and subset, and draws faults;
//! 5. an injected delay is waited out, an injected abort answered;
//! 6. the route's request header changes are made, and the request is forwarded to the local
//!    endpoints or the peer gateway within the route's timeout;
//! 7. the route's response header changes are made to the response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use meshfed_discovery::ServiceKey;
use tracing::Instrument;

use super::body::{self, Body};
use super::forward::{self, Hop};
use super::headers;
use crate::federation::wire;
use crate::metrics::Direction;
use crate::observe::Exchange;
use crate::policy::retry::Retries;
use crate::policy::{
    AbortStatus, Decision, Labels, Pin, RequestView, Target, baggage, balance, path as canonical,
};
use crate::reason::Reason;
use crate::route::Destination;
use crate::state::State;

/// The request header with which a trusted client pins the next hop to one cluster.
pub(crate) const OVERRIDE_HEADER: &str = "x-meshfed-cluster";
/// The W3C baggage header, whose `meshfed.<svc>.<ns>` member pins a service.
const BAGGAGE_HEADER: &str = "baggage";
/// Marks a response to a request a fault delayed (`delay`), or one the gateway made up because
/// a fault aborted the request (`abort`).
pub(crate) const FAULT_HEADER: &str = "x-meshfed-fault";

/// Routes one request from a local client, connected from `client`, and returns the response
/// to send back.
pub(crate) async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
    client: SocketAddr,
) -> Response<Body> {
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
        route = tracing::field::Empty,
        peer.cluster = tracing::field::Empty,
    );
    async move {
        let client_version = request.version();
        let cluster = state.cluster().clone();
        let mut exchange =
            Exchange::begin(&state, Direction::Outbound, cluster, &request, &authority);
        exchange.client = Some(client);
        // Boxed: the routing's future is large, and this one, copied into its own box at
        // every request, need not be.
        let routed = Box::pin(proxy(&state, &authority, request, client, &mut exchange)).await;
        let mut response = match routed {
            Ok(response) => {
                tracing::debug!(status = %response.status(), "forwarded");
                response
            }
            Err(reason) => {
                tracing::debug!(%reason, "refused");
                reason.response()
            }
        };
        // The response may have arrived over HTTP/3; it leaves in the client's HTTP version.
        *response.version_mut() = client_version;
        exchange.finish(&response);
        response
    }
    .instrument(span)
    .await
}

async fn proxy(
    state: &State,
    authority: &str,
    request: Request<Incoming>,
    client: SocketAddr,
    exchange: &mut Exchange,
) -> Result<Response<Body>, Reason> {
    let (mut parts, incoming) = request.into_parts();
    let policy = state.policy();
    let client = client.ip();
    let trusted = policy.overrides.trusts(client);
    let header_pin = header_pin(&parts, trusted)?;
    if !trusted {
        strip_baggage_pins(&mut parts.headers);
    }
    let origin = policy.origin_of(client);
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::strip_untrusted(&mut parts.headers);
    state.via.append(&mut parts.headers, parts.version);
    if headers::section_size(&parts) > wire::MAX_FIELD_SECTION_SIZE {
        return Err(Reason::HeadersTooLarge);
    }
    if let Some(uri) = canonical::canonical_uri(&parts.uri).map_err(|_| Reason::BadPath)? {
        parts.uri = uri;
    }
    let port = port_of(authority);

    let routes = state.routes();
    let named = routes.resolve(authority)?;
    let service = named.service.clone();
    tracing::Span::current().record("svc", tracing::field::display(&service));
    exchange.service = Some(service.clone());
    let pin = match header_pin {
        Some(pin) => Some(pin),
        None if trusted => baggage_pin(&parts.headers, &service)?,
        None => None,
    };
    let view = RequestView {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        client: Some(client),
    };
    let mut dice = state.dice();
    let decision: Decision<'_> = match &named.pinned {
        // A cluster-pinned name is its own override: no route's split applies, faults do.
        Some(_) => policy.decide(&service, &view, None, |_, _| true, &mut dice),
        None => policy.decide(
            &service,
            &view,
            pin.as_ref(),
            |cluster, selector| routes.available(&service, cluster, selector),
            &mut dice,
        ),
    };
    if let Some(route) = decision.route {
        tracing::Span::current().record("route", route.name.as_str());
        exchange.route = Some(route.name.to_string());
    }
    // A move's split decides the cluster, unless the request is pinned to one.
    let moved = match (&named.pinned, &pin) {
        (None, None) => state.moving.split(&service),
        _ => None,
    };
    let target = match moved {
        Some(moved) => {
            let session = moved.published.session.as_ref();
            let key = session.and_then(|on| balance::key(on, &view));
            let any = Labels::new();
            let available =
                |cluster: &meshfed_discovery::Label| routes.available(&service, cluster, &any);
            match moved.pick(key, available) {
                Some(cluster) => Target::Cluster(cluster.clone(), Labels::new()),
                // No cluster of the split can take it: the policy routes it.
                None => decision.target,
            }
        }
        None => decision.target,
    };
    let (destination, selector) = match (&named.pinned, target) {
        (Some(backend), _) => (
            routes.to_backend(&service, backend, &Labels::new())?,
            Labels::new(),
        ),
        (None, Target::Spread) => (
            state.spread(&routes, &service, decision.service, decision.key, &mut dice)?,
            Labels::new(),
        ),
        (None, Target::Cluster(cluster, selector)) => {
            (routes.to_cluster(&service, &cluster, &selector)?, selector)
        }
        (None, Target::Unavailable) => return Err(Reason::NoReadyEndpoints),
    };

    let runtime_faults = state.runtime_faults();
    let injected = match runtime_faults.is_empty() {
        true => decision.injected,
        false => runtime_faults.roll(
            &service,
            decision.route.map(|r| r.name.as_str()),
            std::time::Instant::now(),
            &mut dice,
            decision.injected,
        ),
    };
    exchange.destination_cluster = Some(match &destination {
        Destination::Local(_) => state.cluster().clone(),
        Destination::Peer { peer, .. } => peer.clone(),
    });
    if let Some(delay) = injected.delay {
        tracing::debug!(?delay, "fault: delaying");
        tokio::time::sleep(delay).await;
    }
    if let Some(abort) = injected.abort {
        tracing::debug!(?abort, "fault: aborting");
        return Ok(aborted(abort));
    }
    if let Some(route) = decision.route {
        route.request_headers.apply(&mut parts.headers);
    }
    let request = Request::from_parts(parts, body::incoming(incoming));
    let default_retries = Retries::default();
    let hop = Hop {
        destination,
        selector: &selector,
        port,
        origin,
        key: decision.key,
        policy: decision.service,
        retries: decision
            .route
            .and_then(|r| r.retries.as_ref())
            .unwrap_or(&default_retries),
        trace: exchange.span.as_ref(),
    };
    // Each arm makes its own future, so that they share their room in this one's.
    let response = match decision.route.and_then(|r| r.timeout) {
        Some(timeout) => tokio::time::timeout(timeout, forward::send(state, &hop, request))
            .await
            .map_err(|_| Reason::Timeout)?,
        None => forward::send(state, &hop, request).await,
    };
    let mut response = state.forwarded(response?);
    if let Some(route) = decision.route {
        route.response_headers.apply(response.headers_mut());
    }
    if injected.delay.is_some() {
        response
            .headers_mut()
            .insert(FAULT_HEADER, HeaderValue::from_static("delay"));
    }
    Ok(response)
}

/// The cluster a trusted client pins this request to with [`OVERRIDE_HEADER`]. The header of
/// a client that is not trusted is ignored (and removed with the other `x-meshfed-*` headers).
fn header_pin(parts: &http::request::Parts, trusted: bool) -> Result<Option<Pin>, Reason> {
    let Some(value) = parts.headers.get(OVERRIDE_HEADER) else {
        return Ok(None);
    };
    if !trusted {
        tracing::debug!("override from a client not trusted with overrides; ignored");
        return Ok(None);
    }
    let cluster = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or(Reason::BadOverride)?;
    Ok(Some(Pin {
        cluster,
        subset: None,
    }))
}

/// Takes the pins out of an untrusted client's `baggage` (the rest of it is the
/// applications' and travels on): a pin must not reach a later gateway, whose client is a
/// trusted application that only propagated it.
fn strip_baggage_pins(headers: &mut http::HeaderMap) {
    let values: Vec<HeaderValue> = headers.get_all(BAGGAGE_HEADER).iter().cloned().collect();
    let changed = values.iter().any(|v| {
        v.to_str()
            .map_or(true, |v| baggage::without_pins(v).is_some())
    });
    if !changed {
        return;
    }
    tracing::debug!("pins in baggage from a client not trusted with overrides; removed");
    headers.remove(BAGGAGE_HEADER);
    for value in values {
        let Ok(text) = value.to_str() else { continue };
        let kept = baggage::without_pins(text).unwrap_or_else(|| text.to_owned());
        if kept.trim().is_empty() {
            continue;
        }
        if let Ok(kept) = HeaderValue::from_str(&kept) {
            headers.append(BAGGAGE_HEADER, kept);
        }
    }
}

/// Where a trusted client's `baggage` pins `service` ([`baggage`]), if it does. The header
/// stays on the request for the next application in the chain to propagate.
fn baggage_pin(headers: &http::HeaderMap, service: &ServiceKey) -> Result<Option<Pin>, Reason> {
    let values = headers
        .get_all(BAGGAGE_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok());
    baggage::pin(values, service)
        .transpose()
        .map_err(|_| Reason::BadOverride)
}

/// The gateway's answer to a request a fault aborts: the status asked for, or for gRPC a
/// trailers-only response (HTTP 200 with `grpc-status` in the head), which gRPC clients read
/// as the call's status.
fn aborted(status: AbortStatus) -> Response<Body> {
    let mut response = match status {
        AbortStatus::Http(status) => {
            let mut response = Response::new(body::full(bytes::Bytes::from_static(
                b"meshfed: fault injected\n",
            )));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
        AbortStatus::Grpc(code) => {
            let mut response = Response::new(body::empty());
            *response.status_mut() = StatusCode::OK;
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
            headers.insert(
                "grpc-message",
                HeaderValue::from_static("meshfed: fault injected"),
            );
            response
        }
    };
    response
        .headers_mut()
        .insert(FAULT_HEADER, HeaderValue::from_static("abort"));
    response
}

/// The port an authority names, if any.
fn port_of(authority: &str) -> Option<u16> {
    authority.rsplit_once(':')?.1.parse().ok()
}
