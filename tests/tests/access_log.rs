//! Access logs: one JSON line per request and per TCP connection, on the gateway a client
//! called (outbound) and on the one that served it (inbound), with the trace ID of the
//! request's spans and the reason code when the gateway answered for itself.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use meshfed_tests::client;
use meshfed_tests::echo::Echo;
use meshfed_tests::otlp::{Collector, hex};
use meshfed_tests::tcp_echo::TcpEcho;
use meshfed_tests::{Cluster, Federation, wait};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const GREETER: &str = "greeter.demo.svc.clusterset.local";

/// The lines logged in `path` so far, each parsed (a line that is not JSON fails the test).
fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

async fn logged(path: &Path, count: usize) -> anyhow::Result<Vec<Value>> {
    wait::until(Duration::from_secs(10), "access log lines", || {
        lines(path).len() >= count
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}: {:#?}", lines(path)))?;
    Ok(lines(path))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_connections_are_logged_with_trace_and_reason() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let greeter = Echo::start("greeter in west").await?;
    let db = TcpEcho::start().await?;
    let west = Cluster::new("west")?
        .export("greeter.demo", greeter.addr(), &["east"])
        .export_port("db.shop", "tcp", 5432, &[db.addr()], &["east"]);
    let tracing = format!("tracing: {{ otlp_endpoint: \"{}\" }}", collector.endpoint());
    let federation = Federation::builder(vec![Cluster::new("east")?, west])
        .tcp_service("east", "db.shop", 5432)
        .config("east", &tracing)
        .config("east", "access_log: { path: east/access.log }")
        .config("west", "access_log: { path: west/access.log }")
        .start()
        .await?;
    let east = federation.gateway("east").addrs();

    let reply = client::send(
        east.http,
        Method::GET,
        GREETER,
        "/hello?x=1",
        &[],
        Bytes::new(),
    )
    .await?;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let missing = client::get(east.http, "nothing.demo.svc.clusterset.local", "/").await?;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let listen = federation.gateway("east").tcp_services()[0].listen;
    let mut stream = tokio::net::TcpStream::connect(listen).await?;
    stream.write_all(b"hello tunnel").await?;
    stream.shutdown().await?;
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).await?;
    assert_eq!(echoed, b"hello tunnel");
    // A client that gives up before its (slow) answer comes: logged as 499 client_closed.
    let mut quitter = tokio::net::TcpStream::connect(east.http).await?;
    let head = format!("GET /slow HTTP/1.1\r\nhost: {GREETER}\r\n\r\n");
    quitter.write_all(head.as_bytes()).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(quitter);

    let east_log = logged(&federation.home("east").join("access.log"), 4).await?;
    let west_log = logged(&federation.home("west").join("access.log"), 2).await?;
    let find = |log: &[Value], protocol: &str, status: Option<u64>| -> Value {
        log.iter()
            .find(|l| l["protocol"] == protocol && status.is_none_or(|s| l["status"] == s))
            .cloned()
            .unwrap_or_else(|| panic!("no {protocol} {status:?} line in {log:#?}"))
    };

    let ok = find(&east_log, "http", Some(200));
    assert_eq!(ok["direction"], "outbound");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["authority"], GREETER);
    assert_eq!(ok["path"], "/hello");
    assert_eq!(ok["service"], "greeter.demo");
    assert_eq!(ok["source_cluster"], "east");
    assert_eq!(ok["destination_cluster"], "west");
    assert!(
        ok["client"]
            .as_str()
            .unwrap_or_default()
            .starts_with("127.0.0.1:")
    );
    assert!(ok["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{ok}");
    assert!(ok.get("reason").is_none(), "{ok}");
    // The start time is RFC 3339 UTC with milliseconds.
    let start = ok["start_time"].as_str().unwrap_or_default();
    assert!(
        start.len() == 24 && start.ends_with('Z') && start.as_bytes()[10] == b'T',
        "{start}"
    );
    // Its trace ID is the one the collector got the request's spans under.
    let trace_id = ok["trace_id"].as_str().unwrap_or_default().to_owned();
    let spans = collector.trace(&trace_id, 2).await?;
    assert!(
        spans.iter().any(|s| hex(&s.span.span_id) == ok["span_id"]),
        "{ok} {spans:#?}"
    );

    let refused = find(&east_log, "http", Some(404));
    assert_eq!(refused["reason"], "unknown_service");
    let quit = find(&east_log, "http", Some(499));
    assert_eq!(
        (quit["reason"].as_str(), quit["path"].as_str()),
        (Some("client_closed"), Some("/slow"))
    );
    assert_eq!(ok["sampled"], true);

    let tcp = find(&east_log, "tcp", None);
    assert_eq!(tcp["direction"], "outbound");
    assert_eq!(tcp["service"], "db.shop");
    assert_eq!(tcp["destination_cluster"], "west");
    assert_eq!(
        (tcp["bytes_sent"].as_u64(), tcp["bytes_received"].as_u64()),
        (Some(12), Some(12))
    );

    // West, without tracing, logs the same request inbound, from east's gateway.
    let inbound = find(&west_log, "http", Some(200));
    assert_eq!(inbound["direction"], "inbound");
    assert_eq!(inbound["source_cluster"], "east");
    let source = inbound["source"].as_str().unwrap_or_default();
    assert!(source.starts_with("spiffe://east.test/"), "{inbound}");
    assert!(
        inbound.get("trace_id").is_none(),
        "west records no spans: {inbound}"
    );
    let tunnel = find(&west_log, "tcp", None);
    assert_eq!(tunnel["direction"], "inbound");
    assert_eq!(
        (
            tunnel["bytes_sent"].as_u64(),
            tunnel["bytes_received"].as_u64()
        ),
        (Some(12), Some(12))
    );
    federation.shutdown().await;
    Ok(())
}
