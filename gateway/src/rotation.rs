//! Keeping the gateway's credentials current, without dropping a connection.
//!
//! One task owns them. With a CA directory it issues a new SVID at half the current one's
//! lifetime. It watches the files the credentials come from (SVID files, the CA certificate,
//! peer bundles) and reloads them on change. It takes peer bundles fetched from their bundle
//! endpoints, which override the configured ones. Each change rebuilds the TLS configurations
//! whole and swaps them in for new handshakes (live QUIC connections carry on untouched), and
//! refreshes what our own bundle endpoint serves. A renewal or reload that fails keeps the
//! current credentials, says so, and is retried.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use meshfed_trust::store::RootError;
use meshfed_trust::{Bundle, Svid, TrustDomain, TrustStore};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bundles::endpoint::Published;
use crate::config::Config;
use crate::credentials::{self, Issuer};
use crate::federation::tls;
use crate::state::State;

/// How often the credential files are checked for changes.
const FILE_POLL: Duration = Duration::from_secs(5);
/// After a failed renewal or reload, wait this long before the next attempt.
const RETRY: Duration = Duration::from_secs(5);

/// The rotation task's state.
#[derive(Debug)]
pub(crate) struct Rotation {
    pub(crate) config: Arc<Config>,
    pub(crate) issuer: Option<Issuer>,
    pub(crate) svid: Svid,
    /// Peer roots as the config's bundle files give them.
    pub(crate) file_trust: TrustStore,
    /// Peer bundles fetched from their endpoints (or kept from an earlier run): these win.
    pub(crate) fetched: BTreeMap<TrustDomain, Bundle>,
    pub(crate) updates: mpsc::Receiver<Bundle>,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) state: Arc<State>,
    pub(crate) published: Option<Arc<Published>>,
    /// The control channel's TLS configurations, rebuilt with the QUIC ones.
    pub(crate) control: Arc<crate::federation::control::ControlTls>,
    /// The credential files as they were when the credentials in use were loaded. Taken at
    /// start, not when this task first runs: a change in between must not go unnoticed.
    pub(crate) stamps: Stamps,
}

/// The trust store in force: the configured roots, with fetched bundles in their place.
pub(crate) fn trust(
    file_trust: &TrustStore,
    fetched: &BTreeMap<TrustDomain, Bundle>,
) -> Result<TrustStore, RootError> {
    fetched
        .values()
        .try_fold(file_trust.clone(), |trust, bundle| {
            trust.with_roots(bundle.trust_domain().clone(), bundle.authorities())
        })
}

impl Rotation {
    /// Runs until `shutdown`.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        // A reload that failed stays pending until one succeeds.
        let mut reload_pending = false;
        let mut retry_at: Option<SystemTime> = None;
        loop {
            let now = SystemTime::now();
            let renew_at = self.issuer.as_ref().map(|i| self.svid.renew_at(i.renew_at));
            let next = retry_at.or(renew_at);
            let wait = next
                .map(|at| at.duration_since(now).unwrap_or_default())
                .map_or(FILE_POLL, |until| until.min(FILE_POLL));
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(bundle) = self.updates.recv() => {
                    self.fetched.insert(bundle.trust_domain().clone(), bundle);
                    match self.publish() {
                        Ok(()) => self.count(|s| &s.bundle_updates),
                        Err(error) => tracing::warn!(%error, "cannot use a fetched peer bundle"),
                    }
                    self.recheck().await;
                    continue;
                }
                () = tokio::time::sleep(wait) => {}
            }
            // Peer certificates expire, and trust may have changed: re-check live connections.
            self.recheck().await;

            let now = SystemTime::now();
            reload_pending |= self.stamps.refresh();
            let due = next.is_some_and(|at| now >= at);
            if !(reload_pending || due) {
                continue;
            }
            let result = if reload_pending {
                self.reload(now)
            } else {
                self.renew(now)
            }
            .and_then(|()| self.publish());
            match result {
                Ok(()) => {
                    reload_pending = false;
                    retry_at = None;
                    self.count(|s| &s.credential_updates);
                    self.recheck().await;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?RETRY, "keeping the current credentials");
                    retry_at = Some(now + RETRY);
                }
            }
        }
    }

    fn renew(&mut self, now: SystemTime) -> Result<(), String> {
        let Some(issuer) = &self.issuer else {
            return Ok(());
        };
        self.svid = issuer
            .issue(now)
            .map_err(|e| format!("cannot renew the SVID: {e}"))?;
        tracing::info!(id = %self.svid.id(), valid_until = ?self.svid.not_after(), "renewed SVID");
        Ok(())
    }

    fn reload(&mut self, now: SystemTime) -> Result<(), String> {
        let list = |errors: Vec<crate::config::ConfigError>| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let (svid, issuer) = credentials::own_svid(&self.config, now).map_err(|e| list(vec![e]))?;
        let file_trust = credentials::load_trust(&self.config).map_err(list)?;
        self.svid = svid;
        self.issuer = issuer;
        self.file_trust = file_trust;
        tracing::info!(id = %self.svid.id(), valid_until = ?self.svid.not_after(), "reloaded credentials");
        Ok(())
    }

    /// Builds TLS configurations from the current SVID and trust and swaps them in, and
    /// refreshes our bundle endpoint. Either all of them are built or none is used.
    fn publish(&self) -> Result<(), String> {
        self.state.stats.metrics.svid_in_use(self.svid.not_after());
        let trust = Arc::new(trust(&self.file_trust, &self.fetched).map_err(|e| e.to_string())?);
        let refused = &self.state.stats.peer_certificates_refused;
        let server = tls::server(&self.svid, &trust, refused)
            .map_err(|e| format!("cannot use the new credentials for peers calling in: {e}"))?;
        let mut clients = Vec::new();
        for peer in &self.config.peers {
            let id = credentials::gateway_id_of(&peer.trust_domain, &peer.name);
            let config = tls::client(&self.svid, &trust, &id, refused).map_err(|e| {
                format!("cannot use the new credentials towards {}: {e}", peer.name)
            })?;
            clients.push((&peer.name, config));
        }
        let control = crate::federation::control::ControlConfigs::build(
            &self.svid,
            &trust,
            &self.config.peers,
            refused,
        )
        .map_err(|e| format!("cannot use the new credentials on the control channel: {e}"))?;
        if let Some(published) = &self.published {
            let own = credentials::own_bundle(&self.config).map_err(|e| e.to_string())?;
            published
                .update(&own, &self.svid)
                .map_err(|e| e.to_string())?;
        }
        self.endpoint.set_server_config(Some(server));
        self.control.set(control);
        for (name, config) in clients {
            if let Some(client) = self.state.peers.get(name) {
                client.set_config(config);
            }
        }
        Ok(())
    }

    async fn recheck(&self) {
        if let Ok(trust) = trust(&self.file_trust, &self.fetched) {
            let refused = &self.state.stats.peer_certificates_refused;
            crate::recheck::recheck(&self.state, &Arc::new(trust), refused).await;
        }
    }

    fn count(&self, counter: impl Fn(&crate::stats::Stats) -> &std::sync::atomic::AtomicU64) {
        counter(&self.state.stats).fetch_add(1, Ordering::Relaxed);
    }
}

/// Modification times of the credential files, to notice a change.
#[derive(Debug)]
pub(crate) struct Stamps(Vec<(PathBuf, Option<SystemTime>)>);

impl Stamps {
    pub(crate) fn read(files: Vec<PathBuf>) -> Self {
        Stamps(
            files
                .into_iter()
                .map(|f| (modified(&f), f))
                .map(|(m, f)| (f, m))
                .collect(),
        )
    }

    /// Re-reads every time; true if any changed since the last look.
    fn refresh(&mut self) -> bool {
        let mut changed = false;
        for (file, stamp) in &mut self.0 {
            let now = modified(file);
            if now != *stamp {
                *stamp = now;
                changed = true;
            }
        }
        changed
    }
}

fn modified(file: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(file).and_then(|m| m.modified()).ok()
}
