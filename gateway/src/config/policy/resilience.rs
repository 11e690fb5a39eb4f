//! The policy file's load balancing, outlier detection, locality, retries, retry budget and
//! circuit breaker, validated.

use std::collections::BTreeSet;
use std::time::Duration;

use http::HeaderName;
use meshfed_discovery::Label;
use serde::Deserialize;

use super::{bounded, seq};
use crate::config::raw::Text;
use crate::config::validate::{Checker, parse_label};
use crate::policy::CircuitBreaker;
use crate::policy::balance::{Algorithm, HashOn};
use crate::policy::locality::Locality;
use crate::policy::outlier::OutlierDetection;
use crate::policy::retry::{BudgetConfig, Retries, RetryOn};

/// The longest an ejection may last.
const MAX_EJECTION: Duration = Duration::from_secs(3600);

// === raw ===

#[derive(Debug, Deserialize)]
pub(super) struct RawLoadBalancer {
    algorithm: Option<Text>,
    hash_on: Option<RawHashOn>,
}

#[derive(Debug, Deserialize)]
struct RawHashOn {
    header: Option<Text>,
    cookie: Option<Text>,
    source: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawOutlierDetection {
    consecutive_failures: Option<Text>,
    base_ejection: Option<Text>,
    max_ejection: Option<Text>,
    max_ejected_percent: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawLocality {
    #[serde(default, deserialize_with = "seq")]
    failover: Vec<Text>,
    min_healthy_percent: Option<Text>,
}

// === validation ===

impl Checker {
    pub(super) fn load_balancer(&mut self, at: &str, raw: &RawLoadBalancer) -> Option<Algorithm> {
        let at = format!("{at}.load_balancer");
        let algorithm =
            self.required(
                &format!("{at}.algorithm"),
                raw.algorithm.as_ref(),
                |s| match s {
                    "peak_ewma" | "least_request" | "round_robin" | "hash" => Ok(s.to_owned()),
                    _ => {
                        Err("expected `peak_ewma`, `least_request`, `round_robin` or `hash`".into())
                    }
                },
            )?;
        let hash_on = match (algorithm.as_str(), &raw.hash_on) {
            ("hash", Some(on)) => Some(self.hash_on(&format!("{at}.hash_on"), on)?),
            ("hash", None) => {
                self.missing(
                    &format!("{at}.hash_on"),
                    "a hash needs `hash_on: { header: <name> }`, `{ cookie: <name> }` or `{ source: true }`",
                );
                return None;
            }
            (_, Some(_)) => {
                self.missing(
                    &format!("{at}.hash_on"),
                    "only `algorithm: hash` takes `hash_on`",
                );
                return None;
            }
            (_, None) => None,
        };
        Some(match (algorithm.as_str(), hash_on) {
            ("least_request", _) => Algorithm::LeastRequest,
            ("round_robin", _) => Algorithm::RoundRobin,
            (_, Some(on)) => Algorithm::Hash(on),
            _ => Algorithm::PeakEwma,
        })
    }

    fn hash_on(&mut self, at: &str, raw: &RawHashOn) -> Option<HashOn> {
        let kinds = [
            ("header", raw.header.as_ref()),
            ("cookie", raw.cookie.as_ref()),
            ("source", raw.source.as_ref()),
        ];
        let missing = "give one of `header`, `cookie` or `source: true`";
        let (kind, text) = self.one_of(at, kinds, missing)?;
        let at = format!("{at}.{kind}");
        match kind {
            "header" => self.value(&at, text, |s| {
                HeaderName::from_bytes(s.as_bytes())
                    .map(HashOn::Header)
                    .map_err(|_| "not a valid header name".to_owned())
            }),
            "cookie" => self.value(&at, text, |s| {
                match s.is_empty() || s.contains([';', '=', ' ']) {
                    true => Err("not a cookie name".to_owned()),
                    false => Ok(HashOn::Cookie(s.to_owned())),
                }
            }),
            _ => self.value(&at, text, |s| match s {
                "true" => Ok(HashOn::Source),
                _ => Err("can only be `true`".to_owned()),
            }),
        }
    }

    pub(super) fn outlier_detection(
        &mut self,
        at: &str,
        raw: &RawOutlierDetection,
    ) -> Option<Option<OutlierDetection>> {
        let at = format!("{at}.outlier_detection");
        let default = OutlierDetection::default();
        let failures = self.optional(
            &format!("{at}.consecutive_failures"),
            raw.consecutive_failures.as_ref(),
            default.consecutive_failures,
            |s| {
                s.parse::<u32>()
                    .ok()
                    .filter(|n| *n <= 1000)
                    .ok_or_else(|| "expected a whole number from 0 (never eject) to 1000".into())
            },
        );
        let base = self.optional(
            &format!("{at}.base_ejection"),
            raw.base_ejection.as_ref(),
            default.base_ejection,
            |s| bounded(s, MAX_EJECTION),
        );
        let max = self.optional(
            &format!("{at}.max_ejection"),
            raw.max_ejection.as_ref(),
            default.max_ejection,
            |s| bounded(s, MAX_EJECTION),
        );
        let percent = self.optional(
            &format!("{at}.max_ejected_percent"),
            raw.max_ejected_percent.as_ref(),
            default.max_ejected_percent,
            |s| {
                s.parse::<u8>()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| "expected a whole percentage from 0 to 100".into())
            },
        );
        let config = OutlierDetection {
            consecutive_failures: failures?,
            base_ejection: base?,
            max_ejection: max?,
            max_ejected_percent: percent?,
        };
        if config.max_ejection < config.base_ejection {
            self.missing(
                &format!("{at}.max_ejection"),
                "must be at least `base_ejection`",
            );
            return None;
        }
        Some((config.consecutive_failures > 0).then_some(config))
    }

    pub(super) fn locality(
        &mut self,
        at: &str,
        raw: &RawLocality,
        local: &Label,
        clusters: &BTreeSet<Label>,
    ) -> Option<Locality> {
        let at = format!("{at}.locality");
        let failover: Vec<Option<Label>> = raw
            .failover
            .iter()
            .enumerate()
            .map(|(i, text)| {
                self.value(&format!("{at}.failover[{i}]"), text, |s| {
                    let cluster = parse_label(s)?;
                    match (clusters.contains(&cluster), &cluster == local) {
                        (_, true) => Err("the local cluster always comes first; list peers".into()),
                        (true, false) => Ok(cluster),
                        (false, false) => Err("not one of this cluster's peers".to_owned()),
                    }
                })
            })
            .collect();
        let percent = self.optional(
            &format!("{at}.min_healthy_percent"),
            raw.min_healthy_percent.as_ref(),
            70,
            |s| {
                s.parse::<u8>()
                    .ok()
                    .filter(|p| (1..=100).contains(p))
                    .ok_or_else(|| "expected a whole percentage from 1 to 100".into())
            },
        );
        Some(Locality {
            failover: failover.into_iter().collect::<Option<_>>()?,
            min_healthy_percent: percent?,
        })
    }
}

// === retries and limits ===

#[derive(Debug, Deserialize)]
pub(super) struct RawRetries {
    attempts: Option<Text>,
    per_try_timeout: Option<Text>,
    #[serde(default, deserialize_with = "seq")]
    on: Vec<Text>,
    non_idempotent: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawRetryBudget {
    percent: Option<Text>,
    min_per_second: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawCircuitBreaker {
    max_requests: Option<Text>,
    max_pending: Option<Text>,
    max_connections: Option<Text>,
}

/// The most tries after the first a route may ask for.
const MAX_RETRIES: u32 = 10;

impl Checker {
    pub(super) fn retries(&mut self, at: &str, raw: &RawRetries) -> Option<Retries> {
        let default = Retries::default();
        let attempts = self.optional(
            &format!("{at}.attempts"),
            raw.attempts.as_ref(),
            default.attempts,
            |s| whole(s, 0, MAX_RETRIES),
        );
        let per_try_timeout = match &raw.per_try_timeout {
            None => Some(None),
            Some(t) => self
                .value(&format!("{at}.per_try_timeout"), t, |s| {
                    bounded(s, Duration::from_secs(3600))
                })
                .map(Some),
        };
        let on = match raw.on.is_empty() {
            true => Some(default.on),
            false => self.retry_on(&format!("{at}.on"), &raw.on),
        };
        let non_idempotent = self.optional(
            &format!("{at}.non_idempotent"),
            raw.non_idempotent.as_ref(),
            false,
            |s| match s {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err("expected `true` or `false`".to_owned()),
            },
        );
        Some(Retries {
            attempts: attempts?,
            per_try_timeout: per_try_timeout?,
            on: on?,
            non_idempotent: non_idempotent?,
        })
    }

    fn retry_on(&mut self, at: &str, raw: &[Text]) -> Option<RetryOn> {
        let mut on = RetryOn {
            connect_failure: false,
            reset: false,
            gateway_error: false,
            server_error: false,
            per_try_timeout: false,
        };
        let mut ok = true;
        for (i, text) in raw.iter().enumerate() {
            let flag = self.value(&format!("{at}[{i}]"), text, |s| match s {
                "connect_failure" | "reset" | "gateway_error" | "5xx" | "per_try_timeout" => {
                    Ok(s.to_owned())
                }
                _ => Err(
                    "expected `connect_failure`, `reset`, `gateway_error`, `5xx` or \
                          `per_try_timeout`"
                        .to_owned(),
                ),
            });
            match flag.as_deref() {
                Some("connect_failure") => on.connect_failure = true,
                Some("reset") => on.reset = true,
                Some("gateway_error") => on.gateway_error = true,
                Some("5xx") => on.server_error = true,
                Some(_) => on.per_try_timeout = true,
                None => ok = false,
            }
        }
        ok.then_some(on)
    }

    pub(super) fn retry_budget(&mut self, at: &str, raw: &RawRetryBudget) -> Option<BudgetConfig> {
        let at = format!("{at}.retry_budget");
        let default = BudgetConfig::default();
        let percent = self.optional(
            &format!("{at}.percent"),
            raw.percent.as_ref(),
            default.percent,
            |s| whole(s, 0, 100),
        );
        let min = self.optional(
            &format!("{at}.min_per_second"),
            raw.min_per_second.as_ref(),
            default.min_per_second,
            |s| whole(s, 0, 10_000),
        );
        Some(BudgetConfig {
            percent: percent?,
            min_per_second: min?,
        })
    }

    pub(super) fn circuit_breaker(
        &mut self,
        at: &str,
        raw: &RawCircuitBreaker,
    ) -> Option<CircuitBreaker> {
        let at = format!("{at}.circuit_breaker");
        let default = CircuitBreaker::default();
        let limit = |check: &mut Checker, key: &str, text: Option<&Text>, default: u32| {
            check.optional(&format!("{at}.{key}"), text, default, |s| {
                whole(s, 1, 1_000_000)
            })
        };
        let max_requests = limit(
            self,
            "max_requests",
            raw.max_requests.as_ref(),
            default.max_requests,
        );
        let max_pending = limit(
            self,
            "max_pending",
            raw.max_pending.as_ref(),
            default.max_pending,
        );
        let max_connections = limit(
            self,
            "max_connections",
            raw.max_connections.as_ref(),
            default.max_connections,
        );
        Some(CircuitBreaker {
            max_requests: max_requests?,
            max_pending: max_pending?,
            max_connections: max_connections?,
        })
    }
}

/// A whole number from `min` to `max`.
fn whole(s: &str, min: u32, max: u32) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("expected a whole number from {min} to {max}"))
}
