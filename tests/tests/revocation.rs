//! Trust removed while connections are up: a peer whose certificate no longer verifies against
//! the trust in force is cut off, in whichever direction the connection runs, within one
//! credential check (5 s), not left connected until the connection happens to close.

use std::time::{Duration, SystemTime};

use http::StatusCode;
use meshfed_tests::client;
use meshfed_tests::echo::Echo;
use meshfed_tests::{Cluster, Federation};
use meshfed_trust::Ca;
use meshfed_trust::verify::Rejection;

const GREETER: &str = "greeter.demo.svc.clusterset.local";

/// East calls west's greeter; then `cluster` stops trusting `peer` (its bundle file now holds a
/// root that did not sign the peer). Requests through east must stop succeeding.
async fn revoke(cluster: &str, peer: &str) -> anyhow::Result<()> {
    let upstream = Echo::start("greeter in west").await?;
    let east = Cluster::new("east")?;
    let west = Cluster::new("west")?.export("greeter.demo", upstream.addr(), &["east"]);
    let federation = Federation::start(vec![east, west]).await?;
    let east_http = federation.gateway("east").addrs().http;
    assert_eq!(
        client::get(east_http, GREETER, "/").await?.status,
        StatusCode::OK
    );

    let rogue = Ca::generate(format!("{peer}.test").parse()?, SystemTime::now())?;
    let bundle = federation.dir.path().join(format!("{cluster}/{peer}.pem"));
    std::fs::write(&bundle, rogue.root_pem())?;

    let cut_off = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let reply = client::get(east_http, GREETER, "/").await?;
            if reply.status != StatusCode::OK {
                return anyhow::Ok(reply);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("{cluster} kept its connection to {peer} after revoking it"))??;
    assert!(
        matches!(
            cut_off.reason(),
            Some("peer_unavailable" | "peer_stream_failed")
        ),
        "{}",
        cut_off.text()
    );
    let refused = federation
        .gateway(cluster)
        .stats()
        .peer_certificates_refused
        .count(Rejection::Chain);
    assert!(
        refused >= 1,
        "{cluster} should count {peer}'s certificate as refused"
    );
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dialling_side_drops_a_peer_it_no_longer_trusts() -> anyhow::Result<()> {
    revoke("east", "west").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accepting_side_drops_a_peer_it_no_longer_trusts() -> anyhow::Result<()> {
    revoke("west", "east").await
}
