//! The catalog exchange end to end: gateways learn each other's exports from config alone,
//! over the control channel, and serve them by DNS and by route; a peer that stops drops out
//! and comes back when it returns.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use meshfed_tests::client;
use meshfed_tests::dns::{Tool, Transport, ask};
use meshfed_tests::echo::Echo;
use meshfed_tests::relay::{Impairment, LossyRelay};
use meshfed_tests::wait::until;
use meshfed_tests::{Cluster, Federation};

#[tokio::test]
async fn three_gateways_discover_each_others_exports_from_config_alone() -> anyhow::Result<()> {
    let checkout = Echo::start("checkout in north").await?;
    let cart = Echo::start("cart in east").await?;
    let db: Vec<SocketAddr> = (1..=3)
        .map(|i| SocketAddr::from(([127, 0, 3, i], 5432)))
        .collect();
    let north = Cluster::new("north")?.export("checkout.shop", checkout.addr(), &["east", "west"]);
    let east = Cluster::new("east")?
        .export("cart.shop", cart.addr(), &["north", "west"])
        .export_headless("db.data", &db, &["west"]);
    let west = Cluster::new("west")?;
    let federation = Federation::start(vec![north, east, west]).await?;

    // West exports nothing and imports from both: names with the ports its peers gave.
    let dns = federation.gateway("west").addrs().dns;
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "checkout.shop.svc.clusterset.local",
            "A",
            vec!["checkout.shop.svc.clusterset.local. 5 IN A 127.0.0.1"],
        ),
        (
            "_http._tcp.checkout.shop.svc.clusterset.local",
            "SRV",
            vec![
                "_http._tcp.checkout.shop.svc.clusterset.local. 5 IN SRV 0 100 80 checkout.shop.svc.clusterset.local.",
            ],
        ),
        (
            "_http._tcp.cart.shop.svc.clusterset.local",
            "SRV",
            vec![
                "_http._tcp.cart.shop.svc.clusterset.local. 5 IN SRV 0 100 80 cart.shop.svc.clusterset.local.",
            ],
        ),
        (
            "_http._tcp.db.data.svc.clusterset.local",
            "SRV",
            vec![
                "_http._tcp.db.data.svc.clusterset.local. 5 IN SRV 0 100 80 127-0-3-1.east.db.data.svc.clusterset.local.",
                "_http._tcp.db.data.svc.clusterset.local. 5 IN SRV 0 100 80 127-0-3-2.east.db.data.svc.clusterset.local.",
                "_http._tcp.db.data.svc.clusterset.local. 5 IN SRV 0 100 80 127-0-3-3.east.db.data.svc.clusterset.local.",
            ],
        ),
        (
            "127-0-3-2.east.db.data.svc.clusterset.local",
            "A",
            vec!["127-0-3-2.east.db.data.svc.clusterset.local. 5 IN A 127.0.0.1"],
        ),
        (
            "checkout.shop.north.meshfed.internal",
            "A",
            vec!["checkout.shop.north.meshfed.internal. 5 IN A 127.0.0.1"],
        ),
    ];
    for (name, rtype, answers) in &cases {
        let reply = ask(Tool::Dig, Transport::Udp, dns, name, rtype, &[]).await?;
        assert_eq!(reply.status, "NOERROR", "{name} {rtype}: {}", reply.text);
        assert_eq!(reply.answers, *answers, "{name} {rtype}: {}", reply.text);
    }
    // North was not offered db.data.
    let dns = federation.gateway("north").addrs().dns;
    let reply = ask(
        Tool::Dig,
        Transport::Udp,
        dns,
        "db.data.svc.clusterset.local",
        "A",
        &[],
    )
    .await?;
    assert_eq!(reply.status, "NXDOMAIN", "{}", reply.text);

    // And the names route: west reaches north's checkout and east's cart.
    let west = federation.gateway("west").addrs().http;
    for (name, from) in [
        ("checkout.shop.svc.clusterset.local", "checkout in north"),
        ("cart.shop.svc.clusterset.local", "cart in east"),
    ] {
        let reply = client::get(west, name, "/").await?;
        assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.text());
        assert!(reply.text().starts_with(from), "{name}: {}", reply.text());
    }

    // `meshfed services`, the real binary, against east's admin listener.
    let admin = federation.gateway("east").addrs().admin.to_string();
    let table = services(&["--admin", &admin]).await?;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    for want in [
        vec![
            "cart.shop",
            "http:80/http",
            "east",
            "1/1 ready",
            "local, exported to north,west",
        ],
        vec![
            "checkout.shop",
            "http:80/http",
            "north",
            "1/1 ready",
            "imported",
        ],
        vec![
            "db.data",
            "http:80/http",
            "east",
            "3/3 ready",
            "local, exported to west",
        ],
    ] {
        assert!(rows.contains(&want), "{want:?} not in\n{table}");
    }
    let json = services(&["--admin", &admin, "--json"]).await?;
    let report: meshfed_gateway::services::ServicesReport = serde_json::from_str(&json)?;
    assert_eq!(report.cluster, "east");
    let names: Vec<&str> = report.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(names, ["cart.shop", "checkout.shop", "db.data"]);
    federation.shutdown().await;
    Ok(())
}

/// Runs `meshfed services` with `args`; its standard output.
async fn services(args: &[&str]) -> anyhow::Result<String> {
    let binary = meshfed_tests::binary::meshfed()?;
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary)
            .arg("services")
            .args(&args)
            .output()
    })
    .await??;
    anyhow::ensure!(
        output.status.success(),
        "meshfed services failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test]
async fn a_stopped_peer_drops_out_and_comes_back() -> anyhow::Result<()> {
    let greeter = Echo::start("greeter in west").await?;
    let db: Vec<SocketAddr> = vec![SocketAddr::from(([127, 0, 3, 9], 5432))];
    let east = Cluster::new("east")?;
    let west = Cluster::new("west")?
        .export("greeter.demo", greeter.addr(), &["east"])
        .export_headless("db.data", &db, &["east"]);
    let mut federation = Federation::start(vec![east, west]).await?;
    let east_http = federation.gateway("east").addrs().http;
    let east_dns = federation.gateway("east").addrs().dns;
    let pod = "127-0-3-9.west.db.data.svc.clusterset.local";
    let greeter_name = "greeter.demo.svc.clusterset.local";
    assert_eq!(
        client::get(east_http, greeter_name, "/").await?.status,
        StatusCode::OK
    );

    // West stops: east stops routing to it at once, with a reason, and west's ready endpoints
    // leave east's DNS.
    let addrs = federation.stop("west").await?;
    let reply = client::get(east_http, greeter_name, "/").await?;
    assert_eq!(
        (reply.status, reply.reason()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("peer_unavailable")),
        "{}",
        reply.text()
    );
    let gone = "west's headless endpoint to leave east's DNS";
    until(Duration::from_secs(5), gone, || {
        let east = federation.gateway("east");
        let imports = east.imports();
        let key = "db.data".parse().expect("key");
        imports
            .services
            .get(&key)
            .is_some_and(|s| s.ready_clusters().next().is_none())
    })
    .await?;
    let reply = ask(Tool::Kdig, Transport::Udp, east_dns, pod, "A", &[]).await?;
    assert_eq!(reply.status, "NXDOMAIN", "{}", reply.text);
    // The service itself stays known (its clusterset name still resolves to the gateway).
    let reply = ask(Tool::Kdig, Transport::Udp, east_dns, greeter_name, "A", &[]).await?;
    assert_eq!(reply.status, "NOERROR", "{}", reply.text);

    // West comes back: east follows its catalog again, and routes and resolves as before.
    let back = Instant::now();
    federation.start_again("west", addrs).await?;
    federation.catalogs_exchanged().await?;
    let rediscovered = back.elapsed();
    let reply = client::get(east_http, greeter_name, "/").await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = ask(Tool::Kdig, Transport::Udp, east_dns, pod, "A", &[]).await?;
    assert_eq!(reply.status, "NOERROR", "{}", reply.text);
    eprintln!("east routed to the restarted west again {rediscovered:?} after it started");
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_peer_that_vanishes_without_closing_is_dropped_after_the_keepalive() -> anyhow::Result<()>
{
    // East reaches west through a relay that can turn into a black hole: no byte crosses and
    // no connection closes, as when a peer's host loses power.
    let greeter = Echo::start("greeter in west").await?;
    let east = Cluster::new("east")?;
    let west = Cluster::new("west")?.export("greeter.demo", greeter.addr(), &["east"]);
    let clean = Impairment {
        drop: 0.0,
        reorder: 0.0,
        reorder_by: Duration::ZERO,
        delay: Duration::ZERO,
    };
    let relay = LossyRelay::start(west.addrs().federation, clean, 1).await?;
    let federation = Federation::builder(vec![east, west])
        .peer_address("east", "west", relay.addr())
        .start()
        .await?;
    let ready = |federation: &Federation| {
        let imports = federation.gateway("east").imports();
        let key = "greeter.demo".parse().expect("key");
        imports
            .services
            .get(&key)
            .is_some_and(|s| s.ready_clusters().next().is_some())
    };
    assert!(ready(&federation));
    // A watch up for 5 s or more is retried once before the peer is given up: let it age, so
    // that this test goes the whole way (keepalive, then a reconnection that cannot succeed).
    tokio::time::sleep(Duration::from_secs(6)).await;

    relay.freeze(true);
    let frozen = Instant::now();
    until(Duration::from_secs(15), "east to give west up", || {
        !ready(&federation)
    })
    .await?;
    let noticed = frozen.elapsed();
    let east_http = federation.gateway("east").addrs().http;
    let reply = client::get(east_http, "greeter.demo.svc.clusterset.local", "/").await?;
    assert_eq!(reply.reason(), Some("peer_unavailable"), "{}", reply.text());

    relay.freeze(false);
    until(Duration::from_secs(15), "east to follow west again", || {
        ready(&federation)
    })
    .await?;
    let reply = client::get(east_http, "greeter.demo.svc.clusterset.local", "/").await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    eprintln!("east gave the silent west up after {noticed:?}");
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_conflict_between_clusters_is_settled_for_the_older_export_and_reported()
-> anyhow::Result<()> {
    // East and west both export api.shop on port 80, as `http` in east and `tcp` in west.
    let api = Echo::start("api in east").await?;
    let echo = meshfed_tests::tcp_echo::TcpEcho::start().await?;
    let east = Cluster::new("east")?.export("api.shop", api.addr(), &["west"]);
    let west = Cluster::new("west")?.export_port("api.shop", "tcp", 80, &[echo.addr()], &["east"]);
    let federation = Federation::start(vec![east, west]).await?;
    let admin = federation.gateway("east").addrs().admin.to_string();
    let json = services(&["--admin", &admin, "--json"]).await?;
    let report: meshfed_gateway::services::ServicesReport = serde_json::from_str(&json)?;
    let api = report
        .services
        .iter()
        .find(|s| s.service == "api.shop")
        .ok_or_else(|| anyhow::anyhow!("no api.shop in {json}"))?;
    assert_eq!(api.clusters.len(), 2, "{json}");
    assert_eq!(api.conflicts.len(), 1, "{json}");
    assert_eq!(api.ports.len(), 1, "one port 80 is kept: {json}");
    assert!(api.conflicts[0].contains("older export"), "{json}");
    let table = services(&["--admin", &admin]).await?;
    assert!(table.contains("conflict in api.shop:"), "{table}");
    federation.shutdown().await;
    Ok(())
}
