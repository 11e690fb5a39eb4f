//! The policy file: routes, splits, faults and overrides, validated whole into a [`Policy`].
//!
//! It is a file of its own (named by `policy` in the gateway config) because it changes while
//! the gateway runs: it is read again when it changes, and a version with any problem is
//! refused whole, keeping the policy in force. `docs/config.md` is its reference.

mod authz;
mod resilience;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use meshfed_discovery::Label;
use regex::Regex;
use serde::Deserialize;

use super::raw::Text;
use super::validate::{Checker, deserialize, parse_label, parse_service};
use super::{Config, ConfigErrors, duration};
use crate::policy::fault::GRPC_CODES;
use crate::policy::matching::{GrpcMatch, HeaderMatch, PathMatch, QueryMatch, ValueMatch};
use crate::policy::{
    Abort, AbortStatus, Backend, Chance, Cidr, Delay, Fault, HeaderChanges, Labels, Match,
    Overrides, Policy, Route, ServicePolicy, headers,
};

/// The longest a route's timeout may be.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest an injected delay may be.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(300);
/// The largest weight; weights are relative, so this only keeps sums far from overflow.
const MAX_WEIGHT: u32 = 1_000_000;

/// Reads and validates the policy file at `path` for the gateway `config` describes (its
/// routes may name only this cluster and its peers).
pub fn load(path: &Path, config: &Config) -> Result<Policy, ConfigErrors> {
    parse_file(path, &super::read(path)?, config)
}

/// Validates `text`, read from the policy file at `path`, for the gateway `config` describes.
pub(crate) fn parse_file(path: &Path, text: &str, config: &Config) -> Result<Policy, ConfigErrors> {
    parse(text, config).map_err(|mut e| {
        e.file = Some(path.to_owned());
        e
    })
}

/// Validates policy text for the gateway `config` describes.
pub fn parse(text: &str, config: &Config) -> Result<Policy, ConfigErrors> {
    let mut check = Checker::default();
    let raw: RawPolicy =
        deserialize(text, &mut check).map_err(|errors| ConfigErrors { file: None, errors })?;
    let clusters: BTreeSet<Label> = std::iter::once(config.cluster.clone())
        .chain(config.peers.iter().map(|p| p.name.clone()))
        .collect();
    let policy = check.policy(&raw, &config.cluster, &clusters);
    let authorization = check.authorization(&raw.authorization, config);
    let origins = check.origins(&raw.origins, config);
    let policy = policy.and_then(|mut policy| {
        policy.authorization = authorization?;
        policy.origins = origins?;
        Some(policy)
    });
    match policy {
        Some(policy) if check.errors.is_empty() => Ok(policy),
        _ => Err(ConfigErrors {
            file: None,
            errors: check.errors,
        }),
    }
}

// === raw ===

#[derive(Debug, Default, Deserialize)]
struct RawPolicy {
    overrides: Option<RawOverrides>,
    #[serde(default, deserialize_with = "seq")]
    authorization: Vec<authz::RawRule>,
    #[serde(default, deserialize_with = "seq")]
    origins: Vec<authz::RawOrigin>,
    #[serde(default, deserialize_with = "seq")]
    services: Vec<RawServicePolicy>,
}

#[derive(Debug, Deserialize)]
struct RawOverrides {
    #[serde(default, deserialize_with = "seq")]
    trusted_clients: Vec<Text>,
}

#[derive(Debug, Deserialize)]
struct RawServicePolicy {
    service: Option<Text>,
    #[serde(default)]
    subsets: BTreeMap<String, BTreeMap<String, Text>>,
    #[serde(default, deserialize_with = "seq")]
    routes: Vec<RawRoute>,
    load_balancer: Option<resilience::RawLoadBalancer>,
    retry_budget: Option<resilience::RawRetryBudget>,
    circuit_breaker: Option<resilience::RawCircuitBreaker>,
    outlier_detection: Option<resilience::RawOutlierDetection>,
    locality: Option<resilience::RawLocality>,
}

#[derive(Debug, Deserialize)]
struct RawRoute {
    name: Option<Text>,
    #[serde(default, rename = "match", deserialize_with = "seq")]
    matches: Vec<RawMatch>,
    #[serde(default, deserialize_with = "seq")]
    backends: Vec<RawBackend>,
    request_headers: Option<RawHeaderChanges>,
    response_headers: Option<RawHeaderChanges>,
    timeout: Option<Text>,
    fault: Option<RawFault>,
    retries: Option<resilience::RawRetries>,
}

#[derive(Debug, Deserialize)]
struct RawMatch {
    path: Option<RawStringMatch>,
    method: Option<Text>,
    #[serde(default)]
    headers: BTreeMap<String, RawStringMatch>,
    #[serde(default)]
    query_params: BTreeMap<String, RawStringMatch>,
    grpc: Option<RawGrpcMatch>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawStringMatch {
    exact: Option<Text>,
    prefix: Option<Text>,
    regex: Option<Text>,
    present: Option<Text>,
}

#[derive(Debug, Deserialize)]
struct RawGrpcMatch {
    service: Option<Text>,
    method: Option<Text>,
}

#[derive(Debug, Deserialize)]
struct RawBackend {
    cluster: Option<Text>,
    subset: Option<Text>,
    weight: Option<Text>,
}

#[derive(Debug, Deserialize)]
struct RawHeaderChanges {
    #[serde(default)]
    set: BTreeMap<String, Text>,
    #[serde(default)]
    add: BTreeMap<String, Text>,
    #[serde(default, deserialize_with = "seq")]
    remove: Vec<Text>,
}

#[derive(Debug, Deserialize)]
struct RawFault {
    delay: Option<RawDelay>,
    abort: Option<RawAbort>,
}

#[derive(Debug, Deserialize)]
struct RawDelay {
    fixed: Option<Text>,
    percent: Option<Text>,
}

#[derive(Debug, Deserialize)]
struct RawAbort {
    http_status: Option<Text>,
    grpc_status: Option<Text>,
    percent: Option<Text>,
}

fn seq<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

// === validation ===

impl Checker {
    fn policy(
        &mut self,
        raw: &RawPolicy,
        local: &Label,
        clusters: &BTreeSet<Label>,
    ) -> Option<Policy> {
        let overrides = match &raw.overrides {
            None => Some(Overrides::default()),
            Some(o) => o
                .trusted_clients
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    self.value(&format!("overrides.trusted_clients[{i}]"), t, |s| {
                        s.parse::<Cidr>()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(|trusted_clients| Overrides { trusted_clients }),
        };
        let mut services = BTreeMap::new();
        let mut ok = true;
        for (i, raw) in raw.services.iter().enumerate() {
            let at = format!("services[{i}]");
            let key = self.required(
                &format!("{at}.service"),
                raw.service.as_ref(),
                parse_service,
            );
            let service = self.service_policy(&at, raw, local, clusters);
            match (key, service) {
                (Some(key), Some(service)) => {
                    if services.insert(key.clone(), service).is_some() {
                        self.invalid(
                            &format!("{at}.service"),
                            raw.service.as_ref()?,
                            "this service already has an entry; give each service one",
                        );
                    }
                }
                _ => ok = false,
            }
        }
        ok.then_some(())?;
        Some(Policy {
            services,
            overrides: overrides?,
            ..Policy::default()
        })
    }

    fn service_policy(
        &mut self,
        at: &str,
        raw: &RawServicePolicy,
        local: &Label,
        clusters: &BTreeSet<Label>,
    ) -> Option<ServicePolicy> {
        let mut subsets = BTreeMap::new();
        let mut ok = true;
        for (name, labels) in &raw.subsets {
            let path = format!("{at}.subsets.{name}");
            if parse_label(name).is_err() {
                self.invalid_at(&path, name, "a subset's name is a DNS label, such as `v2`");
                ok = false;
            }
            if labels.is_empty() {
                self.missing(&path, "a subset selects endpoints by at least one label");
                ok = false;
            }
            let mut selector = Labels::new();
            for (key, value) in labels {
                let label_at = format!("{path}.{key}");
                if let Err(reason) = parse_label_part(key) {
                    self.invalid_at(&label_at, key, &reason);
                    ok = false;
                }
                match self.value(&label_at, value, |v| {
                    parse_label_part(v).map(|()| v.to_owned())
                }) {
                    Some(value) => {
                        selector.insert(key.clone(), value);
                    }
                    None => ok = false,
                }
            }
            subsets.insert(name.clone(), selector);
        }
        let routes: Vec<Option<Route>> = raw
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| self.route(&format!("{at}.routes[{i}]"), i, r, &subsets, clusters))
            .collect();
        let load_balancer = match &raw.load_balancer {
            None => Some(Default::default()),
            Some(lb) => self.load_balancer(at, lb),
        };
        let outlier_detection = match &raw.outlier_detection {
            None => Some(Some(Default::default())),
            Some(od) => self.outlier_detection(at, od),
        };
        let locality = match &raw.locality {
            None => Some(None),
            Some(l) => self.locality(at, l, local, clusters).map(Some),
        };
        let retry_budget = match &raw.retry_budget {
            None => Some(Default::default()),
            Some(b) => self.retry_budget(at, b),
        };
        let circuit_breaker = match &raw.circuit_breaker {
            None => Some(Default::default()),
            Some(c) => self.circuit_breaker(at, c),
        };
        let routes: Option<Vec<Route>> = routes.into_iter().collect();
        let routes = routes?;
        let names = routes.iter().map(|r| r.name.as_str());
        ok &= self.unique_names(&format!("{at}.routes"), names, "route of this service");
        ok.then_some(ServicePolicy {
            subsets,
            routes,
            load_balancer: load_balancer?,
            outlier_detection: outlier_detection?,
            locality: locality?,
            retry_budget: retry_budget?,
            circuit_breaker: circuit_breaker?,
        })
    }

    fn route(
        &mut self,
        at: &str,
        index: usize,
        raw: &RawRoute,
        subsets: &BTreeMap<String, Labels>,
        clusters: &BTreeSet<Label>,
    ) -> Option<Route> {
        let name = match &raw.name {
            Some(name) => self.value(&format!("{at}.name"), name, |s| {
                parse_label(s).map(|l| l.to_string())
            }),
            None => Some(format!("routes[{index}]")),
        };
        let matches: Vec<Option<Match>> = raw
            .matches
            .iter()
            .enumerate()
            .map(|(i, m)| self.matcher(&format!("{at}.match[{i}]"), m))
            .collect();
        let backends: Vec<Option<Backend>> = raw
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| self.backend(&format!("{at}.backends[{i}]"), b, subsets, clusters))
            .collect();
        let request_headers = raw
            .request_headers
            .as_ref()
            .map_or(Some(HeaderChanges::default()), |h| {
                self.header_changes(&format!("{at}.request_headers"), h)
            });
        let response_headers = raw
            .response_headers
            .as_ref()
            .map_or(Some(HeaderChanges::default()), |h| {
                self.header_changes(&format!("{at}.response_headers"), h)
            });
        let timeout = match &raw.timeout {
            None => Some(None),
            Some(t) => self
                .value(&format!("{at}.timeout"), t, |s| bounded(s, MAX_TIMEOUT))
                .map(Some),
        };
        let fault = raw.fault.as_ref().map_or(Some(Fault::default()), |f| {
            self.fault(&format!("{at}.fault"), f)
        });
        let retries = match &raw.retries {
            None => Some(None),
            Some(r) => self.retries(&format!("{at}.retries"), r).map(Some),
        };
        let backends: Option<Vec<Backend>> = backends.into_iter().collect();
        let backends = backends?;
        if !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
            self.missing(
                &format!("{at}.backends"),
                "every backend has weight 0: at least one must take traffic",
            );
            return None;
        }
        Some(Route {
            name: name?,
            matches: matches.into_iter().collect::<Option<_>>()?,
            backends,
            request_headers: request_headers?,
            response_headers: response_headers?,
            timeout: timeout?,
            fault: fault?,
            retries: retries?,
        })
    }

    fn matcher(&mut self, at: &str, raw: &RawMatch) -> Option<Match> {
        let path = match &raw.path {
            None => Some(None),
            Some(p) => self.path_match(&format!("{at}.path"), p).map(Some),
        };
        let method = match &raw.method {
            None => Some(None),
            Some(m) => self
                .value(&format!("{at}.method"), m, parse_method)
                .map(Some),
        };
        let headers: Vec<Option<HeaderMatch>> = raw
            .headers
            .iter()
            .map(|(name, m)| {
                let path = format!("{at}.headers.{name}");
                let header = match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(header) => Some(header),
                    Err(_) => {
                        self.invalid_at(&path, name, "not a valid header name");
                        None
                    }
                };
                let value = self.value_match(&path, m);
                Some(HeaderMatch {
                    name: header?,
                    value: value?,
                })
            })
            .collect();
        let query: Vec<Option<QueryMatch>> = raw
            .query_params
            .iter()
            .map(|(name, m)| {
                let value = self.value_match(&format!("{at}.query_params.{name}"), m)?;
                Some(QueryMatch {
                    name: name.clone(),
                    value,
                })
            })
            .collect();
        let grpc = raw.grpc.as_ref().map(|g| GrpcMatch {
            service: g.service.as_ref().map(|s| s.value.trim().to_owned()),
            method: g.method.as_ref().map(|m| m.value.trim().to_owned()),
        });
        Some(Match {
            path: path?,
            method: method?,
            headers: headers.into_iter().collect::<Option<_>>()?,
            query: query.into_iter().collect::<Option<_>>()?,
            grpc,
        })
    }

    fn path_match(&mut self, at: &str, raw: &RawStringMatch) -> Option<PathMatch> {
        if let Some(present) = &raw.present {
            self.invalid(
                &format!("{at}.present"),
                present,
                "every request has a path",
            );
            return None;
        }
        let kind = self.one_kind(at, raw)?;
        let must_be_absolute = |s: &str| match s.starts_with('/') {
            true => Ok(s.to_owned()),
            false => Err("a path begins with '/'".to_owned()),
        };
        match kind {
            ("exact", text) => self
                .value(&format!("{at}.exact"), text, must_be_absolute)
                .map(PathMatch::Exact),
            ("prefix", text) => self
                .value(&format!("{at}.prefix"), text, must_be_absolute)
                .map(PathMatch::Prefix),
            (_, text) => self
                .value(&format!("{at}.regex"), text, anchored)
                .map(PathMatch::Regex),
        }
    }

    fn value_match(&mut self, at: &str, raw: &RawStringMatch) -> Option<ValueMatch> {
        if let Some(prefix) = &raw.prefix {
            self.invalid(
                &format!("{at}.prefix"),
                prefix,
                "values match by `exact`, `regex` or `present`; write a prefix as a regex",
            );
            return None;
        }
        if let Some(present) = &raw.present {
            if raw.exact.is_some() || raw.regex.is_some() {
                self.invalid(
                    &format!("{at}.present"),
                    present,
                    "give one of `exact`, `regex` or `present`",
                );
                return None;
            }
            return match present.value.trim() {
                "true" => Some(ValueMatch::Present),
                _ => {
                    self.invalid(&format!("{at}.present"), present, "can only be `true`");
                    None
                }
            };
        }
        match self.one_kind(at, raw)? {
            ("exact", text) => Some(ValueMatch::Exact(text.value.clone())),
            (_, text) => self
                .value(&format!("{at}.regex"), text, anchored)
                .map(ValueMatch::Regex),
        }
    }

    /// The one of `exact`, `prefix` and `regex` that is given.
    fn one_kind<'r>(
        &mut self,
        at: &str,
        raw: &'r RawStringMatch,
    ) -> Option<(&'static str, &'r Text)> {
        let kinds = [
            ("exact", raw.exact.as_ref()),
            ("prefix", raw.prefix.as_ref()),
            ("regex", raw.regex.as_ref()),
        ];
        let missing = "give one of `exact`, `prefix`, `regex` (or `present: true` for a header)";
        self.one_of(at, kinds, missing)
    }

    /// The one of `kinds` that is given; none, or more than one, is an error.
    pub(super) fn one_of<'r, const N: usize>(
        &mut self,
        at: &str,
        kinds: [(&'static str, Option<&'r Text>); N],
        missing: &str,
    ) -> Option<(&'static str, &'r Text)> {
        let given: Vec<(&'static str, &Text)> = kinds
            .into_iter()
            .filter_map(|(k, t)| t.map(|t| (k, t)))
            .collect();
        match given.as_slice() {
            [one] => Some(*one),
            [] => {
                self.missing(at, missing);
                None
            }
            [_, (kind, text), ..] => {
                self.invalid(&format!("{at}.{kind}"), text, "give only one way to match");
                None
            }
        }
    }

    fn backend(
        &mut self,
        at: &str,
        raw: &RawBackend,
        subsets: &BTreeMap<String, Labels>,
        clusters: &BTreeSet<Label>,
    ) -> Option<Backend> {
        let cluster = self.required(&format!("{at}.cluster"), raw.cluster.as_ref(), |s| {
            let cluster = parse_label(s)?;
            match clusters.contains(&cluster) {
                true => Ok(cluster),
                false => Err("not this cluster nor one of its peers".to_owned()),
            }
        });
        let subset = match &raw.subset {
            None => Some(None),
            Some(name) => self
                .value(&format!("{at}.subset"), name, |s| match subsets.get(s) {
                    Some(labels) => Ok((s.to_owned(), labels.clone())),
                    None => Err("no such subset in this service's `subsets`".to_owned()),
                })
                .map(Some),
        };
        let weight = self.optional(&format!("{at}.weight"), raw.weight.as_ref(), 1, |s| {
            s.parse::<u32>()
                .ok()
                .filter(|w| *w <= MAX_WEIGHT)
                .ok_or_else(|| format!("expected a whole number from 0 to {MAX_WEIGHT}"))
        });
        Some(Backend {
            cluster: cluster?,
            subset: subset?,
            weight: weight?,
        })
    }

    fn header_changes(&mut self, at: &str, raw: &RawHeaderChanges) -> Option<HeaderChanges> {
        let mut ok = true;
        let mut pairs = |check: &mut Checker, kind: &str, map: &BTreeMap<String, Text>| {
            let mut out = Vec::new();
            for (name, value) in map {
                let path = format!("{at}.{kind}.{name}");
                let header = check.header_name(&path, name);
                let value = check.value(&path, value, |v| {
                    HeaderValue::from_str(v).map_err(|_| "not a valid header value".to_owned())
                });
                match (header, value) {
                    (Some(h), Some(v)) => out.push((h, v)),
                    _ => ok = false,
                }
            }
            out
        };
        let set = pairs(self, "set", &raw.set);
        let add = pairs(self, "add", &raw.add);
        let remove: Vec<Option<HeaderName>> = raw
            .remove
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let path = format!("{at}.remove[{i}]");
                self.header_name(&path, &name.value)
            })
            .collect();
        let remove: Option<Vec<HeaderName>> = remove.into_iter().collect();
        ok.then_some(())?;
        Some(HeaderChanges {
            set,
            add,
            remove: remove?,
        })
    }

    fn header_name(&mut self, at: &str, name: &str) -> Option<HeaderName> {
        let Ok(header) = HeaderName::from_bytes(name.trim().as_bytes()) else {
            self.invalid_at(at, name, "not a valid header name");
            return None;
        };
        if let Some(why) = headers::protected(&header) {
            self.invalid_at(
                at,
                name,
                &format!("policy cannot change this header: {why}"),
            );
            return None;
        }
        Some(header)
    }

    fn fault(&mut self, at: &str, raw: &RawFault) -> Option<Fault> {
        // Each part is checked whether or not the other is good: every problem is reported.
        let delay = raw.delay.as_ref().map(|d| {
            let at = format!("{at}.delay");
            let fixed = self.required(&format!("{at}.fixed"), d.fixed.as_ref(), |s| {
                bounded(s, MAX_DELAY)
            });
            let chance = self.chance(&at, d.percent.as_ref());
            Some(Delay {
                duration: fixed?,
                chance: chance?,
            })
        });
        let abort = raw.abort.as_ref().map(|a| {
            let at = format!("{at}.abort");
            let status = match (&a.http_status, &a.grpc_status) {
                (Some(http), None) => {
                    self.value(&format!("{at}.http_status"), http, parse_abort_status)
                }
                (None, Some(grpc)) => {
                    self.value(&format!("{at}.grpc_status"), grpc, parse_grpc_status)
                }
                (Some(_), Some(grpc)) => {
                    self.invalid(
                        &format!("{at}.grpc_status"),
                        grpc,
                        "give `http_status` or `grpc_status`, not both",
                    );
                    None
                }
                (None, None) => {
                    self.missing(&at, "give `http_status` or `grpc_status`");
                    None
                }
            };
            let chance = self.chance(&at, a.percent.as_ref());
            Some(Abort {
                status: status?,
                chance: chance?,
            })
        });
        Some(Fault {
            delay: delay.map_or(Some(None), |d| d.map(Some))?,
            abort: abort.map_or(Some(None), |a| a.map(Some))?,
        })
    }

    fn chance(&mut self, at: &str, percent: Option<&Text>) -> Option<Chance> {
        self.required(&format!("{at}.percent"), percent, |s| {
            s.trim_end_matches('%')
                .parse::<f64>()
                .ok()
                .and_then(Chance::from_percent)
                .ok_or_else(|| {
                    "expected a percentage from 0 to 100, such as `10` or `0.5`".to_owned()
                })
        })
    }
}

impl Checker {
    /// Whether `names`, of the list at `at`, are all different; each repeat is an error.
    fn unique_names<'n>(
        &mut self,
        at: &str,
        names: impl Iterator<Item = &'n str>,
        what: &str,
    ) -> bool {
        let mut seen = BTreeSet::new();
        let mut unique = true;
        for (i, name) in names.enumerate() {
            if !seen.insert(name) {
                let why = format!("another {what} has this name");
                self.invalid_at(&format!("{at}[{i}].name"), name, &why);
                unique = false;
            }
        }
        unique
    }
}

/// A label key or value as a subset selector writes it: it crosses between gateways in a
/// header as `key=value,...`, so it is kept to Kubernetes' label characters.
pub(super) fn parse_label_part(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    match ok {
        true => Ok(()),
        false => {
            Err("a label key or value is 1 to 63 letters, digits, `-`, `_`, `.` or `/`".into())
        }
    }
}

fn anchored(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("not a regular expression: {e}"))
}

fn parse_method(s: &str) -> Result<Method, String> {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    match KNOWN.contains(&s) {
        true => Method::from_bytes(s.as_bytes()).map_err(|e| e.to_string()),
        false => Err(format!("expected one of {}", KNOWN.join(", "))),
    }
}

fn parse_abort_status(s: &str) -> Result<AbortStatus, String> {
    s.parse::<u16>()
        .ok()
        .filter(|c| (400..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .map(AbortStatus::Http)
        .ok_or_else(|| "expected an HTTP error status from 400 to 599".to_owned())
}

fn parse_grpc_status(s: &str) -> Result<AbortStatus, String> {
    if let Ok(code) = s.parse::<u8>() {
        return match (1..=16).contains(&code) {
            true => Ok(AbortStatus::Grpc(code)),
            false => Err("expected a gRPC status code from 1 to 16, or its name".to_owned()),
        };
    }
    GRPC_CODES
        .iter()
        .find(|(name, _)| *name == s)
        .map(|(_, code)| AbortStatus::Grpc(*code))
        .ok_or_else(|| {
            "expected a gRPC status name such as UNAVAILABLE, or a code from 1 to 16".to_owned()
        })
}

fn bounded(s: &str, max: Duration) -> Result<Duration, String> {
    let d = duration::parse(s)?;
    match d.is_zero() || d > max {
        true => Err(format!(
            "expected more than 0 and at most {}s",
            max.as_secs()
        )),
        false => Ok(d),
    }
}
