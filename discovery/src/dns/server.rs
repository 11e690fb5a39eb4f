//! The DNS server's sockets: a UDP socket per core, and a TCP listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::message::{self, Rcode, Transport};
use super::zone::ZoneSet;

/// How long a TCP client may stay idle, between or within queries, before it is dropped.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connections served at once; more are closed as soon as they are accepted.
const TCP_CONNECTIONS: usize = 256;
/// Room for any UDP query: EDNS clients may send up to 65,535 bytes, but a query with one
/// question and one OPT record cannot usefully be longer than this.
const UDP_QUERY_BUFFER: usize = 4096;

/// Queries answered, by response code, for the gateway's metrics.
#[derive(Debug, Default)]
pub struct DnsStats {
    /// Per response code, in the order of [`DnsStats::RCODES`].
    answered: [AtomicU64; 6],
}

impl DnsStats {
    /// The response codes the server gives, by their names in RFC 6895.
    pub const RCODES: [&'static str; 6] = [
        "NOERROR", "FORMERR", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS",
    ];

    /// Each response code's name and how many answers had it.
    pub fn answered(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Self::RCODES
            .iter()
            .zip(&self.answered)
            .map(|(name, count)| (*name, count.load(Ordering::Relaxed)))
    }

    fn count(&self, rcode: Rcode) {
        let index = match rcode {
            Rcode::NoError => 0,
            Rcode::FormErr => 1,
            Rcode::NxDomain => 2,
            Rcode::NotImp => 3,
            Rcode::Refused => 4,
            Rcode::BadVers => 5,
        };
        self.answered[index].fetch_add(1, Ordering::Relaxed);
    }
}

/// A running DNS server.
#[derive(Debug)]
pub struct DnsServer {
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Serves the snapshot published on `zones` (and each one published after it) on every
    /// UDP socket given, which should all be bound to the same address with `SO_REUSEPORT` so
    /// that the kernel spreads queries over them, and on `tcp`.
    /// Each answer is counted in `stats`.
    pub fn serve(
        udp: Vec<UdpSocket>,
        tcp: TcpListener,
        zones: watch::Receiver<Arc<ZoneSet>>,
        stats: Arc<DnsStats>,
    ) -> Self {
        let mut tasks: Vec<JoinHandle<()>> = udp
            .into_iter()
            .map(|socket| tokio::spawn(serve_udp(socket, zones.clone(), stats.clone())))
            .collect();
        tasks.push(tokio::spawn(serve_tcp(tcp, zones, stats)));
        DnsServer { tasks }
    }

    /// Stops answering, on every socket and connection.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn serve_udp(
    socket: UdpSocket,
    mut zones: watch::Receiver<Arc<ZoneSet>>,
    stats: Arc<DnsStats>,
) {
    let mut query = vec![0u8; UDP_QUERY_BUFFER];
    let mut response = Vec::with_capacity(usize::from(message::MAX_UDP_PAYLOAD));
    let mut current = zones.borrow_and_update().clone();
    loop {
        let (length, from) = match socket.recv_from(&mut query).await {
            Ok(received) => received,
            Err(error) => {
                tracing::debug!(%error, "dns: receive failed");
                continue;
            }
        };
        // A version check on an atomic; the snapshot is cloned only when it changed.
        if zones.has_changed().unwrap_or(false) {
            current = zones.borrow_and_update().clone();
        }
        let Some(rcode) =
            message::respond(&current, &query[..length], Transport::Udp, &mut response)
        else {
            continue;
        };
        tracing::trace!(%from, ?rcode, "dns query");
        stats.count(rcode);
        if let Err(error) = socket.send_to(&response, from).await {
            tracing::debug!(%error, %from, "dns: send failed");
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    zones: watch::Receiver<Arc<ZoneSet>>,
    stats: Arc<DnsStats>,
) {
    let limit = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    // Owned here, so that aborting this task aborts every connection too.
    let mut connections = JoinSet::new();
    loop {
        let accepted = listener.accept().await;
        while connections.try_join_next().is_some() {}
        let (stream, from) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: back off rather than spin.
                tracing::warn!(%error, "dns: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::debug!(%from, "dns: too many TCP connections; closing a new one");
            continue;
        };
        let zones = zones.clone();
        let stats = stats.clone();
        connections.spawn(async move {
            if let Err(error) = serve_connection(stream, from, zones, &stats).await {
                tracing::debug!(%error, %from, "dns: TCP connection ended");
            }
            drop(permit);
        });
    }
}

/// Answers length-prefixed queries (RFC 1035 §4.2.2) in order until the client closes, idles
/// out, or sends something that is not worth an answer.
async fn serve_connection(
    mut stream: TcpStream,
    from: SocketAddr,
    zones: watch::Receiver<Arc<ZoneSet>>,
    stats: &DnsStats,
) -> std::io::Result<()> {
    let mut query = Vec::new();
    let mut response = Vec::new();
    loop {
        let mut length = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut length)).await {
            Err(_) => return Ok(()),
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(result) => result?,
        };
        query.resize(usize::from(u16::from_be_bytes(length)), 0);
        tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut query))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        let zones = zones.borrow().clone();
        let Some(rcode) = message::respond(&zones, &query, Transport::Tcp, &mut response) else {
            return Ok(());
        };
        tracing::trace!(%from, ?rcode, "dns query over tcp");
        stats.count(rcode);
        // Responses are bounded to 65,535 bytes by `respond`.
        let length = u16::try_from(response.len()).unwrap_or(u16::MAX);
        let mut framed = Vec::with_capacity(2 + response.len());
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(&response);
        stream.write_all(&framed).await?;
    }
}
