//! SPIFFE bundle exchange between gateways: each serves its bundle on its federation port
//! (`https_spiffe`) and polls its peers'. A root rotation in one cluster reaches the other
//! through the endpoints alone, and survives a restart through the kept bundle.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use meshfed_tests::client;
use meshfed_tests::echo::Echo;
use meshfed_tests::federation::Profile;
use meshfed_tests::wait::{kept_roots, until};
use meshfed_tests::{Cluster, Federation};
use meshfed_trust::{Ca, TrustDomain};

const GREETER: &str = "greeter.demo.svc.clusterset.local";

fn west_td() -> TrustDomain {
    "west.test".parse().expect("a valid trust domain")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_rotation_reaches_the_peer_through_bundle_endpoints() -> anyhow::Result<()> {
    let upstream = Echo::start("greeter in west").await?;
    let east = Cluster::new("east")?;
    let west = Cluster::new("west")?.export("greeter.demo", upstream.addr(), &["east"]);
    let mut federation = Federation::builder(vec![east, west])
        .bundle_exchange()
        .start()
        .await?;
    let east_http = federation.gateway("east").addrs().http;
    assert_eq!(
        client::get(east_http, GREETER, "/").await?.status,
        StatusCode::OK
    );

    let west_ca_dir = federation.dir.path().join("west/ca");
    let old = Ca::load(&west_ca_dir)?;
    let new = Ca::generate("west.test".parse()?, SystemTime::now())?;
    let east_stats = federation.gateway("east").stats().clone();
    let west_stats = federation.gateway("west").stats().clone();
    let kept = federation
        .dir
        .path()
        .join("east/state/bundles/west.test.json");

    // 1. West publishes the new root beside the old one, before the new root signs anything.
    std::fs::write(west_ca_dir.join("bundle.pem"), new.root_pem())?;
    // The poller keeps the bundle on disk before the rotation task puts it in force: wait for
    // both.
    until(
        Duration::from_secs(30),
        "east to fetch west's two roots and use them",
        || {
            kept_roots(&kept, &west_td()) == 2
                && east_stats.bundle_updates.load(Ordering::Relaxed) >= 1
        },
    )
    .await?;

    // 2. West switches to the new CA, keeping the old root published.
    let updates_before = west_stats.credential_updates.load(Ordering::Relaxed);
    for file in ["ca.pem", "ca.key"] {
        std::fs::remove_file(west_ca_dir.join(file))?;
    }
    std::fs::write(west_ca_dir.join("bundle.pem"), old.root_pem())?;
    new.write(&west_ca_dir)?;
    until(Duration::from_secs(30), "west to reload its new CA", || {
        west_stats.credential_updates.load(Ordering::Relaxed) > updates_before
    })
    .await?;

    // 3. East restarts, and west's bundle endpoint is down for it (east's config now points at a
    // closed port). Its config still names only west's old root, and west presents an SVID
    // from the new CA: only the bundle east fetched and kept lets it connect.
    let east_yaml = federation.dir.path().join("east.yaml");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let west_endpoint = format!("https://{}/", federation.gateway("west").addrs().federation);
    let config = std::fs::read_to_string(&east_yaml)?;
    assert!(config.contains(&west_endpoint), "{config}");
    std::fs::write(
        &east_yaml,
        config.replace(&west_endpoint, &format!("https://{closed}/")),
    )?;
    federation.restart("east").await?;
    federation.catalogs_exchanged().await?;
    let reply = client::get(east_http, GREETER, "/").await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn without_the_kept_bundle_the_rotated_peer_is_refused() -> anyhow::Result<()> {
    // The control for the test above: the same rotation with no bundle exchange leaves east
    // trusting only west's old root, and west's new SVID is refused.
    let upstream = Echo::start("greeter in west").await?;
    let east = Cluster::new("east")?;
    let west = Cluster::new("west")?.export("greeter.demo", upstream.addr(), &["east"]);
    let mut federation = Federation::builder(vec![east, west]).start().await?;
    let west_ca_dir = federation.dir.path().join("west/ca");
    for file in ["ca.pem", "ca.key"] {
        std::fs::remove_file(west_ca_dir.join(file))?;
    }
    Ca::generate("west.test".parse()?, SystemTime::now())?.write(&west_ca_dir)?;
    federation.restart("west").await?;
    let reply = client::get(federation.gateway("east").addrs().http, GREETER, "/").await?;
    assert_eq!(reply.reason(), Some("peer_unavailable"), "{}", reply.text());
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_travels_over_an_https_web_endpoint() -> anyhow::Result<()> {
    // The same first step as the rotation above, with endpoints authenticated by Web PKI
    // certificates for their address instead of SVIDs.
    let federation = Federation::builder(vec![Cluster::new("east")?, Cluster::new("west")?])
        .bundle_exchange_with(Profile::Web)
        .start()
        .await?;
    let next = Ca::generate("west.test".parse()?, SystemTime::now())?;
    std::fs::write(
        federation.dir.path().join("west/ca/bundle.pem"),
        next.root_pem(),
    )?;
    let kept = federation
        .dir
        .path()
        .join("east/state/bundles/west.test.json");
    until(
        Duration::from_secs(30),
        "east to fetch west's two roots over https_web",
        || kept_roots(&kept, &west_td()) == 2,
    )
    .await?;
    federation.shutdown().await;
    Ok(())
}
