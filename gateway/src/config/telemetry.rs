//! The `tracing` and `access_log` keys.

use std::path::Path;

use super::raw::{RawAccessLog, RawTracing};
use super::validate::Checker;
use super::{AccessLog, OtlpProtocol as Protocol, Tracing};

impl Checker {
    pub(super) fn tracing(&mut self, raw: &RawTracing) -> Option<Tracing> {
        let endpoint = self.required(
            "tracing.otlp_endpoint",
            raw.otlp_endpoint.as_ref(),
            parse_endpoint,
        );
        let protocol = self.optional(
            "tracing.otlp_protocol",
            raw.otlp_protocol.as_ref(),
            Protocol::Grpc,
            |s| match s {
                "grpc" => Ok(Protocol::Grpc),
                "http/protobuf" => Ok(Protocol::HttpProtobuf),
                _ => Err("must be `grpc` or `http/protobuf`".into()),
            },
        );
        let ratio = self.optional(
            "tracing.sampling_ratio",
            raw.sampling_ratio.as_ref(),
            1.0,
            |s| match s.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err("must be a number from 0 to 1".into()),
            },
        );
        Some(Tracing {
            otlp_endpoint: endpoint?,
            otlp_protocol: protocol?,
            sampling_ratio: ratio?,
        })
    }

    pub(super) fn access_log(&mut self, raw: &RawAccessLog, base: &Path) -> Option<AccessLog> {
        self.required("access_log.path", raw.path.as_ref(), |s| match s {
            "" => Err("must name a file, or `-` for standard output".into()),
            "-" => Ok(AccessLog::Stdout),
            path => Ok(AccessLog::File(base.join(path))),
        })
    }
}

/// An OTLP endpoint: `http://host:port`, with no path (the HTTP protocol adds `/v1/traces`).
fn parse_endpoint(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "TLS to the collector is not supported: export to a collector agent on the \
                 node or the pod network over `http://`"
                    .into(),
            );
        }
        _ => return Err("must be an `http://` URL".into()),
    }
    if uri.authority().is_none_or(|a| a.port_u16().is_none()) {
        return Err("must name a port (4317 for gRPC, 4318 for HTTP, by convention)".into());
    }
    if uri.path() != "/" || uri.query().is_some() {
        return Err("must have no path: `/v1/traces` is added for HTTP".into());
    }
    Ok(uri)
}
