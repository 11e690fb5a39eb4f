//! Sending finished spans to an OpenTelemetry collector over OTLP: gRPC (`TraceService/Export`,
//! port 4317 by convention) or HTTP (`POST /v1/traces` with a protobuf body, port 4318).
//!
//! Spans are batched: a batch leaves when it holds [`BATCH`] spans or [`FLUSH_EVERY`] after its
//! first span, whichever comes first. A batch the collector refuses or does not take within
//! [`EXPORT_TIMEOUT`] is dropped and counted, not retried: traces are worth less than the
//! memory and the data plane they would hold up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as otlp;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Kind, Span, Value};
use crate::config::OtlpProtocol as Protocol;

/// The most spans in one export.
const BATCH: usize = 512;
/// The longest a finished span waits for its batch to leave.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one warning about failing exports this often.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// The OTLP/HTTP path for traces.
const HTTP_PATH: &str = "/v1/traces";

/// Spans exported and lost, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) exported: AtomicU64,
    /// Refused by the collector, timed out, or sent to an unreachable one.
    pub(crate) failed: AtomicU64,
    /// Dropped before export because the queue was full.
    pub(crate) dropped: AtomicU64,
}

/// Who this gateway is, as every span's resource says.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    /// `service.name`.
    pub(crate) service: String,
    /// `meshfed.cluster`.
    pub(crate) cluster: String,
}

/// Exports the spans `finished` yields to the collector at `endpoint` (an `http://` URL),
/// until `stop` (or until every [`super::Tracer`] is gone); then sends what is queued and
/// returns.
pub(crate) async fn run(
    mut finished: mpsc::Receiver<Span>,
    endpoint: http::Uri,
    protocol: Protocol,
    origin: Origin,
    counts: Arc<Counts>,
    stop: CancellationToken,
) {
    let mut sink = match Sink::new(&endpoint, protocol) {
        Ok(sink) => sink,
        Err(error) => {
            tracing::warn!(%endpoint, %error, "traces: cannot use the OTLP endpoint");
            return;
        }
    };
    let resource = resource(&origin);
    let mut warned: Option<Instant> = None;
    let mut batch = Vec::with_capacity(BATCH);
    let mut stopping = false;
    loop {
        // Wait for the first span of a batch, then gather until it is full or due. Once
        // stopped, the queue is closed: what is in it is sent without waiting.
        let first = tokio::select! {
            first = finished.recv() => first,
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                finished.close();
                continue;
            }
        };
        let Some(first) = first else {
            return;
        };
        batch.push(first);
        let due = tokio::time::Instant::now() + FLUSH_EVERY;
        let mut closed = false;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(due, finished.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        let request = request(resource.clone(), batch.drain(..));
        let sent = tokio::time::timeout(EXPORT_TIMEOUT, sink.send(request)).await;
        match sent.unwrap_or_else(|_| Err("timed out".into())) {
            Ok(()) => {
                counts.exported.fetch_add(count, Ordering::Relaxed);
            }
            Err(error) => {
                counts.failed.fetch_add(count, Ordering::Relaxed);
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(%endpoint, %error, spans = count, "traces: export failed; spans dropped");
                }
            }
        }
        if closed {
            return;
        }
    }
}

/// The collector's end of the wire.
enum Sink {
    Grpc(TraceServiceClient<tonic::transport::Channel>),
    Http {
        client: Box<
            hyper_util::client::legacy::Client<
                hyper_util::client::legacy::connect::HttpConnector,
                Full<Bytes>,
            >,
        >,
        uri: http::Uri,
    },
}

impl Sink {
    fn new(endpoint: &http::Uri, protocol: Protocol) -> Result<Sink, String> {
        match protocol {
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from(endpoint.clone())
                    .timeout(EXPORT_TIMEOUT)
                    .connect_lazy();
                Ok(Sink::Grpc(TraceServiceClient::new(channel)))
            }
            Protocol::HttpProtobuf => {
                let base = endpoint.to_string();
                let uri = format!("{}{HTTP_PATH}", base.trim_end_matches('/'))
                    .parse()
                    .map_err(|e| format!("{e}"))?;
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http();
                let client = Box::new(client);
                Ok(Sink::Http { client, uri })
            }
        }
    }

    async fn send(&mut self, request: ExportTraceServiceRequest) -> Result<(), String> {
        match self {
            Sink::Grpc(client) => {
                client.export(request).await.map(drop).map_err(|status| {
                    format!("gRPC status {:?}: {}", status.code(), status.message())
                })
            }
            Sink::Http { client, uri } => {
                let body = Full::new(Bytes::from(request.encode_to_vec()));
                let post = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(body)
                    .map_err(|e| e.to_string())?;
                let response = client.request(post).await.map_err(|e| e.to_string())?;
                match response.status().is_success() {
                    true => Ok(()),
                    false => Err(format!("HTTP status {}", response.status())),
                }
            }
        }
    }
}

fn resource(origin: &Origin) -> Resource {
    Resource {
        attributes: vec![
            attribute("service.name", Value::from(origin.service.clone())),
            attribute("meshfed.cluster", Value::from(origin.cluster.clone())),
        ],
        ..Resource::default()
    }
}

fn request(resource: Resource, spans: impl Iterator<Item = Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![otlp::ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![otlp::ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "meshfed".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                spans: spans.map(encode).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The OTLP form of a finished span.
fn encode(span: Span) -> otlp::Span {
    let start = span
        .start
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let kind = match span.kind {
        Kind::Server => otlp::span::SpanKind::Server,
        Kind::Client => otlp::span::SpanKind::Client,
    };
    // Trace flags (sampled), and whether the parent is known to be remote: a server span's
    // parent is the caller's, a client span's is our own server span.
    const SAMPLED: u32 = 0x01;
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    let remote = span.kind == Kind::Server && span.parent.is_some();
    let flags = SAMPLED | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 };
    let status = span.error.map(|message| otlp::Status {
        message: message.into_owned(),
        code: otlp::status::StatusCode::Error as i32,
    });
    otlp::Span {
        trace_id: span.trace_id.0.to_vec(),
        span_id: span.span_id.0.to_vec(),
        trace_state: span
            .tracestate
            .as_ref()
            .and_then(|s| s.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        parent_span_id: span.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
        flags,
        name: span.name.into_owned(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + span.duration.as_nanos() as u64,
        attributes: span
            .attributes
            .into_iter()
            .map(|(key, value)| attribute(key, value))
            .collect(),
        status,
        ..otlp::Span::default()
    }
}

fn attribute(key: &str, value: Value) -> KeyValue {
    let value = match value {
        Value::Str(s) => any_value::Value::StringValue(s.into_owned()),
        Value::Int(n) => any_value::Value::IntValue(n),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
    }
}
