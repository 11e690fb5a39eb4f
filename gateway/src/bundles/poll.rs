//! Polling one peer's bundle endpoint.
//!
//! The poller holds the peer's current bundle (the kept one, else the configured one), fetches
//! at the bundle's refresh hint (clamped to sane bounds), and on a new bundle that passes every
//! check keeps it and hands it to the rotation task. A fetch that fails keeps the last good
//! bundle and is retried sooner. A bundle with a lower `spiffe_sequence` than the one held is
//! refused: it is stale, or replayed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use meshfed_discovery::Label;
use meshfed_trust::{Bundle, SpiffeId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fetch::{self, Authenticate};
use super::store;

/// Bounds on how often a peer's endpoint is polled, whatever its refresh hint says.
const MIN_REFRESH: Duration = Duration::from_secs(1);
const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// Without a refresh hint, the interval the SPIFFE specification suggests.
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// After a failed fetch, try again this soon (or at the refresh interval, if sooner).
const RETRY: Duration = Duration::from_secs(5);

/// How the endpoint is authenticated.
#[derive(Clone, Debug)]
pub(crate) enum Profile {
    /// `https_spiffe`, expecting this ID.
    Spiffe(SpiffeId),
    /// `https_web`, with these roots.
    Web(Arc<rustls::RootCertStore>),
}

/// One peer's poller.
#[derive(Debug)]
pub(crate) struct Poller {
    pub(crate) peer: Label,
    pub(crate) url: Uri,
    pub(crate) profile: Profile,
    pub(crate) current: Bundle,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) updates: mpsc::Sender<Bundle>,
    /// Where each successful fetch is noted, for the bundle's age in `/metrics`.
    pub(crate) stats: Arc<crate::stats::Stats>,
}

impl Poller {
    /// Polls until `shutdown`.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let wait = match self.poll().await {
                Ok(()) => {
                    let now = std::time::SystemTime::now();
                    self.stats.metrics.bundle_fetched(self.peer.as_str(), now);
                    self.interval()
                }
                Err(error) => {
                    tracing::warn!(peer.cluster = %self.peer, url = %self.url, %error, "keeping the last good bundle");
                    RETRY.min(self.interval())
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    pub(super) async fn poll(&mut self) -> Result<(), String> {
        let authenticate = match &self.profile {
            Profile::Spiffe(id) => Authenticate::Spiffe {
                id: id.clone(),
                roots: self.current.authorities().to_vec(),
            },
            Profile::Web(roots) => Authenticate::Web {
                roots: roots.clone(),
            },
        };
        let document = fetch::fetch(&self.url, &authenticate)
            .await
            .map_err(|e| e.to_string())?;
        let bundle = fetch::parse(self.current.trust_domain(), &document)
            .map_err(|e| format!("{}: {e}", self.url))?;
        if let (Some(new), Some(held)) = (bundle.sequence(), self.current.sequence())
            && new < held
        {
            return Err(format!(
                "refused a bundle with sequence {new}, lower than the {held} held"
            ));
        }
        let changed = bundle.authorities() != self.current.authorities();
        let renumbered = bundle.sequence() != self.current.sequence();
        self.current = bundle;
        if (changed || renumbered)
            && let Some(dir) = &self.state_dir
            && let Err(error) = store::save(dir, &self.current)
        {
            tracing::warn!(peer.cluster = %self.peer, %error, "cannot keep the fetched bundle");
        }
        if changed {
            tracing::info!(peer.cluster = %self.peer, bundle = %self.current, "peer bundle updated");
            // The rotation task ends only at shutdown; a send that fails then does not matter.
            let _ = self.updates.send(self.current.clone()).await;
        }
        Ok(())
    }

    fn interval(&self) -> Duration {
        self.current
            .refresh_hint()
            .unwrap_or(DEFAULT_REFRESH)
            .clamp(MIN_REFRESH, MAX_REFRESH)
    }
}
