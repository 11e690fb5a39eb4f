//! Opaque TCP: connecting to a service's TCP endpoints, and carrying a connection's bytes over
//! an HTTP/3 `CONNECT` stream in both directions.
//!
//! Half-close crosses intact: when one side stops sending (TCP FIN), the stream is finished in
//! that direction only (QUIC FIN), and the far side shuts down writing on its TCP connection.
//! The other direction carries on until it ends too. An error in either direction resets the
//! stream and closes the TCP connection, so a truncated transfer never looks complete.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h3::error::Code;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use super::body::{H3Recv, H3Send, recv_data};
use crate::reason::Reason;

/// Bytes read from a TCP connection at a time: one read fills several QUIC packets.
const READ_CHUNK: usize = 64 * 1024;
/// At most this many bytes already received on a stream are taken before writing them to TCP.
/// Data arrives a QUIC packet (about 1,400 bytes) at a time; writing each alone would cost a
/// system call per packet. They go in vectored writes of up to 64 chunks (tokio's limit), about
/// 90 KB each.
const WRITE_BATCH: usize = 256 * 1024;

/// Bytes carried each way by a finished tunnel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Carried {
    /// From the TCP connection into the stream.
    pub(crate) sent: u64,
    /// From the stream into the TCP connection.
    pub(crate) received: u64,
}

/// Connects to the first of `endpoints` (in the balancer's order), moving on while one
/// refuses: no byte has been sent, so that is always safe.
pub(crate) async fn connect(endpoints: &[SocketAddr]) -> Result<TcpStream, Reason> {
    for &endpoint in endpoints {
        match super::upstream::connect(endpoint).await {
            Ok(stream) => return Ok(stream),
            Err(error) => tracing::debug!(%endpoint, %error, "TCP endpoint unavailable"),
        }
    }
    Err(Reason::UpstreamUnavailable)
}

/// Carries bytes between `tcp` and an HTTP/3 stream until both directions have ended. If
/// either direction fails, the other is abandoned and the TCP connection is reset.
pub(crate) async fn splice(
    mut tcp: TcpStream,
    send: impl H3Send,
    recv: impl H3Recv,
) -> io::Result<Carried> {
    let (reader, writer) = tcp.split();
    let carried = tokio::try_join!(tcp_to_stream(reader, send), stream_to_tcp(recv, writer));
    match carried {
        Ok((sent, received)) => Ok(Carried { sent, received }),
        Err(error) => {
            // A reset, not a FIN: the TCP peer must not take a cut transfer for a whole one.
            let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
            Err(error)
        }
    }
}

async fn tcp_to_stream(mut tcp: ReadHalf<'_>, mut stream: impl H3Send) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        // Wait for bytes (or the end) before taking a buffer: an idle tunnel must not hold
        // 64 KiB, or 10,000 open tunnels would cost over a gigabyte.
        if let Err(error) = tcp.peek(&mut [0u8; 1]).await {
            stream.stop_stream(Code::H3_REQUEST_CANCELLED);
            return Err(error);
        }
        let mut buffer = BytesMut::with_capacity(READ_CHUNK);
        let read = match tcp.read_buf(&mut buffer).await {
            Ok(read) => read,
            Err(error) => {
                stream.stop_stream(Code::H3_REQUEST_CANCELLED);
                return Err(error);
            }
        };
        if read == 0 {
            stream.finish().await.map_err(io::Error::other)?;
            return Ok(total);
        }
        total += read as u64;
        stream
            .send_data(buffer.freeze())
            .await
            .map_err(io::Error::other)?;
    }
}

async fn stream_to_tcp(mut stream: impl H3Recv, mut tcp: WriteHalf<'_>) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let Some(data) = recv_data(&mut stream).await.map_err(io::Error::other)? else {
            tcp.shutdown().await?;
            return Ok(total);
        };
        // Made afresh for each batch and dropped after its write: an idle tunnel holds no
        // buffer.
        let mut batch = Chunks::default();
        batch.push(data);
        // Whatever else has already arrived goes in the same write, without waiting for more.
        let mut ended = false;
        while batch.remaining() < WRITE_BATCH {
            match std::future::poll_fn(|cx| Poll::Ready(stream.poll_recv_data(cx))).await {
                Poll::Ready(Ok(Some(data))) => batch.push(data),
                Poll::Ready(Ok(None)) => {
                    ended = true;
                    break;
                }
                Poll::Ready(Err(error)) => return Err(io::Error::other(error)),
                Poll::Pending => break,
            }
        }
        total += batch.remaining() as u64;
        // On a failed write the stream is dropped with the error, and quinn stops it.
        tcp.write_all_buf(&mut batch).await?;
        if ended {
            tcp.shutdown().await?;
            return Ok(total);
        }
    }
}

/// Chunks received from a stream, written to TCP together (vectored).
#[derive(Default)]
struct Chunks {
    chunks: VecDeque<Bytes>,
    /// The bytes in `chunks`.
    len: usize,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }
}

impl Buf for Chunks {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |chunk| chunk)
    }

    fn chunks_vectored<'a>(&'a self, slices: &mut [io::IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slice, chunk) in slices.iter_mut().zip(&self.chunks) {
            *slice = io::IoSlice::new(chunk);
            filled += 1;
        }
        filled
    }

    fn advance(&mut self, count: usize) {
        let mut left = count.min(self.len);
        self.len -= left;
        while left > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if left < front.len() {
                front.advance(left);
                return;
            }
            left -= front.len();
            self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, Bytes};

    use super::Chunks;

    #[test]
    fn chunks_advance_across_and_within_chunks() {
        let mut chunks = Chunks::default();
        for part in ["abc", "", "defg", "h"] {
            chunks.push(Bytes::from(part));
        }
        assert_eq!(chunks.remaining(), 8);
        let mut slices = [std::io::IoSlice::new(&[]); 8];
        assert_eq!(
            chunks.chunks_vectored(&mut slices),
            3,
            "the empty chunk is not kept"
        );
        chunks.advance(4);
        assert_eq!((chunks.remaining(), chunks.chunk()), (4, &b"efg"[..]));
        assert_eq!(chunks.copy_to_bytes(4), Bytes::from("efgh"));
        assert_eq!(chunks.remaining(), 0);
        chunks.advance(1);
        assert_eq!(chunks.chunk(), b"");
    }
}
