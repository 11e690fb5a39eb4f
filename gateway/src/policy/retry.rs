//! Retries: which failed tries may be tried again, and a budget that keeps retries a small share
//! of the traffic, so that a struggling service is not hit with a storm of them.
//!
//! Only requests that are safe to send twice are retried: idempotent methods (or others, when
//! a route says so), without a body (a body streams through and is not kept). No I/O: outcomes
//! and `now` come in as arguments.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use http::Method;

/// A route's (or the default) retry policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retries {
    /// Tries after the first.
    pub attempts: u32,
    /// How long one try may take until its response head; `None` for no limit of its own (the
    /// route's timeout still bounds all tries together).
    pub per_try_timeout: Option<Duration>,
    /// Which failures are retried.
    pub on: RetryOn,
    /// Whether methods that are not idempotent (POST, PATCH) are retried too.
    pub non_idempotent: bool,
}

/// Which failures are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryOn {
    /// No connection could be made (nothing was sent).
    pub connect_failure: bool,
    /// The connection or stream failed before a response came.
    pub reset: bool,
    /// 502, 503 or 504.
    pub gateway_error: bool,
    /// Any 5xx.
    pub server_error: bool,
    /// The try's own timeout passed.
    pub per_try_timeout: bool,
}

impl Default for Retries {
    /// Two retries of safe requests that failed before reaching a service, or got a gateway
    /// error: the failures another endpoint may well not have (as Istio's default).
    fn default() -> Self {
        Retries {
            attempts: 2,
            per_try_timeout: None,
            on: RetryOn {
                connect_failure: true,
                reset: true,
                gateway_error: true,
                server_error: false,
                per_try_timeout: true,
            },
            non_idempotent: false,
        }
    }
}

/// How one try ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tried {
    /// No connection could be made.
    ConnectFailure,
    /// The connection or stream failed before a response.
    Reset,
    /// A response with this status.
    Status(u16),
    /// The per-try timeout passed.
    TimedOut,
    /// A failure a retry cannot help (no endpoint, a refusal by policy).
    Final,
}

impl Retries {
    /// Whether a request with `method` may be retried at all.
    pub fn allows(&self, method: &Method) -> bool {
        self.attempts > 0 && (self.non_idempotent || is_idempotent(method))
    }

    /// Whether a try that ended so should be tried again (attempts and budget aside).
    pub fn retries(&self, tried: Tried) -> bool {
        match tried {
            Tried::ConnectFailure => self.on.connect_failure,
            Tried::Reset => self.on.reset,
            Tried::TimedOut => self.on.per_try_timeout,
            Tried::Status(status) => {
                (self.on.server_error && (500..600).contains(&status))
                    || (self.on.gateway_error && matches!(status, 502..=504))
            }
            Tried::Final => false,
        }
    }
}

/// RFC 9110 section 9.2.2.
fn is_idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// The wait before retry number `n` (from 1): 25 ms doubling, at most 250 ms, to be jittered
/// by the caller.
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis(25u64.saturating_mul(1 << n.saturating_sub(1).min(4))).min(MAX_BACKOFF)
}

const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// How large a share of requests may be retries, as Linkerd's retry budget: over the last
/// `window`, retries may be `percent` of the requests, plus `min_per_second` regardless (so
/// that a quiet service can still retry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    /// The share of requests, in percent.
    pub percent: u32,
    /// Retries allowed every second whatever the traffic.
    pub min_per_second: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            percent: 20,
            min_per_second: 10,
        }
    }
}

/// The length of the window a budget counts over.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// A service's retry budget: the requests and retries of the last [`BUDGET_WINDOW`].
#[derive(Clone, Debug, Default)]
pub struct RetryBudget {
    /// When each request of the window was made.
    requests: VecDeque<Instant>,
    /// When each retry of the window was made.
    retries: VecDeque<Instant>,
}

impl RetryBudget {
    /// Counts a request (a first try) at `now`.
    pub fn deposit(&mut self, now: Instant) {
        self.forget(now);
        self.requests.push_back(now);
        // Beyond what any budget could use, old requests add nothing: keep memory bounded.
        if self.requests.len() > MAX_TRACKED {
            self.requests.pop_front();
        }
    }

    /// Takes one retry out of the budget at `now`, if there is one left.
    pub fn withdraw(&mut self, now: Instant, config: &BudgetConfig) -> bool {
        self.forget(now);
        let window = BUDGET_WINDOW.as_secs();
        let allowed = u64::from(config.min_per_second) * window
            + self.requests.len() as u64 * u64::from(config.percent) / 100;
        if self.retries.len() as u64 >= allowed {
            return false;
        }
        self.retries.push_back(now);
        true
    }

    fn forget(&mut self, now: Instant) {
        let Some(start) = now.checked_sub(BUDGET_WINDOW) else {
            return;
        };
        while self.requests.front().is_some_and(|t| *t < start) {
            self.requests.pop_front();
        }
        while self.retries.front().is_some_and(|t| *t < start) {
            self.retries.pop_front();
        }
    }
}

/// The most requests a budget keeps track of.
const MAX_TRACKED: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn only_safe_requests_and_retriable_failures() {
        let retries = Retries::default();
        assert!(retries.allows(&Method::GET) && retries.allows(&Method::DELETE));
        assert!(!retries.allows(&Method::POST) && !retries.allows(&Method::PATCH));
        let anything = Retries {
            non_idempotent: true,
            ..retries
        };
        assert!(anything.allows(&Method::POST));
        let never = Retries {
            attempts: 0,
            ..retries
        };
        assert!(!never.allows(&Method::GET));
        for (tried, expected) in [
            (Tried::ConnectFailure, true),
            (Tried::Reset, true),
            (Tried::TimedOut, true),
            (Tried::Status(503), true),
            (Tried::Status(500), false),
            (Tried::Status(404), false),
            (Tried::Status(200), false),
            (Tried::Final, false),
        ] {
            assert_eq!(retries.retries(tried), expected, "{tried:?}");
        }
        let all_5xx = Retries {
            on: RetryOn {
                server_error: true,
                ..retries.on
            },
            ..retries
        };
        assert!(all_5xx.retries(Tried::Status(500)));
        assert_eq!(backoff(1), Duration::from_millis(25));
        assert_eq!(backoff(2), Duration::from_millis(50));
        assert_eq!(backoff(9), Duration::from_millis(250));
    }

    proptest! {
        /// However requests and retries come, whenever a retry is granted the retries of the
        /// window up to it are within the budget: `percent` of the window's requests plus
        /// `min_per_second` for each second; and while that holds, a retry is granted.
        #[test]
        fn retries_stay_within_the_budget(
            steps in prop::collection::vec((0u64..400, 0u32..30, 0u32..30), 1..60),
            percent in 0u32..100,
            min_per_second in 0u32..5,
        ) {
            let config = BudgetConfig { percent, min_per_second };
            let start = Instant::now();
            let mut budget = RetryBudget::default();
            let mut now = start;
            let mut log: Vec<(Instant, bool)> = Vec::new();
            for (advance_ms, requests, retries) in steps {
                now += Duration::from_millis(advance_ms);
                for _ in 0..requests {
                    budget.deposit(now);
                    log.push((now, false));
                }
                let from = now.checked_sub(BUDGET_WINDOW).unwrap_or(start);
                for _ in 0..retries {
                    let in_window = |retry: bool| {
                        log.iter().filter(|(t, r)| *t >= from && *r == retry).count() as u64
                    };
                    let allowed = u64::from(min_per_second) * BUDGET_WINDOW.as_secs()
                        + in_window(false) * u64::from(percent) / 100;
                    let granted = budget.withdraw(now, &config);
                    prop_assert_eq!(granted, in_window(true) < allowed, "{} retries, {} allowed", in_window(true), allowed);
                    if granted {
                        log.push((now, true));
                    }
                }
            }
        }
    }
}
