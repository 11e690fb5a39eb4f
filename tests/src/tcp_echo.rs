//! A TCP upstream for tests: echoes every byte back, and when the client stops sending (FIN)
//! finishes echoing and closes its own side. A client that half-closes and then reads to the
//! end therefore sees half-close cross in both directions.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;

/// A running TCP echo server; it stops accepting when dropped.
#[derive(Debug)]
pub struct TcpEcho {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl TcpEcho {
    /// Starts a server on a free loopback port.
    pub async fn start() -> std::io::Result<TcpEcho> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut stream, _)) = accepted else {
                    continue;
                };
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.split();
                    if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
                        let _ = writer.shutdown().await;
                    }
                });
            }
        });
        Ok(TcpEcho { addr, stop })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
