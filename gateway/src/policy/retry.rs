//! Retries: which failed tries may be tried again, and a budget that keeps retries a small share
//! of the traffic, so that a struggling service is not hit with a storm of them.
//!
//! Only requests that are safe to send twice are retried: idempotent methods (or others, when
//! a route says so), without a body (a body streams through and is not kept). No I/O: outcomes
//! and `now` come in as arguments.

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

/// The length of the window a budget counts over, in whole seconds.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// A service's retry budget: the requests and retries of the last [`BUDGET_WINDOW`], counted
/// per second (so that it takes constant memory and time whatever the traffic).
#[derive(Clone, Debug, Default)]
pub struct RetryBudget {
    /// When second 0 began.
    start: Option<Instant>,
    /// Per second of the window, by second number modulo the window: (second, requests,
    /// retries).
    seconds: [(u64, u64, u64); WINDOW_SECONDS],
}

const WINDOW_SECONDS: usize = BUDGET_WINDOW.as_secs() as usize;

impl RetryBudget {
    /// Counts a request (a first try) at `now`.
    pub fn deposit(&mut self, now: Instant) {
        self.slot(now).1 += 1;
    }

    /// Takes one retry out of the budget at `now`, if there is one left.
    pub fn withdraw(&mut self, now: Instant, config: &BudgetConfig) -> bool {
        let (requests, retries) = self.window(now);
        let allowed = u64::from(config.min_per_second) * WINDOW_SECONDS as u64
            + requests * u64::from(config.percent) / 100;
        if retries >= allowed {
            return false;
        }
        self.slot(now).2 += 1;
        true
    }

    /// The requests and retries of the window that ends at `now`.
    pub fn window(&mut self, now: Instant) -> (u64, u64) {
        let second = self.second(now);
        self.seconds
            .iter()
            .filter(|(s, _, _)| *s + WINDOW_SECONDS as u64 > second && *s <= second)
            .fold((0, 0), |(q, r), (_, requests, retries)| {
                (q + requests, r + retries)
            })
    }

    /// The counts of the second `now` is in, emptied first if they were of an older second.
    fn slot(&mut self, now: Instant) -> &mut (u64, u64, u64) {
        let second = self.second(now);
        let slot = &mut self.seconds[(second % WINDOW_SECONDS as u64) as usize];
        if slot.0 != second {
            *slot = (second, 0, 0);
        }
        slot
    }

    fn second(&mut self, now: Instant) -> u64 {
        let start = *self.start.get_or_insert(now);
        now.saturating_duration_since(start).as_secs()
    }
}

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
        /// However requests and retries come, a retry is granted exactly when the retries of
        /// the last ten seconds (counted per second) are fewer than `min_per_second` for each
        /// second plus `percent` of those seconds' requests.
        #[test]
        fn retries_stay_within_the_budget(
            steps in prop::collection::vec((0u64..1500, 0u32..30, 0u32..30), 1..60),
            percent in 0u32..100,
            min_per_second in 0u32..5,
        ) {
            let config = BudgetConfig { percent, min_per_second };
            let mut budget = RetryBudget::default();
            let mut now = Instant::now();
            // (second, is a retry) of everything counted.
            let mut log: Vec<(u64, bool)> = Vec::new();
            // The budget counts seconds from when it is first used.
            let mut origin = None;
            for (advance_ms, requests, retries) in steps {
                now += Duration::from_millis(advance_ms);
                if requests + retries == 0 {
                    continue;
                }
                let second = now.duration_since(*origin.get_or_insert(now)).as_secs();
                for _ in 0..requests {
                    budget.deposit(now);
                    log.push((second, false));
                }
                for _ in 0..retries {
                    let in_window = |retry: bool| {
                        log.iter().filter(|(s, r)| *s + 10 > second && *r == retry).count() as u64
                    };
                    let allowed = u64::from(min_per_second) * 10 + in_window(false) * u64::from(percent) / 100;
                    let granted = budget.withdraw(now, &config);
                    prop_assert_eq!(granted, in_window(true) < allowed, "{} retries, {} allowed", in_window(true), allowed);
                    if granted {
                        log.push((second, true));
                    }
                }
            }
        }
    }
}
