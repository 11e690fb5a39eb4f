//! Authorization on the receiving gateway: whether a request from a peer may reach a local
//! service, by its source identity, destination and operation.
//!
//! A request reaches this only for a service exported to the peer it came from: not exported
//! is denied before any rule is read. Then, as Istio's `AuthorizationPolicy` does:
//!
//! 1. a `deny` rule that matches denies;
//! 2. if any `allow` rule applies to the service, the request must match one of them;
//! 3. otherwise the export allows it.
//!
//! Paths are compared in canonical form ([`super::path`]); the caller normalises first, so
//! that `//admin`, `/./admin` and `/%61dmin` meet the rules for `/admin`. A TCP tunnel
//! (`CONNECT`) has no path: allow rules with `paths` never match it, deny rules ignore their
//! `paths` for it.

use http::Method;
use meshfed_discovery::ServiceKey;
use meshfed_trust::{SpiffeId, TrustDomain};

use super::matching::PathMatch;

/// The authorization rules of a gateway, in the order written.
#[derive(Clone, Debug, Default)]
pub struct Authorization {
    /// Its rules.
    pub rules: Vec<Rule>,
}

/// One rule: what it does to the requests it matches.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Its name, for logs and counters (`authorization[2]` when the policy gives none).
    pub name: String,
    /// Whether a match allows or denies.
    pub action: Action,
    /// Sources it matches: any of these; every source when empty.
    pub from: Vec<SourceMatch>,
    /// Services it applies to; every service when empty.
    pub services: Vec<ServiceKey>,
    /// Destination ports it matches; every port when empty.
    pub ports: Vec<u16>,
    /// Methods it matches; every method when empty.
    pub methods: Vec<Method>,
    /// Paths it matches; every path when empty. A TCP tunnel has no path: an `allow` rule
    /// with paths never matches one, a `deny` rule's paths are ignored for one.
    pub paths: Vec<PathMatch>,
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let the request through (when no `deny` rule matches).
    Allow,
    /// Refuse it.
    Deny,
}

/// A condition on the source's SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceMatch {
    /// Exactly this ID.
    Id(SpiffeId),
    /// This ID or any below it, by whole segments: `spiffe://td/ns/shop` matches
    /// `spiffe://td/ns/shop/sa/web`, not `spiffe://td/ns/shopping`.
    Prefix(SpiffeId),
    /// Any ID in this trust domain.
    TrustDomain(TrustDomain),
}

/// A request as authorization sees it.
#[derive(Clone, Copy, Debug)]
pub struct Access<'a> {
    /// Who is asking: the peer gateway, or the origin it asserted within its trust domain.
    pub source: &'a SpiffeId,
    /// The service asked for.
    pub service: &'a ServiceKey,
    /// The service port asked for.
    pub port: u16,
    /// The method (`CONNECT` for a TCP tunnel).
    pub method: &'a Method,
    /// The canonical path, or `None` for a TCP tunnel.
    pub path: Option<&'a str>,
}

/// The outcome, with the rule that decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Let through: by an `allow` rule, or by the export when no `allow` rule applies.
    Allow(Option<&'a str>),
    /// Refused: by a `deny` rule, or for matching none of the `allow` rules that apply.
    Deny(Option<&'a str>),
}

impl Authorization {
    /// Decides `access`.
    pub fn decide(&self, access: &Access<'_>) -> Verdict<'_> {
        let applying = || self.rules.iter().filter(|r| r.applies_to(access.service));
        if let Some(rule) = applying().find(|r| r.action == Action::Deny && r.matches(access)) {
            return Verdict::Deny(Some(&rule.name));
        }
        let mut allows = applying().filter(|r| r.action == Action::Allow).peekable();
        if allows.peek().is_none() {
            return Verdict::Allow(None);
        }
        match allows.find(|r| r.matches(access)) {
            Some(rule) => Verdict::Allow(Some(&rule.name)),
            None => Verdict::Deny(None),
        }
    }
}

impl Verdict<'_> {
    /// Whether the request may go on.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allow(_))
    }

    /// The rule that decided, if one did.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Verdict::Allow(rule) | Verdict::Deny(rule) => *rule,
        }
    }
}

impl Rule {
    fn applies_to(&self, service: &ServiceKey) -> bool {
        self.services.is_empty() || self.services.contains(service)
    }

    /// Whether `access` meets every condition. A TCP tunnel has no path: an `allow` rule
    /// with `paths` never matches one, and a `deny` rule ignores its `paths` for one (as Istio
    /// does for TCP), so that either way a tunnel errs towards being refused.
    fn matches(&self, access: &Access<'_>) -> bool {
        let path_ok = match (access.path, self.action) {
            _ if self.paths.is_empty() => true,
            (Some(path), _) => self.paths.iter().any(|p| p.matches(path)),
            (None, Action::Deny) => true,
            (None, Action::Allow) => false,
        };
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(access.source)))
            && (self.ports.is_empty() || self.ports.contains(&access.port))
            && (self.methods.is_empty() || self.methods.contains(access.method))
            && path_ok
    }
}

impl SourceMatch {
    /// Whether `id` meets this condition.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            SourceMatch::Id(exact) => id == exact,
            SourceMatch::Prefix(prefix) => {
                id.trust_domain() == prefix.trust_domain()
                    && id
                        .path()
                        .strip_prefix(prefix.path())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            SourceMatch::TrustDomain(domain) => id.trust_domain() == domain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        s.parse().expect("SPIFFE ID")
    }

    /// Source, service, port, method, path, and the verdict expected.
    type Case<'a> = (
        &'a SpiffeId,
        &'a ServiceKey,
        u16,
        &'a Method,
        Option<&'a str>,
        Verdict<'a>,
    );

    fn rule(name: &str, action: Action) -> Rule {
        Rule {
            name: name.into(),
            action,
            from: Vec::new(),
            services: Vec::new(),
            ports: Vec::new(),
            methods: Vec::new(),
            paths: Vec::new(),
        }
    }

    /// Deny rules win; allow rules make an allow-list only for the services they name; a
    /// rule's conditions must all hold; for a TCP tunnel, an allow rule with paths never
    /// matches and a deny rule's paths are ignored.
    #[test]
    fn rules_decide_in_order_of_precedence() {
        let greeter: ServiceKey = "greeter.demo".parse().expect("service");
        let db: ServiceKey = "db.shop".parse().expect("service");
        let other: ServiceKey = "other.demo".parse().expect("service");
        let web = id("spiffe://east.example/ns/shop/sa/web");
        let batch = id("spiffe://east.example/ns/batch/sa/job");
        let authorization = Authorization {
            rules: vec![
                Rule {
                    ports: vec![80],
                    paths: vec![PathMatch::Prefix("/admin".into())],
                    ..rule("no-admin", Action::Deny)
                },
                Rule {
                    from: vec![SourceMatch::Prefix(id("spiffe://east.example/ns/shop"))],
                    services: vec![greeter.clone()],
                    methods: vec![Method::GET],
                    ..rule("shop-reads", Action::Allow)
                },
                Rule {
                    from: vec![SourceMatch::Id(batch.clone())],
                    services: vec![db.clone()],
                    ports: vec![5432],
                    ..rule("batch-db", Action::Allow)
                },
                Rule {
                    services: vec![db.clone()],
                    paths: vec![PathMatch::Prefix("/".into())],
                    ..rule("db-http", Action::Allow)
                },
            ],
        };
        let get = Method::GET;
        let post = Method::POST;
        let connect = Method::CONNECT;
        let cases: [Case<'_>; 10] = [
            (
                &web,
                &greeter,
                80,
                &get,
                Some("/hello"),
                Verdict::Allow(Some("shop-reads")),
            ),
            (
                &web,
                &greeter,
                80,
                &post,
                Some("/hello"),
                Verdict::Deny(None),
            ),
            (
                &batch,
                &greeter,
                80,
                &get,
                Some("/hello"),
                Verdict::Deny(None),
            ),
            (
                &web,
                &greeter,
                80,
                &get,
                Some("/admin/x"),
                Verdict::Deny(Some("no-admin")),
            ),
            (
                &web,
                &other,
                80,
                &post,
                Some("/admin"),
                Verdict::Deny(Some("no-admin")),
            ),
            (&web, &other, 80, &post, Some("/x"), Verdict::Allow(None)),
            (
                &batch,
                &db,
                5432,
                &connect,
                None,
                Verdict::Allow(Some("batch-db")),
            ),
            (&batch, &db, 5433, &connect, None, Verdict::Deny(None)),
            (&web, &db, 5432, &connect, None, Verdict::Deny(None)),
            // A deny rule's paths do not spare a tunnel: it is refused.
            (
                &web,
                &other,
                80,
                &connect,
                None,
                Verdict::Deny(Some("no-admin")),
            ),
        ];
        for (i, (source, service, port, method, path, expected)) in cases.into_iter().enumerate() {
            let access = Access {
                source,
                service,
                port,
                method,
                path,
            };
            assert_eq!(
                authorization.decide(&access),
                expected,
                "case {i}: {access:?}"
            );
        }
    }

    #[test]
    fn source_prefixes_match_whole_segments() {
        let prefix = SourceMatch::Prefix(id("spiffe://east.example/ns/shop"));
        assert!(prefix.matches(&id("spiffe://east.example/ns/shop")));
        assert!(prefix.matches(&id("spiffe://east.example/ns/shop/sa/web")));
        assert!(!prefix.matches(&id("spiffe://east.example/ns/shopping")));
        assert!(!prefix.matches(&id("spiffe://west.example/ns/shop/sa/web")));
        let domain = SourceMatch::TrustDomain("east.example".parse().expect("service"));
        assert!(domain.matches(&id("spiffe://east.example/anything")));
        assert!(!domain.matches(&id("spiffe://east.example.evil/anything")));
    }
}
