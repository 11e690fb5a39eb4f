//! The status page's data, `/status.json` on the admin port, fetched with curl as the page
//! fetches it: this cluster, each peer with its connection's health, each service with where it
//! runs, its policy split and where this gateway's requests went. A peer that goes away shows
//! as down. (The page itself is opened in headless Chromium by `tests/tests/demo.rs`.)

use std::process::Command;
use std::time::Duration;

use http::StatusCode;
use meshfed_tests::echo::Echo;
use meshfed_tests::{Cluster, Federation, client};
use serde_json::Value;

const GREETER: &str = "greeter.demo.svc.clusterset.local";

fn status(admin: std::net::SocketAddr) -> anyhow::Result<Value> {
    let output = Command::new("curl")
        .args(["-sf", "--max-time", "5"])
        .arg(format!("http://{admin}/status.json"))
        .output()?;
    anyhow::ensure!(output.status.success(), "curl: {output:?}");
    Ok(serde_json::from_slice(&output.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_shows_peers_services_splits_and_traffic() -> anyhow::Result<()> {
    let east_greeter = Echo::start("greeter in east").await?;
    let west_greeter = Echo::start("greeter in west").await?;
    let east = Cluster::new("east")?.export("greeter.demo", east_greeter.addr(), &["west"]);
    let west = Cluster::new("west")?.export("greeter.demo", west_greeter.addr(), &["east"]);
    let policy = "services:\n  - service: greeter.demo\n    routes:\n      - name: split\n        backends:\n          - { cluster: east, weight: 75 }\n          - { cluster: west, weight: 25 }\n";
    let mut federation = Federation::builder(vec![east, west])
        .policy("east", policy)
        .start()
        .await?;
    let addrs = federation.gateway("east").addrs();
    for _ in 0..40 {
        let reply = client::get(addrs.http, GREETER, "/").await?;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    }

    let seen = tokio::task::block_in_place(|| status(addrs.admin))?;
    assert_eq!(seen["cluster"], "east");
    assert_eq!(seen["trust_domain"], "east.test");
    assert!(
        seen["svid_expires_in_seconds"]
            .as_f64()
            .is_some_and(|s| s > 600.0),
        "{seen}"
    );
    let peer = &seen["peers"][0];
    assert_eq!(peer["name"], "west");
    assert_eq!(peer["trust_domain"], "west.test");
    assert_eq!(peer["connected"], true);
    assert!(
        peer["rtt_ms"].as_f64().is_some_and(|rtt| rtt > 0.0),
        "{peer}"
    );
    let greeter = seen["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == "greeter.demo"))
        .ok_or_else(|| anyhow::anyhow!("no greeter in {seen}"))?;
    let clusters: Vec<&str> = greeter["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["cluster"].as_str())
        .collect();
    assert_eq!(clusters, ["east", "west"]);
    let route = &greeter["routes"][0];
    assert_eq!(route["route"], "split");
    assert_eq!(route["backends"][0]["weight"], 75);
    assert_eq!(route["backends"][1]["cluster"], "west");
    // Every request counted under the cluster that served it.
    let requests = &greeter["requests"];
    let served = |c: &str| requests[c].as_u64().unwrap_or(0);
    assert_eq!(served("east") + served("west"), 40, "{requests}");
    assert!(served("east") > 0 && served("west") > 0, "{requests}");

    // West goes away: east shows the peer down.
    federation.stop("west").await?;
    meshfed_tests::wait::until(Duration::from_secs(30), "west shown down", || {
        tokio::task::block_in_place(|| status(addrs.admin))
            .is_ok_and(|s| s["peers"][0]["connected"] == false)
    })
    .await?;
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_whole_at_the_root() -> anyhow::Result<()> {
    let federation = Federation::start(vec![Cluster::new("east")?]).await?;
    let admin = federation.gateway("east").addrs().admin;
    let output = tokio::task::block_in_place(|| {
        Command::new("curl")
            .args(["-sf", "-D", "-", "--max-time", "5"])
            .arg(format!("http://{admin}/"))
            .output()
    })?;
    let page = String::from_utf8(output.stdout)?;
    assert!(output.status.success(), "{page}");
    assert!(
        page.to_lowercase().contains("content-type: text/html"),
        "{page}"
    );
    // Self-contained: it fetches only its own status, nothing from elsewhere.
    assert!(page.contains("fetch(\"status.json\""), "{page}");
    for outside in ["http://", "https://", "<link", "src="] {
        let body = page.split("\r\n\r\n").nth(1).unwrap_or_default();
        let outside_refs: Vec<&str> = body
            .lines()
            .filter(|l| l.contains(outside) && !l.contains("www.w3.org/2000/svg"))
            .collect();
        assert!(outside_refs.is_empty(), "{outside}: {outside_refs:#?}");
    }
    federation.shutdown().await;
    Ok(())
}
