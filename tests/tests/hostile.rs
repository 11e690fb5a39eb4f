//! Hostile clients on the local listener, as raw bytes on a socket: each is refused or cut off
//! within its limit, and a well-behaved client on the same gateway is served meanwhile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use meshfed_tests::client;
use meshfed_tests::echo::Echo;
use meshfed_tests::{Cluster, Federation};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const GREETER: &str = "greeter.demo.svc.clusterset.local";

async fn east_west() -> anyhow::Result<(Federation, Echo)> {
    let upstream = Echo::start("greeter in west").await?;
    let west = Cluster::new("west")?.export("greeter.demo", upstream.addr(), &["east"]);
    let federation = Federation::start(vec![Cluster::new("east")?, west]).await?;
    Ok((federation, upstream))
}

/// What came back for raw bytes: the text, and whether the gateway closed the connection.
struct Exchanged {
    text: String,
    closed: bool,
}

/// Sends `bytes` and reads what comes back until the gateway closes (or 5 s pass).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> anyhow::Result<Exchanged> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    Ok(Exchanged {
        text: String::from_utf8_lossy(&reply).into_owned(),
        closed: read.is_ok(),
    })
}

/// A well-behaved request through the same gateway still succeeds.
async fn still_served(addr: SocketAddr) -> anyhow::Result<()> {
    let reply = client::get(addr, GREETER, "/").await?;
    anyhow::ensure!(reply.status == StatusCode::OK, "{}", reply.text());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http1_requests_are_refused() -> anyhow::Result<()> {
    let (federation, _upstream) = east_west().await?;
    let east = federation.gateway("east").addrs().http;
    let big = "x".repeat(20 * 1024);
    let huge = "x".repeat(70 * 1024);
    // Each asks for the connection to close after its answer, so that the exchange ends.
    let close = "Connection: close\r\n";
    let cases: [(&str, String, &str); 5] = [
        (
            "a header section larger than a peer accepts",
            format!("GET / HTTP/1.1\r\nHost: {GREETER}\r\n{close}X-Big: {big}\r\n\r\n"),
            "HTTP/1.1 431",
        ),
        (
            "a head larger than the listener reads",
            format!("GET / HTTP/1.1\r\nHost: {GREETER}\r\n{close}X-Huge: {huge}\r\n\r\n"),
            "HTTP/1.1 431",
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST / HTTP/1.1\r\nHost: {GREETER}\r\n{close}Content-Length: 5\r\n\
                 Content-Length: 6\r\n\r\nhello"
            ),
            "HTTP/1.1 400",
        ),
        (
            "a NUL in a header value",
            format!("GET / HTTP/1.1\r\nHost: {GREETER}\r\n{close}X-Evil: a\0b\r\n\r\n"),
            "HTTP/1.1 400",
        ),
        (
            "a bare CR in a header value",
            format!("GET / HTTP/1.1\r\nHost: {GREETER}\r\n{close}X-Evil: a\rInjected: b\r\n\r\n"),
            "HTTP/1.1 400",
        ),
    ];
    for (what, request, want) in cases {
        let reply = exchange(east, request.as_bytes()).await?;
        assert!(
            reply.text.starts_with(want),
            "{what}: wanted {want}, got {:?}",
            reply.text.lines().next()
        );
        assert!(reply.closed, "{what}: the connection stayed open");
        still_served(east).await?;
    }
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_request() -> anyhow::Result<()> {
    // RFC 9112 section 6.3: Transfer-Encoding wins, Content-Length is dropped, and the
    // connection closes after the answer. A second request hidden behind the chunked body
    // (which a Content-Length reader would take for body bytes) is never served.
    let (federation, _upstream) = east_west().await?;
    let east = federation.gateway("east").addrs().http;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {GREETER}\r\nContent-Length: 60\r\n\
         Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
         GET /smuggled HTTP/1.1\r\nHost: {GREETER}\r\n\r\n"
    );
    let reply = exchange(east, request.as_bytes()).await?;
    assert!(reply.closed, "the connection stayed open");
    let text = reply.text;
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(!text.contains("smuggled"), "{text}");
    still_served(east).await?;
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off_while_others_are_served() -> anyhow::Result<()> {
    let (federation, _upstream) = east_west().await?;
    let east = federation.gateway("east").addrs().http;
    let mut slow = TcpStream::connect(east).await?;
    slow.write_all(format!("GET / HTTP/1.1\r\nHost: {GREETER}\r\n").as_bytes())
        .await?;
    let started = Instant::now();
    // One header byte a second, never finishing the head; a real client is served meanwhile.
    let closed = loop {
        if slow.write_all(b"X").await.is_err() {
            break true;
        }
        still_served(east).await?;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(_)) => {
                // The gateway answered (408) and will close; read on until it does.
                let mut rest = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), slow.read_to_end(&mut rest)).await;
                break true;
            }
            Err(_) if started.elapsed() > Duration::from_secs(20) => break false,
            Err(_) => {}
        }
    };
    assert!(closed, "the slow client was never cut off");
    // The limit is 10 s for the whole head: not cut off before it (the 20 s cap above is the
    // other side, with room for a slow machine).
    let elapsed = started.elapsed();
    assert!(
        elapsed > Duration::from_secs(8),
        "cut off after {elapsed:?}"
    );
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_reset_flood_is_closed_while_others_are_served() -> anyhow::Result<()> {
    let (federation, _upstream) = east_west().await?;
    let east = federation.gateway("east").addrs().http;
    let mut flood = TcpStream::connect(east).await?;
    // The connection preface, empty SETTINGS, then HEADERS and RST_STREAM (CANCEL) for 5,000
    // streams in a row: the rapid-reset attack (CVE-2023-44487).
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(0x4, 0, 0, &[]));
    let block = header_block(GREETER);
    for i in 0..5_000u32 {
        let stream = 2 * i + 1;
        bytes.extend(frame(0x1, 0x4 | 0x1, stream, &block)); // END_HEADERS | END_STREAM
        bytes.extend(frame(0x3, 0, stream, &0x8u32.to_be_bytes()));
    }
    let writer = tokio::spawn(async move {
        let _ = flood.write_all(&bytes).await;
        flood
    });
    let mut flood = writer.await?;
    // Read frames until GOAWAY, or the connection closes.
    let mut received = Vec::new();
    let goaway = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match flood.read(&mut buffer).await {
                Ok(0) | Err(_) => return contains_goaway(&received),
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
            if contains_goaway(&received) {
                return true;
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(goaway, "the flood was not stopped with GOAWAY");
    still_served(east).await?;
    federation.shutdown().await;
    Ok(())
}

/// An HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend(payload);
    frame
}

/// HPACK for `GET http://<authority>/` without dynamic-table use: indexed :method GET,
/// :scheme http, :path /, and :authority as a literal without indexing.
fn header_block(authority: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x01];
    block.push(authority.len() as u8);
    block.extend(authority.as_bytes());
    block
}

/// Whether `bytes` (frames from the server, after its preface) hold a GOAWAY frame.
fn contains_goaway(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        if bytes[at + 3] == 0x7 {
            return true;
        }
        at += 9 + len;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_hanging_up_mid_response_leave_the_gateways_whole() -> anyhow::Result<()> {
    // A client that goes away while a large response streams makes both gateways drop their
    // stream halves with a read pending: that must stop the streams, not panic a task.
    let panics = Arc::new(AtomicU64::new(0));
    let counted = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::Relaxed);
        previous(info);
    }));
    let (federation, _upstream) = east_west().await?;
    let east = federation.gateway("east").addrs().http;
    for _ in 0..20 {
        let mut stream = TcpStream::connect(east).await?;
        let request = format!(
            "GET /bytes/{} HTTP/1.1\r\nHost: {GREETER}\r\n\r\n",
            64 << 20
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buffer = vec![0u8; 256 * 1024];
        stream.read_exact(&mut buffer).await?;
        drop(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    still_served(east).await?;
    assert_eq!(panics.load(Ordering::Relaxed), 0, "a gateway task panicked");
    federation.shutdown().await;
    Ok(())
}
