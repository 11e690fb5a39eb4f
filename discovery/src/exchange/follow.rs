//! The client side: follows a peer's catalog stream, checking every update.

use tonic::Streaming;

use super::convert::{self, Received};
use super::proto::CatalogUpdate;
use super::{InvalidUpdate, Limits};
use crate::catalog::{ClusterCatalog, StaleDiff};
use crate::name::Label;

/// Why following a peer's catalog stopped. Each is answered the same way: the peer's catalog
/// is dropped and the stream asked for again, which starts with a full catalog.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The stream failed (the peer went away, or refused us).
    #[error("catalog stream: {0}")]
    Stream(#[from] tonic::Status),
    /// The peer ended the stream.
    #[error("the peer ended the catalog stream")]
    Ended,
    /// The peer sent an update we do not believe.
    #[error("invalid catalog update: {0}")]
    Invalid(#[from] InvalidUpdate),
    /// A change that does not apply to the catalog we hold.
    #[error(transparent)]
    Stale(#[from] StaleDiff),
    /// A change before any full catalog.
    #[error("a change arrived before the full catalog")]
    NoCatalog,
}

/// Follows `cluster`'s catalog on `stream`, calling `on_change` with the whole catalog after
/// every update. Returns when the stream ends or an update cannot be believed; the catalog
/// passed last is then no longer current.
pub async fn follow(
    stream: &mut Streaming<CatalogUpdate>,
    cluster: &Label,
    limits: &Limits,
    mut on_change: impl FnMut(&ClusterCatalog),
) -> FollowError {
    let mut held: Option<ClusterCatalog> = None;
    loop {
        let update = match stream.message().await {
            Ok(Some(update)) => update,
            Ok(None) => return FollowError::Ended,
            Err(status) => return FollowError::Stream(status),
        };
        let received = match convert::received(update, cluster, limits) {
            Ok(received) => received,
            Err(invalid) => return FollowError::Invalid(invalid),
        };
        match (received, &mut held) {
            (Received::Full(catalog), _) => held = Some(catalog),
            (Received::Diff(diff), Some(catalog)) => {
                if let Err(stale) = catalog.apply(diff) {
                    return FollowError::Stale(stale);
                }
            }
            (Received::Diff(_), None) => return FollowError::NoCatalog,
        }
        if let Some(catalog) = &held {
            on_change(catalog);
        }
    }
}
