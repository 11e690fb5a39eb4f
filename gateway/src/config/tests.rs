//! Config parsing: what a good file turns into, and that a bad one is refused with every problem.

use std::path::Path;

use super::*;

const GOOD: &str = r#"
cluster: east
trust_domain: east.example
listeners:
  http: 127.0.1.1:15080
  federation: 127.0.1.1:15443
identity:
  ca_dir: ca
peers:
  - name: west
    address: 10.1.0.5:15443
    trust_domain: west.example
    bundle: /etc/meshfed/west.pem
exports:
  - name: checkout
    namespace: shop
    ports: [{ name: http, port: 80, protocol: http }]
    endpoints: ["10.0.0.7:8080", "[::1]:8080"]
    export_to: [west]
dns:
  ttl: 30s
"#;

fn errors(text: &str) -> Vec<ConfigError> {
    Config::parse(text, Path::new("/cfg"))
        .expect_err("must be refused")
        .errors
}

#[test]
fn the_data_plane_has_one_to_sixty_four_workers() {
    let base = "cluster: east\ntrust_domain: east.example\nidentity: { ca_dir: ca }\n";
    let parsed = |extra: &str| Config::parse(&format!("{base}{extra}"), Path::new("/"));
    assert_eq!(parsed("").expect("valid").workers, None, "one per core");
    assert_eq!(parsed("workers: 3\n").expect("valid").workers, Some(3));
    assert_eq!(parsed("workers: 64\n").expect("valid").workers, Some(64));
    for bad in ["0", "65", "-1", "two", "1.5"] {
        let got = errors(&format!("{base}workers: {bad}\n"));
        assert_eq!(got.len(), 1, "{bad}: {got:#?}");
        assert_eq!(got[0].path, "workers", "{bad}");
        assert_eq!(got[0].value.as_deref(), Some(bad), "{bad}");
        assert!(
            got[0].reason.contains("from 1 to 64"),
            "{bad}: {}",
            got[0].reason
        );
    }
}

#[test]
fn good_config_parses_with_defaults_filled_in() {
    let config = Config::parse(GOOD, Path::new("/cfg")).expect("valid");
    assert_eq!(config.cluster.as_str(), "east");
    assert_eq!(
        config.listeners.http,
        "127.0.1.1:15080".parse().expect("addr")
    );
    assert_eq!(
        config.listeners.admin,
        "127.0.0.1:15000".parse().expect("addr")
    );
    assert_eq!(
        config.identity,
        Identity::Ca {
            dir: "/cfg/ca".into(),
            svid_lifetime: Duration::from_secs(86_400),
            renew_at: 50,
        }
    );
    assert_eq!(
        config.exports[0].ports[0].endpoints,
        [
            "10.0.0.7:8080".parse().expect("addr"),
            "[::1]:8080".parse().expect("addr")
        ]
    );
    assert_eq!(config.dns.zone, "clusterset.local");
    assert_eq!(config.dns.ttl, Duration::from_secs(30));
}

#[test]
fn every_mistake_is_reported_with_path_line_and_value() {
    let text = r#"
cluster: East
trust_domain: east.example
listeners:
  http: 127.0.1.1
identity:
  ca_dir: ca
  svid_lifetime: 1s
peers:
  - name: west
    address: 10.1.0.5:15443
    trust_domain: east.example
    bundle: west.pem
  - name: west
    address: 10.1.0.6:15443
    trust_domain: north.example
    bundle: north.pem
    servcies: [a.b]
exports:
  - name: checkout
    namespace: shop
    ports: [{ port: 0, protocol: http }]
    endpoints: []
    export_to: [south]
"#;
    let got = errors(text);
    let summary: Vec<(String, Option<u64>)> =
        got.iter().map(|e| (e.path.clone(), e.line)).collect();
    let want = [
        ("peers[1].servcies", None),
        ("cluster", Some(2)),
        ("listeners.http", Some(5)),
        ("identity.svid_lifetime", Some(8)),
        ("exports[0].endpoints", None),
        ("exports[0].ports[0].port", Some(22)),
    ];
    for (path, line) in want {
        assert!(
            summary.contains(&(path.to_owned(), line)),
            "missing {path} at {line:?} in {got:#?}"
        );
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");
    let cluster = got
        .iter()
        .find(|e| e.path == "cluster")
        .expect("cluster error");
    assert_eq!(cluster.value.as_deref(), Some("East"));
    assert!(
        cluster.reason.contains("'E'") || cluster.reason.contains("\"E\""),
        "{cluster}"
    );
}

#[test]
fn cross_field_mistakes_are_reported_once_fields_parse() {
    let text = r#"
cluster: east
trust_domain: east.example
listeners:
  http: 127.0.0.1:15080
  admin: 127.0.0.1:15080
identity:
  ca_dir: ca
peers:
  - { name: west, address: "10.1.0.5:15443", trust_domain: east.example, bundle: w.pem }
  - { name: west, address: "10.1.0.6:15443", trust_domain: north.example, bundle: n.pem }
  - { name: east, address: "10.1.0.7:15443", trust_domain: north.example, bundle: e.pem }
exports:
  - { name: a, namespace: b, ports: [{port: 80, protocol: http}], endpoints: ["10.0.0.1:80"], export_to: [south] }
  - { name: a, namespace: b, ports: [{port: 80, protocol: http}], endpoints: ["10.0.0.1:80"] }
"#;
    let mut paths: Vec<String> = errors(text).into_iter().map(|e| e.path).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "exports[0].export_to[0]",
            "exports[1].name",
            "listeners.admin",
            "peers[0].trust_domain",
            "peers[1].name",
            "peers[2].name",
            "peers[2].trust_domain",
        ]
    );
}

#[test]
fn structural_mistakes_are_refused_with_a_line() {
    let cases = [
        ("cluster: [a, b]\n", 1),
        ("cluster: a\ncluster: b\n", 2),
        ("cluster: a\n  bad: indent\n", 2),
    ];
    for (text, line) in cases {
        let got = errors(text);
        assert!(
            got.iter().any(|e| e.line == Some(line)),
            "{text:?}: {got:#?}"
        );
    }
}

#[test]
fn identity_needs_exactly_one_source() {
    let base = "cluster: east\ntrust_domain: east.example\n";
    let both = format!("{base}identity: {{ ca_dir: ca, cert: c.pem }}\n");
    let partial = format!("{base}identity: {{ cert: c.pem }}\n");
    let none = format!("{base}identity: {{}}\n");
    assert_eq!(errors(&both)[0].path, "identity.ca_dir");
    let partial: Vec<String> = errors(&partial).into_iter().map(|e| e.path).collect();
    assert_eq!(partial, ["identity.key", "identity.bundle"]);
    assert_eq!(errors(&none)[0].path, "identity");
}

#[test]
fn errors_display_path_line_value_and_reason() {
    let err = Config::parse("cluster: East\n", Path::new("/")).expect_err("bad");
    let text = err.to_string();
    assert!(
        text.contains("cluster (line 1): \"East\": not a DNS label"),
        "{text}"
    );
    assert!(text.contains("trust_domain: is required"), "{text}");
}

#[test]
fn a_peer_services_list_is_refused_with_what_replaced_it() {
    let text = "cluster: east\npeers:\n  - name: west\n    services: [greeter.demo]\n";
    let got = errors(text);
    let error = got
        .iter()
        .find(|e| e.path == "peers[0].services")
        .expect("an error at peers[0].services");
    assert!(error.to_string().contains("catalog exchange"), "{error}");
}

#[test]
fn a_shape_error_names_its_key_path() {
    let text = "cluster: east\npeers:\n  - name: west\n    services: { a: b }\n";
    let got = errors(text);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].path, "peers[0].services");
    assert_eq!(got[0].line, Some(4));
}

#[test]
fn empty_lists_may_be_written_as_nothing() {
    let text =
        "cluster: east\ntrust_domain: east.example\nidentity: { ca_dir: ca }\npeers:\nexports:\n";
    let config = Config::parse(text, Path::new("/")).expect("valid");
    assert!(config.peers.is_empty() && config.exports.is_empty());
}

#[test]
fn overlapping_zones_and_absurd_lifetimes_are_refused() {
    let base = "cluster: east\ntrust_domain: east.example\n";
    for (extra, path) in [
        (
            "identity: { ca_dir: ca }\ndns: { pinned_zone: p.clusterset.local }\n",
            "dns.pinned_zone",
        ),
        (
            "identity: { ca_dir: ca }\ndns: { zone: meshfed.internal }\n",
            "dns.pinned_zone",
        ),
        (
            "identity: { ca_dir: ca, svid_lifetime: 3000000d }\n",
            "identity.svid_lifetime",
        ),
    ] {
        let got = errors(&format!("{base}{extra}"));
        assert_eq!(got.len(), 1, "{extra}: {got:#?}");
        assert_eq!(got[0].path, path, "{extra}");
    }
    // Zones that merely share a suffix string are apart.
    let ok = format!(
        "{base}identity: {{ ca_dir: ca }}\ndns: {{ zone: set.local, pinned_zone: clusterset.local }}\n"
    );
    Config::parse(&ok, Path::new("/")).expect("apart");
}

#[test]
fn the_renewal_point_is_a_percentage_of_the_lifetime() {
    let base = "cluster: east\ntrust_domain: east.example\n";
    let ok = format!("{base}identity: {{ ca_dir: ca, renew_at: 70% }}\n");
    match Config::parse(&ok, Path::new("/")).expect("valid").identity {
        Identity::Ca { renew_at, .. } => assert_eq!(renew_at, 70),
        other => panic!("{other:?}"),
    }
    for bad in ["95%", "5%", "50", "half"] {
        let text = format!("{base}identity: {{ ca_dir: ca, renew_at: \"{bad}\" }}\n");
        let got = errors(&text);
        assert_eq!(got[0].path, "identity.renew_at", "{bad}: {got:#?}");
    }
}

const SERVICES: &str = r#"
cluster: east
trust_domain: east.example
listeners: { http: "10.0.0.1:15080" }
identity: { ca_dir: ca }
peers:
  - { name: west, address: "10.1.0.5:15443", trust_domain: west.example, bundle: w.pem }
exports:
  - name: checkout
    namespace: shop
    ports:
      - { name: http, port: 80, protocol: http, target_port: 8080 }
      - { name: grpc, port: 9090, protocol: grpc }
      - { name: admin, port: 7000, protocol: tcp }
    endpoints: ["10.0.0.7", "10.0.0.8"]
    export_to: [west]
tcp_services:
  - { service: db.shop, port: 5432 }
  - { service: checkout.shop, port: 7000, listen: "127.0.0.1:17000" }
"#;

#[test]
fn ports_give_each_endpoint_its_address_and_tcp_services_their_listeners() {
    let config = Config::parse(SERVICES, Path::new("/cfg")).expect("valid");
    let export = &config.exports[0];
    let addrs = |i: usize| -> Vec<String> {
        export.ports[i]
            .endpoints
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(addrs(0), ["10.0.0.7:8080", "10.0.0.8:8080"]);
    assert_eq!(addrs(1), ["10.0.0.7:9090", "10.0.0.8:9090"]);
    assert_eq!(export.http_port(None).map(|p| p.port), Some(80));
    assert_eq!(export.http_port(Some(9090)).map(|p| p.port), Some(9090));
    assert_eq!(export.http_port(Some(7000)).map(|p| p.port), Some(80));
    assert_eq!(
        export.tcp_port(7000).map(|p| p.protocol),
        Some(Protocol::Tcp)
    );
    assert_eq!(export.tcp_port(80), None);
    let listens: Vec<String> = config
        .tcp_services
        .iter()
        .map(|t| format!("{} {} {}", t.service, t.port, t.listen))
        .collect();
    assert_eq!(
        listens,
        [
            "db.shop 5432 10.0.0.1:5432",
            "checkout.shop 7000 127.0.0.1:17000"
        ]
    );
}

#[test]
fn service_mistakes_are_each_reported() {
    let cases = [
        (
            "ports: [{ port: 80, protocol: http }]",
            "exports[0].endpoints",
            "`endpoints_from`",
        ),
        (
            "ports: [{ port: 80, protocol: http }]\n    endpoints: [\"10.0.0.7\"]\n    endpoints_from: { dns: a.b.svc.cluster.local }",
            "exports[0].endpoints_from",
            "not both",
        ),
        (
            "ports: [{ port: 80, protocol: http }]\n    endpoints_from: { server: \"10.0.0.53:53\" }",
            "exports[0].endpoints_from",
            "needs `dns`",
        ),
        (
            "ports: [{ port: 80, protocol: http }]\n    endpoints_from: { dns: \"bad name\" }",
            "exports[0].endpoints_from.dns",
            "not a DNS name",
        ),
        (
            "ports: [{ port: 80, protocol: http }, { port: 81, protocol: http }]\n    endpoints_from: { srv: _http._tcp.a.b.svc.cluster.local }",
            "exports[0].endpoints_from.srv",
            "exactly one port",
        ),
        (
            "ports: [{ port: 80, protocol: http }]\n    endpoints: [\"10.0.0.7\"]\n    health_check: { protocol: icmp }",
            "exports[0].health_check.protocol",
            "unknown health check protocol",
        ),
        (
            "ports: [{ port: 80, protocol: http }]\n    endpoints: [\"10.0.0.7\"]\n    health_check: { protocol: http, port: 81 }",
            "exports[0].health_check.port",
            "not a port of the service",
        ),
        (
            "ports: [{ port: 80, protocol: http }]\n    endpoints: [\"10.0.0.7\"]\n    health_check: { protocol: http, interval: 1s, timeout: 2s }",
            "exports[0].health_check.timeout",
            "longer than the interval",
        ),
        (
            "ports: [{ port: 80, protocol: http }]\n    endpoints: [\"10.0.0.7\"]\n    health_check: { protocol: tcp, path: /x }",
            "exports[0].health_check.path",
            "only an `http` check",
        ),
        (
            "ports: [{ port: 80, protocol: http }]\n    endpoints: [\"10.0.0.7\"]\n    health_check: { protocol: grpc, unhealthy_threshold: 0 }",
            "exports[0].health_check.unhealthy_threshold",
            "1 to 100",
        ),
        (
            "ports: [{ port: 80, protocol: http }, { port: 81, protocol: http }]\n    endpoints: [\"10.0.0.7:8080\"]",
            "exports[0].endpoints[0]",
            "several ports",
        ),
        (
            "ports: [{ port: 80, protocol: quic }]\n    endpoints: [\"10.0.0.7\"]",
            "exports[0].ports[0].protocol",
            "unknown protocol",
        ),
        (
            "ports: [{ port: 80, protocol: http }, { port: 80, protocol: tcp }]\n    endpoints: [\"10.0.0.7\"]",
            "exports[0].ports[1].port",
            "repeats",
        ),
        (
            "ports: [{ port: 80, protocol: http }]\n    endpoints: [\"10.0.0.7:0\"]",
            "exports[0].endpoints[0]",
            "port 0",
        ),
        (
            "ports: [{ port: 80, protocol: http }]\n    endpoints: [\"10.0.0.7\"]\ntcp_services: [{ service: checkout.shop, port: 80 }]",
            "tcp_services[0].port",
            "no `tcp` port 80",
        ),
        (
            "ports: [{ port: 80, protocol: tcp }]\n    endpoints: [\"10.0.0.7\"]\ntcp_services: [{ service: checkout.shop, port: 80, listen: \"127.0.0.1:15080\" }]",
            "tcp_services[0].listen",
            "listeners.http",
        ),
    ];
    for (service, path, reason) in cases {
        let text = format!(
            "cluster: east\ntrust_domain: east.example\nidentity: {{ ca_dir: ca }}\n\
             exports:\n  - name: checkout\n    namespace: shop\n    {service}\n"
        );
        let got = errors(&text);
        assert!(
            got.iter()
                .any(|e| e.path == path && e.reason.contains(reason)),
            "wanted {path}: {reason} for\n{text}\ngot {got:#?}"
        );
    }
}

#[test]
fn endpoint_sources_and_health_checks_parse_with_their_defaults() {
    let text = r#"
cluster: east
trust_domain: east.example
identity: { ca_dir: ca }
exports:
  - name: checkout
    namespace: shop
    ports: [{ name: http, port: 80, protocol: http, target_port: 8080 }]
    endpoints_from: { dns: Checkout.Shop.svc.cluster.local, server: "10.96.0.10:53" }
    health_check: { protocol: http, path: /healthz }
  - name: db
    namespace: data
    ports: [{ name: pg, port: 5432, protocol: tcp }]
    endpoints_from: { srv: _pg._tcp.db.data.svc.cluster.local }
    health_check: { protocol: grpc, service: db, interval: 500ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 5 }
"#;
    let config = Config::parse(text, Path::new("/")).expect("valid");
    let checkout = &config.exports[0];
    assert_eq!(
        checkout.source,
        EndpointSource::Dns {
            name: "checkout.shop.svc.cluster.local.".to_owned(),
            record: DnsRecord::Address,
            server: Some("10.96.0.10:53".parse().expect("addr")),
        }
    );
    assert!(checkout.endpoints.is_empty());
    let check = checkout.health_check.as_ref().expect("a check");
    assert_eq!(
        (
            &check.probe,
            check.port,
            check.interval,
            check.timeout,
            check.healthy_threshold,
            check.unhealthy_threshold
        ),
        (
            &Probe::Http {
                path: "/healthz".to_owned()
            },
            80,
            Duration::from_secs(5),
            Duration::from_secs(1),
            2,
            3
        )
    );
    let db = &config.exports[1];
    assert!(matches!(
        db.source,
        EndpointSource::Dns {
            record: DnsRecord::Srv,
            server: None,
            ..
        }
    ));
    let check = db.health_check.as_ref().expect("a check");
    assert_eq!(
        check.probe,
        Probe::Grpc {
            service: "db".to_owned()
        }
    );
    assert_eq!(
        (
            check.interval,
            check.timeout,
            check.healthy_threshold,
            check.unhealthy_threshold
        ),
        (Duration::from_millis(500), Duration::from_millis(200), 1, 5)
    );
}

// === the policy file ===

fn policy_errors(text: &str) -> Vec<String> {
    let config = Config::parse(GOOD, Path::new("/cfg")).expect("valid");
    policy::parse(text, &config)
        .expect_err("must be refused")
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect()
}

/// Asserts that `errors` has one at each key path of `expected`.
fn assert_errors_at(errors: &[String], expected: &[&str]) {
    for path in expected {
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("{path}:")) || e.starts_with(&format!("{path} ("))),
            "no error at {path}: {errors:#?}"
        );
    }
}

#[test]
fn good_policy_parses() {
    let config = Config::parse(GOOD, Path::new("/cfg")).expect("valid");
    let text = r#"
overrides: { trusted_clients: [10.0.0.0/8] }
services:
  - service: greeter.demo
    subsets: { v2: { version: v2 } }
    routes:
      - name: canary
        match: [{ method: GET, path: { prefix: /api }, headers: { x-user: { regex: "a.*" } } }]
        backends: [{ cluster: west, subset: v2, weight: 10 }, { cluster: east, weight: 90 }]
        timeout: 2s
        fault: { delay: { fixed: 10ms, percent: 0.5 }, abort: { grpc_status: UNAVAILABLE, percent: 1 } }
"#;
    let policy = policy::parse(text, &config).expect("valid");
    let service = &policy.services[&"greeter.demo".parse().expect("key")];
    let route = &service.routes[0];
    assert_eq!(route.name, "canary");
    assert_eq!(route.backends.len(), 2);
    assert_eq!(
        route.backends[0].subset.as_ref().map(|s| s.0.as_str()),
        Some("v2")
    );
    assert_eq!(route.timeout, Some(std::time::Duration::from_secs(2)));
    assert_eq!(
        route.fault.abort.map(|a| a.status),
        Some(crate::policy::AbortStatus::Grpc(14))
    );
    assert_eq!(policy.overrides.trusted_clients.len(), 1);
}

#[test]
fn bad_policy_is_refused_with_every_problem() {
    let text = r#"
overrides: { trusted_clients: [10.0.0.1/8] }
services:
  - service: greeter
    routes: []
  - service: checkout.shop
    subsets: { V2: { version: "v 2" } }
    routes:
      - name: a
        match:
          - method: FETCH
            path: { prefix: api }
            headers: { x-user: { exact: a, regex: b }, "bad header": { present: true } }
          - path: { regex: "(" }
        backends: [{ cluster: mars }, { cluster: west, subset: v9, weight: -1 }]
        request_headers: { set: { x-meshfed-identity: me, host: h } }
        timeout: 0s
        fault:
          delay: { percent: 50 }
          abort: { http_status: 200, grpc_status: UNAVAILABLE, percent: 101 }
      - name: a
        backends: [{ cluster: west, weight: 0 }]
"#;
    let errors = policy_errors(text);
    let expected = [
        "overrides.trusted_clients[0]",
        "services[0].service",
        "services[1].subsets.V2",
        "services[1].subsets.V2.version",
        "services[1].routes[0].match[0].method",
        "services[1].routes[0].match[0].path.prefix",
        "services[1].routes[0].match[0].headers.x-user.regex",
        "services[1].routes[0].match[0].headers.bad header",
        "services[1].routes[0].match[1].path.regex",
        "services[1].routes[0].backends[0].cluster",
        "services[1].routes[0].backends[1].subset",
        "services[1].routes[0].backends[1].weight",
        "services[1].routes[0].request_headers.set.x-meshfed-identity",
        "services[1].routes[0].request_headers.set.host",
        "services[1].routes[0].timeout",
        "services[1].routes[0].fault.delay.fixed",
        "services[1].routes[0].fault.abort.grpc_status",
        "services[1].routes[0].fault.abort.percent",
        "services[1].routes[1].backends",
    ];
    assert_errors_at(&errors, &expected);
}

#[test]
fn authorization_rules_and_origins_parse() {
    use crate::policy::authz::{Action, SourceMatch};
    let config = Config::parse(GOOD, Path::new("/cfg")).expect("valid");
    let text = r#"
authorization:
  - name: no-admin
    action: deny
    to: { paths: [{ prefix: /admin }] }
  - action: allow
    from:
      - id: spiffe://west.example/ns/shop/sa/web
      - id_prefix: spiffe://west.example/ns/batch/
      - trust_domain: north.example
    to: { services: [checkout.shop], ports: [80], methods: [GET] }
origins:
  - clients: [10.1.0.0/16, 10.2.0.7]
    id: spiffe://east.example/ns/shop/sa/frontend
"#;
    let policy = policy::parse(text, &config).expect("valid");
    let rules = &policy.authorization.rules;
    assert_eq!(rules.len(), 2);
    assert_eq!(
        (rules[0].name.as_str(), rules[0].action),
        ("no-admin", Action::Deny)
    );
    assert_eq!(rules[1].name, "authorization[1]");
    assert_eq!(
        rules[1].from[1],
        SourceMatch::Prefix("spiffe://west.example/ns/batch".parse().expect("id"))
    );
    assert_eq!(rules[1].ports, [80]);
    let frontend = policy.origin_of("10.2.0.7".parse().expect("ip"));
    assert_eq!(
        frontend.map(|id| id.to_string()).as_deref(),
        Some("spiffe://east.example/ns/shop/sa/frontend")
    );
    assert_eq!(policy.origin_of("10.3.0.1".parse().expect("ip")), None);
}

#[test]
fn bad_authorization_is_refused_with_every_problem() {
    let text = r#"
authorization:
  - name: Not_A_Label
    action: permit
    from:
      - {}
      - id: spiffe://west.example/ns//x
        trust_domain: west.example
      - trust_domain: "West Example"
    to:
      services: [greeter.demo]
      ports: [0, 70000]
      methods: [FETCH]
      paths: [{ prefix: admin }]
  - name: twice
    action: allow
  - name: twice
    action: deny
origins:
  - clients: []
    id: spiffe://east.example/ns/shop/sa/web
  - clients: [10.0.0.1/8]
    id: spiffe://west.example/ns/shop/sa/web
"#;
    let errors = policy_errors(text);
    let expected = [
        "authorization[0].name",
        "authorization[0].action",
        "authorization[0].from[0]",
        "authorization[0].from[1].trust_domain",
        "authorization[0].from[2].trust_domain",
        "authorization[0].to.services[0]",
        "authorization[0].to.ports[0]",
        "authorization[0].to.ports[1]",
        "authorization[0].to.methods[0]",
        "authorization[0].to.paths[0].prefix",
        "origins[0].clients",
        "origins[1].clients[0]",
        "origins[1].id",
    ];
    assert_errors_at(&errors, &expected);
    // The duplicate name is found once the rules themselves are good.
    let errors = policy_errors(
        "authorization: [{ name: twice, action: allow }, { name: twice, action: deny }]",
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("authorization[1].name")),
        "{errors:#?}"
    );
}

#[test]
fn balancing_and_resilience_parse() {
    use crate::policy::balance::{Algorithm, HashOn};
    let config = Config::parse(GOOD, Path::new("/cfg")).expect("valid");
    let text = r#"
services:
  - service: checkout.shop
    load_balancer: { algorithm: hash, hash_on: { cookie: session } }
    outlier_detection: { consecutive_failures: 3, base_ejection: 10s, max_ejection: 1m, max_ejected_percent: 30 }
    locality: { failover: [west], min_healthy_percent: 80 }
    retry_budget: { percent: 10, min_per_second: 5 }
    circuit_breaker: { max_requests: 100, max_pending: 10, max_connections: 50 }
    routes:
      - retries: { attempts: 3, per_try_timeout: 250ms, on: [5xx, reset], non_idempotent: true }
  - service: greeter.demo
    load_balancer: { algorithm: least_request }
    outlier_detection: { consecutive_failures: 0 }
"#;
    let policy = policy::parse(text, &config).expect("valid");
    let checkout = policy.service(&"checkout.shop".parse().expect("key"));
    assert_eq!(
        checkout.load_balancer,
        Algorithm::Hash(HashOn::Cookie("session".into()))
    );
    let outlier = checkout.outlier_detection.expect("on");
    assert_eq!(outlier.consecutive_failures, 3);
    assert_eq!(outlier.max_ejection, std::time::Duration::from_secs(60));
    let locality = checkout.locality.as_ref().expect("set");
    assert_eq!(locality.min_healthy_percent, 80);
    assert_eq!(checkout.retry_budget.percent, 10);
    assert_eq!(checkout.circuit_breaker.max_pending, 10);
    let retries = checkout.routes[0].retries.expect("set");
    assert_eq!(retries.attempts, 3);
    assert!(retries.on.server_error && retries.on.reset && !retries.on.gateway_error);
    assert!(retries.non_idempotent);
    let greeter = policy.service(&"greeter.demo".parse().expect("key"));
    assert_eq!(greeter.load_balancer, Algorithm::LeastRequest);
    assert_eq!(greeter.outlier_detection, None, "0 failures turns it off");
    // A service without an entry gets the defaults: P2C over peak EWMA, ejections on.
    let other = policy.service(&"other.demo".parse().expect("key"));
    assert_eq!(other.load_balancer, Algorithm::PeakEwma);
    assert!(other.outlier_detection.is_some());
}

#[test]
fn bad_balancing_and_resilience_are_refused_with_every_problem() {
    let text = r#"
services:
  - service: checkout.shop
    load_balancer: { algorithm: random, hash_on: { header: x } }
    outlier_detection: { consecutive_failures: -1, base_ejection: 2h, max_ejected_percent: 101 }
    locality: { failover: [east, mars], min_healthy_percent: 0 }
    retry_budget: { percent: 200 }
    circuit_breaker: { max_requests: 0 }
    routes:
      - retries: { attempts: 11, per_try_timeout: 0s, on: [sometimes], non_idempotent: maybe }
  - service: greeter.demo
    load_balancer: { algorithm: hash }
"#;
    let errors = policy_errors(text);
    let expected = [
        "services[0].load_balancer.algorithm",
        "services[0].outlier_detection.consecutive_failures",
        "services[0].outlier_detection.base_ejection",
        "services[0].outlier_detection.max_ejected_percent",
        "services[0].locality.failover[0]",
        "services[0].locality.failover[1]",
        "services[0].locality.min_healthy_percent",
        "services[0].retry_budget.percent",
        "services[0].circuit_breaker.max_requests",
        "services[0].routes[0].retries.attempts",
        "services[0].routes[0].retries.per_try_timeout",
        "services[0].routes[0].retries.on[0]",
        "services[0].routes[0].retries.non_idempotent",
        "services[1].load_balancer.hash_on",
    ];
    assert_errors_at(&errors, &expected);
}

#[test]
fn tracing_and_access_log_parse_with_their_defaults() {
    let text = format!(
        "{GOOD}tracing: {{ otlp_endpoint: \"http://otel-collector:4318\", otlp_protocol: http/protobuf, sampling_ratio: 0.25 }}\naccess_log: {{ path: logs/access.log }}\n"
    );
    let config = Config::parse(&text, Path::new("/cfg")).expect("parses");
    let tracing = config.tracing.expect("tracing");
    assert_eq!(tracing.otlp_endpoint, "http://otel-collector:4318/");
    assert_eq!(tracing.otlp_protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(tracing.sampling_ratio, 0.25);
    assert_eq!(
        config.access_log,
        Some(AccessLog::File("/cfg/logs/access.log".into()))
    );

    let text = format!(
        "{GOOD}tracing: {{ otlp_endpoint: \"http://127.0.0.1:4317\" }}\naccess_log: {{ path: \"-\" }}\n"
    );
    let config = Config::parse(&text, Path::new("/cfg")).expect("parses");
    let tracing = config.tracing.expect("tracing");
    assert_eq!(tracing.otlp_protocol, OtlpProtocol::Grpc);
    assert_eq!(tracing.sampling_ratio, 1.0);
    assert_eq!(config.access_log, Some(AccessLog::Stdout));
    assert_eq!(
        Config::parse(GOOD, Path::new("/")).expect("parses").tracing,
        None
    );
}

#[test]
fn bad_tracing_and_access_log_are_refused_with_every_problem() {
    let text = format!(
        "{GOOD}tracing: {{ otlp_endpoint: \"https://collector:4317\", otlp_protocol: thrift, sampling_ratio: 1.5, sampler: always }}\naccess_log: {{}}\n"
    );
    let got: Vec<String> = errors(&text).into_iter().map(|e| e.path).collect();
    for path in [
        "tracing.otlp_endpoint",
        "tracing.otlp_protocol",
        "tracing.sampling_ratio",
        "tracing.sampler",
        "access_log.path",
    ] {
        assert!(got.iter().any(|p| p == path), "{path} in {got:?}");
    }
    for (endpoint, why) in [
        ("collector:4317", "http://"),
        ("http://collector", "port"),
        ("http://collector:4318/v1/traces", "no path"),
        ("https://collector:4317", "TLS"),
    ] {
        let text = format!("{GOOD}tracing: {{ otlp_endpoint: \"{endpoint}\" }}\n");
        let got = errors(&text);
        assert_eq!(got.len(), 1, "{endpoint}: {got:#?}");
        assert!(got[0].reason.contains(why), "{endpoint}: {}", got[0].reason);
    }
}
