//! The admin listener: the status page (`/`, drawn from `/status.json`), health and readiness
//! for orchestrators, Prometheus metrics (`/metrics`), counters (`/stats`), and the services the
//! gateway knows (`/services`, what `meshfed services` prints) over plain HTTP; and the admin
//! API (`meshfed.admin.v1.Admin`: policy reload, run-time faults) over gRPC on the same port.
//! Loopback by default: whoever reaches it can change how traffic flows.

mod faults;
mod grpc;
mod moves;
mod status;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use meshfed_trust::verify::Rejection;

use crate::catalogs::Catalogs;
use crate::policy_file::PolicyFile;
use crate::proxy::body::{self, Body};
use crate::state::State;
use crate::stats::Stats;

pub(crate) use faults::expire as expire_faults;

/// The admin API's messages, client and server.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("meshfed.admin.v1");
}

/// What the admin listener answers from.
#[derive(Clone, Debug)]
pub(crate) struct Admin {
    /// Cancelled once shutdown begins: the gateway is then alive (`/healthz`) but no longer
    /// ready (`/readyz`), so load balancers stop sending to it.
    pub(crate) draining: CancellationToken,
    pub(crate) stats: Arc<Stats>,
    pub(crate) catalogs: Arc<Catalogs>,
    state: Arc<State>,
    mover: Arc<crate::mover::Mover>,
    grpc: proto::admin_server::AdminServer<grpc::AdminService>,
}

impl Admin {
    pub(crate) fn new(
        draining: CancellationToken,
        state: Arc<State>,
        catalogs: Arc<Catalogs>,
        policy_file: Option<Arc<Mutex<PolicyFile>>>,
        mover: Arc<crate::mover::Mover>,
    ) -> Admin {
        Admin {
            draining,
            stats: state.stats.clone(),
            catalogs,
            state: state.clone(),
            mover: mover.clone(),
            grpc: proto::admin_server::AdminServer::new(grpc::AdminService {
                state,
                policy_file,
                mover,
            }),
        }
    }

    /// Answers one admin request: gRPC calls by the admin API, the rest by path.
    pub(crate) async fn handle(self, request: Request<Incoming>) -> Response<Body> {
        let grpc = request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            let mut server = self.grpc;
            return match tower_service::Service::call(&mut server, request).await {
                Ok(response) => response.map(body::unsync),
                Err(never) => match never {},
            };
        }
        match request.uri().path() {
            "/" => {
                let page = body::full(Bytes::from_static(status::PAGE.as_bytes()));
                return typed(Response::new(page), "text/html; charset=utf-8");
            }
            "/status.json" => {
                let now = std::time::SystemTime::now();
                let moves = self.mover.moves(None);
                let status = status::status(&self.state, &self.catalogs, &moves, now);
                return json(&status);
            }
            _ => {}
        }
        if request.uri().path() == "/metrics" {
            // Gauges read at scrape time.
            self.stats.metrics.peers(self.state.peer_connections());
            self.stats.metrics.at(std::time::SystemTime::now());
            self.stats.metrics.dns(self.stats.dns.answered());
            self.stats.metrics.telemetry(self.state.telemetry_totals());
            let moves = self.mover.moves(None);
            self.stats
                .metrics
                .moves(&self.state.moving.splits(), &moves);
        }
        http(request, &self.draining, &self.stats, &self.catalogs)
    }
}

fn http(
    request: Request<Incoming>,
    draining: &CancellationToken,
    stats: &Stats,
    catalogs: &Catalogs,
) -> Response<Body> {
    match request.uri().path() {
        "/services" => json(&catalogs.report()),
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/metrics" => {
            let mut response = text(StatusCode::OK, stats.metrics.encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            response
        }
        "/readyz" if draining.is_cancelled() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
        }
        "/readyz" => text(StatusCode::OK, "ready\n".into()),
        "/stats" => {
            let counters = [
                ("peer_connections_opened", &stats.peer_connections_opened),
                (
                    "peer_connections_accepted",
                    &stats.peer_connections_accepted,
                ),
                ("peer_retries", &stats.peer_retries),
                ("peer_requests", &stats.peer_requests),
                ("local_requests", &stats.local_requests),
                ("credential_updates", &stats.credential_updates),
                ("bundle_updates", &stats.bundle_updates),
                ("policy_reloads", &stats.policy_reloads),
                ("policy_reloads_rejected", &stats.policy_reloads_rejected),
                ("authorization_allowed", &stats.authorization_allowed),
                ("authorization_denied", &stats.authorization_denied),
            ];
            let mut lines: String = counters
                .iter()
                .map(|(name, value)| format!("{name} {}\n", value.load(Ordering::Relaxed)))
                .collect();
            for reason in Rejection::ALL {
                let count = stats.peer_certificates_refused.count(reason);
                lines.push_str(&format!(
                    "peer_certificates_refused_{} {count}\n",
                    reason.code()
                ));
            }
            let by_rule = stats
                .authorization_by_rule
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for ((rule, outcome), count) in by_rule {
                lines.push_str(&format!(
                    "authorization_{}_by_rule{{rule=\"{rule}\"}} {count}\n",
                    outcome.name()
                ));
            }
            text(StatusCode::OK, lines)
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn json(value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_string_pretty(value) {
        Ok(json) => typed(text(StatusCode::OK, json + "\n"), "application/json"),
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
    }
}

fn typed(mut response: Response<Body>, content_type: &'static str) -> Response<Body> {
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(body::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
