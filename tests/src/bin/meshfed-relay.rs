//! The lossy UDP relay of the test-support crate as a process, for the benchmark
//! (`tests/bench/run`): a WAN link between two gateways on one machine.
//!
//! Usage: `meshfed-relay LISTEN SERVER DROP DELAY_MS [REORDER]`, for example
//! `meshfed-relay 127.0.5.1:15443 127.0.2.1:15443 0.01 10` for 1 % loss each way and a 20 ms
//! round trip. Runs until killed; prints what it did when it receives SIGTERM or SIGINT.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use meshfed_tests::relay::{Impairment, LossyRelay};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, server, drop, delay_ms, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: meshfed-relay LISTEN SERVER DROP DELAY_MS [REORDER]");
    };
    let impairment = Impairment {
        drop: drop.parse().context("DROP: a share such as 0.01")?,
        reorder: match rest.first() {
            Some(reorder) => reorder.parse().context("REORDER: a share such as 0.05")?,
            None => 0.0,
        },
        reorder_by: Duration::from_millis(2),
        delay: Duration::from_millis(delay_ms.parse().context("DELAY_MS: milliseconds")?),
    };
    let relay = LossyRelay::start_on(
        listen.parse().context("LISTEN: ip:port")?,
        server.parse().context("SERVER: ip:port")?,
        impairment,
        0x5eed,
    )
    .await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let stats = relay.stats();
    println!(
        "forwarded {} dropped {} reordered {}",
        stats.forwarded.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
        stats.reordered.load(Ordering::Relaxed)
    );
    Ok(())
}
