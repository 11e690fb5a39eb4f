//! A test OpenTelemetry collector: the OTLP trace service over gRPC (a tonic server on the
//! published OpenTelemetry protobuf definitions, as the `opentelemetry-proto` crate generates
//! them) and over HTTP (`POST /v1/traces`, protobuf body), both on one free loopback port, as
//! a collector's 4317 and 4318 would be. It keeps every span it receives.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use meshfed_gateway::proxy::body;
use meshfed_gateway::proxy::serve::{Versions, serve_http};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
pub use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;

/// A span as received, with the resource it came from.
#[derive(Clone, Debug)]
pub struct Received {
    /// The resource's `service.name`.
    pub service: String,
    /// How it arrived: `grpc` or `http`.
    pub via: &'static str,
    pub span: Span,
}

/// A running collector; it stops when dropped.
#[derive(Debug)]
pub struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    stop: CancellationToken,
}

impl Collector {
    /// Starts a collector on a free loopback port.
    pub async fn start() -> std::io::Result<Collector> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let grpc = TraceServiceServer::new(Keep(spans.clone()));
        let kept = spans.clone();
        tokio::spawn(serve_http(
            listener,
            Versions::Http1And2,
            move |request: http::Request<hyper::body::Incoming>| {
                let (mut grpc, kept) = (grpc.clone(), kept.clone());
                async move {
                    if request.uri().path() == "/v1/traces" {
                        return http_export(&kept, request).await;
                    }
                    match grpc.call(request).await {
                        Ok(response) => response.map(crate::grpc::synced),
                        Err(never) => match never {},
                    }
                }
            },
            stop.clone(),
            Duration::from_millis(100),
        ));
        Ok(Collector { addr, spans, stop })
    }

    /// The endpoint to configure: `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits (up to 20 s) until `count` spans of `trace_id` (hex) have arrived, and returns
    /// them; fails with what did arrive otherwise.
    pub async fn trace(&self, trace_id: &str, count: usize) -> anyhow::Result<Vec<Received>> {
        let of_trace = || {
            self.spans()
                .into_iter()
                .filter(|r| hex(&r.span.trace_id) == trace_id)
                .collect::<Vec<_>>()
        };
        let waited = crate::wait::until(Duration::from_secs(20), "the trace's spans", || {
            of_trace().len() >= count
        })
        .await;
        let spans = of_trace();
        waited.map_err(|e| anyhow::anyhow!("{e}: got {spans:#?}"))?;
        Ok(spans)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Lowercase hex of an ID.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span's string or integer attribute, as text.
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|kv| kv.key == key)?;
    match value.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

struct Keep(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Keep {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner(), "grpc");
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// OTLP/HTTP: a protobuf `ExportTraceServiceRequest` in, an empty response message out.
async fn http_export(
    kept: &Mutex<Vec<Received>>,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<body::Body> {
    let protobuf = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|t| t == "application/x-protobuf");
    let bytes = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let decoded = ExportTraceServiceRequest::decode(bytes);
    let (status, answer) = match decoded {
        Ok(export) if protobuf => {
            keep(kept, export, "http");
            let answer = ExportTraceServiceResponse::default().encode_to_vec();
            (http::StatusCode::OK, Bytes::from(answer))
        }
        _ => (http::StatusCode::BAD_REQUEST, Bytes::new()),
    };
    let mut response = http::Response::new(body::full(answer));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

fn keep(kept: &Mutex<Vec<Received>>, export: ExportTraceServiceRequest, via: &'static str) {
    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
    for resource_spans in export.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                kept.push(Received {
                    service: service.clone(),
                    via,
                    span,
                });
            }
        }
    }
}
