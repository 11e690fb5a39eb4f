//! The policy file while the gateway runs: read again whenever its content changes, and
//! swapped in whole only if every part of it is valid. A rejected version is logged with every
//! problem in it and changes nothing; the policy in force stays until a good version arrives.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigErrors, policy};
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
    /// The content last read, or `None` if the file could not be read.
    last: Option<String>,
}

impl PolicyFile {
    /// Reads the policy file at `path` once: the policy to start with, and the watcher that
    /// holds the content it came from (so that a change made meanwhile is not missed).
    pub(crate) fn open(path: PathBuf, config: &Config) -> Result<(Self, Policy), ConfigErrors> {
        let text = config::read(&path)?;
        let policy = policy::parse_file(&path, &text, config)?;
        let file = PolicyFile {
            path,
            config: config.clone(),
            last: Some(text),
        };
        Ok((file, policy))
    }

    /// Looks at the file once, and applies it to `state` if it changed and is valid.
    fn reload(&mut self, state: &State) {
        let read = config::read(&self.path);
        let content = read.as_ref().ok();
        if content == self.last.as_ref() {
            return;
        }
        self.last = content.cloned();
        match read.and_then(|text| policy::parse_file(&self.path, &text, &self.config)) {
            Ok(policy) => {
                state.set_policy(Arc::new(policy));
                state.stats.policy_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(file = %self.path.display(), "policy reloaded");
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
