//! Tail-loss probes: one small packet after the last of a burst, so that the burst's loss
//! shows in the peer's next acknowledgement instead of after a probe timeout.
//!
//! A sender learns that a packet was lost when a later one is acknowledged. When the lost
//! packet is the last of a burst (a request, a response, the last chunk of a stream) nothing
//! follows it, and quinn waits for its probe timeout: a round trip, four times the RTT
//! variance and the peer's 25 ms ACK delay. Its probe then carries no data, only a request for
//! an ACK, so the loss is known a round trip after that and repaired half a round trip later.
//! On the lossy-link benchmark (20 ms round trip, 1 % loss each way) that put a request that
//! lost a packet at 3.5 to 5 round trips, and the p99 at the three-round-trip target.
//!
//! So each gateway connection sends, once it has gone quiet for a quarter of a round trip
//! after writing data, one QUIC DATAGRAM frame (RFC 9221) holding the byte `0x00`. It is
//! ack-eliciting: if the packet before it was lost, the peer sees the gap and acknowledges at
//! once, and quinn declares the loss and resends about one round trip after the original,
//! as Linux's TCP tail-loss probe does. A connection that keeps writing sends none. The peer
//! discards the datagram unread (its receive buffer is [`DATAGRAM_RECEIVE_BUFFER`] and the
//! oldest are dropped), and a peer that did not advertise DATAGRAM support gets none.
//! `docs/protocol.md` describes it for other implementations.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use h3::error::{Code, StreamError};
use http::HeaderMap;

use crate::proxy::body::H3Send;

/// How much of the peer's DATAGRAM frames a connection keeps unread (then drops the oldest):
/// enough for a few probes, which are never read. Also the largest DATAGRAM frame it accepts.
pub(crate) const DATAGRAM_RECEIVE_BUFFER: usize = 1024;
/// The probe's payload: an HTTP/3 datagram parser reads it as quarter stream ID 0 with nothing
/// in it, and an HTTP/3 peer that did not negotiate datagrams drops it.
const PROBE: Bytes = Bytes::from_static(&[0]);
/// The shortest quiet before a probe: tokio's timers have a millisecond's resolution, and on a
/// short path (loopback, a LAN) the probe timeout is the peer's 25 ms ACK delay anyway.
const QUIET_MIN: Duration = Duration::from_millis(2);

/// The tail-loss probe of one QUIC connection: [`TailProbe::sent`] after each write,
/// [`TailProbe::run`] beside the connection's driver.
#[derive(Clone, Debug, Default)]
pub(crate) struct TailProbe(Arc<Writes>);

#[derive(Debug, Default)]
struct Writes {
    /// Writes so far: the prober compares it before and after its wait to see quiet.
    count: AtomicU64,
    /// Wakes the prober once writes resume after it went to sleep.
    resumed: tokio::sync::Notify,
}

impl TailProbe {
    /// Data (or a stream's end) was just written on the connection.
    pub(crate) fn sent(&self) {
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0.resumed.notify_one();
    }

    /// Probes `connection` after each burst of writes, for as long as it is polled: run it
    /// beside the task that holds the connection, and drop it with that.
    pub(crate) async fn run(&self, connection: &quinn::Connection) {
        let mut probed = 0;
        loop {
            let seen = self.0.count.load(Ordering::Relaxed);
            if seen == probed {
                // Nothing written since the last probe: sleep until something is.
                self.0.resumed.notified().await;
                continue;
            }
            tokio::time::sleep((connection.rtt() / 4).max(QUIET_MIN)).await;
            if self.0.count.load(Ordering::Relaxed) != seen {
                continue; // Still writing: the burst's last packet is yet to come.
            }
            probed = seen;
            // Refused when the peer takes no datagrams or the connection is closing; either
            // way there is nothing to probe.
            let _ = connection.send_datagram(PROBE);
        }
    }
}

/// A sending half that tells its connection's [`TailProbe`] of each write.
pub(crate) struct Probed<S> {
    stream: S,
    probe: TailProbe,
}

impl<S> Probed<S> {
    pub(crate) fn new(stream: S, probe: TailProbe) -> Self {
        Probed { stream, probe }
    }
}

impl<S: H3Send> H3Send for Probed<S> {
    async fn send_data(&mut self, data: Bytes) -> Result<(), StreamError> {
        let sent = self.stream.send_data(data).await;
        self.probe.sent();
        sent
    }

    async fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), StreamError> {
        let sent = self.stream.send_trailers(trailers).await;
        self.probe.sent();
        sent
    }

    async fn finish(&mut self) -> Result<(), StreamError> {
        let finished = self.stream.finish().await;
        self.probe.sent();
        finished
    }

    fn stop_stream(&mut self, code: Code) {
        self.stream.stop_stream(code);
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use meshfed_trust::verify::Rejections;
    use meshfed_trust::{Ca, SpiffeId, TrustStore};

    use super::super::{endpoint, tls};
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const PATIENCE: Duration = Duration::from_secs(10);

    /// A connection between two gateways' endpoints, as configured for peers (the client
    /// taking no datagrams unless `client_datagrams`): the client's end, then the server's.
    async fn connected(client_datagrams: bool) -> (quinn::Connection, quinn::Connection) {
        let ca = Ca::generate("east.test".parse().expect("td"), SystemTime::now()).expect("CA");
        let id = |name: &str| {
            SpiffeId::new(ca.trust_domain().clone(), ["meshfed", "gateway", name]).expect("id")
        };
        let svid = |name: &str| ca.issue(&id(name), SystemTime::now(), HOUR).expect("svid");
        let trust = Arc::new(
            TrustStore::new()
                .with_roots(ca.trust_domain().clone(), std::slice::from_ref(ca.root()))
                .expect("roots"),
        );
        let rejections = Arc::new(Rejections::default());
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let server_config = tls::server(&svid("east"), &trust, &rejections).expect("server");
        let server = endpoint::endpoint(socket, server_config).expect("endpoint");
        let addr = server.local_addr().expect("addr");
        let mut client_config =
            tls::client(&svid("west"), &trust, &id("east"), &rejections).expect("client");
        if !client_datagrams {
            let mut transport = quinn::TransportConfig::default();
            transport.datagram_receive_buffer_size(None);
            client_config.transport_config(Arc::new(transport));
        }
        let client = endpoint::dialer("127.0.0.1".parse().expect("ip")).expect("dialer");
        let connecting = client
            .connect_with(client_config, addr, ca.trust_domain().as_str())
            .expect("connect");
        let accepted = async { server.accept().await.expect("an attempt").await };
        let (client, server) =
            tokio::time::timeout(PATIENCE, async { tokio::join!(connecting, accepted) })
                .await
                .expect("the handshakes end");
        (client.expect("client side"), server.expect("server side"))
    }

    /// After a write, the connection goes quiet and sends one probe, which the peer reads as
    /// a datagram holding `0x00`; with no write after it, it sends no other.
    #[tokio::test]
    async fn a_quiet_connection_is_probed_once_after_each_burst() {
        let (client, server) = connected(true).await;
        let probe = TailProbe::default();
        let prober = tokio::spawn({
            let (probe, server) = (probe.clone(), server.clone());
            async move { probe.run(&server).await }
        });
        let probes = || server.stats().frame_tx.datagram;

        // Nothing written yet: nothing to probe.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(probes(), 0);

        for burst in 1..=2 {
            probe.sent();
            probe.sent();
            let datagram = tokio::time::timeout(PATIENCE, client.read_datagram())
                .await
                .expect("a probe comes")
                .expect("the connection is open");
            assert_eq!(&datagram[..], &[0]);
            // Many quiet periods later, still the one probe for this burst.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(probes(), burst);
        }
        prober.abort();
    }

    /// A peer that takes no datagrams (an HTTP/3 client that is not a gateway) gets no probe:
    /// quinn refuses to send it, and the prober must take the refusal and carry on.
    #[tokio::test]
    async fn a_peer_without_datagrams_is_not_probed() {
        // The client's end stays open to the end of the test.
        let (_client, server) = connected(false).await;
        assert_eq!(server.max_datagram_size(), None);
        let probe = TailProbe::default();
        let prober = tokio::spawn({
            let (probe, server) = (probe.clone(), server.clone());
            async move { probe.run(&server).await }
        });
        for _ in 0..2 {
            probe.sent();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(server.stats().frame_tx.datagram, 0);
        assert!(!prober.is_finished());
        prober.abort();
    }
}
