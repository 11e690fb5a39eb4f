//! Traffic policy end to end, through gateways in two clusters: routes by header and method to
//! versions in different clusters, a 90/10 cross-cluster split, fault delays and aborts (HTTP
//! and gRPC), a route timeout, the override header (trusted and not), and a live policy reload
//! that is refused whole when it has a problem.
//!
//! `greeter.demo` runs as version v1 in east and v2 in west (export labels); east's gateway
//! has the policy, and the clients call east's local listener.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use meshfed_tests::caller::Caller;
use meshfed_tests::client::{self, Reply};
use meshfed_tests::echo::Echo;
use meshfed_tests::grpc::GrpcEcho;
use meshfed_tests::grpc::proto::SayRequest;
use meshfed_tests::grpc::proto::echo_client::EchoClient;
use meshfed_tests::{Cluster, Federation, wait};

const GREETER: &str = "greeter.demo.svc.clusterset.local";
const FRONTEND: &str = "frontend.demo.svc.clusterset.local";

const POLICY: &str = r#"
overrides:
  trusted_clients: [127.0.0.0/8]
services:
  - service: greeter.demo
    subsets:
      v1: { version: v1 }
      v2: { version: v2 }
    routes:
      - name: testers
        match:
          - headers: { x-tester: { exact: "yes" } }
        backends: [{ cluster: west, subset: v2 }]
        response_headers: { set: { x-route: testers } }
      - name: writes
        match:
          - method: PUT
            path: { prefix: /orders }
        backends: [{ cluster: west }]
      - name: delayed
        match: [{ path: { exact: /delayed } }]
        backends: [{ cluster: east }]
        fault: { delay: { fixed: 100ms, percent: 50 } }
      - name: broken
        match: [{ path: { prefix: /broken } }]
        backends: [{ cluster: east }]
        fault: { abort: { http_status: 503, percent: 30 } }
      - name: impatient
        match: [{ path: { exact: /slow } }]
        backends: [{ cluster: west }]
        timeout: 100ms
      - name: split
        backends:
          - { cluster: east, subset: v1, weight: 90 }
          - { cluster: west, subset: v2, weight: 10 }
        request_headers: { set: { x-split: "90-10" } }
  - service: echo.grpc
    routes:
      - name: unavailable
        match: [{ grpc: { service: meshfed.test.echo.v1.Echo, method: Say } }]
        fault: { abort: { grpc_status: UNAVAILABLE, percent: 100 } }
"#;

/// A policy with two problems: an unknown cluster and a percentage over 100.
const BAD_POLICY: &str = r#"
services:
  - service: greeter.demo
    routes:
      - backends: [{ cluster: mars }]
        fault: { abort: { http_status: 503, percent: 150 } }
"#;

/// East runs greeter v1, west greeter v2; both export it to each other. West also serves a
/// gRPC echo. East has [`POLICY`].
async fn two_versions() -> anyhow::Result<(Federation, Vec<Echo>, GrpcEcho)> {
    let v1 = Echo::start("greeter-east-v1").await?;
    let v2 = Echo::start("greeter-west-v2").await?;
    let grpc = GrpcEcho::start("echo-west").await?;
    let east = Cluster::new("east")?
        .export("greeter.demo", v1.addr(), &["west"])
        .with("labels: { version: v1 }");
    let west = Cluster::new("west")?
        .export("greeter.demo", v2.addr(), &["east"])
        .with("labels: { version: v2 }")
        .export_port("echo.grpc", "grpc", 9090, &[grpc.addr()], &["east"]);
    let federation = Federation::builder(vec![east, west])
        .policy("east", POLICY)
        .start()
        .await?;
    Ok((federation, vec![v1, v2], grpc))
}

async fn call(
    federation: &Federation,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    let east = federation.gateway("east").addrs().http;
    client::send(east, method, GREETER, path, headers, Bytes::new()).await
}

/// Who served each of `n` calls of `GET path` through east.
async fn tally(
    federation: &Federation,
    n: usize,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let reply = call(federation, Method::GET, path, headers).await?;
        anyhow::ensure!(reply.status == StatusCode::OK, "{reply:?}");
        *counts.entry(reply.served_by()).or_default() += 1;
    }
    Ok(counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_send_headers_and_methods_to_versions_in_other_clusters() -> anyhow::Result<()> {
    let (federation, _upstreams, _grpc) = two_versions().await?;

    let tester = call(&federation, Method::GET, "/", &[("x-tester", "yes")]).await?;
    assert_eq!(tester.served_by(), "greeter-west-v2", "{tester:?}");
    assert_eq!(
        tester.headers.get("x-route").map(|v| v.as_bytes()),
        Some(&b"testers"[..]),
        "the route's response header"
    );
    let other_value = tally(&federation, 20, "/", &[("x-tester", "no")]).await?;
    assert!(
        other_value.contains_key("greeter-east-v1"),
        "{other_value:?}"
    );

    let put = call(&federation, Method::PUT, "/orders/7", &[]).await?;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(put.served_by(), "greeter-west-v2");
    // The same path with another method is not the `writes` route: the split, mostly east.
    let gets = tally(&federation, 20, "/orders/7", &[]).await?;
    assert!(gets.get("greeter-east-v1") > Some(&10), "{gets:?}");
    // Path tricks are the canonical path: `//orders/./7` is `/orders/7`.
    let tricked = call(&federation, Method::PUT, "//orders/./7", &[]).await?;
    assert_eq!(tricked.served_by(), "greeter-west-v2");

    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_across_clusters_holds_within_3_percent() -> anyhow::Result<()> {
    let (federation, _upstreams, _grpc) = two_versions().await?;
    let counts = tally(&federation, 2_000, "/", &[]).await?;
    let east = counts.get("greeter-east-v1").copied().unwrap_or(0) as f64 / 2_000.0;
    let west = counts.get("greeter-west-v2").copied().unwrap_or(0) as f64 / 2_000.0;
    assert!((east - 0.90).abs() <= 0.03, "east {east}: {counts:?}");
    assert!((west - 0.10).abs() <= 0.03, "west {west}: {counts:?}");

    // The split route's request header reached the endpoint (which lists what it received).
    let reply = call(&federation, Method::GET, "/", &[]).await?;
    assert!(reply.text().contains("x-split: 90-10"), "{}", reply.text());
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_delay_and_abort_their_share_and_timeouts_end_requests() -> anyhow::Result<()> {
    let (federation, _upstreams, grpc) = two_versions().await?;

    // Delays: 50 % of 400 requests, 40 at a time; each delayed one took at least the delay.
    let mut delayed = 0;
    let east = federation.gateway("east").addrs().http;
    for _ in 0..10 {
        let batch = (0..40).map(|_| async move {
            let start = Instant::now();
            let reply =
                client::send(east, Method::GET, GREETER, "/delayed", &[], Bytes::new()).await;
            (reply, start.elapsed())
        });
        for (reply, took) in wait::join_all(batch).await {
            let reply = reply?;
            assert_eq!(reply.status, StatusCode::OK);
            if reply.headers.get("x-meshfed-fault").map(|v| v.as_bytes()) == Some(b"delay") {
                delayed += 1;
                assert!(took >= Duration::from_millis(100), "delayed only {took:?}");
            }
        }
    }
    let share = f64::from(delayed) / 400.0;
    assert!((share - 0.5).abs() <= 0.1, "{delayed} of 400 delayed");

    // Aborts: 30 % of 2,000 answered 503 by the gateway, the rest served (5 % is 4.9 standard
    // deviations of the share).
    let mut aborted = 0;
    for _ in 0..2_000 {
        let reply = call(&federation, Method::GET, "/broken", &[]).await?;
        match reply.status {
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(
                    reply.headers.get("x-meshfed-fault").map(|v| v.as_bytes()),
                    Some(&b"abort"[..])
                );
                aborted += 1;
            }
            StatusCode::OK => assert_eq!(reply.served_by(), "greeter-east-v1"),
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }
    let share = f64::from(aborted) / 2_000.0;
    assert!((share - 0.3).abs() <= 0.05, "{aborted} of 2,000 aborted");

    // A gRPC abort is a gRPC status the client sees as the call's outcome.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{east}"))?
        .origin("http://echo.grpc.svc.clusterset.local:9090".parse()?)
        .connect()
        .await?;
    let status = EchoClient::new(channel)
        .say(SayRequest { text: "hi".into() })
        .await
        .expect_err("aborted");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    drop(grpc);

    // The route's timeout (100 ms) ends a request the endpoint takes 500 ms to answer: the
    // gateway's 504, not the endpoint's 200, however slow this machine is.
    let slow = call(&federation, Method::GET, "/slow", &[]).await?;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT, "{slow:?}");
    assert_eq!(slow.reason(), Some("timeout"));

    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_override_header_pins_a_request_from_trusted_clients_only() -> anyhow::Result<()> {
    let (federation, _upstreams, _grpc) = two_versions().await?;
    let pinned = tally(&federation, 30, "/", &[("x-meshfed-cluster", "west")]).await?;
    assert_eq!(
        pinned.keys().collect::<Vec<_>>(),
        ["greeter-west-v2"],
        "{pinned:?}"
    );
    let bad = call(
        &federation,
        Method::GET,
        "/",
        &[("x-meshfed-cluster", "West!")],
    )
    .await?;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.reason(), Some("bad_override"));
    // A cluster that does not serve the service is answered as such, not sent elsewhere.
    let nowhere = call(
        &federation,
        Method::GET,
        "/",
        &[("x-meshfed-cluster", "north")],
    )
    .await?;
    assert_eq!(nowhere.reason(), Some("unknown_service"), "{nowhere:?}");

    // West trusts nobody with overrides: the header is dropped, and west spreads the service
    // over both clusters as usual.
    let west = federation.gateway("west").addrs().http;
    let mut seen = BTreeMap::new();
    for _ in 0..20 {
        let reply = client::send(
            west,
            Method::GET,
            GREETER,
            "/",
            &[("x-meshfed-cluster", "east")],
            Bytes::new(),
        )
        .await?;
        assert!(
            !reply.text().contains("x-meshfed-cluster"),
            "the header went on"
        );
        *seen.entry(reply.served_by()).or_insert(0) += 1;
    }
    assert_eq!(
        seen.len(),
        2,
        "the untrusted override was honoured: {seen:?}"
    );
    federation.shutdown().await;
    Ok(())
}

/// West's policy for the baggage test: it trusts local clients with overrides and names
/// greeter's versions.
const WEST_TRUSTS: &str = r#"
overrides:
  trusted_clients: [127.0.0.0/8]
services:
  - service: greeter.demo
    subsets:
      v1: { version: v1 }
      v2: { version: v2 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baggage_override_pins_a_service_wherever_it_is_called() -> anyhow::Result<()> {
    // A call chain: client -> east's gateway -> frontend (west) -> west's gateway -> greeter,
    // which runs as v1 in east and v2 in west. The frontend propagates baggage, as an
    // instrumented application does; the greeter member applies at west's gateway.
    let v1 = Echo::start("greeter-east-v1").await?;
    let v2 = Echo::start("greeter-west-v2").await?;
    let frontend = Caller::start("frontend-west", GREETER).await?;
    let east = Cluster::new("east")?
        .export("greeter.demo", v1.addr(), &["west"])
        .with("labels: { version: v1 }");
    let west = Cluster::new("west")?
        .export("greeter.demo", v2.addr(), &["east"])
        .with("labels: { version: v2 }")
        .export("frontend.demo", frontend.addr(), &["east"]);
    let federation = Federation::builder(vec![east, west])
        .policy("east", POLICY)
        .policy("west", WEST_TRUSTS)
        .start()
        .await?;
    federation.catalogs_exchanged().await?;
    frontend.set_gateway(federation.gateway("west").addrs().http);
    let east = federation.gateway("east").addrs().http;

    // Who served greeter for each of `n` calls of the frontend through east.
    let chain = |baggage: &'static str, n: usize| async move {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..n {
            let reply = with_baggage(east, FRONTEND, baggage).await?;
            anyhow::ensure!(reply.status == StatusCode::OK, "{reply:?}");
            let text = reply.text();
            let mut lines = text.lines();
            anyhow::ensure!(lines.next() == Some("frontend-west"), "{text}");
            *counts
                .entry(lines.next().unwrap_or("(none)").to_owned())
                .or_default() += 1;
        }
        anyhow::Ok(counts)
    };
    let spread = chain("", 30).await?;
    assert_eq!(
        spread.len(),
        2,
        "without baggage west spreads greeter: {spread:?}"
    );
    let to_east = chain("userId=7,meshfed.greeter.demo=east", 20).await?;
    assert_eq!(
        to_east.keys().collect::<Vec<_>>(),
        ["greeter-east-v1"],
        "{to_east:?}"
    );
    let to_v2 = chain("meshfed.greeter.demo=west/v2;note=x", 20).await?;
    assert_eq!(
        to_v2.keys().collect::<Vec<_>>(),
        ["greeter-west-v2"],
        "{to_v2:?}"
    );
    // A subset the cluster's gateway does not know is no endpoint at all, not any endpoint.
    let reply = with_baggage(east, FRONTEND, "meshfed.greeter.demo=east/v9").await?;
    assert!(
        reply.text().contains("meshfed: no_ready_endpoints"),
        "{reply:?}"
    );

    // At the first hop too: east's gateway honours it for greeter, and the member reaches the
    // endpoint untouched.
    let reply = with_baggage(east, GREETER, "meshfed.greeter.demo=west").await?;
    assert_eq!(reply.served_by(), "greeter-west-v2", "{reply:?}");
    assert!(
        reply.text().contains("baggage: meshfed.greeter.demo=west"),
        "{reply:?}"
    );
    let bad = with_baggage(east, GREETER, "meshfed.greeter.demo=West!").await?;
    assert_eq!(bad.reason(), Some("bad_override"), "{bad:?}");

    // East stops trusting its clients: it takes the pin out of the baggage before passing it
    // on, so that west, which trusts the frontend that propagates it, never sees it.
    let untrusting = POLICY.replace("overrides:\n  trusted_clients: [127.0.0.0/8]\n", "");
    assert_ne!(untrusting, POLICY);
    apply_policy(&federation, "east", &untrusting).await?;
    let laundered = chain("userId=7,meshfed.greeter.demo=east", 30).await?;
    assert_eq!(
        laundered.len(),
        2,
        "a pin passed through an untrusting gateway: {laundered:?}"
    );
    let reply = with_baggage(east, GREETER, "userId=7,meshfed.greeter.demo=east").await?;
    let text = reply.text();
    assert!(
        text.contains("baggage: userId=7\n"),
        "the rest of the baggage travels on: {text}"
    );
    apply_policy(&federation, "east", POLICY).await?;

    // West stops trusting its clients: the baggage is ignored there, and greeter spreads again.
    apply_policy(&federation, "west", "overrides: { trusted_clients: [] }\n").await?;
    let untrusted = chain("meshfed.greeter.demo=east", 30).await?;
    assert_eq!(
        untrusted.len(),
        2,
        "an untrusted client's baggage was honoured: {untrusted:?}"
    );
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_applies_live_and_a_bad_one_changes_nothing() -> anyhow::Result<()> {
    let (federation, _upstreams, _grpc) = two_versions().await?;
    let file = federation.policy_file("east");
    let stats = federation.gateway("east").stats().clone();

    let all_west = r#"
services:
  - service: greeter.demo
    routes:
      - backends: [{ cluster: east, weight: 0 }, { cluster: west, weight: 1 }]
"#;
    std::fs::write(&file, all_west)?;
    wait::until(Duration::from_secs(5), "the new policy", || {
        stats.policy_reloads.load(Ordering::Relaxed) == 1
    })
    .await?;
    all_to_west(&federation).await?;

    // Two problems: an unknown cluster and a bad percentage. Refused whole, nothing changes.
    std::fs::write(&file, BAD_POLICY)?;
    wait::until(Duration::from_secs(5), "the bad policy refused", || {
        stats.policy_reloads_rejected.load(Ordering::Relaxed) == 1
    })
    .await?;
    all_to_west(&federation).await?;
    assert_eq!(stats.policy_reloads.load(Ordering::Relaxed), 1);
    federation.shutdown().await;
    Ok(())
}

/// Writes `text` as `cluster`'s policy file and waits until the gateway has put it in force.
async fn apply_policy(federation: &Federation, cluster: &str, text: &str) -> anyhow::Result<()> {
    let stats = federation.gateway(cluster).stats().clone();
    let before = stats.policy_reloads.load(Ordering::Relaxed);
    std::fs::write(federation.policy_file(cluster), text)?;
    wait::until(Duration::from_secs(5), "the new policy in force", || {
        stats.policy_reloads.load(Ordering::Relaxed) > before
    })
    .await
}

/// `GET host/` through the gateway `east`, with a `baggage` header unless it is empty.
async fn with_baggage(
    east: std::net::SocketAddr,
    host: &str,
    baggage: &str,
) -> anyhow::Result<Reply> {
    let headers: &[(&str, &str)] = match baggage {
        "" => &[],
        b => &[("baggage", b)],
    };
    client::send(east, Method::GET, host, "/", headers, Bytes::new()).await
}

/// Asserts that 20 calls of `GET /` through east all reach west.
async fn all_to_west(federation: &Federation) -> anyhow::Result<()> {
    let counts = tally(federation, 20, "/", &[]).await?;
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["greeter-west-v2"],
        "{counts:?}"
    );
    Ok(())
}

/// Runs the real `meshfed` binary with `args`; its exit code, standard output and error.
async fn meshfed(args: Vec<String>) -> anyhow::Result<(Option<i32>, String, String)> {
    let binary = meshfed_tests::binary::meshfed()?;
    let output =
        tokio::task::spawn_blocking(move || std::process::Command::new(binary).args(args).output())
            .await??;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_set_at_run_time_apply_until_they_expire_or_are_cleared() -> anyhow::Result<()> {
    let (federation, _upstreams, _grpc) = two_versions().await?;
    let admin = federation.gateway("east").addrs().admin.to_string();
    let cli = |command: &str| {
        let mut args: Vec<String> = command.split(' ').map(str::to_owned).collect();
        args.extend(["--admin".to_owned(), admin.clone()]);
        meshfed(args)
    };

    // An abort for every request for 2 s, through the CLI.
    let (code, out, err) = cli("fault set greeter.demo --abort 418 --for 2s").await?;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with("fault greeter.demo set: greeter.demo: abort with HTTP 418 for 100%"),
        "{out}"
    );
    let reply = call(&federation, Method::GET, "/", &[]).await?;
    assert_eq!(reply.status, StatusCode::IM_A_TEAPOT, "{reply:?}");
    assert_eq!(
        reply.headers.get("x-meshfed-fault").map(|v| v.as_bytes()),
        Some(&b"abort"[..])
    );
    let (_, out, _) = cli("fault list").await?;
    assert!(
        out.starts_with("greeter.demo  greeter.demo: abort with HTTP 418"),
        "{out}"
    );

    // Bad requests are refused with the field and why, and change nothing.
    let refusals = [
        ("fault set greeter.demo --delay 0s --for 1m", "delay.fixed"),
        ("fault set greeter.demo --delay 1s --for 2d", "duration"),
        (
            "fault set greeter.demo --abort 200 --for 1m",
            "abort.http_status",
        ),
        (
            "fault set greeter.demo --abort 500 --route nosuch --for 1m",
            "route",
        ),
        ("fault set greeter --abort 500 --for 1m", "service"),
        ("fault set greeter.demo --for 1m", "delay, abort"),
    ];
    for (args, field) in refusals {
        let (code, out, err) = cli(args).await?;
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(field), "{args:?}: {err}");
    }
    let (_, out, _) = cli("fault list").await?;
    assert_eq!(out.lines().count(), 1, "{out}");

    // It ends by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&federation, Method::GET, "/", &[]).await?.status != StatusCode::OK {
        anyhow::ensure!(Instant::now() < deadline, "the fault did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, out, _) = cli("fault list").await?;
    assert_eq!(out, "no faults in force\n");

    // A delay on one route only, cleared by hand before its expiry.
    let set = "fault set greeter.demo --delay 300ms --route testers --name slow-testers --for 10m";
    let (code, out, err) = cli(set).await?;
    assert_eq!(code, Some(0), "{out}{err}");
    let tester = call(&federation, Method::GET, "/", &[("x-tester", "yes")]).await?;
    assert_eq!(
        tester.headers.get("x-meshfed-fault").map(|v| v.as_bytes()),
        Some(&b"delay"[..])
    );
    let other = call(&federation, Method::GET, "/", &[]).await?;
    assert_eq!(other.headers.get("x-meshfed-fault"), None, "{other:?}");
    let (code, out, _) = cli("fault clear slow-testers").await?;
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "fault slow-testers cleared\n")
    );
    let tester = call(&federation, Method::GET, "/", &[("x-tester", "yes")]).await?;
    assert_eq!(tester.headers.get("x-meshfed-fault"), None, "{tester:?}");
    let (code, _, err) = cli("fault clear slow-testers").await?;
    assert_eq!(code, Some(1));
    assert!(err.contains("no fault \"slow-testers\""), "{err}");
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_reloads_the_policy_on_demand() -> anyhow::Result<()> {
    let (federation, _upstreams, _grpc) = two_versions().await?;
    let admin = federation.gateway("east").addrs().admin.to_string();
    let reload = || {
        meshfed(vec![
            "policy".into(),
            "reload".into(),
            "--admin".into(),
            admin.clone(),
        ])
    };
    let (code, out, err) = reload().await?;
    assert_eq!(
        (code, out.as_str()),
        (
            Some(0),
            "policy unchanged: the file says what is in force\n"
        ),
        "{err}"
    );

    // A bad version: every problem printed, exit status 2, nothing changes.
    std::fs::write(federation.policy_file("east"), BAD_POLICY)?;
    let (code, _, err) = reload().await?;
    assert_eq!(code, Some(2), "{err}");
    for problem in [
        "routes[0].backends[0].cluster",
        "routes[0].fault.abort.percent",
    ] {
        assert!(err.contains(problem), "{problem} not reported: {err}");
    }
    let tester = call(&federation, Method::GET, "/", &[("x-tester", "yes")]).await?;
    assert_eq!(
        tester.served_by(),
        "greeter-west-v2",
        "the old policy is still in force"
    );

    // A good one is in force when the command returns (whether it or the poll read it first).
    let all_west =
        "services: [{ service: greeter.demo, routes: [{ backends: [{ cluster: west }] }] }]\n";
    std::fs::write(federation.policy_file("east"), all_west)?;
    let (code, out, err) = reload().await?;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("policy "), "{out}");
    all_to_west(&federation).await?;
    federation.shutdown().await;
    Ok(())
}
