//! Authorization on the receiving gateway, end to end. West's policy has rules; requests reach
//! west's federation port from an independent HTTP/3 client holding east's gateway SVID (so
//! that the test can send what a real gateway never would: foreign origins, path tricks), and
//! from east's gateway for its local clients, which asserts their origin from east's policy.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use meshfed_tests::client;
use meshfed_tests::echo::Echo;
use meshfed_tests::federation::H3Client;
use meshfed_tests::{Cluster, Federation};
use meshfed_trust::SpiffeId;

const WEST_POLICY: &str = r#"
authorization:
  - name: no-admin
    action: deny
    to:
      paths: [{ prefix: /admin }]
  - name: shop-reads-greeter
    action: allow
    from:
      - id_prefix: spiffe://east.test/ns/shop
    to:
      services: [greeter.demo]
      methods: [GET, HEAD]
"#;

const EAST_POLICY: &str = r#"
origins:
  - clients: [127.0.0.0/8]
    id: spiffe://east.test/ns/shop/sa/frontend
"#;

const FRONTEND: &str = "spiffe://east.test/ns/shop/sa/frontend";

/// One request from the client with east's SVID, and what west must answer: what the case is,
/// the origin asserted, method, service (in `demo`), path, status, and the rule a denial is
/// counted under.
type Case = (
    &'static str,
    Option<&'static str>,
    Method,
    &'static str,
    &'static str,
    StatusCode,
    Option<&'static str>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiving_gateway_authorizes_by_source_destination_and_canonical_path()
-> anyhow::Result<()> {
    use Method as M;
    const OK: StatusCode = StatusCode::OK;
    const DENIED: StatusCode = StatusCode::FORBIDDEN;
    const NOT_FOUND: StatusCode = StatusCode::NOT_FOUND;
    const NO_ADMIN: Option<&str> = Some("no-admin");
    const NO_ALLOW: Option<&str> = Some("no_allow_rule_matched");
    const FOREIGN: Option<&str> = Some("origin_outside_peer_trust_domain");
    let greeter = Echo::start("greeter in west").await?;
    let open = Echo::start("open in west").await?;
    let hidden = Echo::start("hidden in west").await?;
    let west = Cluster::new("west")?
        .export("greeter.demo", greeter.addr(), &["east"])
        .export("open.demo", open.addr(), &["east"])
        .export("hidden.demo", hidden.addr(), &[]);
    let federation = Federation::builder(vec![Cluster::new("east")?, west])
        .policy("west", WEST_POLICY)
        .policy("east", EAST_POLICY)
        .start()
        .await?;

    #[rustfmt::skip]
    let table: [Case; 19] = [
        ("shop origin reads", Some(FRONTEND), M::GET, "greeter", "/hello", OK, None),
        ("gateway itself, no allow rule", None, M::GET, "greeter", "/hello", DENIED, NO_ALLOW),
        ("shop origin writes", Some(FRONTEND), M::POST, "greeter", "/hello", DENIED, NO_ALLOW),
        ("other namespace", Some("spiffe://east.test/ns/shopping/sa/x"), M::GET, "greeter", "/", DENIED, NO_ALLOW),
        ("admin", Some(FRONTEND), M::GET, "greeter", "/admin", DENIED, NO_ADMIN),
        ("admin below", Some(FRONTEND), M::GET, "greeter", "/admin/users", DENIED, NO_ADMIN),
        ("doubled slash", Some(FRONTEND), M::GET, "greeter", "//admin", DENIED, NO_ADMIN),
        ("dot segment", Some(FRONTEND), M::GET, "greeter", "/./admin", DENIED, NO_ADMIN),
        ("escaped dot", Some(FRONTEND), M::GET, "greeter", "/%2e/admin", DENIED, NO_ADMIN),
        ("escaped letter", Some(FRONTEND), M::GET, "greeter", "/%61dmin", DENIED, NO_ADMIN),
        ("detour", Some(FRONTEND), M::GET, "greeter", "/x/../admin/users", DENIED, NO_ADMIN),
        ("climb past the root", Some(FRONTEND), M::GET, "greeter", "/../../admin", DENIED, NO_ADMIN),
        ("a segment that only starts so", Some(FRONTEND), M::GET, "greeter", "/administrators", OK, None),
        ("origin in west's domain", Some("spiffe://west.test/ns/shop/sa/frontend"), M::GET, "greeter", "/", DENIED, FOREIGN),
        ("origin in a stranger's domain", Some("spiffe://evil.test/ns/shop/sa/x"), M::GET, "greeter", "/", DENIED, FOREIGN),
        ("origin not an ID", Some("frontend"), M::GET, "greeter", "/", DENIED, FOREIGN),
        ("no allow rule: the export allows", None, M::GET, "open", "/anything", OK, None),
        ("deny rules apply to every service", None, M::DELETE, "open", "//admin/", DENIED, NO_ADMIN),
        ("not exported to east", Some(FRONTEND), M::GET, "hidden", "/", NOT_FOUND, None),
    ];

    let west_addr = federation.gateway("west").addrs().federation;
    let east_id = SpiffeId::new("east.test".parse()?, ["meshfed", "gateway", "east"])?;
    let svid =
        federation.cas["east"].issue(&east_id, SystemTime::now(), Duration::from_secs(3600))?;
    let client = H3Client::connect(&svid, &[&federation.cas["west"]], west_addr).await?;
    let stats = federation.gateway("west").stats().clone();
    let mut failures = Vec::new();
    for &(what, origin, ref method, service, path, status, rule) in &table {
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(format!("https://{service}.demo.svc.clusterset.local{path}"));
        if let Some(origin) = origin {
            request = request.header("x-meshfed-origin", origin);
        }
        let before = rule.map(|rule| denied_by(&stats, rule));
        let response = client.send(request.body(())?).await?;
        let reason = response.headers().get("x-meshfed-error").cloned();
        if response.status() != status {
            let got = response.status();
            failures.push(format!(
                "{what}: {method} {service} {path}: got {got} ({reason:?}), expected {status}"
            ));
            continue;
        }
        if status == DENIED && reason.as_ref().and_then(|r| r.to_str().ok()) != Some("denied") {
            failures.push(format!(
                "{what}: denied without the reason code: {reason:?}"
            ));
        }
        if let (Some(rule), Some(before)) = (rule, before) {
            let after = denied_by(&stats, rule);
            if after != before + 1 {
                failures.push(format!("{what}: rule {rule} counted {before} -> {after}"));
            }
        }
        if status == OK {
            let body = response.body();
            if !body.starts_with(&format!("{service} in west")) {
                failures.push(format!("{what}: served by the wrong upstream: {body}"));
            }
            // The endpoint learns who called, from what west verified (or accepted within
            // east's trust domain), in Envoy's form.
            let caller = origin.unwrap_or("spiffe://east.test/meshfed/gateway/east");
            let xfcc = format!("x-forwarded-client-cert: URI={caller}");
            if !body.lines().any(|line| line == xfcc) {
                failures.push(format!("{what}: the endpoint was not told {xfcc}: {body}"));
            }
        }
    }
    // A refusal is made without reading the request: a client whose FIN was still on its way
    // must be able to end its stream after the answer, not find it stopped.
    let refused = client
        .send_ending_late(http::Request::get("https://hidden.demo.svc.clusterset.local/").body(())?)
        .await?;
    assert_eq!(refused.status(), NOT_FOUND, "{refused:?}");
    client.close().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let allowed = table.iter().filter(|c| c.5 == OK).count() as u64;
    let denied = table.iter().filter(|c| c.5 == DENIED).count() as u64;
    assert_eq!(stats.authorization_allowed.load(Ordering::Relaxed), allowed);
    assert_eq!(stats.authorization_denied.load(Ordering::Relaxed), denied);

    // East's gateway asserts its local clients' origin from its policy: through east, a
    // client reaches greeter as the shop frontend, and is still kept from /admin.
    let east = federation.gateway("east").addrs().http;
    let host = "greeter.demo.svc.clusterset.local";
    let reply = client::get(east, host, "/hello").await?;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(
        reply
            .text()
            .contains(&format!("x-forwarded-client-cert: URI={FRONTEND}")),
        "{reply:?}"
    );
    let reply = client::get(east, host, "/admin").await?;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{reply:?}");
    assert_eq!(reply.reason(), Some("denied"), "{reply:?}");

    federation.shutdown().await;
    Ok(())
}

fn denied_by(stats: &meshfed_gateway::stats::Stats, rule: &str) -> u64 {
    stats
        .authorization_by_rule
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(rule.to_owned(), meshfed_gateway::stats::Outcome::Denied))
        .copied()
        .unwrap_or(0)
}
