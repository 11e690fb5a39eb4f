//! The policy file while the gateway runs: read again whenever its content changes, and
//! swapped in whole only if every part of it is valid. A rejected version is logged with every
//! problem in it and changes nothing; the policy in force stays until a good version arrives.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
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
    /// The content of the policy in force.
    applied: String,
}

/// What looking at the policy file did.
#[derive(Debug)]
pub(crate) enum Reloaded {
    /// The file says what is in force already (or, when polled, has not changed).
    Unchanged,
    /// A new policy is in force.
    Applied,
    /// The file has problems, each listed; the policy in force stays.
    Rejected(ConfigErrors),
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
            last: Some(text.clone()),
            applied: text,
        };
        Ok((file, policy))
    }

    /// Reads the file and applies it to `state` if it is valid and not what is in force. When
    /// polled (`on_demand` false), a file whose content has not changed since the last look
    /// is not parsed again, so that a refused version is logged once.
    pub(crate) fn reload(&mut self, state: &State, on_demand: bool) -> Reloaded {
        let read = config::read(&self.path);
        let content = read.as_ref().ok();
        if !on_demand && content == self.last.as_ref() {
            return Reloaded::Unchanged;
        }
        self.last = content.cloned();
        let text = match read {
            Ok(text) if text == self.applied => return Reloaded::Unchanged,
            Ok(text) => text,
            Err(errors) => return self.rejected(state, errors),
        };
        match policy::parse_file(&self.path, &text, &self.config) {
            Ok(policy) => {
                state.set_policy(Arc::new(policy));
                self.applied = text;
                state.stats.policy_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(file = %self.path.display(), "policy reloaded");
                Reloaded::Applied
            }
            Err(errors) => self.rejected(state, errors),
        }
    }

    fn rejected(&self, state: &State, errors: ConfigErrors) -> Reloaded {
        state
            .stats
            .policy_reloads_rejected
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            file = %self.path.display(),
            "policy change rejected, the policy in force is kept:\n{errors}"
        );
        Reloaded::Rejected(errors)
    }
}

/// Looks at the policy file every [`POLL`] until `shutdown`.
pub(crate) async fn watch(
    file: Arc<Mutex<PolicyFile>>,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        file.lock()
            .unwrap_or_else(|e| e.into_inner())
            .reload(&state, false);
    }
}
