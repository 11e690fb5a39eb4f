//! The server side: streams each caller its view of our catalog.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use super::proto::federation_server::Federation;
use super::proto::{CatalogUpdate, WatchCatalogRequest};
use super::{ExportedCatalog, convert};
use crate::catalog::ClusterCatalog;
use crate::name::Label;

/// The peer cluster a request comes from, as the transport verified it (its gateway's SVID).
/// A request without one is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller(pub Label);

/// The `Federation` service: each caller watches the part of our catalog exported to it.
#[derive(Clone, Debug)]
pub struct CatalogService {
    exported: watch::Receiver<Arc<ExportedCatalog>>,
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<CatalogUpdate, Status>> + Send>>;

impl CatalogService {
    /// Serves the catalog published on `exported`, and each one published after it.
    pub fn new(exported: watch::Receiver<Arc<ExportedCatalog>>) -> Self {
        CatalogService { exported }
    }
}

#[tonic::async_trait]
impl Federation for CatalogService {
    type WatchCatalogStream = UpdateStream;

    async fn watch_catalog(
        &self,
        request: Request<WatchCatalogRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let Some(Caller(peer)) = request.extensions().get::<Caller>().cloned() else {
            return Err(Status::permission_denied(
                "the caller is not a verified peer",
            ));
        };
        tracing::debug!(peer.cluster = %peer, "peer watches our catalog");
        // The last view sent: a change is sent as the diff from it. A change the peer cannot
        // see sends nothing and keeps it, so the next diff still starts where the peer is.
        let mut sent: Option<ClusterCatalog> = None;
        let updates = WatchStream::new(self.exported.clone()).filter_map(move |exported| {
            let view = exported.view(&peer);
            let update = match &sent {
                None => convert::full(&view),
                Some(old) => {
                    let diff = old.diff(&view);
                    if diff.is_empty() {
                        return None;
                    }
                    convert::diff(&view.cluster, &diff)
                }
            };
            sent = Some(view);
            Some(Ok(update))
        });
        Ok(Response::new(Box::pin(updates)))
    }
}
