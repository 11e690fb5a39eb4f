//! What the gateway records about each request when it is answered: its metrics, its server
//! span, and its access log line, all from one [`Exchange`]; and the client span of each try
//! it forwards.
//!
//! An exchange ends when the response head is sent: durations in metrics, spans and logs do
//! not include the time the body takes to stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderMap, Request, Response};
use meshfed_discovery::{Label, ServiceKey};
use meshfed_trust::SpiffeId;

use crate::access_log::{self, Timestamp};
use crate::metrics::{ClusterValue, Direction, RequestLabels, ServiceValue, TcpLabels};
use crate::proxy::forward::ATTEMPTS_HEADER;
use crate::proxy::local::FAULT_HEADER;
use crate::reason::{ERROR_HEADER, Reason};
use crate::state::State;
use crate::trace::Span;

/// The status recorded for a request whose client went away before it was answered (nginx's
/// "client closed request").
pub(crate) const CLIENT_CLOSED: u16 = 499;
/// The reason recorded with it.
const CLIENT_CLOSED_REASON: &str = "client_closed";
/// Request strings kept in spans and log lines are cut to this many bytes: a client must not
/// make the gateway hold its 64 KiB path thousands of times over in the export queues.
const MAX_RECORDED: usize = 1024;

/// One request, as far as the gateway got with it. Recorded once: when answered
/// ([`Exchange::finish`]), or when dropped unanswered (its client went away) as
/// [`CLIENT_CLOSED`].
#[derive(Debug)]
pub(crate) struct Exchange {
    state: Arc<State>,
    /// Whether it has been recorded.
    done: bool,
    direction: Direction,
    start: SystemTime,
    started: Instant,
    method: http::Method,
    authority: String,
    path: String,
    protocol: &'static str,
    /// The local client (outbound).
    pub(crate) client: Option<SocketAddr>,
    /// The cluster the request came from.
    source_cluster: Label,
    /// The verified identity it came from (inbound).
    pub(crate) source: Option<SpiffeId>,
    pub(crate) service: Option<ServiceKey>,
    pub(crate) destination_cluster: Option<Label>,
    pub(crate) route: Option<String>,
    /// The server span, when traces are recorded.
    pub(crate) span: Option<Span>,
}

/// What the response said, as recorded.
struct Answer<'a> {
    status: u16,
    reason: Option<&'a str>,
    attempts: Option<&'a str>,
    fault: Option<&'a str>,
}

impl Exchange {
    /// Begins recording a request from `source_cluster` with this head.
    pub(crate) fn begin(
        state: &Arc<State>,
        direction: Direction,
        source_cluster: Label,
        head: &Request<impl Sized>,
        authority: &str,
    ) -> Exchange {
        let method = head.method().clone();
        // The authority and path go only to the access log and spans: not kept without them.
        let kept = |s: &str| match state.access_log.is_some() || state.tracer.is_some() {
            true => clip(s),
            false => String::new(),
        };
        let span = state
            .tracer
            .as_ref()
            .map(|t| t.server(head.headers(), method.to_string()));
        Exchange {
            state: state.clone(),
            done: false,
            direction,
            start: SystemTime::now(),
            started: Instant::now(),
            method,
            authority: kept(authority),
            path: kept(head.uri().path()),
            protocol: crate::metrics::protocol_of(head.headers()),
            client: None,
            source_cluster,
            source: None,
            service: None,
            destination_cluster: None,
            route: None,
            span,
        }
    }

    /// Records the request as answered with `response`'s head.
    pub(crate) fn finish<B>(mut self, response: &Response<B>) {
        let headers = response.headers();
        self.record(&Answer {
            status: response.status().as_u16(),
            reason: header(headers, ERROR_HEADER),
            attempts: header(headers, ATTEMPTS_HEADER),
            fault: header(headers, FAULT_HEADER),
        });
    }

    fn record(&mut self, answer: &Answer<'_>) {
        self.done = true;
        let state = self.state.clone();
        let elapsed = self.started.elapsed();
        let status = answer.status;
        if let Some(service) = &self.service {
            let labels = RequestLabels {
                direction: self.direction.label(),
                source_cluster: ClusterValue(Some(self.source_cluster.clone())),
                destination_service: ServiceValue(service.clone()),
                destination_cluster: ClusterValue(self.destination_cluster.clone()),
                response_code: status,
                protocol: self.protocol,
            };
            state.stats.metrics.request(labels, elapsed);
            if let (Direction::Outbound, Some(cluster)) =
                (self.direction, &self.destination_cluster)
            {
                state.stats.routed.add(service, cluster);
                // For a move's gates: a 5xx (the service's or the gateway's) failed; an
                // injected abort is an experiment, not the cluster's failure.
                if answer.fault != Some("abort") {
                    let failed = status >= 500;
                    state.moving.observe(service, cluster, elapsed, failed);
                }
            }
        }
        let span = self.span.take();
        if let Some(log) = &state.access_log {
            log.request(&access_log::Request {
                start_time: Timestamp(self.start),
                direction: self.direction.label(),
                protocol: self.protocol,
                method: self.method.as_str(),
                authority: &self.authority,
                path: &self.path,
                status,
                reason: answer.reason,
                service: self.service.as_ref().map(ToString::to_string),
                source_cluster: self.source_cluster.as_str(),
                destination_cluster: self.destination_cluster.as_ref().map(|c| c.as_str()),
                route: self.route.as_deref(),
                client: self.client.map(|c| c.to_string()),
                source: self.source.as_ref().map(ToString::to_string),
                attempts: answer.attempts,
                fault: answer.fault,
                duration_ms: access_log::millis(elapsed),
                trace_id: span.as_ref().map(|s| s.trace_id.to_string()),
                span_id: span.as_ref().map(|s| s.span_id.to_string()),
                sampled: span.as_ref().map(|s| s.sampled),
            });
        }
        let (Some(mut span), Some(tracer)) = (span, &state.tracer) else {
            return;
        };
        if let Some(service) = &self.service {
            span.name = format!("{} {service}", self.method).into();
        }
        span.set("http.request.method", self.method.to_string());
        span.set("url.path", self.path.clone());
        span.set("server.address", self.authority.clone());
        span.set("http.response.status_code", status);
        span.set("meshfed.direction", self.direction.label());
        span.set("meshfed.protocol", self.protocol);
        span.set("meshfed.source_cluster", self.source_cluster.to_string());
        if let Some(client) = self.client {
            span.set("client.address", client.ip().to_string());
        }
        if let Some(source) = &self.source {
            span.set("meshfed.source", source.to_string());
        }
        if let Some(service) = &self.service {
            span.set("meshfed.service", service.to_string());
        }
        if let Some(cluster) = &self.destination_cluster {
            span.set("meshfed.destination_cluster", cluster.to_string());
        }
        if let Some(route) = self.route.take() {
            span.set("meshfed.route", route);
        }
        if let Some(attempts) = answer.attempts {
            span.set("meshfed.attempts", attempts.to_owned());
        }
        if let Some(fault) = answer.fault {
            span.set("meshfed.fault", fault.to_owned());
        }
        if let Some(reason) = answer.reason {
            span.set("meshfed.reason", reason.to_owned());
        }
        if status >= 500 {
            span.fail(
                answer
                    .reason
                    .map_or_else(|| format!("status {status}"), str::to_owned),
            );
        }
        tracer.finish(span);
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.record(&Answer {
            status: CLIENT_CLOSED,
            reason: Some(CLIENT_CLOSED_REASON),
            attempts: None,
            fault: None,
        });
    }
}

/// `s`, cut to at most [`MAX_RECORDED`] bytes on a character boundary.
fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_RECORDED);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A try's client span, ended with how the try went ([`TrySpan::done`]), or as cancelled if
/// the try is dropped unfinished (the route's timeout, or the client, gave up on it).
pub(crate) struct TrySpan<'a> {
    state: &'a State,
    span: Option<Span>,
    attempt: u32,
}

/// The client span for the `attempt`th try of a request sent on under `parent`, its context
/// written on the request; it records nothing when traces are not recorded.
pub(crate) fn try_span<'a, B>(
    state: &'a State,
    parent: Option<&Span>,
    request: &mut Request<B>,
    (service, cluster): (&ServiceKey, &Label),
    attempt: u32,
) -> TrySpan<'a> {
    let span = state.tracer.as_ref().zip(parent).map(|(tracer, parent)| {
        let mut span = tracer.client(parent, format!("{} {service}", request.method()));
        span.inject(request.headers_mut());
        span.set("http.request.method", request.method().to_string());
        span.set("meshfed.service", service.to_string());
        span.set("meshfed.destination_cluster", cluster.to_string());
        span.set("meshfed.attempt", attempt);
        if cluster != state.cluster() {
            span.set("meshfed.peer", cluster.to_string());
        }
        span
    });
    TrySpan {
        state,
        span,
        attempt,
    }
}

impl TrySpan<'_> {
    /// Ends the span with how the try went.
    pub(crate) fn done<B>(mut self, outcome: &Result<Response<B>, Reason>) {
        let Some(mut span) = self.span.take() else {
            return;
        };
        match outcome {
            Ok(response) => {
                let status = response.status().as_u16();
                span.set("http.response.status_code", status);
                let reason = header(response.headers(), ERROR_HEADER);
                if let Some(reason) = reason {
                    span.set("meshfed.reason", reason.to_owned());
                }
                if status >= 400 {
                    span.fail(reason.map_or_else(|| format!("status {status}"), str::to_owned));
                }
            }
            Err(reason) => {
                span.set("meshfed.reason", reason.code());
                span.fail(reason.code());
            }
        }
        self.finish(span);
    }

    fn finish(&self, span: Span) {
        if let Some(tracer) = &self.state.tracer {
            tracer.finish(span);
        }
    }
}

impl Drop for TrySpan<'_> {
    fn drop(&mut self) {
        let Some(mut span) = self.span.take() else {
            return;
        };
        span.set("meshfed.reason", "cancelled");
        span.fail(format!("try {} cancelled", self.attempt));
        self.finish(span);
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// One TCP connection (outbound) or tunnel (inbound), recorded when it ends.
#[derive(Debug)]
pub(crate) struct TcpExchange {
    direction: Direction,
    start: SystemTime,
    started: Instant,
    service: ServiceKey,
    source_cluster: Label,
    /// The cluster chosen to serve it, once chosen.
    pub(crate) destination_cluster: Option<Label>,
    /// The local client (outbound).
    pub(crate) client: Option<SocketAddr>,
    /// Whether it was counted as opened (and so must be counted as closed).
    opened: bool,
}

impl TcpExchange {
    pub(crate) fn begin(direction: Direction, service: ServiceKey, source: Label) -> Self {
        TcpExchange {
            direction,
            start: SystemTime::now(),
            started: Instant::now(),
            service,
            source_cluster: source,
            destination_cluster: None,
            client: None,
            opened: false,
        }
    }

    /// Counts the connection as opened, once its destination is chosen (or its choice failed).
    /// A tunnel is counted only once authorized: a peer cannot mint metric labels.
    pub(crate) fn opened(&mut self, state: &State) {
        self.opened = true;
        state.stats.metrics.tcp_opened(self.labels());
    }

    fn labels(&self) -> TcpLabels {
        TcpLabels {
            direction: self.direction.label(),
            source_cluster: ClusterValue(Some(self.source_cluster.clone())),
            destination_service: ServiceValue(self.service.clone()),
            destination_cluster: ClusterValue(self.destination_cluster.clone()),
        }
    }

    /// Records the connection as ended: it carried `sent` bytes from the client and `received`
    /// back, or failed for `reason` (having carried what it carried).
    pub(crate) fn finish(
        self,
        state: &State,
        (sent, received): (u64, u64),
        reason: Option<Reason>,
    ) {
        if self.opened {
            state
                .stats
                .metrics
                .tcp_closed(self.labels(), sent, received);
        }
        let destination_cluster = self.destination_cluster.as_ref().map(|c| c.as_str());
        let Some(log) = &state.access_log else {
            return;
        };
        log.connection(&access_log::Connection {
            start_time: Timestamp(self.start),
            direction: self.direction.label(),
            protocol: "tcp",
            service: self.service.to_string(),
            source_cluster: self.source_cluster.as_str(),
            destination_cluster,
            client: self.client.map(|c| c.to_string()),
            bytes_sent: sent,
            bytes_received: received,
            reason: reason.map(Reason::code),
            duration_ms: access_log::millis(self.started.elapsed()),
        });
    }
}
