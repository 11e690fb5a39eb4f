//! A lossy UDP relay: a WAN link made in user space, since this kernel has no `tc netem`.
//!
//! It sits between clients and one server (a gateway's dialling sockets, one per worker, and
//! its peer's federation port) and, in both directions, drops datagrams, delays them, and
//! holds some back longer so that they arrive after later ones. Randomness comes from a seeded generator, so a run can be repeated.
//! TCP on the same port is passed through unimpaired: the federation port's control channel
//! (catalog exchange) goes to the same address as QUIC, and only the data plane is under test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// What the link does to each datagram.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    /// The share of datagrams dropped, 0.0 to 1.0.
    pub drop: f64,
    /// The share of datagrams held back by `reorder_by` on top of the delay.
    pub reorder: f64,
    /// How much longer a reordered datagram takes.
    pub reorder_by: Duration,
    /// One-way delay of every datagram (half the round trip the relay adds).
    pub delay: Duration,
}

/// Datagrams seen by the relay, both directions together.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Forwarded, reordered ones included.
    pub forwarded: AtomicU64,
    /// Dropped.
    pub dropped: AtomicU64,
    /// Held back to arrive out of order.
    pub reordered: AtomicU64,
}

/// A running relay; it stops when dropped.
#[derive(Debug)]
pub struct LossyRelay {
    addr: SocketAddr,
    stats: Arc<RelayStats>,
    stop: CancellationToken,
    freeze: tokio::sync::watch::Sender<bool>,
}

impl LossyRelay {
    /// Relays datagrams sent to [`LossyRelay::addr`] to `server`, and the server's answers back,
    /// impaired by `impairment`, with randomness from `seed`. As a NAT does, each client gets a
    /// socket of its own towards the server, so that answers go back to the client they are for.
    pub async fn start(
        server: SocketAddr,
        impairment: Impairment,
        seed: u64,
    ) -> std::io::Result<LossyRelay> {
        LossyRelay::start_on(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            server,
            impairment,
            seed,
        )
        .await
    }

    /// Like [`LossyRelay::start`], listening on `listen`.
    pub async fn start_on(
        listen: SocketAddr,
        server: SocketAddr,
        impairment: Impairment,
        seed: u64,
    ) -> std::io::Result<LossyRelay> {
        // UDP and TCP on one port number: with port 0, the port picked for UDP may be taken for
        // TCP; then pick again, a bounded number of times.
        let mut attempts = 0;
        let (front, tcp) = loop {
            let front = UdpSocket::bind(listen).await?;
            match tokio::net::TcpListener::bind(front.local_addr()?).await {
                Ok(tcp) => break (Arc::new(front), tcp),
                Err(error)
                    if listen.port() == 0
                        && error.kind() == std::io::ErrorKind::AddrInUse
                        && attempts < 16 =>
                {
                    attempts += 1;
                }
                Err(error) => return Err(error),
            }
        };
        let addr = front.local_addr()?;
        let stats = Arc::new(RelayStats::default());
        let stop = CancellationToken::new();
        let dice = Arc::new(std::sync::Mutex::new(Dice(seed | 1)));
        let (freeze, frozen) = tokio::sync::watch::channel(false);
        let link = Link {
            impairment,
            stats: stats.clone(),
            dice,
            frozen: frozen.clone(),
        };

        // Client to server, each client from a socket of its own.
        tokio::spawn({
            let (front, link, stop) = (front.clone(), link.clone(), stop.clone());
            async move {
                let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
                let mut buffer = vec![0u8; 65_536];
                loop {
                    let (len, from) = tokio::select! {
                        () = stop.cancelled() => return,
                        received = front.recv_from(&mut buffer) => match received {
                            Ok(received) => received,
                            Err(_) => continue,
                        },
                    };
                    let back = match clients.get(&from) {
                        Some(back) => back.clone(),
                        None if clients.len() < MAX_CLIENTS => {
                            let Ok(back) = towards(server).await else {
                                continue;
                            };
                            tokio::spawn(answers(
                                back.clone(),
                                (front.clone(), from),
                                link.clone(),
                                stop.clone(),
                            ));
                            clients.insert(from, back.clone());
                            back
                        }
                        None => continue,
                    };
                    let datagram = buffer[..len].to_vec();
                    link.carry(datagram, move |datagram| async move {
                        let _ = back.send(&datagram).await;
                    });
                }
            }
        });
        // TCP on the same port, unimpaired, for the control channel.
        tokio::spawn({
            let stop = stop.clone();
            async move {
                loop {
                    let (inbound, _) = tokio::select! {
                        () = stop.cancelled() => return,
                        accepted = tcp.accept() => match accepted {
                            Ok(accepted) => accepted,
                            Err(_) => continue,
                        },
                    };
                    let (stop, frozen) = (stop.clone(), frozen.clone());
                    tokio::spawn(async move {
                        let Ok(outbound) = tokio::net::TcpStream::connect(server).await else {
                            return;
                        };
                        let (in_read, in_write) = inbound.into_split();
                        let (out_read, out_write) = outbound.into_split();
                        tokio::select! {
                            () = stop.cancelled() => {}
                            () = pass(in_read, out_write, frozen.clone()) => {}
                            () = pass(out_read, in_write, frozen) => {}
                        }
                    });
                }
            }
        });
        Ok(LossyRelay {
            addr,
            stats,
            stop,
            freeze,
        })
    }

    /// Makes the link a black hole, both ways, or clears it again: while frozen, no datagram
    /// and no TCP byte crosses, yet no connection is closed, as when a peer's host vanishes.
    pub fn freeze(&self, frozen: bool) {
        self.freeze.send_replace(frozen);
    }

    /// Where clients send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the relay did so far.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The most clients a relay carries: a gateway dials from one socket per worker.
const MAX_CLIENTS: usize = 64;

/// A socket of a client's own towards `server`.
async fn towards(server: SocketAddr) -> std::io::Result<Arc<UdpSocket>> {
    let back = UdpSocket::bind("127.0.0.1:0").await?;
    back.connect(server).await?;
    Ok(Arc::new(back))
}

/// Carries the server's answers on `back` to the client `to`, through the relay's `front`.
async fn answers(
    back: Arc<UdpSocket>,
    (front, to): (Arc<UdpSocket>, SocketAddr),
    link: Link,
    stop: CancellationToken,
) {
    let mut buffer = vec![0u8; 65_536];
    loop {
        let len = tokio::select! {
            () = stop.cancelled() => return,
            received = back.recv(&mut buffer) => match received {
                Ok(len) => len,
                Err(_) => continue,
            },
        };
        let datagram = buffer[..len].to_vec();
        let front = front.clone();
        link.carry(datagram, move |datagram| async move {
            let _ = front.send_to(&datagram, to).await;
        });
    }
}

/// Copies bytes from `from` to `to`, holding them while the link is frozen.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(read) => read,
        };
        if frozen.wait_for(|frozen| !frozen).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

#[derive(Clone)]
struct Link {
    impairment: Impairment,
    stats: Arc<RelayStats>,
    dice: Arc<std::sync::Mutex<Dice>>,
    /// While set, nothing crosses: the link is a black hole.
    frozen: tokio::sync::watch::Receiver<bool>,
}

impl Link {
    /// Drops `datagram`, or sends it with `send` after the delay (and the reordering hold).
    fn carry<F, Fut>(&self, datagram: Vec<u8>, send: F)
    where
        F: FnOnce(Vec<u8>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        if *self.frozen.borrow() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (drop, reorder) = {
            let mut dice = self.dice.lock().unwrap_or_else(|e| e.into_inner());
            (
                dice.roll() < self.impairment.drop,
                dice.roll() < self.impairment.reorder,
            )
        };
        if drop {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut delay = self.impairment.delay;
        if reorder {
            self.stats.reordered.fetch_add(1, Ordering::Relaxed);
            delay += self.impairment.reorder_by;
        }
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            send(datagram).await;
        });
    }
}

/// xorshift64: a small seeded generator of uniform numbers in [0, 1).
struct Dice(u64);

impl Dice {
    fn roll(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}
