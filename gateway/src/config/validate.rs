//! From raw YAML to a [`Config`], collecting every problem on the way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use meshfed_discovery::{Label, ServiceKey};
use meshfed_trust::TrustDomain;
use serde_saphyr::{DuplicateKeyPolicy, MergeKeyPolicy, MessageFormatter};

use super::raw::{RawConfig, RawDns, RawIdentity, RawListeners, RawPeer, Text};
use super::{Config, ConfigError, Dns, Export, Identity, Listeners, Peer, TcpService, duration};

const DEFAULT_HTTP: &str = "127.0.0.1:15080";
const DEFAULT_FEDERATION: &str = "0.0.0.0:15443";
const DEFAULT_DNS: &str = "127.0.0.1:15053";
const DEFAULT_ADMIN: &str = "127.0.0.1:15000";
const DEFAULT_SVID_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_RENEW_AT: u8 = 50;
const DEFAULT_TTL: Duration = Duration::from_secs(5);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub(super) fn parse(text: &str, base: &Path) -> Result<Config, Vec<ConfigError>> {
    let mut check = Checker::default();
    let raw = deserialize(text, &mut check)?;
    let config = check.config(&raw, base);
    match config {
        Some(config) if check.errors.is_empty() => Ok(config),
        _ => Err(check.errors),
    }
}

/// Deserializes the YAML, noting unknown keys. A YAML syntax or shape error is fatal, but it
/// comes together with any unknown keys seen before it.
pub(super) fn deserialize<T: serde::de::DeserializeOwned>(
    text: &str,
    check: &mut Checker,
) -> Result<T, Vec<ConfigError>> {
    let options = serde_saphyr::options! {
        duplicate_keys: DuplicateKeyPolicy::Error,
        merge_keys: MergeKeyPolicy::Error,
        with_snippet: false,
        budget: serde_saphyr::budget! { max_depth: 32, max_aliases: 100, max_anchors: 100 },
    };
    let mut unknown = Vec::new();
    let mut failed_at = None;
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        let mut note_unknown = |path: serde_ignored::Path<'_>| {
            // `Spanned` reads a private marker key that serde_ignored reports; it is not the user's.
            if let Some(path) = key_path(&path) {
                unknown.push(path);
            }
        };
        let de = serde_ignored::Deserializer::new(de, &mut note_unknown);
        serde_path_to_error::deserialize(de).map_err(|e| {
            failed_at = Some(clean_path(&e.path().to_string()));
            e.into_inner()
        })
    });
    for path in unknown {
        check.errors.push(ConfigError {
            path,
            line: None,
            value: None,
            reason: "unknown key".into(),
        });
    }
    match result {
        // An empty document deserializes to nothing at all; treat it as an empty mapping.
        Ok(raw) => Ok(raw),
        Err(error) => {
            let location = error.location().filter(|l| l.line() > 0);
            let reason = serde_saphyr::DefaultMessageFormatter
                .format_message(error.without_snippet())
                .to_string();
            check.errors.push(ConfigError {
                path: failed_at.unwrap_or_default(),
                line: location.map(|l| l.line()),
                value: None,
                reason,
            });
            Err(std::mem::take(&mut check.errors))
        }
    }
}

/// A serde_ignored path as a config key path (`peers[0].name`), or `None` for serde-saphyr's
/// own bookkeeping keys.
fn key_path(path: &serde_ignored::Path<'_>) -> Option<String> {
    use serde_ignored::Path;
    fn walk(path: &Path<'_>, out: &mut String) -> bool {
        match path {
            Path::Root => true,
            Path::Seq { parent, index } => {
                let ok = walk(parent, out);
                out.push_str(&format!("[{index}]"));
                ok
            }
            Path::Map { parent, key } => {
                if key.starts_with("__serde_saphyr") {
                    return false;
                }
                let ok = walk(parent, out);
                // Inside a `Spanned`, the value sits under a synthetic `value` key.
                if key == "value" && matches!(**parent, Path::NewtypeStruct { .. }) {
                    return ok;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
                ok
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => walk(parent, out),
        }
    }
    let mut out = String::new();
    walk(path, &mut out).then_some(out)
}

/// serde_path_to_error's path without serde-saphyr's `Spanned` internals and `?` for options.
fn clean_path(path: &str) -> String {
    let path = path.replace(".?", "").replace(".value", "");
    match path.as_str() {
        "." | "?" => String::new(),
        _ => path,
    }
}

/// Collects every problem while turning raw config into validated types.
#[derive(Default)]
pub(crate) struct Checker {
    pub(super) errors: Vec<ConfigError>,
}

impl Checker {
    fn config(&mut self, raw: &RawConfig, base: &Path) -> Option<Config> {
        let cluster = self.required("cluster", raw.cluster.as_ref(), parse_label);
        let trust_domain = self.required("trust_domain", raw.trust_domain.as_ref(), parse_td);
        let listeners = self.listeners(raw.listeners.as_ref());
        let identity = match &raw.identity {
            Some(identity) => self.identity(identity, base),
            None => {
                self.missing("identity", "say where the gateway's SVID comes from: `ca_dir`, or `cert`, `key` and `bundle`");
                None
            }
        };
        let peers: Vec<Option<Peer>> = raw
            .peers
            .iter()
            .enumerate()
            .map(|(i, peer)| self.peer(&format!("peers[{i}]"), peer, base))
            .collect();
        let exports: Vec<Option<Export>> = raw
            .exports
            .iter()
            .enumerate()
            .map(|(i, export)| self.export(&format!("exports[{i}]"), export))
            .collect();
        let tcp_services: Vec<Option<TcpService>> = raw
            .tcp_services
            .iter()
            .enumerate()
            .map(|(i, tcp)| {
                self.tcp_service(&format!("tcp_services[{i}]"), tcp, listeners.as_ref())
            })
            .collect();
        let dns = self.dns(raw.dns.as_ref());
        let bundle_endpoint = raw
            .bundle_endpoint
            .as_ref()
            .map(|b| self.bundle_endpoint(b, base));
        let state_dir = raw
            .state_dir
            .as_ref()
            .map(|d| self.value("state_dir", d, |s| Ok(base.join(s))));
        let shutdown_grace = self.optional(
            "shutdown_grace",
            raw.shutdown_grace.as_ref(),
            DEFAULT_SHUTDOWN_GRACE,
            duration::parse,
        );
        let workers = raw
            .workers
            .as_ref()
            .map(|w| self.value("workers", w, parse_workers));

        let policy_file = raw
            .policy
            .as_ref()
            .map(|p| self.value("policy", p, |s| Ok(base.join(s))));

        let tracing = raw.tracing.as_ref().map(|t| self.tracing(t));
        let access_log = raw.access_log.as_ref().map(|a| self.access_log(a, base));

        let peers: Option<Vec<Peer>> = peers.into_iter().collect();
        let exports: Option<Vec<Export>> = exports.into_iter().collect();
        let config = Config {
            cluster: cluster?,
            trust_domain: trust_domain?,
            listeners: listeners?,
            identity: identity?,
            peers: peers?,
            exports: exports?,
            tcp_services: tcp_services.into_iter().collect::<Option<_>>()?,
            dns: dns?,
            bundle_endpoint: bundle_endpoint.map_or(Some(None), |b| b.map(Some))?,
            state_dir: state_dir.map_or(Some(None), |d| d.map(Some))?,
            shutdown_grace: shutdown_grace?,
            workers: workers.map_or(Some(None), |w| w.map(Some))?,
            policy_file: policy_file.map_or(Some(None), |p| p.map(Some))?,
            tracing: tracing.map_or(Some(None), |t| t.map(Some))?,
            access_log: access_log.map_or(Some(None), |a| a.map(Some))?,
        };
        self.cross_check(raw, &config);
        Some(config)
    }

    fn listeners(&mut self, raw: Option<&RawListeners>) -> Option<Listeners> {
        let field = |f: fn(&RawListeners) -> &Option<Text>| raw.and_then(|r| f(r).as_ref());
        let http = self.socket("listeners.http", field(|r| &r.http), DEFAULT_HTTP);
        let federation = self.socket(
            "listeners.federation",
            field(|r| &r.federation),
            DEFAULT_FEDERATION,
        );
        let dns = self.socket("listeners.dns", field(|r| &r.dns), DEFAULT_DNS);
        let admin = self.socket("listeners.admin", field(|r| &r.admin), DEFAULT_ADMIN);
        if let (Some(http), Some(text)) = (http, field(|r| &r.http))
            && http.ip().is_unspecified()
        {
            self.invalid(
                "listeners.http",
                text,
                "must be a specific address: the gateway's DNS answers with it",
            );
        }
        Some(Listeners {
            http: http?,
            federation: federation?,
            dns: dns?,
            admin: admin?,
        })
    }

    fn identity(&mut self, raw: &RawIdentity, base: &Path) -> Option<Identity> {
        let files = [&raw.cert, &raw.key, &raw.bundle];
        match (&raw.ca_dir, files.iter().any(|f| f.is_some())) {
            (Some(dir), false) => {
                let svid_lifetime = self.optional(
                    "identity.svid_lifetime",
                    raw.svid_lifetime.as_ref(),
                    DEFAULT_SVID_LIFETIME,
                    parse_lifetime,
                );
                let renew_at = self.optional(
                    "identity.renew_at",
                    raw.renew_at.as_ref(),
                    DEFAULT_RENEW_AT,
                    parse_percent,
                );
                Some(Identity::Ca {
                    dir: base.join(&dir.value),
                    svid_lifetime: svid_lifetime?,
                    renew_at: renew_at?,
                })
            }
            (None, true) => {
                for (key, text) in [
                    ("svid_lifetime", &raw.svid_lifetime),
                    ("renew_at", &raw.renew_at),
                ] {
                    if let Some(text) = text {
                        self.invalid(
                            &format!("identity.{key}"),
                            text,
                            "applies only with `ca_dir`: an SVID from files is renewed by whoever writes it",
                        );
                    }
                }
                let path = |c: &mut Self, key: &str, text: &Option<Text>| {
                    c.required(&format!("identity.{key}"), text.as_ref(), |s| {
                        Ok(base.join(s))
                    })
                };
                let cert = path(self, "cert", &raw.cert);
                let key = path(self, "key", &raw.key);
                let bundle = path(self, "bundle", &raw.bundle);
                Some(Identity::Files {
                    cert: cert?,
                    key: key?,
                    bundle: bundle?,
                })
            }
            (Some(dir), true) => {
                self.invalid(
                    "identity.ca_dir",
                    dir,
                    "give either `ca_dir` or `cert`, `key` and `bundle`, not both",
                );
                None
            }
            (None, false) => {
                self.missing("identity", "give `ca_dir`, or `cert`, `key` and `bundle`");
                None
            }
        }
    }

    fn peer(&mut self, at: &str, raw: &RawPeer, base: &Path) -> Option<Peer> {
        let name = self.required(&format!("{at}.name"), raw.name.as_ref(), parse_label);
        let address = self.required(&format!("{at}.address"), raw.address.as_ref(), parse_socket);
        let trust_domain = self.required(
            &format!("{at}.trust_domain"),
            raw.trust_domain.as_ref(),
            parse_td,
        );
        let bundle = self.required(&format!("{at}.bundle"), raw.bundle.as_ref(), |s| {
            Ok(base.join(s))
        });
        if let Some(first) = raw.services.first() {
            self.invalid(
                &format!("{at}.services"),
                first,
                "peers' services are no longer listed: each peer's exports arrive through the \
                 catalog exchange (docs/discovery.md); remove this list",
            );
        }
        let bundle_endpoint = raw.bundle_endpoint.as_ref().map(|raw| {
            let peer = name.as_ref().zip(trust_domain.as_ref());
            self.peer_bundle_endpoint(&format!("{at}.bundle_endpoint"), raw, peer, base)
        });
        Some(Peer {
            name: name?,
            address: address?,
            trust_domain: trust_domain?,
            bundle: bundle?,
            bundle_endpoint: bundle_endpoint.map_or(Some(None), |b| b.map(Some))?,
        })
    }

    fn dns(&mut self, raw: Option<&RawDns>) -> Option<Dns> {
        let field = |f: fn(&RawDns) -> &Option<Text>| raw.and_then(|r| f(r).as_ref());
        let zone = self.optional(
            "dns.zone",
            field(|r| &r.zone),
            "clusterset.local".to_owned(),
            parse_zone,
        );
        let pinned_zone = self.optional(
            "dns.pinned_zone",
            field(|r| &r.pinned_zone),
            "meshfed.internal".to_owned(),
            parse_zone,
        );
        let ttl = self.optional("dns.ttl", field(|r| &r.ttl), DEFAULT_TTL, |s| {
            let ttl = duration::parse(s)?;
            if ttl.subsec_millis() != 0 || ttl.as_secs() > u64::from(u32::MAX >> 1) {
                return Err("must be a whole number of seconds below 2^31".into());
            }
            Ok(ttl)
        });
        if let (Some(zone), Some(pinned)) = (&zone, &pinned_zone)
            && nested(zone, pinned)
        {
            self.invalid_at(
                "dns.pinned_zone",
                pinned,
                "must be apart from `dns.zone`: neither may be the other or inside it",
            );
        }
        Some(Dns {
            zone: zone?,
            pinned_zone: pinned_zone?,
            ttl: ttl?,
        })
    }

    /// Rules that span several keys.
    fn cross_check(&mut self, raw: &RawConfig, config: &Config) {
        let mut names = BTreeMap::new();
        let mut domains = BTreeMap::new();
        for (i, peer) in config.peers.iter().enumerate() {
            let at = format!("peers[{i}]");
            let name_text = raw.peers[i].name.as_ref();
            let td_text = raw.peers[i].trust_domain.as_ref();
            if peer.name == config.cluster {
                self.error(
                    &format!("{at}.name"),
                    name_text,
                    "is this gateway's own cluster",
                );
            } else if let Some(first) = names.insert(&peer.name, i) {
                self.error(
                    &format!("{at}.name"),
                    name_text,
                    &format!("repeats peers[{first}]"),
                );
            }
            if peer.trust_domain == config.trust_domain {
                self.error(
                    &format!("{at}.trust_domain"),
                    td_text,
                    "is this gateway's own trust domain; each cluster has its own",
                );
            } else if let Some(first) = domains.insert(&peer.trust_domain, i) {
                self.error(
                    &format!("{at}.trust_domain"),
                    td_text,
                    &format!("repeats peers[{first}]: a trust domain names one peer"),
                );
            }
        }
        let mut services = BTreeMap::new();
        for (i, export) in config.exports.iter().enumerate() {
            let at = format!("exports[{i}]");
            let raw_export = &raw.exports[i];
            if let Some(first) = services.insert(&export.service, i) {
                self.error(
                    &format!("{at}.name"),
                    raw_export.name.as_ref(),
                    &format!("{} repeats exports[{first}]", export.service),
                );
            }
            for (j, to) in export.export_to.iter().enumerate() {
                if !names.contains_key(to) {
                    self.error(
                        &format!("{at}.export_to[{j}]"),
                        raw_export.export_to.get(j),
                        "names no configured peer",
                    );
                }
            }
        }
        self.distinct_listeners(raw, &config.listeners);
        self.cross_check_services(raw, config);
    }

    fn distinct_listeners(&mut self, raw: &RawConfig, l: &Listeners) {
        let all = [
            ("http", l.http),
            ("federation", l.federation),
            ("dns", l.dns),
            ("admin", l.admin),
        ];
        for (i, (name, addr)) in all.iter().enumerate() {
            if addr.port() == 0 {
                continue;
            }
            if let Some((other, _)) = all[..i].iter().find(|(_, a)| a == addr) {
                let text = raw.listeners.as_ref().and_then(|r| match *name {
                    "http" => r.http.as_ref(),
                    "federation" => r.federation.as_ref(),
                    "dns" => r.dns.as_ref(),
                    _ => r.admin.as_ref(),
                });
                self.error(
                    &format!("listeners.{name}"),
                    text,
                    &format!("is the same address as listeners.{other}"),
                );
            }
        }
    }

    // --- helpers ---

    pub(super) fn required<T>(
        &mut self,
        path: &str,
        text: Option<&Text>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match text {
            Some(text) => self.value(path, text, parse),
            None => {
                self.missing(path, "is required");
                None
            }
        }
    }

    pub(super) fn optional<T>(
        &mut self,
        path: &str,
        text: Option<&Text>,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match text {
            Some(text) => self.value(path, text, parse),
            None => Some(default),
        }
    }

    fn socket(&mut self, path: &str, text: Option<&Text>, default: &str) -> Option<SocketAddr> {
        match text {
            Some(text) => self.value(path, text, parse_socket),
            None => default.parse().ok(),
        }
    }

    pub(super) fn value<T>(
        &mut self,
        path: &str,
        text: &Text,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(text.value.trim()) {
            Ok(value) => Some(value),
            Err(reason) => {
                self.invalid(path, text, &reason);
                None
            }
        }
    }

    pub(super) fn invalid(&mut self, path: &str, text: &Text, reason: &str) {
        self.error(path, Some(text), reason);
    }

    /// A problem with a value that has no line of its own (a map key, a derived value).
    pub(super) fn invalid_at(&mut self, path: &str, value: &str, reason: &str) {
        self.errors.push(ConfigError {
            path: path.to_owned(),
            line: None,
            value: Some(value.to_owned()),
            reason: reason.to_owned(),
        });
    }

    pub(super) fn missing(&mut self, path: &str, reason: &str) {
        self.error(path, None, reason);
    }

    pub(super) fn error(&mut self, path: &str, text: Option<&Text>, reason: &str) {
        self.errors.push(ConfigError {
            path: path.to_owned(),
            line: text.map(|t| t.referenced.line()).filter(|l| *l > 0),
            value: text.map(|t| t.value.clone()),
            reason: reason.to_owned(),
        });
    }
}

pub(super) fn parse_label(s: &str) -> Result<Label, String> {
    s.parse().map_err(|e| format!("not a DNS label: {e}"))
}

fn parse_td(s: &str) -> Result<TrustDomain, String> {
    s.parse()
        .map_err(|e| format!("not a SPIFFE trust domain: {e}"))
}

pub(super) fn parse_service(s: &str) -> Result<ServiceKey, String> {
    s.parse()
        .map_err(|e| format!("not a service `<name>.<namespace>`: {e}"))
}

pub(super) fn parse_socket(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        "expected an IP address and port, as in `10.0.0.7:8080` or `[::1]:8080`".into()
    })
}

pub(super) fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err("expected a port number from 1 to 65535".into()),
        Ok(port) => Ok(port),
    }
}

fn parse_workers(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ 1..=super::MAX_WORKERS) => Ok(n),
        _ => Err(format!(
            "expected a number of threads from 1 to {}",
            super::MAX_WORKERS
        )),
    }
}

fn parse_percent(s: &str) -> Result<u8, String> {
    let number = s
        .strip_suffix('%')
        .ok_or_else(|| "expected a percentage, as in `50%`".to_owned())?;
    match number.trim().parse::<u8>() {
        Ok(p @ 10..=90) => Ok(p),
        _ => Err("expected a whole percentage from 10% to 90%".into()),
    }
}

fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let lifetime = duration::parse(s)?;
    if lifetime > Duration::from_secs(3650 * 86_400) {
        return Err("must be at most 3650d".into());
    }
    if lifetime < Duration::from_secs(2) {
        return Err(
            "must be at least 2s (hours in production): SVIDs are renewed at half their lifetime"
                .into(),
        );
    }
    Ok(lifetime)
}

/// Whether two zones overlap: equal, or one inside the other.
fn nested(a: &str, b: &str) -> bool {
    let inside = |inner: &str, outer: &str| {
        inner == outer
            || inner
                .strip_suffix(outer)
                .is_some_and(|rest| rest.ends_with('.'))
    };
    inside(a, b) || inside(b, a)
}

fn parse_zone(s: &str) -> Result<String, String> {
    let zone = s.trim_end_matches('.').to_ascii_lowercase();
    if zone.is_empty() {
        return Err("must not be empty or the root".into());
    }
    for label in zone.split('.') {
        label
            .parse::<Label>()
            .map_err(|e| format!("label {label:?} {e}"))?;
    }
    Ok(zone)
}
