//! The policy file's `authorization` rules and `origins`, validated.

use std::collections::BTreeSet;

use meshfed_discovery::ServiceKey;
use meshfed_trust::{SpiffeId, TrustDomain};
use serde::Deserialize;

use super::{RawStringMatch, parse_method, seq};
use crate::config::Config;
use crate::config::raw::Text;
use crate::config::validate::{Checker, parse_label, parse_service};
use crate::policy::authz::{Action, Authorization, Rule, SourceMatch};
use crate::policy::{Cidr, Origin};

// === raw ===

#[derive(Debug, Deserialize)]
pub(super) struct RawRule {
    name: Option<Text>,
    action: Option<Text>,
    #[serde(default, deserialize_with = "seq")]
    from: Vec<RawSource>,
    to: Option<RawTo>,
}

#[derive(Debug, Deserialize)]
struct RawSource {
    id: Option<Text>,
    id_prefix: Option<Text>,
    trust_domain: Option<Text>,
}

#[derive(Debug, Deserialize)]
struct RawTo {
    #[serde(default, deserialize_with = "seq")]
    services: Vec<Text>,
    #[serde(default, deserialize_with = "seq")]
    ports: Vec<Text>,
    #[serde(default, deserialize_with = "seq")]
    methods: Vec<Text>,
    #[serde(default, deserialize_with = "seq")]
    paths: Vec<RawStringMatch>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawOrigin {
    #[serde(default, deserialize_with = "seq")]
    clients: Vec<Text>,
    id: Option<Text>,
}

// === validation ===

impl Checker {
    pub(super) fn authorization(
        &mut self,
        raw: &[RawRule],
        config: &Config,
    ) -> Option<Authorization> {
        let exported: BTreeSet<&ServiceKey> = config.exports.iter().map(|e| &e.service).collect();
        let rules: Vec<Option<Rule>> = raw
            .iter()
            .enumerate()
            .map(|(i, r)| self.rule(&format!("authorization[{i}]"), i, r, &exported))
            .collect();
        let rules: Vec<Rule> = rules.into_iter().collect::<Option<_>>()?;
        let names = rules.iter().map(|r| r.name.as_str());
        let unique = self.unique_names("authorization", names, "rule");
        unique.then_some(Authorization { rules })
    }

    fn rule(
        &mut self,
        at: &str,
        index: usize,
        raw: &RawRule,
        exported: &BTreeSet<&ServiceKey>,
    ) -> Option<Rule> {
        let name = match &raw.name {
            Some(name) => self.value(&format!("{at}.name"), name, |s| {
                parse_label(s).map(|l| l.to_string())
            }),
            None => Some(format!("authorization[{index}]")),
        };
        let action = self.required(&format!("{at}.action"), raw.action.as_ref(), |s| match s {
            "allow" => Ok(Action::Allow),
            "deny" => Ok(Action::Deny),
            _ => Err("expected `allow` or `deny`".to_owned()),
        });
        let from: Vec<Option<SourceMatch>> = raw
            .from
            .iter()
            .enumerate()
            .map(|(i, s)| self.source(&format!("{at}.from[{i}]"), s))
            .collect();
        let empty = RawTo {
            services: Vec::new(),
            ports: Vec::new(),
            methods: Vec::new(),
            paths: Vec::new(),
        };
        let to = raw.to.as_ref().unwrap_or(&empty);
        let services: Vec<Option<ServiceKey>> = to
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                self.value(&format!("{at}.to.services[{i}]"), s, |s| {
                    let key = parse_service(s)?;
                    match exported.contains(&key) {
                        true => Ok(key),
                        false => Err("this gateway does not export it; peers cannot reach it \
                                      whatever the rules say"
                            .to_owned()),
                    }
                })
            })
            .collect();
        let ports: Vec<Option<u16>> = to
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                self.value(&format!("{at}.to.ports[{i}]"), p, |s| {
                    s.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| "expected a port number from 1 to 65535".to_owned())
                })
            })
            .collect();
        let methods: Vec<Option<http::Method>> = to
            .methods
            .iter()
            .enumerate()
            .map(|(i, m)| self.value(&format!("{at}.to.methods[{i}]"), m, parse_method))
            .collect();
        let paths: Vec<Option<crate::policy::matching::PathMatch>> = to
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| self.path_match(&format!("{at}.to.paths[{i}]"), p))
            .collect();
        Some(Rule {
            name: name?,
            action: action?,
            from: from.into_iter().collect::<Option<_>>()?,
            services: services.into_iter().collect::<Option<_>>()?,
            ports: ports.into_iter().collect::<Option<_>>()?,
            methods: methods.into_iter().collect::<Option<_>>()?,
            paths: paths.into_iter().collect::<Option<_>>()?,
        })
    }

    fn source(&mut self, at: &str, raw: &RawSource) -> Option<SourceMatch> {
        let kinds = [
            ("id", raw.id.as_ref()),
            ("id_prefix", raw.id_prefix.as_ref()),
            ("trust_domain", raw.trust_domain.as_ref()),
        ];
        let missing = "give one of `id`, `id_prefix` or `trust_domain`";
        let (kind, text) = self.one_of(at, kinds, missing)?;
        let at = format!("{at}.{kind}");
        match kind {
            "id" => self.value(&at, text, |s| {
                s.parse::<SpiffeId>()
                    .map(SourceMatch::Id)
                    .map_err(|e| format!("not a SPIFFE ID: {e}"))
            }),
            "id_prefix" => self.value(&at, text, |s| {
                s.trim_end_matches('/')
                    .parse::<SpiffeId>()
                    .map(SourceMatch::Prefix)
                    .map_err(|e| format!("not a SPIFFE ID prefix: {e}"))
            }),
            _ => self.value(&at, text, |s| {
                s.parse::<TrustDomain>()
                    .map(SourceMatch::TrustDomain)
                    .map_err(|e| format!("not a trust domain: {e}"))
            }),
        }
    }

    pub(super) fn origins(&mut self, raw: &[RawOrigin], config: &Config) -> Option<Vec<Origin>> {
        let origins: Vec<Option<Origin>> = raw
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                let at = format!("origins[{i}]");
                if raw.clients.is_empty() {
                    self.missing(
                        &format!("{at}.clients"),
                        "list the client networks this origin is asserted for",
                    );
                }
                let clients: Vec<Option<Cidr>> = raw
                    .clients
                    .iter()
                    .enumerate()
                    .map(|(j, t)| self.value(&format!("{at}.clients[{j}]"), t, |s| s.parse()))
                    .collect();
                let id = self.required(&format!("{at}.id"), raw.id.as_ref(), |s| {
                    let id: SpiffeId = s.parse().map_err(|e| format!("not a SPIFFE ID: {e}"))?;
                    match *id.trust_domain() == config.trust_domain {
                        true => Ok(id),
                        false => Err(format!(
                            "a gateway asserts identities of its own trust domain ({}) only; \
                             peers refuse any other",
                            config.trust_domain
                        )),
                    }
                });
                let clients: Vec<Cidr> = clients.into_iter().collect::<Option<_>>()?;
                (!clients.is_empty()).then_some(())?;
                Some(Origin { clients, id: id? })
            })
            .collect();
        origins.into_iter().collect()
    }
}
