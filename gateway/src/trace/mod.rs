//! Distributed traces: a server span when the gateway accepts a request, a client span for each
//! try it forwards, the trace context carried on (W3C and B3, [`context`]), and finished spans
//! batched to an OTLP collector ([`export`]).
//!
//! Sampling is parent-based: a request whose caller decided is sampled as the caller decided;
//! one that starts a trace here (or whose B3 caller deferred) is sampled when its trace ID falls
//! under the configured ratio, the rule OpenTelemetry's `TraceIdRatioBased` uses, so every
//! gateway that sees the trace without a decision decides alike. A span that is not sampled
//! still gets IDs and still carries the context on, marked not sampled; it is never exported.
//!
//! With no `tracing` configured there is no [`Tracer`] and trace headers pass through untouched.

pub(crate) mod context;
pub(crate) mod export;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use http::{HeaderMap, HeaderValue};
use tokio::sync::mpsc;

use self::context::{B3Style, Incoming, Outgoing, SpanId, TraceId};

/// Finished spans waiting for the exporter; past this, new spans are dropped (and counted)
/// rather than held: a slow collector must not cost the data plane memory.
const QUEUE: usize = 8192;

/// Whether a span serves a request or sends one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Server,
    Client,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Str(Cow<'static, str>),
    Int(i64),
}

/// Starts spans and hands finished ones to the exporter.
#[derive(Debug)]
pub(crate) struct Tracer {
    /// Sample a trace that starts here when its ID's low 64 bits are below this; `None`
    /// samples every one.
    threshold: Option<u64>,
    /// The source of span and trace IDs: a counter, hashed with a key chosen at random per
    /// tracer (SipHash, a keyed pseudo-random function), so that IDs seen from outside say
    /// nothing about the next ones.
    ids: AtomicU64,
    keys: std::hash::RandomState,
    spans: mpsc::Sender<Span>,
    /// Spans exported and lost, shared with the exporter.
    pub(crate) counts: Arc<export::Counts>,
}

/// A span being recorded. End it with [`Tracer::finish`]; one that is dropped is not exported.
#[derive(Debug)]
pub(crate) struct Span {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) parent: Option<SpanId>,
    pub(crate) sampled: bool,
    /// B3 debug, carried on.
    debug: bool,
    pub(crate) kind: Kind,
    pub(crate) name: Cow<'static, str>,
    pub(crate) start: SystemTime,
    started: Instant,
    pub(crate) duration: std::time::Duration,
    pub(crate) attributes: Vec<(&'static str, Value)>,
    /// Set when the span failed, with why.
    pub(crate) error: Option<Cow<'static, str>>,
    tracestate: Option<HeaderValue>,
    b3: Option<B3Style>,
}

impl Tracer {
    /// A tracer sampling `ratio` (0 to 1) of the traces that start here, and the receiving end
    /// of its finished spans, for [`export::run`].
    pub(crate) fn new(ratio: f64, seed: u64) -> (Tracer, mpsc::Receiver<Span>) {
        let (spans, finished) = mpsc::channel(QUEUE);
        let threshold = (ratio < 1.0).then(|| (ratio.max(0.0) * 2f64.powi(64)) as u64);
        let tracer = Tracer {
            threshold,
            ids: AtomicU64::new(seed),
            keys: std::hash::RandomState::new(),
            spans,
            counts: Arc::default(),
        };
        (tracer, finished)
    }

    /// The server span of a request with these headers: a child of the caller's span if it
    /// sent one, else the root of a new trace.
    pub(crate) fn server(&self, headers: &HeaderMap, name: impl Into<Cow<'static, str>>) -> Span {
        let Incoming {
            parent,
            sampled,
            debug,
            tracestate,
            b3,
        } = context::extract(headers);
        let (trace_id, parent) = match parent {
            Some((trace_id, span_id)) => (trace_id, Some(span_id)),
            None => (self.trace_id(), None),
        };
        let sampled = sampled.unwrap_or_else(|| self.samples(trace_id));
        Span {
            parent,
            sampled,
            debug,
            tracestate,
            b3,
            ..self.begin(Kind::Server, name.into(), trace_id)
        }
    }

    /// A client span, a child of `parent`, whose context [`Span::inject`] writes on the
    /// request it sends.
    pub(crate) fn client(&self, parent: &Span, name: impl Into<Cow<'static, str>>) -> Span {
        Span {
            parent: Some(parent.span_id),
            sampled: parent.sampled,
            debug: parent.debug,
            tracestate: parent.tracestate.clone(),
            b3: parent.b3,
            ..self.begin(Kind::Client, name.into(), parent.trace_id)
        }
    }

    /// A root span starting now, not sampled until the caller says otherwise.
    fn begin(&self, kind: Kind, name: Cow<'static, str>, trace_id: TraceId) -> Span {
        Span {
            trace_id,
            span_id: self.span_id(),
            parent: None,
            sampled: false,
            debug: false,
            kind,
            name,
            start: SystemTime::now(),
            started: Instant::now(),
            duration: std::time::Duration::ZERO,
            attributes: Vec::new(),
            error: None,
            tracestate: None,
            b3: None,
        }
    }

    /// Ends `span` now and queues it for export if it is sampled.
    pub(crate) fn finish(&self, mut span: Span) {
        if !span.sampled {
            return;
        }
        span.duration = span.started.elapsed();
        if self.spans.try_send(span).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn samples(&self, trace_id: TraceId) -> bool {
        let Some(threshold) = self.threshold else {
            return true;
        };
        let low: [u8; 8] = trace_id.0[8..].try_into().unwrap_or_default();
        u64::from_be_bytes(low) < threshold
    }

    fn next_id(&self) -> u64 {
        use std::hash::BuildHasher as _;
        self.keys.hash_one(self.ids.fetch_add(1, Ordering::Relaxed))
    }

    fn span_id(&self) -> SpanId {
        loop {
            let id = self.next_id();
            if id != 0 {
                return SpanId(id.to_be_bytes());
            }
        }
    }

    fn trace_id(&self) -> TraceId {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next_id().to_be_bytes());
        id[8..].copy_from_slice(&self.span_id().0);
        TraceId(id)
    }
}

// === impl Span ===

impl Span {
    /// Records an attribute (only on a sampled span: others are never exported).
    pub(crate) fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if self.sampled {
            self.attributes.push((key, value.into()));
        }
    }

    /// Marks the span failed.
    pub(crate) fn fail(&mut self, why: impl Into<Cow<'static, str>>) {
        self.error = Some(why.into());
    }

    /// Writes this span's context on a request it sends, as the next hop's parent.
    pub(crate) fn inject(&self, headers: &mut HeaderMap) {
        context::inject(
            headers,
            &Outgoing {
                trace_id: self.trace_id,
                span_id: self.span_id,
                parent_span_id: self.parent,
                sampled: self.sampled,
                debug: self.debug,
                tracestate: self.tracestate.as_ref(),
                b3: self.b3,
            },
        );
    }
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Self {
        Value::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(Cow::Owned(s))
    }
}

impl From<u16> for Value {
    fn from(n: u16) -> Self {
        Value::Int(i64::from(n))
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Int(i64::from(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traceparent(trace: &str, flags: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("00-{trace}-00f067aa0ba902b7-{flags}");
        headers.insert(context::TRACEPARENT, value.parse().expect("valid"));
        headers
    }

    #[test]
    fn follows_the_parent_and_links_children() {
        let (tracer, _spans) = Tracer::new(0.0, 7);
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let server = tracer.server(&traceparent(trace, "01"), "GET");
        assert!(
            server.sampled,
            "the parent's decision wins over a ratio of 0"
        );
        assert_eq!(server.trace_id.to_string(), trace);
        assert_eq!(
            server.parent.expect("valid").to_string(),
            "00f067aa0ba902b7"
        );
        let client = tracer.client(&server, "GET");
        assert_eq!(client.trace_id, server.trace_id);
        assert_eq!(client.parent, Some(server.span_id));
        assert_ne!(client.span_id, server.span_id);

        let mut headers = HeaderMap::new();
        client.inject(&mut headers);
        let next = tracer.server(&headers, "GET");
        assert_eq!(next.parent, Some(client.span_id));
        assert_eq!(next.trace_id, server.trace_id);

        let unsampled = tracer.server(&traceparent(trace, "00"), "GET");
        assert!(!unsampled.sampled);
    }

    #[test]
    fn samples_new_traces_by_ratio() {
        for (ratio, low, high) in [(0.0, 0, 0), (1.0, 10_000, 10_000), (0.25, 2_200, 2_800)] {
            let (tracer, _spans) = Tracer::new(ratio, 11);
            let sampled = (0..10_000)
                .filter(|_| tracer.server(&HeaderMap::new(), "GET").sampled)
                .count();
            // 0.25 of 10,000: 2,500 with a standard deviation of 43; the bounds are 7 of them.
            assert!((low..=high).contains(&sampled), "{ratio}: {sampled}");
        }
    }

    #[test]
    fn only_sampled_spans_are_queued() {
        let (tracer, mut spans) = Tracer::new(1.0, 3);
        let unsampled = tracer.server(&traceparent("4bf92f3577b34da6a3ce929d0e0e4736", "00"), "A");
        tracer.finish(unsampled);
        let mut sampled = tracer.server(&HeaderMap::new(), "B");
        sampled.set("http.response.status_code", 200u16);
        tracer.finish(sampled);
        let queued = spans.try_recv().expect("valid");
        assert_eq!(queued.name, "B");
        assert_eq!(
            queued.attributes,
            [("http.response.status_code", Value::Int(200))]
        );
        assert!(spans.try_recv().is_err());
    }
}
