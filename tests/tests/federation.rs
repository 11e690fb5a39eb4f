//! End to end, in process: real gateways on port 0, real QUIC, real mutual TLS with per-cluster
//! CAs, real upstream servers.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, StatusCode};
use meshfed_tests::client::{self, Reply};
use meshfed_tests::echo::Echo;
use meshfed_tests::federation::{h3_get, h3_request};
use meshfed_tests::wait::{join_all, until};
use meshfed_tests::{Cluster, Federation};
use meshfed_trust::verify::Rejection;

const GREETER: &str = "greeter.demo.svc.clusterset.local";

/// East and west; west exports greeter to east. Returns the federation and west's upstream.
async fn east_west() -> anyhow::Result<(Federation, Echo)> {
    let upstream = Echo::start("greeter in west").await?;
    let east = Cluster::new("east")?;
    let west = Cluster::new("west")?.export("greeter.demo", upstream.addr(), &["east"]);
    Ok((Federation::start(vec![east, west]).await?, upstream))
}

/// As [`east_west`], each gateway with `workers` data-plane threads, and so that many
/// connections to its peer.
async fn east_west_with_workers(workers: usize) -> anyhow::Result<(Federation, Echo)> {
    let upstream = Echo::start("greeter in west").await?;
    let east = Cluster::new("east")?;
    let west = Cluster::new("west")?.export("greeter.demo", upstream.addr(), &["east"]);
    let workers = format!("workers: {workers}");
    let federation = Federation::builder(vec![east, west])
        .config("east", &workers)
        .config("west", &workers)
        .start()
        .await?;
    Ok((federation, upstream))
}

fn via(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all(http::header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn request_crosses_to_the_peer_and_back() -> anyhow::Result<()> {
    let (federation, _upstream) = east_west().await?;
    let east = federation.gateway("east").addrs().http;

    let reply = client::get(east, GREETER, "/hello?x=1").await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let text = reply.text();
    assert!(text.starts_with("greeter in west\n"), "{text}");
    // The upstream saw the service's name as Host, and both gateways in Via.
    assert!(text.contains(&format!("host: {GREETER}\n")), "{text}");
    assert!(text.contains("via: 1.1 meshfed-east\n"), "{text}");
    assert!(text.contains("via: 3 meshfed-west\n"), "{text}");
    assert_eq!(via(&reply), ["1.1 meshfed-west", "3 meshfed-east"]);

    // The cluster-pinned name reaches the same place.
    let pinned = client::get(east, "greeter.demo.west.meshfed.internal", "/").await?;
    assert!(
        pinned.text().starts_with("greeter in west\n"),
        "{}",
        pinned.text()
    );
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn large_bodies_stream_intact_both_ways() -> anyhow::Result<()> {
    let (federation, _upstream) = east_west().await?;
    let east = federation.gateway("east").addrs().http;
    // 8 MiB of a pattern that a dropped, duplicated or reordered chunk would break.
    let body: Bytes = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect::<Vec<u8>>()
        .into();
    let reply = client::send(east, Method::POST, GREETER, "/echo", &[], body.clone()).await?;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), body.len());
    assert!(reply.body == body, "echoed body differs");
    federation.shutdown().await;
    Ok(())
}

/// With one worker a gateway keeps one connection to its peer, and every request reuses it.
#[tokio::test]
async fn one_quic_connection_per_peer_is_reused() -> anyhow::Result<()> {
    let (federation, _upstream) = east_west_with_workers(1).await?;
    let east = federation.gateway("east");
    let requests = (0..20).map(|_| client::get(east.addrs().http, GREETER, "/"));
    for reply in join_all(requests).await {
        assert_eq!(reply?.status, StatusCode::OK);
    }
    let opened = east.stats().peer_connections_opened.load(Ordering::Relaxed);
    let accepted = federation
        .gateway("west")
        .stats()
        .peer_connections_accepted
        .load(Ordering::Relaxed);
    let served = federation
        .gateway("west")
        .stats()
        .peer_requests
        .load(Ordering::Relaxed);
    assert_eq!((opened, accepted, served), (1, 1, 20));
    // West validated east's address with a Retry before accepting (once per handshake east
    // attempted; more than one only if a first attempt timed out on a loaded machine).
    let retries = federation
        .gateway("west")
        .stats()
        .peer_retries
        .load(Ordering::Relaxed);
    assert!(retries >= 1, "no Retry was sent");
    federation.shutdown().await;
    Ok(())
}

/// On a runtime of two threads, a gateway keeps two connections to its peer (one per thread),
/// both accepted, and requests flow over them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gets_a_connection_per_runtime_thread() -> anyhow::Result<()> {
    let (federation, _upstream) = east_west().await?;
    let east = federation.gateway("east");
    let requests = (0..40).map(|_| client::get(east.addrs().http, GREETER, "/"));
    for reply in join_all(requests).await {
        assert_eq!(reply?.status, StatusCode::OK);
    }
    let west = federation.gateway("west");
    let opened = east.stats().peer_connections_opened.load(Ordering::Relaxed);
    let accepted = west
        .stats()
        .peer_connections_accepted
        .load(Ordering::Relaxed);
    let served = west.stats().peer_requests.load(Ordering::Relaxed);
    assert_eq!((opened, accepted, served), (2, 2, 40));
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn services_not_exported_to_a_peer_are_not_reachable() -> anyhow::Result<()> {
    let secret = Echo::start("secret in west").await?;
    let public = Echo::start("public in west").await?;
    let east = Cluster::new("east")?;
    let north = Cluster::new("north")?;
    let west = Cluster::new("west")?
        .export("secret.demo", secret.addr(), &["north"])
        .export("public.demo", public.addr(), &["east", "north"]);
    let federation = Federation::start(vec![east, north, west]).await?;
    let east = federation.gateway("east").addrs().http;
    let north = federation.gateway("north").addrs().http;

    // East's route table does not know of the secret service at all...
    let reply = client::get(east, "secret.demo.svc.clusterset.local", "/").await?;
    assert_eq!(
        (reply.status, reply.reason()),
        (StatusCode::NOT_FOUND, Some("unknown_service"))
    );
    // ...nor under a pinned name (east refuses it itself; west's refusal of a request that
    // does reach it is tested by the next test).
    let reply = client::get(east, "secret.demo.west.meshfed.internal", "/").await?;
    assert_eq!(reply.reason(), Some("unknown_service"));
    // North, to which it is exported, reaches it; both reach the public one.
    let reply = client::get(north, "secret.demo.svc.clusterset.local", "/").await?;
    assert!(
        reply.text().starts_with("secret in west"),
        "{}",
        reply.text()
    );
    let reply = client::get(east, "public.demo.svc.clusterset.local", "/").await?;
    assert!(
        reply.text().starts_with("public in west"),
        "{}",
        reply.text()
    );
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_export_not_offered_to_a_peer_is_neither_resolvable_nor_routable_there()
-> anyhow::Result<()> {
    // West exports public.demo to east and secret.demo to nobody.
    let secret = Echo::start("secret in west").await?;
    let public = Echo::start("public in west").await?;
    let east = Cluster::new("east")?;
    let west = Cluster::new("west")?
        .export("secret.demo", secret.addr(), &[])
        .export("public.demo", public.addr(), &["east"]);
    let federation = Federation::start(vec![east, west]).await?;
    let east_http = federation.gateway("east").addrs().http;
    let imports = federation.gateway("east").imports();
    assert!(imports.services.contains_key(&"public.demo".parse()?));
    assert!(
        !imports.services.contains_key(&"secret.demo".parse()?),
        "east was told of a service not exported to it: {imports:?}"
    );

    // Not routable from east: east does not even ask west.
    let reply = client::get(east_http, "secret.demo.svc.clusterset.local", "/").await?;
    assert_eq!(
        (reply.status, reply.reason()),
        (StatusCode::NOT_FOUND, Some("unknown_service"))
    );
    assert_eq!(west_stats_requests(&federation), 0);
    // Not resolvable from east.
    let dns = federation.gateway("east").addrs().dns;
    let dig = tokio::task::spawn_blocking(move || {
        std::process::Command::new("dig")
            .args([&format!("@{}", dns.ip()), "-p", &dns.port().to_string()])
            .args(["+tries=1", "+time=5", "secret.demo.svc.clusterset.local"])
            .output()
    })
    .await??;
    let text = String::from_utf8(dig.stdout)?;
    assert!(text.contains("status: NXDOMAIN"), "{text}");

    // East's gateway asking west anyway, with its own SVID, is refused as if the service did
    // not exist, so that peers cannot map what is not theirs.
    let id = meshfed_trust::SpiffeId::new("east.test".parse()?, ["meshfed", "gateway", "east"])?;
    let svid = federation.cas["east"].issue(&id, SystemTime::now(), Duration::from_secs(3600))?;
    let west = federation.gateway("west").addrs().federation;
    let status = h3_get(
        &svid,
        &[&federation.cas["west"]],
        west,
        "secret.demo.svc.clusterset.local",
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        west_stats_requests(&federation),
        1,
        "the refusal came from west"
    );
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn identity_headers_from_clients_are_stripped() -> anyhow::Result<()> {
    let (federation, _upstream) = east_west().await?;
    let east = federation.gateway("east").addrs().http;
    let forged = [
        ("x-meshfed-source-cluster", "west"),
        ("x-forwarded-client-cert", "By=spiffe://west.test/admin"),
        ("connection", "x-private"),
        ("x-private", "hop"),
        ("x-request-id", "kept"),
    ];
    let reply = client::send(east, Method::GET, GREETER, "/", &forged, Bytes::new()).await?;
    let text = reply.text().to_lowercase();
    assert!(text.contains("x-request-id: kept"), "{text}");
    for gone in ["x-meshfed-source-cluster", "west.test/admin", "x-private"] {
        assert!(!text.contains(gone), "{gone} reached the upstream: {text}");
    }
    // West tells the upstream who called, from what it verified: east's gateway.
    let verified = "x-forwarded-client-cert: uri=spiffe://east.test/meshfed/gateway/east";
    assert!(text.lines().any(|l| l == verified), "{text}");

    // The same forgery sent straight to west over HTTP/3 by east's gateway identity: west
    // strips it too, since it sets such headers only from what it verified.
    let id = meshfed_trust::SpiffeId::new("east.test".parse()?, ["meshfed", "gateway", "east"])?;
    let svid = federation.cas["east"].issue(&id, SystemTime::now(), Duration::from_secs(60))?;
    let west = federation.gateway("west").addrs().federation;
    let forged = [
        ("x-meshfed-source-cluster", "north"),
        ("x-forwarded-client-cert", "By=spiffe://west.test/admin"),
        ("x-request-id", "kept"),
    ];
    let (status, text) =
        h3_request(&svid, &[&federation.cas["west"]], west, GREETER, &forged).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("x-request-id: kept"), "{text}");
    assert!(!text.contains("x-meshfed-source-cluster"), "{text}");
    assert!(!text.contains("west.test/admin"), "{text}");
    let verified = "x-forwarded-client-cert: URI=spiffe://east.test/meshfed/gateway/east";
    assert!(text.lines().any(|l| l == verified), "{text}");
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_peer_whose_certificate_does_not_chain_to_its_trust_domain_is_refused()
-> anyhow::Result<()> {
    // East is given a rogue CA's root as west's bundle: west's real SVID cannot verify.
    let upstream = Echo::start("greeter in west").await?;
    let rogue = meshfed_trust::Ca::generate("west.test".parse()?, SystemTime::now())?;
    let rogue_root = rogue.root_pem().to_owned();
    let east = Cluster::new("east")?;
    let west = Cluster::new("west")?.export("greeter.demo", upstream.addr(), &["east"]);
    let federation = Federation::builder(vec![east, west])
        .bundle("east", "west", rogue_root)
        .start()
        .await?;
    // East refuses west's certificate on the control channel (and would on QUIC), so it never
    // learns west's catalog: greeter is unknown there, and the refusals are counted.
    let refused = &federation.gateway("east").stats().peer_certificates_refused;
    until(
        Duration::from_secs(10),
        "east to refuse west's certificate",
        || refused.count(Rejection::Chain) > 0,
    )
    .await?;
    let reply = client::get(federation.gateway("east").addrs().http, GREETER, "/").await?;
    assert_eq!(
        (reply.status, reply.reason()),
        (StatusCode::NOT_FOUND, Some("unknown_service"))
    );
    assert_eq!(west_stats_requests(&federation), 0);
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_client_certificate_from_an_unknown_ca_is_refused() -> anyhow::Result<()> {
    let (federation, _upstream) = east_west().await?;
    let west = federation.gateway("west").addrs().federation;
    // A gateway of a trust domain west does not federate with, holding a valid SVID of its own.
    let now = SystemTime::now();
    let rogue = meshfed_trust::Ca::generate("rogue.test".parse()?, now)?;
    let id = meshfed_trust::SpiffeId::new("rogue.test".parse()?, ["meshfed", "gateway", "rogue"])?;
    let svid = rogue.issue(&id, now, std::time::Duration::from_secs(3600))?;
    let refused = h3_get(&svid, &[&federation.cas["west"]], west, GREETER).await;
    assert!(
        refused.is_err(),
        "west served a client from an unknown CA: {refused:?}"
    );
    // Refused by west's verifier, for the reason that it is no trust domain west federates with.
    let refused = federation
        .gateway("west")
        .stats()
        .peer_certificates_refused
        .count(Rejection::UnknownTrustDomain);
    assert_eq!(refused, 1, "the refusal is counted as unknown_trust_domain");

    // The same client with an SVID from east's CA is accepted: the refusal was about the CA.
    let id = meshfed_trust::SpiffeId::new("east.test".parse()?, ["meshfed", "gateway", "east"])?;
    let svid = federation.cas["east"].issue(&id, now, std::time::Duration::from_secs(3600))?;
    let status = h3_get(&svid, &[&federation.cas["west"]], west, GREETER).await?;
    assert_eq!(status, StatusCode::OK);
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn dns_answers_with_the_gateway_address_and_nxdomain_for_unknown_names() -> anyhow::Result<()>
{
    let (federation, _upstream) = east_west().await?;
    let dns = federation.gateway("east").addrs().dns;
    // The real `dig`, run off the runtime's thread so the in-process server can answer it.
    let dig = |name: &'static str| {
        tokio::task::spawn_blocking(move || {
            let output = std::process::Command::new("dig")
                .args([&format!("@{}", dns.ip()), "-p", &dns.port().to_string()])
                .args(["+tries=1", "+time=5", name])
                .output()?;
            anyhow::Ok(String::from_utf8(output.stdout)?)
        })
    };
    let found = dig(GREETER).await??;
    assert!(found.contains("status: NOERROR"), "{found}");
    let answer = format!("{GREETER}. 5 IN A 127.0.0.1");
    assert!(has_record(&found, &answer), "{found}");
    let pinned = dig("greeter.demo.west.meshfed.internal").await??;
    let answer = "greeter.demo.west.meshfed.internal. 5 IN A 127.0.0.1";
    assert!(has_record(&pinned, answer), "{pinned}");
    let missing = dig("nope.demo.svc.clusterset.local").await??;
    assert!(missing.contains("status: NXDOMAIN"), "{missing}");
    assert!(
        missing
            .lines()
            .any(|l| l.starts_with("clusterset.local.") && l.contains("SOA")),
        "{missing}"
    );
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn requests_in_flight_finish_when_the_serving_gateway_shuts_down() -> anyhow::Result<()> {
    let (mut federation, _upstream) = east_west().await?;
    let east = federation.gateway("east").addrs().http;
    let in_flight = tokio::spawn(client::get(east, GREETER, "/slow"));
    // Wait until west is serving the request (a condition, not a fixed sleep).
    let west_stats = federation.gateway("west").stats().clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        while west_stats.peer_requests.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await?;
    let west = federation.gateways.remove("west").expect("west");
    west.shutdown().await;
    let reply = in_flight.await??;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        reply.text().starts_with("greeter in west\n"),
        "{}",
        reply.text()
    );

    // West is gone now: east answers at once with a reason, it does not hang.
    let reply = client::get(east, GREETER, "/").await?;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert_eq!(reply.reason(), Some("peer_unavailable"));
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_peer_workload_that_is_not_its_gateway_is_refused() -> anyhow::Result<()> {
    // A valid SVID from east's own CA, but for a workload, not east's gateway: it must not be
    // able to act as the east cluster towards west.
    let (federation, _upstream) = east_west().await?;
    let west = federation.gateway("west").addrs().federation;
    let now = SystemTime::now();
    let workload =
        meshfed_trust::SpiffeId::new("east.test".parse()?, ["ns", "shop", "sa", "checkout"])?;
    let svid = federation.cas["east"].issue(&workload, now, Duration::from_secs(3600))?;
    let refused = h3_get(&svid, &[&federation.cas["west"]], west, GREETER).await;
    assert!(
        refused.is_err(),
        "west served a workload as if it were east's gateway"
    );
    let served = west_stats_requests(&federation);
    assert_eq!(served, 0, "the workload's request reached west's upstream");
    let refused = federation
        .gateway("west")
        .stats()
        .peer_certificates_refused
        .count(Rejection::WrongId);
    assert_eq!(refused, 1, "the refusal is counted as wrong_id");
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_restarted_peer_is_reached_again_on_a_new_connection() -> anyhow::Result<()> {
    let (mut federation, _upstream) = east_west_with_workers(1).await?;
    let east = federation.gateway("east").addrs().http;
    assert_eq!(
        client::get(east, GREETER, "/").await?.status,
        StatusCode::OK
    );
    federation.restart("west").await?;
    federation.catalogs_exchanged().await?;
    let reply = client::get(east, GREETER, "/").await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let opened = federation
        .gateway("east")
        .stats()
        .peer_connections_opened
        .load(Ordering::Relaxed);
    assert_eq!(
        opened, 2,
        "east should have dialled west once per west lifetime"
    );
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn peers_are_dialled_at_start_and_again_when_lost_without_waiting_for_a_request()
-> anyhow::Result<()> {
    // Two workers: each keeps a connection of its own.
    let (mut federation, _upstream) = east_west_with_workers(2).await?;
    let opened = |federation: &Federation| {
        federation
            .gateway("east")
            .stats()
            .peer_connections_opened
            .load(Ordering::Relaxed)
    };
    until(
        Duration::from_secs(10),
        "east to dial west at start, once from each worker",
        || opened(&federation) == 2,
    )
    .await?;
    federation.restart("west").await?;
    until(
        Duration::from_secs(10),
        "east to dial the restarted west from each worker",
        || opened(&federation) == 4,
    )
    .await?;
    let accepted = federation
        .gateway("west")
        .stats()
        .peer_connections_accepted
        .load(Ordering::Relaxed);
    assert_eq!(
        accepted, 2,
        "the restarted west accepted both of east's connections"
    );
    assert_eq!(west_stats_requests(&federation), 0, "no request was sent");
    federation.shutdown().await;
    Ok(())
}

fn west_stats_requests(federation: &Federation) -> u64 {
    federation
        .gateway("west")
        .stats()
        .peer_requests
        .load(Ordering::Relaxed)
}

/// Whether dig's output has a record line with these fields (dig mixes tabs and spaces).
fn has_record(output: &str, record: &str) -> bool {
    let want: Vec<&str> = record.split_whitespace().collect();
    output
        .lines()
        .any(|line| line.split_whitespace().collect::<Vec<_>>() == want)
}
