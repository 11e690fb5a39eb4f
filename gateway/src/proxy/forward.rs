//! Sending one request from a local client to where the policy decided, with retries: each try
//! is admitted by the destination's circuit breaker, sent to the local endpoints or the peer
//! gateway, and its outcome recorded for outlier detection. A failed try is tried again if the
//! request is safe to send twice, the failure is one the route retries, tries are left and the
//! service's retry budget allows it.

use http::{HeaderValue, Request, Response};
use meshfed_trust::SpiffeId;

use super::body::{self, Body};
use crate::federation::wire;
use crate::observe;
use crate::policy::retry::{self, Retries, Tried};
use crate::policy::{Dice as _, Labels, ServicePolicy};
use crate::reason::{ERROR_HEADER, Reason};
use crate::route::Destination;
use crate::state::State;
use crate::trace::Span;

/// The response header that says how many tries a request took, when it took more than one.
pub(crate) const ATTEMPTS_HEADER: &str = "x-meshfed-attempts";

/// Where one request goes, and how, as the policy decided.
pub(crate) struct Hop<'a> {
    pub(crate) destination: Destination,
    /// The subset's labels (empty for any endpoint).
    pub(crate) selector: &'a Labels,
    /// The port the client named.
    pub(crate) port: Option<u16>,
    /// The identity asserted for the client to a peer.
    pub(crate) origin: Option<&'a SpiffeId>,
    /// The consistent-hash key, if the service hashes.
    pub(crate) key: Option<u64>,
    /// The service's policy: outlier detection, circuit breaker, retry budget.
    pub(crate) policy: &'a ServicePolicy,
    /// The route's retries.
    pub(crate) retries: &'a Retries,
    /// The server span of the request, the parent of each try's client span.
    pub(crate) trace: Option<&'a Span>,
}

/// Sends `request` as `hop` says, retrying as it allows.
pub(crate) async fn send(
    state: &State,
    hop: &Hop<'_>,
    request: Request<Body>,
) -> Result<Response<Body>, Reason> {
    let service = hop.destination.service();
    state.balancer.deposit(service);
    // Only a request without a body can be sent again: a body streams through, not kept.
    let replayable =
        hop.retries.allows(request.method()) && http_body::Body::is_end_stream(request.body());
    if !replayable {
        return try_once(state, hop, request, 1).await.0;
    }
    let (head, _) = request.into_parts();
    let mut tries = 1u32;
    loop {
        let (answer, tried) = try_once(state, hop, copy(&head), tries).await;
        let retry = tries <= hop.retries.attempts
            && hop.retries.retries(tried)
            && state.balancer.withdraw(service, &hop.policy.retry_budget);
        if !retry {
            return answer.map(|mut response| {
                if tries > 1 {
                    response
                        .headers_mut()
                        .insert(ATTEMPTS_HEADER, HeaderValue::from(tries));
                }
                response
            });
        }
        tracing::debug!(?tried, tries, "retrying");
        drop(answer);
        let wait = retry::backoff(tries).mul_f64(0.5 + 0.5 * state.dice().unit());
        tokio::time::sleep(wait).await;
        tries += 1;
    }
}

/// A bodiless copy of a request head (extensions aside: nothing past this point reads them).
fn copy(head: &http::request::Parts) -> Request<Body> {
    let mut request = Request::new(body::empty());
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = head.uri.clone();
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers.clone();
    request
}

/// One try (the `attempt`th), within the route's per-try timeout, and how it ended.
async fn try_once(
    state: &State,
    hop: &Hop<'_>,
    mut request: Request<Body>,
    attempt: u32,
) -> (Result<Response<Body>, Reason>, Tried) {
    let cluster = match &hop.destination {
        Destination::Local(_) => state.cluster(),
        Destination::Peer { peer, .. } => peer,
    };
    let service = hop.destination.service();
    let span = observe::try_span(state, hop.trace, &mut request, (service, cluster), attempt);
    let outcome = try_within_limit(state, hop, request).await;
    span.done(&outcome.0);
    outcome
}

/// One try, within the route's per-try timeout, and how it ended.
async fn try_within_limit(
    state: &State,
    hop: &Hop<'_>,
    request: Request<Body>,
) -> (Result<Response<Body>, Reason>, Tried) {
    // Boxed: the try's future is made once on the heap and never moved, instead of being
    // copied into each enclosing future's state (and the timeout's) at every request.
    let forwarded = Box::pin(forward(state, hop, request));
    let tried = match hop.retries.per_try_timeout {
        Some(limit) => tokio::time::timeout(limit, forwarded).await,
        None => Ok(forwarded.await),
    };
    match tried {
        Err(_) => {
            // A peer cluster that does not answer in time has failed the try (a local
            // endpoint's wait is counted in its latency by the balancer).
            if let (Destination::Peer { peer, service }, Some(outlier)) =
                (&hop.destination, &hop.policy.outlier_detection)
            {
                state.balancer.record_cluster(service, peer, false, outlier);
            }
            (Err(Reason::Timeout), Tried::TimedOut)
        }
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            (Ok(response), Tried::Status(status))
        }
        Ok(Err(reason)) => {
            let tried = match reason {
                Reason::UpstreamUnavailable | Reason::PeerUnavailable => Tried::ConnectFailure,
                Reason::UpstreamFailed | Reason::PeerStreamFailed => Tried::Reset,
                _ => Tried::Final,
            };
            (Err(reason), tried)
        }
    }
}

/// Sends one try, once the destination's circuit breaker admits it.
async fn forward(
    state: &State,
    hop: &Hop<'_>,
    mut request: Request<Body>,
) -> Result<Response<Body>, Reason> {
    let (peer, service) = match &hop.destination {
        Destination::Local(service) => {
            let limits = &hop.policy.circuit_breaker;
            let admitted = state
                .balancer
                .admit(service, state.cluster(), limits)
                .await?;
            // Boxed, as the peer's way below: each way's future is made only when taken,
            // and this one is no larger than the two ways' common part.
            let local = state.forward_local(service, hop.port, hop.selector, hop.key, request);
            let response = Box::pin(local).await?;
            return Ok(response.map(|b| body::guarded(b, admitted)));
        }
        Destination::Peer { peer, service } => (peer, service),
    };
    tracing::Span::current().record("peer.cluster", tracing::field::display(peer));
    if !hop.selector.is_empty() {
        let labels = HeaderValue::from_str(&wire::format_labels(hop.selector))
            .map_err(|_| Reason::NoReadyEndpoints)?;
        request.headers_mut().insert(wire::ENDPOINT_LABELS, labels);
    }
    if let Some(origin) = hop
        .origin
        .and_then(|id| HeaderValue::from_str(&id.to_string()).ok())
    {
        request.headers_mut().insert(wire::ORIGIN, origin);
    }
    let Some(client) = state.peers.get(peer) else {
        return Err(Reason::UnknownService);
    };
    let admitted = state
        .balancer
        .admit(service, peer, &hop.policy.circuit_breaker)
        .await?;
    let answer = Box::pin(client.forward(request, service, hop.port)).await;
    if let Some(outlier) = &hop.policy.outlier_detection {
        // The cluster failed if its gateway could not serve the request (it answered for
        // itself with a 5xx) or could not be reached; a service's own 5xx is the service's.
        let failed = match &answer {
            Ok(response) => {
                response.status().is_server_error() && response.headers().contains_key(ERROR_HEADER)
            }
            Err(_) => true,
        };
        state
            .balancer
            .record_cluster(service, peer, !failed, outlier);
    }
    answer.map(|response| response.map(|b| body::guarded(b, admitted)))
}
