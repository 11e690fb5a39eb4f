//! Every kind of traffic across two gateways, driven by the clients users run: a tonic gRPC
//! client (unary calls balanced per request, a bidirectional stream), `curl` and `h2load` over
//! HTTP/2 with prior knowledge, `curl` over HTTP/1.1 with chunked and large bodies, and raw TCP
//! with half-close.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use meshfed_tests::echo::Echo;
use meshfed_tests::grpc::GrpcEcho;
use meshfed_tests::grpc::proto::echo_client::EchoClient;
use meshfed_tests::grpc::proto::{ChatMessage, SayRequest};
use meshfed_tests::pattern::{Pattern, pattern, sha256_hex};
use meshfed_tests::tcp_echo::TcpEcho;
use meshfed_tests::{Cluster, Federation};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const ECHO_GRPC: &str = "echo.grpc.svc.clusterset.local";

/// Runs `program` with `args` and returns its standard output, failing on a non-zero exit.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program).args(args).output()?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Three upstreams named `greeter-a`..`greeter-c` in west, exported to east, balanced round
/// robin (see `grpc_calls_on_one_channel_spread_over_every_endpoint` for why).
async fn three_greeters() -> anyhow::Result<(Federation, Vec<Echo>)> {
    let upstreams = vec![
        Echo::start("greeter-a").await?,
        Echo::start("greeter-b").await?,
        Echo::start("greeter-c").await?,
    ];
    let addrs: Vec<SocketAddr> = upstreams.iter().map(Echo::addr).collect();
    let west = Cluster::new("west")?.export_port("greeter.demo", "http", 80, &addrs, &["east"]);
    let round_robin =
        "services: [{ service: greeter.demo, load_balancer: { algorithm: round_robin } }]";
    let federation = Federation::builder(vec![Cluster::new("east")?, west])
        .policy("west", round_robin)
        .start()
        .await?;
    Ok((federation, upstreams))
}

/// Asserts that each of `counts` (calls per endpoint) is 25 to 40 % of the total, over three.
fn assert_spread(counts: &BTreeMap<String, usize>) {
    let total: usize = counts.values().sum();
    assert_eq!(counts.len(), 3, "calls reached {counts:?}");
    for (endpoint, count) in counts {
        let share = *count as f64 / total as f64;
        assert!(
            (0.25..=0.40).contains(&share),
            "{endpoint} took {share:.2} of the calls: {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_on_one_channel_spread_over_every_endpoint() -> anyhow::Result<()> {
    let upstreams = [
        GrpcEcho::start("echo-a").await?,
        GrpcEcho::start("echo-b").await?,
        GrpcEcho::start("echo-c").await?,
    ];
    let addrs: Vec<SocketAddr> = upstreams.iter().map(GrpcEcho::addr).collect();
    let west = Cluster::new("west")?.export_port("echo.grpc", "grpc", 9090, &addrs, &["east"]);
    // Round robin, so that even shares show calls balanced one by one. The default balancer
    // (P2C over peak EWMA) also picks per call, but by latency: it would favour whichever
    // endpoint happened to answer fastest (policy.rs tests that it shuns a slow one).
    let round_robin =
        "services: [{ service: echo.grpc, load_balancer: { algorithm: round_robin } }]";
    let federation = Federation::builder(vec![Cluster::new("east")?, west])
        .policy("west", round_robin)
        .start()
        .await?;
    let east = federation.gateway("east").addrs().http;

    // One channel: one HTTP/2 connection to east, as a gRPC client keeps.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{east}"))?
        .origin(format!("http://{ECHO_GRPC}").parse()?)
        .connect()
        .await?;
    let mut client = EchoClient::new(channel);
    let mut counts = BTreeMap::new();
    for i in 0..1000 {
        let text = format!("call {i}");
        let reply = client
            .say(SayRequest { text: text.clone() })
            .await?
            .into_inner();
        assert_eq!(reply.text, text);
        *counts.entry(reply.endpoint).or_insert(0) += 1;
    }
    assert_spread(&counts);

    // A bidirectional stream: every message comes back, in order and intact, with the
    // stream's trailers (grpc-status) ending it cleanly.
    let sent: Vec<ChatMessage> = (0..200u64)
        .map(|sequence| ChatMessage {
            sequence,
            payload: vec![(sequence % 251) as u8; 4096],
        })
        .collect();
    let mut replies = client
        .chat(tokio_stream::iter(sent.clone()))
        .await?
        .into_inner();
    let mut received = Vec::new();
    while let Some(message) = replies.message().await? {
        received.push(message);
    }
    assert_eq!(received, sent);
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_on_one_connection_reach_every_endpoint() -> anyhow::Result<()> {
    let (federation, _upstreams) = three_greeters().await?;
    let east = federation.gateway("east").addrs().http;
    // (Not curl: Debian's curl 7.88.1 breaks a reused prior-knowledge connection, curl
    // issue #10634, fixed in 8.0.)
    // nghttp sends all 30 requests over one HTTP/2 connection, concurrently, and prints
    // each response body (the endpoint's name first) and a summary of the connection.
    // (Distinct paths: nghttp requests a repeated URI once.)
    let urls: Vec<String> = (0..30).map(|i| format!("http://{east}/{i}")).collect();
    let output = tokio::task::spawn_blocking(move || {
        let mut args = vec![
            "--header=:authority: greeter.demo.svc.clusterset.local",
            "--stat",
            "--no-dep",
        ];
        args.extend(urls.iter().map(String::as_str));
        run("nghttp", &args)
    })
    .await??;
    let mut counts = BTreeMap::new();
    for line in output.lines() {
        if let Some(name) = line.strip_prefix("greeter-") {
            *counts.entry(name.to_owned()).or_insert(0) += 1;
        }
    }
    // The request statistics list one line per request; all on the one connection.
    let answered = output.lines().filter(|l| l.contains(" 200 ")).count();
    assert_eq!(answered, 30, "{output}");
    assert_spread(&counts);
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_over_http2_prior_knowledge_gets_every_answer() -> anyhow::Result<()> {
    let (federation, _upstreams) = three_greeters().await?;
    let east = federation.gateway("east").addrs().http;
    let url = format!("http://{east}/");
    let output = tokio::task::spawn_blocking(move || {
        run(
            "h2load",
            &[
                "--requests=2000",
                "--clients=4",
                "--max-concurrent-streams=16",
                "--header=:authority: greeter.demo.svc.clusterset.local",
                &url,
            ],
        )
    })
    .await??;
    assert!(
        output.contains("2000 succeeded, 0 failed, 0 errored"),
        "{output}"
    );
    assert!(output.contains("status codes: 2000 2xx"), "{output}");
    assert!(output.contains("Application protocol: h2c"), "{output}");
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_chunked_and_large_bodies_cross_intact() -> anyhow::Result<()> {
    const SIZE: usize = 32 * 1024 * 1024;
    let (federation, _upstreams) = three_greeters().await?;
    let east = federation.gateway("east").addrs().http;
    let dir = tempfile::tempdir()?;
    let sent = dir.path().join("sent");
    let got = dir.path().join("got");
    let body = pattern(SIZE);
    std::fs::write(&sent, &body)?;
    let curl = |args: Vec<String>| {
        let mut all: Vec<String> = [
            "--silent",
            "--show-error",
            "--fail",
            "--header",
            "Host: greeter.demo.svc.clusterset.local",
        ]
        .map(String::from)
        .into();
        all.extend(args);
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            run("curl", &args)
        })
    };
    // Up: a chunked upload, hashed by the upstream as it streams in.
    let digest = curl(vec![
        "--header".into(),
        "Transfer-Encoding: chunked".into(),
        "--data-binary".into(),
        format!("@{}", sent.display()),
        format!("http://{east}/digest"),
    ])
    .await??;
    assert_eq!(digest, format!("{SIZE} {}", sha256_hex(&body)));
    // Down: a large streamed response, written to a file by curl.
    let status = curl(vec![
        "--output".into(),
        got.display().to_string(),
        "--write-out".into(),
        "%{http_code}".into(),
        format!("http://{east}/bytes/{SIZE}"),
    ])
    .await??;
    assert_eq!(status, "200");
    assert!(std::fs::read(&got)? == body, "the downloaded body differs");
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_carries_100_mb_intact_with_half_close() -> anyhow::Result<()> {
    const SIZE: usize = 100 * 1024 * 1024;
    let upstream = TcpEcho::start().await?;
    let west =
        Cluster::new("west")?.export_port("db.shop", "tcp", 5432, &[upstream.addr()], &["east"]);
    let federation = Federation::builder(vec![Cluster::new("east")?, west])
        .tcp_service("east", "db.shop", 5432)
        .start()
        .await?;
    let listen = federation.gateway("east").tcp_services()[0].listen;

    let stream = tokio::net::TcpStream::connect(listen).await?;
    let (mut reader, mut writer) = stream.into_split();
    let write = tokio::spawn(async move {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut chunks = Pattern::default();
        let mut left = SIZE;
        while left > 0 {
            let chunk = chunks.next_chunk(left.min(64 * 1024));
            digest.update(&chunk);
            writer.write_all(&chunk).await?;
            left -= chunk.len();
        }
        // Half-close: the echo answers the rest and closes only once this FIN reaches it.
        writer.shutdown().await?;
        anyhow::Ok((digest.finish(), writer))
    });
    let read = tokio::spawn(async move {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buffer = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        loop {
            let read = reader.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            digest.update(&buffer[..read]);
            total += read;
        }
        anyhow::Ok((digest.finish(), total))
    });
    let ((sent, _writer), (received, total)) =
        tokio::time::timeout(Duration::from_secs(180), async {
            Ok::<_, anyhow::Error>((write.await??, read.await??))
        })
        .await??;
    assert_eq!(total, SIZE);
    assert_eq!(sent.as_ref(), received.as_ref(), "the echoed bytes differ");
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_tcp_connection_to_an_unreachable_peer_is_closed_not_left_hanging() -> anyhow::Result<()>
{
    // West serves db.shop over TCP, then stops: east's tunnel cannot be made, and the
    // client's connection must close, not hang.
    let upstream = TcpEcho::start().await?;
    let west =
        Cluster::new("west")?.export_port("db.shop", "tcp", 5432, &[upstream.addr()], &["east"]);
    let mut federation = Federation::builder(vec![Cluster::new("east")?, west])
        .tcp_service("east", "db.shop", 5432)
        .start()
        .await?;
    if let Some(west) = federation.gateways.remove("west") {
        west.shutdown().await;
    }
    let listen = federation.gateway("east").tcp_services()[0].listen;
    let mut stream = tokio::net::TcpStream::connect(listen).await?;
    stream.write_all(b"hello").await?;
    let mut buffer = [0u8; 16];
    // The gateway gives up within its 3 s handshake timeout; 10 s here tells a hang apart on
    // a slow machine too.
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await?;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the connection closed, read {read:?}"
    );
    federation.shutdown().await;
    Ok(())
}
