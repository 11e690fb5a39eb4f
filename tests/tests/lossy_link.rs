//! A lossy WAN link between two gateways, made by the relay in the test-support crate: 20 ms
//! round trip, 3 % of datagrams dropped and 10 % reordered in each direction. Every request
//! must succeed with its body intact.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use meshfed_tests::client;
use meshfed_tests::echo::Echo;
use meshfed_tests::pattern::pattern;
use meshfed_tests::relay::{Impairment, LossyRelay};
use meshfed_tests::wait::join_all;
use meshfed_tests::{Cluster, Federation};

const GREETER: &str = "greeter.demo.svc.clusterset.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_crosses_a_lossy_reordering_link_intact() -> anyhow::Result<()> {
    let upstream = Echo::start("greeter in west").await?;
    let west = Cluster::new("west")?.export("greeter.demo", upstream.addr(), &["east"]);
    let relay = LossyRelay::start(
        west.addrs().federation,
        Impairment {
            drop: 0.03,
            reorder: 0.10,
            reorder_by: Duration::from_millis(4),
            delay: Duration::from_millis(10),
        },
        0x5eed,
    )
    .await?;
    let federation = Federation::builder(vec![Cluster::new("east")?, west])
        .peer_address("east", "west", relay.addr())
        .start()
        .await?;
    let east = federation.gateway("east").addrs().http;
    let started = std::time::Instant::now();

    // Bodies from nothing to 256 KiB, eight requests at a time.
    let sizes: Vec<usize> = (0..64)
        .map(|i| match i % 8 {
            0 => 0,
            1 => 1,
            2 => 1_000,
            3 => 4 * 1024,
            4 => 16 * 1024,
            5 => 64 * 1024,
            6 => 128 * 1024,
            _ => 256 * 1024,
        })
        .collect();
    for batch in sizes.chunks(8) {
        let requests = batch.iter().map(|&size| async move {
            let body = Bytes::from(pattern(size));
            let reply =
                client::send(east, Method::POST, GREETER, "/echo", &[], body.clone()).await?;
            anyhow::ensure!(
                reply.status == StatusCode::OK,
                "{size} bytes: {}",
                reply.status
            );
            anyhow::ensure!(reply.body == body, "{size} bytes: the echoed body differs");
            anyhow::Ok(())
        });
        let outcomes = tokio::time::timeout(Duration::from_secs(60), join_all(requests)).await?;
        for outcome in outcomes {
            outcome?;
        }
    }
    eprintln!("took {:?}", started.elapsed());
    let stats = relay.stats();
    let (dropped, reordered) = (
        stats.dropped.load(Ordering::Relaxed),
        stats.reordered.load(Ordering::Relaxed),
    );
    assert!(
        dropped > 100 && reordered > 100,
        "the link was not lossy: {stats:?}"
    );
    federation.shutdown().await;
    Ok(())
}
