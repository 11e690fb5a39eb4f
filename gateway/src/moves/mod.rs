//! Moves: a service moved from one cluster (blue) to another (green) by canary steps or a
//! blue-green switch, each step held and gated on what every gateway routing the service
//! observes, rolled back (or paused) on a failed gate.
//!
//! This module is the decision core, without I/O: [`Move`] is a state machine fed observations
//! ([`Window`]s) and the time, which says what split ([`Split`]) is in force and what happened
//! ([`Event`]). Publishing splits to peers, collecting their observations, persistence and the
//! admin API live in the gateway around it.

mod machine;
mod split;
mod window;

use std::time::Duration;

use meshfed_discovery::{Label, ServiceKey};

use crate::policy::balance::HashOn;

pub use machine::{Event, Move, Phase, Reading, Stage};
pub use split::Split;
pub use window::Window;

/// What an operator asks for when starting a move.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// The service moved.
    pub service: ServiceKey,
    /// Where it runs now.
    pub blue: Label,
    /// Where it goes.
    pub green: Label,
    pub strategy: Strategy,
    pub gates: Gates,
    /// What a failed gate does.
    pub on_failure: OnFailure,
    /// Open TCP connections to blue are closed this long after the move completes; `None`
    /// leaves them where they are.
    pub drain_tcp: Option<Duration>,
    /// What keeps a session on one side: requests with the same value of it go to the same
    /// cluster at every step, and once on green stay there.
    pub session: Option<HashOn>,
}

/// A split in force for a service, as its owner publishes it to every gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub service: ServiceKey,
    /// The gateway that owns it (where the move was started, or the split set).
    pub owner: Label,
    pub split: Split,
    /// The session key, if the move has one.
    pub session: Option<HashOn>,
    /// Whether a move is under way: its owner wants every gateway's observations.
    pub observed: bool,
    /// Set once a move that asked for it has ended: TCP connections still open to a cluster
    /// the split gives nothing are closed this long after the split is applied.
    pub drain_tcp: Option<Duration>,
}

/// How traffic moves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Green's share rises through `steps`, each held for its duration; the last is 100 %.
    Canary(Vec<Step>),
    /// Green takes no share (only requests pinned to it) for `verify`, then all of it, held
    /// for `hold` with blue ready to take it back.
    BlueGreen { verify: Duration, hold: Duration },
}

/// One canary step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Green's share, in percent (1 to 100).
    pub green_percent: u8,
    /// How long the step is held (at least) before the next.
    pub hold: Duration,
}

/// The health green must keep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gates {
    /// The highest share of green's requests that may fail (5xx or no answer), 0 to 1.
    pub max_error_rate: f64,
    /// The highest 99th-percentile latency green may show, if any.
    pub max_p99: Option<Duration>,
    /// Green's requests a step needs before it may end; its hold is extended until then.
    pub min_requests: u64,
    /// How often the gates are judged, each time on what the last interval saw.
    pub interval: Duration,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            max_error_rate: 0.01,
            max_p99: None,
            min_requests: 20,
            interval: Duration::from_secs(10),
        }
    }
}

/// What a failed gate does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// All traffic back to blue at once; the move ends.
    #[default]
    Rollback,
    /// Hold the current split until an operator resumes, rolls back or aborts.
    Pause,
}

/// A session key as the names it is carried by (the admin API, the federation, `moves.json`):
/// a header's or a cookie's, the other empty; both empty without one.
pub fn session_names(session: Option<&HashOn>) -> (String, String) {
    match session {
        Some(HashOn::Header(name)) => (name.to_string(), String::new()),
        Some(HashOn::Cookie(name)) => (String::new(), name.clone()),
        Some(HashOn::Source) | None => (String::new(), String::new()),
    }
}

/// The session key those names give: a header or a cookie, at most one; none if both are
/// empty.
pub fn session_from(header: &str, cookie: &str) -> Result<Option<HashOn>, String> {
    match (header, cookie) {
        ("", "") => Ok(None),
        (header, "") => header
            .parse()
            .map(|name| Some(HashOn::Header(name)))
            .map_err(|_| format!("session header {header:?} is not a header name")),
        ("", cookie) => Ok(Some(HashOn::Cookie(cookie.to_owned()))),
        _ => Err("a session key is a header or a cookie, not both".into()),
    }
}

/// Whole milliseconds of `d`, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Spec {
    /// Green's share at each stage, in order.
    pub fn shares(&self) -> Vec<u8> {
        match &self.strategy {
            Strategy::Canary(steps) => steps.iter().map(|s| s.green_percent).collect(),
            Strategy::BlueGreen { .. } => vec![0, 100],
        }
    }

    /// Checks what parsing cannot: the steps rise to 100 %, blue and green differ.
    pub fn check(&self) -> Result<(), String> {
        if self.blue == self.green {
            return Err(format!("blue and green are both {}", self.blue));
        }
        if let Strategy::Canary(steps) = &self.strategy {
            let Some(last) = steps.last() else {
                return Err("a canary needs at least one step".into());
            };
            if last.green_percent != 100 {
                return Err(format!(
                    "the last step must send green 100 %, not {} %",
                    last.green_percent
                ));
            }
            if steps
                .iter()
                .any(|s| s.green_percent == 0 || s.green_percent > 100)
            {
                return Err("each step's share must be 1 to 100 %".into());
            }
            if steps
                .windows(2)
                .any(|w| w[1].green_percent <= w[0].green_percent)
            {
                return Err("each step must give green more than the one before".into());
            }
        }
        if self.gates.min_requests > 0 && self.gates.min_requests < machine::MIN_JUDGED {
            return Err(format!(
                "a step's minimum of requests must be 0 (no traffic needed, as for a TCP-only \
                 service) or at least {}: fewer say nothing about a rate",
                machine::MIN_JUDGED
            ));
        }
        if !(0.0..=1.0).contains(&self.gates.max_error_rate) {
            return Err("the maximum error rate must be 0 to 100 %".into());
        }
        if self.gates.interval < Duration::from_millis(100) {
            return Err("the gate interval must be at least 100ms".into());
        }
        Ok(())
    }
}
