//! The policy file while the gateway runs: read again whenever its content changes, and
//! swapped in whole only if every part of it is valid. A rejected version is logged with every
//! problem in it and changes nothing; the policy in force stays until a good version arrives.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigErrors, policy};
use crate::policy::Policy;
use crate::state::State;

/// How often the file is looked at. Reading a small file once a second costs nothing, needs no
/// inotify (which misses a ConfigMap's symlink swap), and bounds how long a change takes.
const POLL: Duration = Duration::from_secs(1);

/// The policy file of a gateway, and what it last said.
#[derive(Debug)]
pub(crate) struct PolicyFile {
    path: PathBuf,
    config: Config,
    last: Option<Vec<u8>>,
}

/// What one look at the file found.
#[derive(Debug)]
pub(crate) enum Reloaded {
    /// The file is as it was.
    Unchanged,
    /// A new policy, now in force.
    Applied,
    /// A new version with problems (logged), not applied.
    Rejected,
}

impl PolicyFile {
    /// The file `config` names, whose current content `state` already enforces.
    pub(crate) fn new(path: PathBuf, config: &Config) -> Self {
        let last = std::fs::read(&path).ok();
        PolicyFile {
            path,
            config: config.clone(),
            last,
        }
    }

    /// Looks at the file once, and applies it to `state` if it changed and is valid.
    pub(crate) fn reload(&mut self, state: &State) -> Reloaded {
        let content = std::fs::read(&self.path).ok();
        if content == self.last {
            return Reloaded::Unchanged;
        }
        self.last = content;
        match policy::load(&self.path, &self.config) {
            Ok(policy) => {
                state.set_policy(Arc::new(policy));
                state.stats.policy_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(file = %self.path.display(), "policy reloaded");
                Reloaded::Applied
            }
            Err(errors) => {
                state
                    .stats
                    .policy_reloads_rejected
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    file = %self.path.display(),
                    "policy change rejected, the policy in force is kept:\n{errors}"
                );
                Reloaded::Rejected
            }
        }
    }

    /// Looks at the file every [`POLL`] until `shutdown`.
    pub(crate) async fn watch(mut self, state: Arc<State>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            self.reload(&state);
        }
    }
}

/// The policy a gateway starts with: its file's, or none (every service spread over the
/// clusters that serve it).
pub(crate) fn initial(config: &Config) -> Result<Policy, ConfigErrors> {
    match &config.policy_file {
        Some(path) => policy::load(path, config),
        None => Ok(Policy::default()),
    }
}
