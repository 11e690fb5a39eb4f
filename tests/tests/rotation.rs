//! SVID rotation under load: with two-second SVIDs, both gateways renew at half-life again and
//! again while requests flow through them and fresh handshakes test the newest certificate.
//! Not one request may fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::StatusCode;
use meshfed_tests::client;
use meshfed_tests::echo::Echo;
use meshfed_tests::federation::h3_get;
use meshfed_tests::{Cluster, Federation};
use meshfed_trust::SpiffeId;

const GREETER: &str = "greeter.demo.svc.clusterset.local";
/// Each gateway must renew at least this many times during the test.
const ROTATIONS: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svids_rotate_under_load_without_a_failed_request() -> anyhow::Result<()> {
    let upstream = Echo::start("greeter in west").await?;
    let east = Cluster::new("east")?;
    let west = Cluster::new("west")?.export("greeter.demo", upstream.addr(), &["east"]);
    let federation = Arc::new(
        Federation::builder(vec![east, west])
            .svid_lifetime("2s")
            .start()
            .await?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));

    // Requests through east, over its long-lived connection to west.
    let east_http = federation.gateway("east").addrs().http;
    let through = tokio::spawn({
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let reply = client::get(east_http, GREETER, "/").await;
                let ok = matches!(&reply, Ok(r) if r.status == StatusCode::OK);
                if !ok {
                    // Said, so that a failure names its reason code.
                    eprintln!("request through east failed: {:?}", reply.map(|r| r.text()));
                }
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    // Fresh handshakes to west, each verifying the SVID west presents right now.
    let handshakes = tokio::spawn({
        let (stop, sent, failed, federation) = (
            stop.clone(),
            sent.clone(),
            failed.clone(),
            federation.clone(),
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
                let got = h3_get(&svid, &federation.cas["west"], west, GREETER).await;
                let ok = matches!(got, Ok(StatusCode::OK));
                if !ok {
                    eprintln!("fresh handshake to west failed: {got:?}");
                }
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }
    });

    let updates = |cluster: &str| {
        federation
            .gateway(cluster)
            .stats()
            .credential_updates
            .load(Ordering::Relaxed)
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        while updates("east") < ROTATIONS || updates("west") < ROTATIONS {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    through.await?;
    handshakes.await??;

    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
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
    let reply = client::get(east_http, GREETER, "/").await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    federation.shutdown().await;
    Ok(())
}
