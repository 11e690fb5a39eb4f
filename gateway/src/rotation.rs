//! Keeping the gateway's SVID fresh and its trust current, without dropping a connection.
//!
//! With a CA directory, a new SVID is issued at half the current one's lifetime. Either way,
//! the files the credentials come from (SVID files, the CA certificate, peer bundles) are
//! watched, and a change reloads them. Each change rebuilds the TLS configurations whole and
//! swaps them in for new handshakes; live QUIC connections carry on untouched. A renewal or
//! reload that fails keeps the current credentials, says so, and is retried.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use meshfed_trust::{Svid, TrustStore};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::credentials::{self, Issuer};
use crate::federation::tls;
use crate::state::State;

/// How often the credential files are checked for changes.
const FILE_POLL: Duration = Duration::from_secs(5);
/// After a failed renewal, wait this long before the next attempt.
const RETRY: Duration = Duration::from_secs(5);

/// The rotation task's state.
#[derive(Debug)]
pub(crate) struct Rotation {
    pub(crate) config: Arc<Config>,
    pub(crate) issuer: Option<Issuer>,
    pub(crate) svid: Svid,
    pub(crate) trust: Arc<TrustStore>,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) state: Arc<State>,
}

impl Rotation {
    /// Runs until `shutdown`.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut stamps = Stamps::read(credentials::files(&self.config));
        // A reload that failed stays pending until one succeeds.
        let mut reload_pending = false;
        let mut retry_at: Option<SystemTime> = None;
        loop {
            let now = SystemTime::now();
            let renew_at = self.issuer.as_ref().map(|_| self.svid.renew_at());
            let next = retry_at.or(renew_at);
            let wait = next
                .map(|at| at.duration_since(now).unwrap_or_default())
                .map_or(FILE_POLL, |until| until.min(FILE_POLL));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }

            let now = SystemTime::now();
            reload_pending |= stamps.refresh();
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
                    self.state
                        .stats
                        .credential_updates
                        .fetch_add(1, Ordering::Relaxed);
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
        let trust = credentials::load_trust(&self.config).map_err(list)?;
        self.svid = svid;
        self.issuer = issuer;
        self.trust = Arc::new(trust);
        tracing::info!(id = %self.svid.id(), valid_until = ?self.svid.not_after(), "reloaded credentials");
        Ok(())
    }

    /// Builds TLS configurations from the current SVID and trust and swaps them in. Either all
    /// of them are built or none is used.
    fn publish(&self) -> Result<(), String> {
        let server = tls::server(&self.svid, &self.trust)
            .map_err(|e| format!("cannot use the new credentials for peers calling in: {e}"))?;
        let mut clients = Vec::new();
        for peer in &self.config.peers {
            let id = credentials::gateway_id_of(&peer.trust_domain, &peer.name);
            let config = tls::client(&self.svid, &self.trust, &id).map_err(|e| {
                format!("cannot use the new credentials towards {}: {e}", peer.name)
            })?;
            clients.push((&peer.name, config));
        }
        self.endpoint.set_server_config(Some(server));
        for (name, config) in clients {
            if let Some(client) = self.state.peers.get(name) {
                client.set_config(config);
            }
        }
        Ok(())
    }
}

/// Modification times of the credential files, to notice a change.
#[derive(Debug)]
struct Stamps(Vec<(PathBuf, Option<SystemTime>)>);

impl Stamps {
    fn read(files: Vec<PathBuf>) -> Self {
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
