//! Load balancing and resilience end to end, through gateways in two clusters: the default
//! balancer shuns a slow endpoint, a hash key keeps its endpoint, a failing endpoint is ejected
//! while traffic goes on to the others, a failing peer cluster is ejected, and a service fails
//! over from its local cluster to the remote one and back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use meshfed_tests::client;
use meshfed_tests::echo::Echo;
use meshfed_tests::{Cluster, Federation};

const GREETER: &str = "greeter.demo.svc.clusterset.local";

/// Three greeters in west, exported to east, with west's `policy`.
async fn three_in_west(policy: &str) -> anyhow::Result<(Federation, Vec<Echo>)> {
    let upstreams = vec![
        Echo::start("greeter-a").await?,
        Echo::start("greeter-b").await?,
        Echo::start("greeter-c").await?,
    ];
    let addrs: Vec<SocketAddr> = upstreams.iter().map(Echo::addr).collect();
    let west = Cluster::new("west")?.export_port("greeter.demo", "http", 80, &addrs, &["east"]);
    let federation = Federation::builder(vec![Cluster::new("east")?, west])
        .policy("west", policy)
        .start()
        .await?;
    Ok((federation, upstreams))
}

/// Who answered each of `n` calls through east, by status and upstream; with `headers`.
async fn tally(
    federation: &Federation,
    n: usize,
    headers: &[(&str, &str)],
) -> anyhow::Result<BTreeMap<(u16, String), usize>> {
    let east = federation.gateway("east").addrs().http;
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let reply = client::send(
            east,
            http::Method::GET,
            GREETER,
            "/",
            headers,
            Default::default(),
        )
        .await?;
        *counts
            .entry((reply.status.as_u16(), reply.served_by()))
            .or_default() += 1;
    }
    Ok(counts)
}

fn count(counts: &BTreeMap<(u16, String), usize>, status: u16, by: &str) -> usize {
    counts.get(&(status, by.to_owned())).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_balancer_shuns_a_slow_endpoint() -> anyhow::Result<()> {
    let (federation, upstreams) = three_in_west("services: []").await?;
    upstreams[2].delay(Duration::from_millis(50));
    let counts = tally(&federation, 200, &[]).await?;
    let slow = count(&counts, 200, "greeter-c");
    let fast = count(&counts, 200, "greeter-a") + count(&counts, 200, "greeter-b");
    assert_eq!(slow + fast, 200, "{counts:?}");
    assert!(
        slow < 20,
        "the slow endpoint took {slow} of 200: {counts:?}"
    );
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_key_keeps_its_endpoint() -> anyhow::Result<()> {
    let policy = "services: [{ service: greeter.demo, load_balancer: { algorithm: hash, hash_on: { header: x-user } } }]";
    let (federation, _upstreams) = three_in_west(policy).await?;
    let mut endpoints = BTreeMap::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let counts = tally(&federation, 5, &[("x-user", &user)]).await?;
        assert_eq!(counts.len(), 1, "{user} moved: {counts:?}");
        let ((_, endpoint), _) = counts.into_iter().next().expect("one");
        endpoints.insert(user, endpoint);
    }
    let used: std::collections::BTreeSet<&String> = endpoints.values().collect();
    assert_eq!(
        used.len(),
        3,
        "30 users should reach every endpoint: {endpoints:?}"
    );
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_ejected_and_traffic_continues_on_the_others() -> anyhow::Result<()> {
    let (federation, upstreams) = three_in_west("services: []").await?;
    let failing = &upstreams[2];
    failing.fail_with(Some(StatusCode::SERVICE_UNAVAILABLE));
    // Five failures in a row (the default) eject it. Tries it failed were retried on the
    // others (GET is safe to retry), so clients see few failures, if any.
    let first = tally(&federation, 60, &[]).await?;
    assert!(count(&first, 503, "greeter-c") <= 5, "{first:?}");
    let tried = failing.requests();
    assert!(tried >= 5, "the failing endpoint was tried {tried} times");
    // Ejected: it is sent nothing more, and every request succeeds on the others.
    let then = tally(&federation, 60, &[]).await?;
    assert_eq!(
        failing.requests(),
        tried,
        "still sent to the failing one: {then:?}"
    );
    assert_eq!(
        count(&then, 200, "greeter-a") + count(&then, 200, "greeter-b"),
        60,
        "{then:?}"
    );
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_peer_cluster_is_ejected() -> anyhow::Result<()> {
    // West exports greeter, but its endpoint is gone (no health check tells): west's gateway
    // answers 503 `upstream_unavailable`. East also serves greeter.
    let east_greeter = Echo::start("greeter-east").await?;
    let gone = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let east = Cluster::new("east")?.export("greeter.demo", east_greeter.addr(), &["west"]);
    let west = Cluster::new("west")?.export("greeter.demo", gone, &["east"]);
    let federation = Federation::start(vec![east, west]).await?;
    federation.catalogs_exchanged().await?;
    let first = tally(&federation, 40, &[]).await?;
    let failed: usize = first
        .iter()
        .filter(|((status, _), _)| *status == 503)
        .map(|(_, n)| n)
        .sum();
    assert!(failed <= 5, "{first:?}");
    let then = tally(&federation, 40, &[]).await?;
    assert_eq!(count(&then, 200, "greeter-east"), 40, "{then:?}");
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_failure_fails_over_to_the_remote_cluster_and_back() -> anyhow::Result<()> {
    let check = "health_check: { protocol: http, path: /, interval: 100ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 1 }";
    let local = Echo::start("greeter-east").await?;
    let remote = Echo::start("greeter-west").await?;
    let east = Cluster::new("east")?
        .export("greeter.demo", local.addr(), &["west"])
        .with(check);
    let west = Cluster::new("west")?
        .export("greeter.demo", remote.addr(), &["east"])
        .with(check);
    let policy = "services: [{ service: greeter.demo, locality: { failover: [west], min_healthy_percent: 100 } }]";
    let federation = Federation::builder(vec![east, west])
        .policy("east", policy)
        .start()
        .await?;
    federation.catalogs_exchanged().await?;

    // Healthy at home: every request stays in east, though west serves it too.
    let before = tally(&federation, 30, &[]).await?;
    assert_eq!(count(&before, 200, "greeter-east"), 30, "{before:?}");

    // East's endpoint fails its health check: traffic moves to west.
    local.fail_with(Some(StatusCode::INTERNAL_SERVER_ERROR));
    until_all_served_by(&federation, "greeter-west").await?;
    // It recovers: traffic comes home.
    local.fail_with(None);
    until_all_served_by(&federation, "greeter-east").await?;
    federation.shutdown().await;
    Ok(())
}

/// Waits (up to 5 s) until 20 calls in a row are all answered 200 by `upstream`.
async fn until_all_served_by(federation: &Federation, upstream: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counts = tally(federation, 20, &[]).await?;
        if count(&counts, 200, upstream) == 20 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "traffic did not move to {upstream}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two greeters in east (`greeter-a` and `greeter-b`), balanced round robin and never ejected
/// so that each test controls where tries land; east has `policy` for them too.
async fn two_in_east(extra: &str) -> anyhow::Result<(Federation, Vec<Echo>)> {
    let upstreams = vec![
        Echo::start("greeter-a").await?,
        Echo::start("greeter-b").await?,
    ];
    let addrs: Vec<SocketAddr> = upstreams.iter().map(Echo::addr).collect();
    let east = Cluster::new("east")?.export_port("greeter.demo", "http", 80, &addrs, &["west"]);
    let policy = format!(
        "services:
  - service: greeter.demo
    load_balancer: {{ algorithm: round_robin }}
    outlier_detection: {{ consecutive_failures: 0 }}
{extra}"
    );
    let federation = Federation::builder(vec![east, Cluster::new("west")?])
        .policy("east", &policy)
        .start()
        .await?;
    Ok((federation, upstreams))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_requests_are_retried_within_the_budget() -> anyhow::Result<()> {
    // At most 10 retries in any 10 s (1 a second, and no share of the requests).
    let (federation, upstreams) =
        two_in_east("    retry_budget: { percent: 0, min_per_second: 1 }").await?;
    upstreams[0].fail_with(Some(StatusCode::SERVICE_UNAVAILABLE));
    let east = federation.gateway("east").addrs().http;
    let mut retried = 0;
    let mut failed = 0;
    for _ in 0..40 {
        let reply = client::get(east, GREETER, "/").await?;
        match (reply.status, reply.headers.get("x-meshfed-attempts")) {
            (StatusCode::OK, Some(attempts)) => {
                assert_eq!(attempts, "2", "{reply:?}");
                retried += 1;
            }
            (StatusCode::OK, None) => assert_eq!(reply.served_by(), "greeter-b"),
            (StatusCode::SERVICE_UNAVAILABLE, _) => failed += 1,
            (status, _) => panic!("unexpected {status}: {reply:?}"),
        }
    }
    // Every failed first try was retried while the budget lasted, then none was.
    assert_eq!(retried, 10, "retried {retried}, failed {failed}");
    assert!(failed >= 5, "retried {retried}, failed {failed}");

    // A request with a body is never retried: it streams through and is not kept.
    let (federation_b, upstreams_b) = two_in_east("").await?;
    upstreams_b[0].fail_with(Some(StatusCode::SERVICE_UNAVAILABLE));
    let east_b = federation_b.gateway("east").addrs().http;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let reply =
            client::send(east_b, http::Method::PUT, GREETER, "/", &[], "body".into()).await?;
        statuses.push(reply.status.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 503, 503]);
    federation_b.shutdown().await;
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_that_takes_too_long_is_tried_again_elsewhere() -> anyhow::Result<()> {
    let route = "    routes: [{ retries: { attempts: 1, per_try_timeout: 100ms } }]";
    let (federation, upstreams) = two_in_east(route).await?;
    upstreams[0].delay(Duration::from_millis(500));
    let east = federation.gateway("east").addrs().http;
    // Round robin sends first tries to the slow one too, which would answer (200) after
    // 500 ms: only the per-try timeout makes the fast one answer those, on a second try.
    let mut retried = 0;
    for _ in 0..4 {
        let reply = client::get(east, GREETER, "/").await?;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.served_by(), "greeter-b", "{reply:?}");
        let attempts = reply.headers.get("x-meshfed-attempts");
        retried += usize::from(attempts.map(|v| v.as_bytes()) == Some(&b"2"[..]));
    }
    assert!(retried >= 1, "no request was tried again");
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_refuses_what_it_cannot_hold() -> anyhow::Result<()> {
    let limits = "    circuit_breaker: { max_requests: 2, max_pending: 1 }";
    let (federation, upstreams) = two_in_east(limits).await?;
    for upstream in &upstreams {
        upstream.delay(Duration::from_millis(300));
    }
    let east = federation.gateway("east").addrs().http;
    let calls = (0..6).map(|_| client::get(east, GREETER, "/"));
    let mut statuses = Vec::new();
    for reply in meshfed_tests::wait::join_all(calls).await {
        let reply = reply?;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(reply.reason(), Some("overloaded"), "{reply:?}");
        }
        statuses.push(reply.status.as_u16());
    }
    statuses.sort();
    // Two in flight and one waiting are served; the other three are refused at once.
    assert_eq!(statuses, [200, 200, 200, 503, 503, 503]);
    federation.shutdown().await;
    Ok(())
}
