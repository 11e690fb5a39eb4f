//! The client side: follows a peer's catalog stream, checking every update.

use tonic::Streaming;

use super::convert::{self, Received};
use super::proto::CatalogUpdate;
use super::{InvalidUpdate, Limits};
use crate::catalog::{ClusterCatalog, StaleDiff};
use crate::name::Label;

/// Why following a peer's catalog stopped. The caller asks for the stream again, which starts
/// with a full catalog; whether it keeps the catalog it held meanwhile is its choice (the
/// gateway keeps it when the stream broke after it had been up a while, and drops it when the
/// peer cannot be reached again).
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
        if let Err(error) = take(&mut held, received, limits) {
            return error;
        }
        if let Some(catalog) = &held {
            on_change(catalog);
        }
    }
}

/// Takes one checked update into the catalog `held`: a full catalog replaces it, a diff changes
/// it. Each update is bounded on its own, but diffs add up: the service limit is checked on the
/// catalog held.
pub(super) fn take(
    held: &mut Option<ClusterCatalog>,
    received: Received,
    limits: &Limits,
) -> Result<(), FollowError> {
    let catalog = match (received, held.as_mut()) {
        (Received::Full(catalog), _) => held.insert(catalog),
        (Received::Diff(diff), Some(catalog)) => {
            catalog.apply(diff)?;
            catalog
        }
        (Received::Diff(_), None) => return Err(FollowError::NoCatalog),
    };
    if catalog.services.len() > limits.services {
        return Err(convert::too_many_services(catalog.services.len(), limits).into());
    }
    Ok(())
}
