//! The data plane's threads: one per core, each a single-threaded tokio runtime that serves the
//! connections placed on it from start to end.
//!
//! A request crosses several tasks (the client's connection, the QUIC connection's driver, the
//! HTTP/3 stream, the upstream connection). On tokio's multi-threaded runtime nearly every
//! hand-over between them woke the other worker thread, which took the task over: a futex
//! wake and a thread switch at almost every step. Here a connection, everything it spawns and
//! the QUIC connection it rides on live on one thread, so the hand-overs are plain function
//! calls on a warm cache. Accept loops and the control plane (admin, DNS, bundles, rotation,
//! the control channel) stay on the runtime that called [`crate::start`]; each accepted
//! connection goes to the worker carrying the fewest connections.
//! `docs/decisions/0003-data-plane.md` has the measurements.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::config::MAX_WORKERS;

thread_local! {
    /// The index of the worker this thread is, if it is one.
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The data plane's threads. Dropping this stops them; what still runs on them is cut.
#[derive(Debug)]
pub(crate) struct Workers {
    workers: Box<[Worker]>,
    /// Where the next placement starts looking, so that ties go round rather than to the first
    /// worker (which also receives for the federation port).
    next: AtomicUsize,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Worker {
    handle: Handle,
    /// Connections placed on this worker and not yet ended.
    carrying: Arc<AtomicUsize>,
}

impl Workers {
    /// `count` workers, or one per core the process may use (at most [`MAX_WORKERS`]),
    /// started.
    pub(crate) fn configured(count: Option<usize>) -> std::io::Result<Workers> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Workers::start(count.unwrap_or(cores).min(MAX_WORKERS))
    }

    /// `count` workers (at least one), started.
    pub(crate) fn start(count: usize) -> std::io::Result<Workers> {
        let stop = CancellationToken::new();
        let workers = (0..count.max(1))
            .map(|index| Worker::start(index, stop.clone()))
            .collect::<std::io::Result<_>>();
        match workers {
            Ok(workers) => Ok(Workers {
                workers,
                next: AtomicUsize::new(0),
                stop,
            }),
            Err(error) => {
                // Those already started end with this.
                stop.cancel();
                Err(error)
            }
        }
    }

    /// How many workers there are.
    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    /// Stops the workers: what still runs on them is cut.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// The worker this thread is, if it is one.
    pub(crate) fn current() -> Option<usize> {
        CURRENT.get()
    }

    /// Worker `index`'s runtime (modulo the worker count).
    pub(crate) fn handle(&self, index: usize) -> &Handle {
        &self.workers[index % self.workers.len()].handle
    }

    /// Runs a connection on the worker carrying the fewest: `setup` is called there and makes
    /// the connection's future, so that what must belong to that worker's runtime (a socket
    /// registered with its reactor, say) is made on it.
    pub(crate) fn place<S, F>(&self, setup: S)
    where
        S: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + 'static + Send,
    {
        // Not atomic with the count's increment: placements racing from several accept loops
        // may pick the same worker, an imbalance of one that the next placements even out.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(worker) = self
            .workers
            .iter()
            .cycle()
            .skip(start % self.workers.len().max(1))
            .take(self.workers.len())
            .min_by_key(|worker| worker.carrying.load(Ordering::Relaxed))
        else {
            return;
        };
        let carried = Carried::new(&worker.carrying);
        worker.handle.spawn(async move {
            let _carried = carried;
            setup().await;
        });
    }
}

impl Worker {
    /// Worker `index` on a thread of its own, running until `stop`. The runtime is made on
    /// that thread and never leaves it: a runtime dropped where the caller is (inside another
    /// runtime) would panic, and a failed thread start would drop it there.
    fn start(index: usize, stop: CancellationToken) -> std::io::Result<Worker> {
        let (started, handle) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("meshfed-worker-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = started.send(Err(error));
                        return;
                    }
                };
                let _ = started.send(Ok(runtime.handle().clone()));
                CURRENT.set(Some(index));
                runtime.block_on(stop.cancelled());
            })?;
        let handle = handle
            .recv()
            .map_err(|_| std::io::Error::other("a worker thread ended as it started"))??;
        Ok(Worker {
            handle,
            carrying: Arc::default(),
        })
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Counts a connection on its worker until dropped.
struct Carried(Arc<AtomicUsize>);

impl Carried {
    fn new(carrying: &Arc<AtomicUsize>) -> Carried {
        carrying.fetch_add(1, Ordering::Relaxed);
        Carried(carrying.clone())
    }
}

impl Drop for Carried {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::task::TaskTracker;

    #[tokio::test]
    async fn connections_spread_over_workers_and_run_there()
    -> Result<(), Box<dyn std::error::Error>> {
        let workers = Workers::start(2)?;
        let tracker = TaskTracker::new();
        let (ran_tx, mut ran_rx) = tokio::sync::mpsc::unbounded_channel();
        let hold = CancellationToken::new();
        for _ in 0..4 {
            let (ran_tx, hold, token) = (ran_tx.clone(), hold.clone(), tracker.token());
            workers.place(move || async move {
                let _token = token;
                let _ = ran_tx.send(Workers::current());
                hold.cancelled().await;
            });
        }
        let mut ran = Vec::new();
        for _ in 0..4 {
            ran.push(
                ran_rx
                    .recv()
                    .await
                    .ok_or("a placed connection did not run")?,
            );
        }
        ran.sort();
        // Each placed on the worker carrying the fewest: two each, in turn.
        assert_eq!(ran, [Some(0), Some(0), Some(1), Some(1)]);
        assert_eq!(Workers::current(), None);
        hold.cancel();
        tracker.close();
        tracker.wait().await;
        // A connection's count goes when its task ends, just after what it tracked.
        let carrying = || -> Vec<usize> {
            workers
                .workers
                .iter()
                .map(|w| w.carrying.load(Ordering::Relaxed))
                .collect()
        };
        for _ in 0..100 {
            if carrying() == [0, 0] {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            carrying(),
            [0, 0],
            "ended connections are no longer counted"
        );
        Ok(())
    }
}
