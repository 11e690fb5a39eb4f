//! Moves on the control channel (`meshfed.federation.v1.Moves`): serving this gateway's
//! published splits and taking peers' reports; following a peer's splits and reporting to it
//! what this gateway observed of the services it moves.
//!
//! Everything a peer sends is checked and bounded: a split or observation that does not parse
//! is dropped (and logged at debug), never applied half-read.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use meshfed_discovery::Label;
use meshfed_discovery::exchange::Caller;
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::mover::{Mover, Observed};
use crate::moves::{Published, Split, Window, millis, session_from, session_names};

/// The generated messages, client and server.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub(crate) mod proto {
    tonic::include_proto!("meshfed.federation.v1");
}

use proto::moves_client::MovesClient;
use proto::moves_server::{Moves, MovesServer};

/// The most splits a peer may publish, and the most observations one report may hold.
const MAX_ENTRIES: usize = 4096;
/// The most clusters in one split.
const MAX_WEIGHTS: usize = 64;
/// The most requests one observation may count (far above what a gateway serves between two
/// reports).
const MAX_REQUESTS_PER_REPORT: u64 = 10_000_000;
/// How often observations are reported to each owner.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The server side, for one peer's control connection.
#[derive(Clone, Debug)]
pub(crate) struct MovesService {
    mover: Arc<Mover>,
}

/// The gRPC service serving `mover`'s splits and taking reports for it.
pub(crate) fn server(mover: Arc<Mover>) -> MovesServer<MovesService> {
    MovesServer::new(MovesService { mover })
}

type SplitStream = Pin<Box<dyn Stream<Item = Result<proto::PublishedSplits, Status>> + Send>>;

#[tonic::async_trait]
impl Moves for MovesService {
    type WatchSplitsStream = SplitStream;

    async fn watch_splits(
        &self,
        _: Request<proto::WatchSplitsRequest>,
    ) -> Result<Response<SplitStream>, Status> {
        let published = tokio_stream::wrappers::WatchStream::new(self.mover.watch());
        let stream = published.map(|splits| {
            Ok(proto::PublishedSplits {
                splits: splits.iter().map(to_wire).collect(),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report(
        &self,
        request: Request<proto::ObservationReport>,
    ) -> Result<Response<proto::ReportAck>, Status> {
        let Some(Caller(peer)) = request.extensions().get::<Caller>().cloned() else {
            return Err(Status::unauthenticated("no verified peer"));
        };
        let report = request.into_inner();
        if report.observations.len() > MAX_ENTRIES {
            return Err(Status::resource_exhausted(
                "too many observations in one report",
            ));
        }
        let mut observed = Observed::new();
        for o in &report.observations {
            match observation(o) {
                Some((key, window)) => observed.entry(key).or_default().merge(&window),
                None => {
                    tracing::debug!(peer.cluster = %peer, svc = %o.service, "ill-formed observation; dropped")
                }
            }
        }
        self.mover.reported(observed);
        Ok(Response::new(proto::ReportAck {}))
    }
}

/// Follows `peer`'s published splits on `channel`, and reports to it what it is owed, until
/// either fails; returns why.
pub(crate) async fn follow(peer: &Label, channel: Channel, mover: &Mover) -> String {
    let mut client = MovesClient::new(channel);
    let mut stream = match client.watch_splits(proto::WatchSplitsRequest {}).await {
        Ok(response) => response.into_inner(),
        Err(status) => return format!("splits refused: {status}"),
    };
    let mut reports = tokio::time::interval(REPORT_EVERY);
    reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(published)) => mover.set_remote(peer, from_wire(peer, published)),
                Some(Err(status)) => return format!("splits stream failed: {status}"),
                None => return "splits stream ended".to_owned(),
            },
            _ = reports.tick() => {
                let owed = mover.take_owed(peer);
                if owed.is_empty() {
                    continue;
                }
                let observations = owed.iter().take(MAX_ENTRIES).map(|((service, cluster), w)| {
                    proto::Observation {
                        service: service.to_string(),
                        cluster: cluster.to_string(),
                        requests: w.requests,
                        errors: w.errors,
                        latency_buckets: w.buckets.to_vec(),
                    }
                }).collect();
                if let Err(status) = client.report(proto::ObservationReport { observations }).await {
                    tracing::debug!(peer.cluster = %peer, %status, "report refused; observations dropped");
                }
            }
        }
    }
}

fn to_wire(p: &Published) -> proto::PublishedSplit {
    let (session_header, session_cookie) = session_names(p.session.as_ref());
    proto::PublishedSplit {
        service: p.service.to_string(),
        weights: p
            .split
            .weights
            .iter()
            .map(|(cluster, weight)| proto::Weight {
                cluster: cluster.to_string(),
                weight: *weight,
            })
            .collect(),
        session_header,
        session_cookie,
        observed: p.observed,
        drain_tcp_ms: p.drain_tcp.map_or(0, millis),
    }
}

/// What `peer` publishes, without what does not parse.
fn from_wire(peer: &Label, published: proto::PublishedSplits) -> Vec<Published> {
    let mut splits: Vec<Published> = published
        .splits
        .into_iter()
        .take(MAX_ENTRIES)
        .filter_map(|s| {
            let parsed = published_split(peer, &s);
            if parsed.is_none() {
                tracing::debug!(peer.cluster = %peer, svc = %s.service, "ill-formed split; dropped");
            }
            parsed
        })
        .collect();
    splits.dedup_by(|a, b| a.service == b.service);
    splits
}

fn published_split(peer: &Label, s: &proto::PublishedSplit) -> Option<Published> {
    if s.weights.len() > MAX_WEIGHTS || s.weights.iter().all(|w| w.weight == 0) {
        return None;
    }
    let weights = s
        .weights
        .iter()
        .map(|w| Some((w.cluster.parse().ok()?, w.weight)))
        .collect::<Option<Vec<(Label, u32)>>>()?;
    let session = session_from(&s.session_header, &s.session_cookie).ok()?;
    Some(Published {
        service: s.service.parse().ok()?,
        owner: peer.clone(),
        split: Split { weights },
        session,
        observed: s.observed,
        // At most a day: a drain is a graceful close, not a timer a peer may park for ever.
        drain_tcp: (s.drain_tcp_ms > 0)
            .then(|| Duration::from_millis(s.drain_tcp_ms.min(86_400_000))),
    })
}

fn observation(o: &proto::Observation) -> Option<((meshfed_discovery::ServiceKey, Label), Window)> {
    let mut window = Window {
        requests: o.requests,
        errors: o.errors.min(o.requests),
        ..Window::default()
    };
    // The buckets must hold exactly the requests counted, and no more than a gateway can
    // send in a report's second.
    let total = o
        .latency_buckets
        .iter()
        .try_fold(0u64, |sum, n| sum.checked_add(*n))?;
    if o.latency_buckets.len() != window.buckets.len()
        || total != o.requests
        || o.requests > MAX_REQUESTS_PER_REPORT
    {
        return None;
    }
    window.buckets.copy_from_slice(&o.latency_buckets);
    Some(((o.service.parse().ok()?, o.cluster.parse().ok()?), window))
}
