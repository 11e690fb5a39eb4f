//! Prometheus metrics, scraped by Prometheus itself (the Debian package): it scrapes both
//! gateways' `/metrics`, and PromQL counts exactly the requests sent, on the sending gateway
//! (outbound) and on the serving one (inbound), and finds each peer connection up and measured.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use meshfed_tests::client;
use meshfed_tests::echo::Echo;
use meshfed_tests::tcp_echo::TcpEcho;
use meshfed_tests::{Cluster, Federation};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const GREETER: &str = "greeter.demo.svc.clusterset.local";

/// Stops Prometheus even when an assertion fails.
struct Prometheus {
    child: Child,
    address: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second, its data in `dir`.
    fn start(dir: &Path, targets: &[String]) -> anyhow::Result<Prometheus> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let address = format!("127.0.0.1:{port}");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             scrape_configs:\n  - job_name: meshfed\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Prometheus { child, address })
    }

    /// The value of an instant PromQL `query` that returns one sample, if it does.
    fn query(&self, query: &str) -> anyhow::Result<Option<f64>> {
        let output = Command::new("curl")
            .args(["-sf", "--max-time", "2"])
            .arg(format!("http://{}/api/v1/query", self.address))
            .args(["--data-urlencode", &format!("query={query}")])
            .output()?;
        if !output.status.success() {
            return Ok(None);
        }
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let value = answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok());
        Ok(value)
    }

    /// Waits (up to 30 s) until `query` gives `expected`; the last value seen otherwise.
    async fn until(&self, query: &str, expected: f64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        while Instant::now() < deadline {
            last = tokio::task::block_in_place(|| self.query(query))?;
            if last == Some(expected) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::bail!("{query} gave {last:?}, not {expected}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_both_gateways_and_counts_every_request() -> anyhow::Result<()> {
    let greeter = Echo::start("greeter in west").await?;
    let db = TcpEcho::start().await?;
    let west = Cluster::new("west")?
        .export("greeter.demo", greeter.addr(), &["east"])
        .export_port("db.shop", "tcp", 5432, &[db.addr()], &["east"]);
    let federation = Federation::builder(vec![Cluster::new("east")?, west])
        .tcp_service("east", "db.shop", 5432)
        .bundle_exchange()
        .start()
        .await?;
    let started = Instant::now();
    federation.catalogs_exchanged().await?;
    let east = federation.gateway("east").addrs();
    let west = federation.gateway("west").addrs();
    let dir = tempfile::tempdir()?;
    let prometheus = Prometheus::start(
        dir.path(),
        &[east.admin.to_string(), west.admin.to_string()],
    )?;
    prometheus.until("sum(up{job=\"meshfed\"})", 2.0).await?;
    // One TCP connection through the tunnel: open (one stream to west) while it lasts, then
    // 12 bytes there and back, then closed.
    let listen = federation.gateway("east").tcp_services()[0].listen;
    let mut stream = tokio::net::TcpStream::connect(listen).await?;
    stream.write_all(b"hello").await?;
    let mut hello = [0u8; 5];
    stream.read_exact(&mut hello).await?;
    let open_to_west = "sum(meshfed_peer_open_streams{peer=\"west\"})";
    prometheus.until(open_to_west, 1.0).await?;
    stream.write_all(b" tunnel").await?;
    stream.shutdown().await?;
    let mut echoed = hello.to_vec();
    stream.read_to_end(&mut echoed).await?;
    assert_eq!(echoed, b"hello tunnel");
    drop(stream);
    // DNS: three names east serves, two it does not, asked with dig.
    let east_dns = federation.gateway("east").addrs().dns;
    for (name, times) in [
        ("greeter.demo.svc.clusterset.local", 3),
        ("nothing.demo.svc.clusterset.local", 2),
    ] {
        for _ in 0..times {
            let output = Command::new("dig")
                .arg(format!("@{}", east_dns.ip()))
                .args([
                    "-p",
                    &east_dns.port().to_string(),
                    "+tries=1",
                    "+time=2",
                    name,
                    "A",
                ])
                .output()?;
            assert!(output.status.success(), "{output:?}");
        }
    }
    let sent = 25;
    for _ in 0..sent {
        let reply = client::get(east.http, GREETER, "/").await?;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    }
    let outbound = "sum(meshfed_requests_total{direction=\"outbound\",source_cluster=\"east\",\
                    destination_service=\"greeter.demo\",destination_cluster=\"west\",\
                    response_code=\"200\"})";
    prometheus.until(outbound, f64::from(sent)).await?;
    let inbound = "sum(meshfed_requests_total{direction=\"inbound\",source_cluster=\"east\",\
                   destination_cluster=\"west\",destination_service=\"greeter.demo\"})";
    prometheus.until(inbound, f64::from(sent)).await?;
    // Every request is in the latency histogram too.
    let observed = "sum(meshfed_request_duration_seconds_count{direction=\"outbound\"})";
    prometheus.until(observed, f64::from(sent)).await?;
    // Each gateway reports its QUIC connections to the other: up, with a round-trip time, one
    // per thread of the runtime the gateways run on (this test's).
    prometheus.until("sum(meshfed_peer_connected)", 2.0).await?;
    let lanes = tokio::runtime::Handle::current()
        .metrics()
        .num_workers()
        .min(8);
    prometheus
        .until("sum(meshfed_peer_quic_connections)", 2.0 * lanes as f64)
        .await?;
    let rtt_measured =
        "count(meshfed_peer_rtt_seconds > 0 and meshfed_peer_congestion_window_bytes > 0)";
    prometheus.until(rtt_measured, 2.0).await?;
    prometheus
        .until("sum(meshfed_dns_queries_total{rcode=\"NOERROR\"})", 3.0)
        .await?;
    prometheus
        .until("sum(meshfed_dns_queries_total{rcode=\"NXDOMAIN\"})", 2.0)
        .await?;
    // Both SVIDs are valid for a while yet (the test CA issues them for an hour or more).
    prometheus
        .until("count(meshfed_svid_expiry_seconds > 600)", 2.0)
        .await?;
    // Each fetches the other's bundle every second (the test's refresh hint): past the first
    // seconds, its age stays below two (before the first fetch it grows from the start).
    let since_start = started.elapsed();
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(since_start)).await;
    prometheus
        .until("count(meshfed_peer_bundle_age_seconds < 2.5)", 2.0)
        .await?;
    // The tunnel and every request's stream are closed.
    prometheus.until(open_to_west, 0.0).await?;
    for direction in ["outbound", "inbound"] {
        for counter in ["tcp_sent_bytes_total", "tcp_received_bytes_total"] {
            let query = format!(
                "sum(meshfed_{counter}{{direction=\"{direction}\",destination_service=\"db.shop\",destination_cluster=\"west\"}})"
            );
            prometheus.until(&query, 12.0).await?;
        }
        let closed =
            format!("sum(meshfed_tcp_connections_closed_total{{direction=\"{direction}\"}})");
        prometheus.until(&closed, 1.0).await?;
        let opened =
            format!("sum(meshfed_tcp_connections_opened_total{{direction=\"{direction}\"}})");
        prometheus.until(&opened, 1.0).await?;
    }
    federation.shutdown().await;
    Ok(())
}
