//! Rotation under load. With two-second SVIDs, both gateways renew at half-life again and again
//! while requests flow through them and fresh handshakes test the newest certificate; midway,
//! west rotates its root through the bundle endpoints, ending with the old root withdrawn,
//! which makes east drop its connection made under that root and dial anew. Not one request
//! may fail.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use http::StatusCode;
use meshfed_tests::client;
use meshfed_tests::echo::Echo;
use meshfed_tests::federation::h3_get;
use meshfed_tests::wait::{kept_roots, until};
use meshfed_tests::{Cluster, Federation};
use meshfed_trust::{Ca, SpiffeId};

const GREETER: &str = "greeter.demo.svc.clusterset.local";
/// Each gateway must renew at least this many times during the test.
const ROTATIONS: u64 = 10;

/// Requests sent and failed by the load tasks.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn record<T: std::fmt::Debug>(&self, what: &str, ok: bool, outcome: T) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if !ok {
            // Said, so that a failure names its reason code.
            eprintln!("{what} failed: {outcome:?}");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svids_and_a_root_rotate_under_load_without_a_failed_request() -> anyhow::Result<()> {
    let upstream = Echo::start("greeter in west").await?;
    let east = Cluster::new("east")?;
    let west = Cluster::new("west")?.export("greeter.demo", upstream.addr(), &["east"]);
    let federation = Arc::new(
        Federation::builder(vec![east, west])
            .svid_lifetime("2s")
            .bundle_exchange()
            .start()
            .await?,
    );
    let west_ca_dir = federation.dir.path().join("west/ca");
    // The roots a fresh client trusts for west, changed as west rotates.
    let west_roots = Arc::new(RwLock::new(vec![Arc::new(Ca::load(&west_ca_dir)?)]));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());

    // Requests through east, over its long-lived connection to west.
    let east_http = federation.gateway("east").addrs().http;
    let through = tokio::spawn({
        let (stop, tally) = (stop.clone(), tally.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let reply = client::get(east_http, GREETER, "/").await;
                let ok = matches!(&reply, Ok(r) if r.status == StatusCode::OK);
                tally.record("request through east", ok, reply.map(|r| r.text()));
            }
        }
    });
    // Fresh handshakes to west, each verifying the SVID west presents right now.
    let handshakes = tokio::spawn({
        let (stop, tally, federation, west_roots) = (
            stop.clone(),
            tally.clone(),
            federation.clone(),
            west_roots.clone(),
        );
        async move {
            let west = federation.gateway("west").addrs().federation;
            let id = SpiffeId::new("east.test".parse()?, ["meshfed", "gateway", "east"])?;
            while !stop.load(Ordering::Relaxed) {
                let svid = federation.cas["east"].issue(
                    &id,
                    SystemTime::now(),
                    Duration::from_secs(60),
                )?;
                let roots = west_roots.read().unwrap_or_else(|e| e.into_inner()).clone();
                let roots: Vec<&Ca> = roots.iter().map(|ca| &**ca).collect();
                let got = h3_get(&svid, &roots, west, GREETER).await;
                tally.record(
                    "fresh handshake to west",
                    matches!(got, Ok(StatusCode::OK)),
                    got,
                );
            }
            anyhow::Ok(())
        }
    });

    let count = |cluster: &str, counter: fn(&meshfed_gateway::stats::Stats) -> &AtomicU64| {
        counter(federation.gateway(cluster).stats()).load(Ordering::Relaxed)
    };
    let updates = |cluster: &str| count(cluster, |s| &s.credential_updates);
    let halfway = || updates("east") >= ROTATIONS / 2 && updates("west") >= ROTATIONS / 2;
    until(Duration::from_secs(60), "half the leaf rotations", halfway).await?;

    // West's root rotation, as docs/trust.md's runbook has it, under the same load.
    let kept = federation
        .dir
        .path()
        .join("east/state/bundles/west.test.json");
    let west_td = "west.test".parse()?;
    let old = Ca::load(&west_ca_dir)?;
    let new = Arc::new(Ca::generate("west.test".parse()?, SystemTime::now())?);
    west_roots
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .push(new.clone());
    // 1. The new root is published beside the old one before it signs anything.
    let bundle_updates = count("east", |s| &s.bundle_updates);
    std::fs::write(west_ca_dir.join("bundle.pem"), new.root_pem())?;
    until(
        Duration::from_secs(30),
        "east to hold west's two roots and use them",
        || {
            kept_roots(&kept, &west_td) == 2
                && count("east", |s| &s.bundle_updates) > bundle_updates
        },
    )
    .await?;
    // 2. West signs with the new root; the old one stays published.
    let before = updates("west");
    for file in ["ca.pem", "ca.key"] {
        std::fs::remove_file(west_ca_dir.join(file))?;
    }
    std::fs::write(west_ca_dir.join("bundle.pem"), old.root_pem())?;
    new.write(&west_ca_dir)?;
    until(
        Duration::from_secs(30),
        "west to sign with its new root",
        || updates("west") > before,
    )
    .await?;
    // 3. Once the old root's last leaf has expired (2 s lifetimes), it is withdrawn. East's
    // connection to west was verified under the old root: east must drain it and dial anew.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let connections = count("east", |s| &s.peer_connections_opened);
    std::fs::remove_file(west_ca_dir.join("bundle.pem"))?;
    until(
        Duration::from_secs(30),
        "east to hold west's new root only",
        || kept_roots(&kept, &west_td) == 1,
    )
    .await?;
    west_roots
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|ca| ca.root() == new.root());
    until(
        Duration::from_secs(30),
        "east to reconnect to west under the new root",
        || count("east", |s| &s.peer_connections_opened) > connections,
    )
    .await?;

    // Leaves go on rotating under the new root, with the load on the new connection.
    let (east_then, west_then) = (updates("east"), updates("west"));
    let done = || {
        updates("east") >= ROTATIONS.max(east_then + 3)
            && updates("west") >= ROTATIONS.max(west_then + 3)
    };
    until(
        Duration::from_secs(60),
        "the remaining leaf rotations",
        done,
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    through.await?;
    handshakes.await??;

    let (sent, failed) = (
        tally.sent.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    assert!(sent > 100, "too few requests to mean anything: {sent}");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed across the rotations"
    );

    // East's first SVID expired long ago. A new connection from east (west restarted) must
    // present a renewed one: east swapped its client configuration too.
    let mut federation = Arc::try_unwrap(federation)
        .map_err(|_| anyhow::anyhow!("the federation is still shared"))?;
    federation.restart("west").await?;
    federation.catalogs_exchanged().await?;
    let reply = client::get(east_http, GREETER, "/").await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    federation.shutdown().await;
    Ok(())
}
