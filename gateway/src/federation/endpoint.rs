//! The gateway's QUIC endpoint and its transport settings.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};

/// Flow-control window of one stream: 80 Mbit/s per stream over a 100 ms path. Not more:
/// quinn-proto 0.11 keeps a stream's unread data in at most 2,048 pieces (one per packet) and
/// closes the whole connection past that (quinn issue #2809), which a window above about
/// 2 MB reaches on a fast, lossless link whenever the reader lags. A peer's aggregate rate
/// comes from many streams and several connections, each bounded by its connection window.
const STREAM_RECEIVE_WINDOW: u32 = 1024 * 1024;
/// Flow-control window of a whole connection. quinn's default is unbounded; a peer must not be
/// able to make us buffer without limit. A peer has several connections, at most
/// [`crate::state::MAX_INBOUND_PER_PEER`], so it can make us buffer that many windows.
const CONNECTION_RECEIVE_WINDOW: u32 = 16 * 1024 * 1024;
/// Concurrent requests and TCP tunnels a peer may have open on one connection. Tunnels are
/// long-lived (a database pool across clusters), so this is high; memory stays bounded by the
/// connection window, not by the stream count.
const MAX_CONCURRENT_STREAMS: u32 = 16_384;
/// The largest UDP payload sent or accepted: what fits a 1,500-byte Ethernet MTU through
/// common tunnels (IPv6 and a little encapsulation), on every path including loopback, where
/// 64 KB datagrams would make QUIC look faster than it is on a real network.
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1452;
/// QUIC's minimum, which every path carries; path MTU discovery raises it to
/// [`MAX_UDP_PAYLOAD`] where the path allows.
const INITIAL_MTU: u16 = 1200;
/// A connection with no traffic for this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Keep-alives keep an idle connection (and NAT bindings) open well inside the idle timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The endpoint could not be created.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The TLS configuration cannot do QUIC (it lacks TLS 1.3 or its initial cipher suite).
    #[error("TLS configuration is unusable for QUIC: {0}")]
    Tls(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// A transport setting was refused by quinn.
    #[error("quinn refused the endpoint setting {0}")]
    Config(&'static str),
    /// The socket could not be used.
    #[error("cannot use the federation socket: {0}")]
    Io(#[from] std::io::Error),
}

/// A quinn endpoint on `socket` that accepts peers with `server`. Its driver (and so the
/// receiving for every connection on it) runs on the runtime this is called in.
pub(crate) fn endpoint(
    socket: std::net::UdpSocket,
    server: quinn::ServerConfig,
) -> Result<quinn::Endpoint, EndpointError> {
    new(socket, Some(server))
}

/// A quinn endpoint on a port of its own at `ip`, for dialling peers only. Its driver runs on
/// the runtime this is called in: one per worker, so that a worker's connections to peers
/// receive on that worker.
pub(crate) fn dialer(ip: std::net::IpAddr) -> Result<quinn::Endpoint, EndpointError> {
    new(
        crate::bind::udp(std::net::SocketAddr::new(ip, 0), false)?,
        None,
    )
}

fn new(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, EndpointError> {
    let runtime = Arc::new(Batching(quinn::TokioRuntime));
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|_| EndpointError::Config("max_udp_payload_size"))?;
    Ok(quinn::Endpoint::new(config, server, socket, runtime)?)
}

/// quinn's tokio runtime, except that its drivers (the endpoint's and each connection's) run
/// after the tasks already waiting to run, not before them.
///
/// A request task that writes to a stream wakes its connection's driver. On tokio's
/// multi-threaded runtime the woken task runs next (its LIFO slot); on a worker's
/// single-threaded runtime it is queued behind the tasks already waiting, but ahead of those
/// they wake in turn. Either way the driver would send a request or two in a packet (and a
/// `sendmsg`) of its own while the next requests wait behind it. Deferred once more when its
/// turn comes, it runs after them and sends them together: several requests per packet, and
/// several packets per `sendmsg` (GSO). An idle runtime runs it at once, so a lone request
/// waits for nothing.
#[derive(Debug)]
struct Batching(quinn::TokioRuntime);

impl quinn::Runtime for Batching {
    fn new_timer(&self, at: std::time::Instant) -> Pin<Box<dyn quinn::AsyncTimer>> {
        self.0.new_timer(at)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        tokio::spawn(Deferred {
            future,
            yielded: false,
        });
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        self.0.wrap_udp_socket(socket)
    }

    fn now(&self) -> std::time::Instant {
        self.0.now()
    }
}

/// A future that, each time it is woken, first goes to the back of the run queue: waking
/// itself while polled makes tokio reschedule it as a yield, behind the tasks already queued.
struct Deferred {
    future: Pin<Box<dyn Future<Output = ()> + Send>>,
    yielded: bool,
}

impl Future for Deferred {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.yielded = false;
        self.future.as_mut().poll(cx)
    }
}

/// A server configuration for accepting peers.
///
/// Every configuration built in this process shares one handshake-token key. The server config
/// is rebuilt at every credential rotation, and a client that was sent a Retry just before a
/// rebuild answers with a token the new config must still accept: with a fresh key per config
/// (quinn's `with_crypto`) it is refused with `INVALID_TOKEN` and its request fails, mid-rotation.
pub(crate) fn server_config(
    server_tls: rustls::ServerConfig,
) -> Result<quinn::ServerConfig, EndpointError> {
    let mut config = quinn::ServerConfig::new(
        Arc::new(QuicServerConfig::try_from(server_tls)?),
        token_key()?,
    );
    config.transport_config(transport());
    Ok(config)
}

/// This process's key for Retry tokens: random, made once, never written anywhere. A restart
/// makes a new one, which only costs a client in the middle of a handshake one more round trip.
fn token_key() -> Result<Arc<dyn quinn::crypto::HandshakeTokenKey>, EndpointError> {
    static KEY: OnceLock<Arc<ring::hkdf::Prk>> = OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key.clone());
    }
    let mut secret = [0u8; 64];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| EndpointError::Config("token key: the system random source failed"))?;
    let key = Arc::new(ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&secret));
    Ok(KEY.get_or_init(|| key).clone())
}

/// A client configuration for dialling one peer.
pub(crate) fn client_config(
    client_tls: rustls::ClientConfig,
) -> Result<quinn::ClientConfig, EndpointError> {
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls)?));
    config.transport_config(transport());
    Ok(config)
}

fn transport() -> Arc<TransportConfig> {
    let mut mtu_discovery = MtuDiscoveryConfig::default();
    mtu_discovery.upper_bound(MAX_UDP_PAYLOAD);
    let mut transport = TransportConfig::default();
    transport
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW))
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_CONCURRENT_STREAMS))
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
            IDLE_TIMEOUT.as_millis() as u32,
        ))))
        .keep_alive_interval(Some(KEEP_ALIVE))
        // Room for a few tail-loss probes, never read (`probe.rs`); quinn's default would
        // let a peer park 1.25 MB of datagrams on every connection.
        .datagram_receive_buffer_size(Some(super::probe::DATAGRAM_RECEIVE_BUFFER))
        .initial_mtu(INITIAL_MTU)
        .mtu_discovery_config(Some(mtu_discovery))
        // BBR, not quinn's default Cubic: a loss-based controller halves its window at each
        // lost packet, and on a WAN link with 1-3 % random loss (not congestion) it crawls.
        // tests/tests/lossy_link.rs runs ten times faster with BBR at 3 % loss and 20 ms RTT.
        .congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    Arc::new(transport)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use meshfed_trust::verify::Rejections;
    use meshfed_trust::{Ca, SpiffeId, TrustStore};

    use super::super::tls;
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// A client sent a Retry under one server config answers it after the config was rebuilt
    /// (a credential rotation): the handshake must go through, not end in `INVALID_TOKEN`.
    #[tokio::test]
    async fn a_retry_token_outlives_a_rebuilt_server_config() {
        let ca = Ca::generate("east.test".parse().expect("td"), SystemTime::now()).expect("CA");
        let id = |name: &str| {
            SpiffeId::new(ca.trust_domain().clone(), ["meshfed", "gateway", name]).expect("id")
        };
        let server_svid = ca
            .issue(&id("east"), SystemTime::now(), HOUR)
            .expect("svid");
        let client_svid = ca
            .issue(&id("west"), SystemTime::now(), HOUR)
            .expect("svid");
        let trust = Arc::new(
            TrustStore::new()
                .with_roots(ca.trust_domain().clone(), std::slice::from_ref(ca.root()))
                .expect("roots"),
        );
        let rejections = Arc::new(Rejections::default());
        let server_config = || tls::server(&server_svid, &trust, &rejections).expect("server");

        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let server = endpoint(socket, server_config()).expect("endpoint");
        let addr = server.local_addr().expect("addr");
        let rebuilt = server_config();
        let accepting = tokio::spawn({
            let server = server.clone();
            async move {
                let first = server.accept().await.expect("an attempt");
                assert!(!first.remote_address_validated());
                // The rotation lands between the Retry's making and the client's answer.
                server.set_server_config(Some(rebuilt));
                first.retry().expect("retry");
                let second = server.accept().await.expect("the attempt again");
                assert!(second.remote_address_validated());
                second.await
            }
        });

        let client_config =
            tls::client(&client_svid, &trust, &id("east"), &rejections).expect("client config");
        let client = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client");
        let connecting = client
            .connect_with(client_config, addr, ca.trust_domain().as_str())
            .expect("connect");
        let connected = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .expect("the handshake ends");
        connected.expect("the client's handshake");
        let accepted = tokio::time::timeout(Duration::from_secs(10), accepting)
            .await
            .expect("the server side ends")
            .expect("no panic");
        accepted.expect("the server's handshake");
    }
}
