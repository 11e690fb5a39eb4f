//! What the gateway records about each request when it is answered: its metrics, its server
//! span, and its access log line, all from one [`Exchange`]; and the client span of each try
//! it forwards.
//!
//! An exchange ends when the response head is sent: durations in metrics, spans and logs do
//! not include the time the body takes to stream.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use http::{HeaderMap, Request, Response};
use meshfed_discovery::{Label, ServiceKey};
use meshfed_trust::SpiffeId;

use crate::access_log::{self, Timestamp};
use crate::metrics::{Direction, RequestLabels, TcpLabels};
use crate::proxy::forward::ATTEMPTS_HEADER;
use crate::proxy::local::FAULT_HEADER;
use crate::reason::{ERROR_HEADER, Reason};
use crate::state::State;
use crate::trace::Span;

/// One request, as far as the gateway got with it.
#[derive(Debug)]
pub(crate) struct Exchange {
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

impl Exchange {
    /// Begins recording a request from `source_cluster` with this head.
    pub(crate) fn begin(
        state: &State,
        direction: Direction,
        source_cluster: Label,
        head: &Request<impl Sized>,
        authority: &str,
    ) -> Exchange {
        let method = head.method().clone();
        let span = state
            .tracer
            .as_ref()
            .map(|t| t.server(head.headers(), method.to_string()));
        Exchange {
            direction,
            start: SystemTime::now(),
            started: Instant::now(),
            method,
            authority: authority.to_owned(),
            path: head.uri().path().to_owned(),
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
    pub(crate) fn finish<B>(mut self, state: &State, response: &Response<B>) {
        let elapsed = self.started.elapsed();
        let status = response.status().as_u16();
        let headers = response.headers();
        let reason = header(headers, ERROR_HEADER);
        let attempts = header(headers, ATTEMPTS_HEADER);
        let fault = header(headers, FAULT_HEADER);
        if let Some(service) = &self.service {
            let labels = RequestLabels {
                direction: self.direction.label(),
                source_cluster: self.source_cluster.to_string(),
                destination_service: service.to_string(),
                destination_cluster: self
                    .destination_cluster
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                response_code: status,
                protocol: self.protocol,
            };
            state.stats.metrics.request(labels, elapsed);
            if let (Direction::Outbound, Some(cluster)) =
                (self.direction, &self.destination_cluster)
            {
                state.stats.routed.add(service, cluster);
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
                reason,
                service: self.service.as_ref().map(ToString::to_string),
                source_cluster: self.source_cluster.as_str(),
                destination_cluster: self.destination_cluster.as_ref().map(|c| c.as_str()),
                route: self.route.as_deref(),
                client: self.client.map(|c| c.to_string()),
                source: self.source.as_ref().map(ToString::to_string),
                attempts,
                fault,
                duration_ms: access_log::millis(elapsed),
                trace_id: span.as_ref().map(|s| s.trace_id.to_string()),
                span_id: span.as_ref().map(|s| s.span_id.to_string()),
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
        if let Some(route) = self.route {
            span.set("meshfed.route", route);
        }
        if let Some(attempts) = attempts {
            span.set("meshfed.attempts", attempts.to_owned());
        }
        if let Some(fault) = fault {
            span.set("meshfed.fault", fault.to_owned());
        }
        if let Some(reason) = reason {
            span.set("meshfed.reason", reason.to_owned());
        }
        if status >= 500 {
            span.fail(reason.map_or_else(|| format!("status {status}"), str::to_owned));
        }
        tracer.finish(span);
    }
}

/// A client span for one try of a request sent on under `parent`, its context written on the
/// request; `None` when traces are not recorded.
pub(crate) fn try_span<B>(
    state: &State,
    parent: Option<&Span>,
    request: &mut Request<B>,
    service: &ServiceKey,
    cluster: &Label,
) -> Option<Span> {
    let (tracer, parent) = (state.tracer.as_ref()?, parent?);
    let mut span = tracer.client(parent, format!("{} {service}", request.method()));
    span.inject(request.headers_mut());
    span.set("http.request.method", request.method().to_string());
    span.set("meshfed.service", service.to_string());
    span.set("meshfed.destination_cluster", cluster.to_string());
    if cluster != state.cluster() {
        span.set("meshfed.peer", cluster.to_string());
    }
    Some(span)
}

/// Ends a try's client span with how the try went.
pub(crate) fn try_done<B>(
    state: &State,
    span: Option<Span>,
    attempt: u32,
    outcome: &Result<Response<B>, Reason>,
) {
    let (Some(mut span), Some(tracer)) = (span, &state.tracer) else {
        return;
    };
    span.set("meshfed.attempt", attempt);
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
    tracer.finish(span);
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
            source_cluster: self.source_cluster.to_string(),
            destination_service: self.service.to_string(),
            destination_cluster: self
                .destination_cluster
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
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
