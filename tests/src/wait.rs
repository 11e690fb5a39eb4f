//! Waiting: for a gateway to reach a state, with a limit, instead of sleeping a guessed time;
//! and for concurrent requests to finish.

use std::path::Path;
use std::time::Duration;

use meshfed_trust::{Bundle, TrustDomain};

/// Waits for `condition`, polling every 50 ms; fails naming `what` after `limit`.
pub async fn until(
    limit: Duration,
    what: &str,
    condition: impl Fn() -> bool,
) -> anyhow::Result<()> {
    tokio::time::timeout(limit, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("timed out after {limit:?} waiting for {what}"))
}

/// How many roots of `trust_domain` the bundle a gateway kept at `path` holds (0 if there is
/// none yet or it does not parse).
pub fn kept_roots(path: &Path, trust_domain: &TrustDomain) -> usize {
    std::fs::read(path)
        .ok()
        .and_then(|json| Bundle::from_jwks(trust_domain.clone(), &json).ok())
        .map_or(0, |bundle| bundle.authorities().len())
}

/// Runs `futures` concurrently, each on its own task, and returns their outputs in order. A
/// panic in one is raised here.
pub async fn join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(output) => outputs.push(output),
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    outputs
}
