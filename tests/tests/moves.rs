//! Moves of a service between clusters, end to end: started with the real `meshfed move`
//! CLI, under continuous load, watched through the admin API.
//!
//! `checkout.shop` runs in east (blue) and west (green). East's policy keeps it in east until
//! it is moved. Load generators call it through a gateway and record, for every request, when
//! it was sent, which cluster answered and its status.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use meshfed_gateway::admin::proto::admin_client::AdminClient;
use meshfed_gateway::admin::proto::{self, ListMovesRequest, ListSplitsRequest};
use meshfed_tests::echo::Echo;
use meshfed_tests::{Cluster, Federation, binary, client};
use tokio_util::sync::CancellationToken;

const CHECKOUT: &str = "checkout.shop.svc.clusterset.local";
/// East's policy: checkout stays in east until a move says otherwise; local clients may pin.
const STAY_IN_EAST: &str = "overrides:\n  trusted_clients: [127.0.0.0/8]\nservices:\n  - service: checkout.shop\n    routes:\n      - name: stay\n        backends: [{ cluster: east }]\n";

/// One request as the load generator saw it.
#[derive(Clone, Debug)]
struct Sent {
    at: Instant,
    served_by: String,
    status: StatusCode,
}

/// Calls checkout through `gateway` from `workers` loops until stopped.
struct Load {
    sent: Arc<Mutex<Vec<Sent>>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(
        gateway: SocketAddr,
        workers: usize,
        headers: &'static [(&'static str, &'static str)],
    ) -> Load {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let tasks = (0..workers)
            .map(|_| {
                let (sent, stop) = (sent.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        let at = Instant::now();
                        let reply = client::send(
                            gateway,
                            http::Method::GET,
                            CHECKOUT,
                            "/",
                            headers,
                            bytes::Bytes::new(),
                        )
                        .await;
                        let (served_by, status) = match reply {
                            Ok(reply) => (reply.served_by(), reply.status),
                            Err(_) => ("(error)".to_owned(), StatusCode::BAD_GATEWAY),
                        };
                        sent.lock().expect("lock").push(Sent {
                            at,
                            served_by,
                            status,
                        });
                    }
                })
            })
            .collect();
        Load { sent, stop, tasks }
    }

    async fn stop(self) -> Vec<Sent> {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.sent.lock().expect("lock").clone()
    }
}

fn served_by(cluster: &str) -> &'static str {
    match cluster {
        "east" => "checkout in east",
        _ => "checkout in west",
    }
}

/// `meshfed move|split <args> --admin <admin>`, which must succeed; its output.
fn cli(args: &[&str], admin: SocketAddr) -> anyhow::Result<String> {
    let output = Command::new(binary::meshfed()?)
        .args(args)
        .args(["--admin", &admin.to_string()])
        .output()?;
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "meshfed {args:?}: {out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(out)
}

/// `meshfed move start checkout.shop --from east --to west <how...>` at `admin`'s gateway.
fn move_checkout(admin: SocketAddr, how: &[&str]) -> anyhow::Result<String> {
    let mut args = vec![
        "move",
        "start",
        "checkout.shop",
        "--from",
        "east",
        "--to",
        "west",
    ];
    args.extend_from_slice(how);
    tokio::task::block_in_place(|| cli(&args, admin))
}

async fn admin(addr: SocketAddr) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(AdminClient::new(channel))
}

/// The move of checkout at `admin`'s gateway.
async fn status(
    admin: &mut AdminClient<tonic::transport::Channel>,
) -> anyhow::Result<proto::MoveStatus> {
    let request = ListMovesRequest {
        service: "checkout.shop".into(),
    };
    let moves = admin.list_moves(request).await?.into_inner().moves;
    moves
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no move of checkout"))
}

/// Polls the move every 50 ms until its phase is `until`; returns when each stage was
/// entered (and when the end came), measured from the same clock as the load.
async fn follow(
    admin: &mut AdminClient<tonic::transport::Channel>,
    until: &str,
    limit: Duration,
) -> anyhow::Result<Vec<(u32, Instant)>> {
    let deadline = Instant::now() + limit;
    let mut seen: Vec<(u32, Instant)> = Vec::new();
    loop {
        let m = status(admin).await?;
        let now = Instant::now();
        if seen.last().is_none_or(|(stage, _)| *stage != m.stage) {
            seen.push((m.stage, now));
        }
        if m.phase == until {
            seen.push((u32::MAX, now));
            return Ok(seen);
        }
        anyhow::ensure!(
            m.phase == "running" || m.phase == until,
            "move {}: {m:?}",
            m.phase
        );
        anyhow::ensure!(now < deadline, "no {until} within {limit:?}: {m:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two clusters serving checkout, east's policy keeping it in east.
async fn federation(
    east_checkout: &Echo,
    west_checkout: &Echo,
    state_dir: bool,
) -> anyhow::Result<Federation> {
    let east = Cluster::new("east")?.export("checkout.shop", east_checkout.addr(), &["west"]);
    let west = Cluster::new("west")?.export("checkout.shop", west_checkout.addr(), &["east"]);
    let mut builder = Federation::builder(vec![east, west]).policy("east", STAY_IN_EAST);
    if state_dir {
        builder = builder.config("east", "state_dir: east/state");
    }
    builder.start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_under_load_moves_every_request_with_the_split_of_each_step() -> anyhow::Result<()>
{
    let east_checkout = Echo::start("checkout in east").await?;
    let west_checkout = Echo::start("checkout in west").await?;
    tokio::task::block_in_place(binary::meshfed)?;
    let federation = federation(&east_checkout, &west_checkout, false).await?;
    let addrs = federation.gateway("east").addrs();
    let load = Load::start(addrs.http, 6, &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = move_checkout(
        addrs.admin,
        &[
            "--canary",
            "20:3s,50:3s,100:2s",
            "--gate-interval",
            "1s",
            "--min-requests",
            "50",
        ],
    )?;
    assert!(
        started.contains("checkout.shop: east -> west (canary), running"),
        "{started}"
    );
    let mut admin = admin(addrs.admin).await?;
    let stages = follow(&mut admin, "completed", Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = load.stop().await;

    let failed: Vec<&Sent> = sent.iter().filter(|s| s.status != StatusCode::OK).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        sent.len(),
        &failed[..failed.len().min(5)]
    );
    // Each step's measured split, away from its edges, is within 5 % of its target.
    let targets = [20.0, 50.0, 100.0];
    assert_eq!(stages.len(), 4, "three stages and the end: {stages:?}");
    for (i, window) in stages.windows(2).enumerate() {
        let (from, to) = (window[0].1 + Duration::from_millis(200), window[1].1);
        let inside: Vec<&Sent> = sent.iter().filter(|s| s.at >= from && s.at < to).collect();
        let west = inside
            .iter()
            .filter(|s| s.served_by == served_by("west"))
            .count();
        assert!(
            inside.len() >= 50,
            "stage {i}: only {} requests",
            inside.len()
        );
        let share = 100.0 * west as f64 / inside.len() as f64;
        assert!(
            (share - targets[i]).abs() <= 5.0,
            "stage {i}: {share:.1} % to west of {}, want {}",
            inside.len(),
            targets[i]
        );
    }
    // Status and splits, as the CLI shows them.
    let shown = tokio::task::block_in_place(|| cli(&["move", "status"], addrs.admin))?;
    assert!(
        shown.contains("completed") && shown.contains("weights:  east 0%, west 100%"),
        "{shown}"
    );
    let splits = tokio::task::block_in_place(|| cli(&["split", "show"], addrs.admin))?;
    assert!(
        splits.contains("checkout.shop: east 0%, west 100%"),
        "{splits}"
    );
    // And in the owner's metrics: the split's weights, the move's stage and phase.
    let metrics = client::get(addrs.admin, "admin", "/metrics").await?.text();
    for line in [
        "meshfed_split_weight{destination_service=\"checkout.shop\",destination_cluster=\"west\",owner=\"east\"} 100",
        "meshfed_move_stage{destination_service=\"checkout.shop\"} 2",
        "meshfed_move_phase{destination_service=\"checkout.shop\",phase=\"completed\"} 1",
        "meshfed_move_green_percent{destination_service=\"checkout.shop\"} 100",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line} in {metrics}");
    }
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_green_is_rolled_back_within_one_gate_interval() -> anyhow::Result<()> {
    let east_checkout = Echo::start("checkout in east").await?;
    let west_checkout = Echo::start("checkout in west").await?;
    tokio::task::block_in_place(binary::meshfed)?;
    let federation = federation(&east_checkout, &west_checkout, false).await?;
    let addrs = federation.gateway("east").addrs();
    let load = Load::start(addrs.http, 6, &[]);
    move_checkout(
        addrs.admin,
        &[
            "--canary",
            "30:30s,100:30s",
            "--gate-interval",
            "1s",
            "--max-error-rate",
            "5",
        ],
    )?;
    let mut admin = admin(addrs.admin).await?;
    // Healthy for a couple of gate intervals, then green fails every request.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status(&mut admin).await?.phase, "running");
    let broke = Instant::now();
    west_checkout.fail_with(Some(StatusCode::SERVICE_UNAVAILABLE));
    let ended = follow(&mut admin, "rolled back", Duration::from_secs(10)).await?;
    let rolled_back = ended.last().map(|(_, at)| *at).unwrap_or_else(Instant::now);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = load.stop().await;

    let took = rolled_back - broke;
    // One gate interval (1 s) plus the mover's tick (0.2 s) and this test's polling, with room
    // for a loaded machine; a move that never rolled back would hold its 30 s step. The
    // client errors below bound the same thing by count, not by time.
    eprintln!("rolled back {took:?} after green broke");
    assert!(
        took <= Duration::from_secs(5),
        "rolled back {took:?} after green broke"
    );
    let m = status(&mut admin).await?;
    assert!(m.reason.contains("error rate"), "{m:?}");
    // Clients saw errors only while green was failing and the move had not rolled back, and
    // only from the share sent to green.
    let failed: Vec<&Sent> = sent.iter().filter(|s| s.status != StatusCode::OK).collect();
    assert!(
        !failed.is_empty(),
        "green's failures reached clients until the rollback"
    );
    let outside: Vec<&&Sent> = failed
        .iter()
        // A request already on its way when green broke may meet the failure too.
        .filter(|s| {
            s.at < broke - Duration::from_millis(100)
                || s.at > rolled_back + Duration::from_millis(200)
        })
        .collect();
    assert!(
        outside.is_empty(),
        "errors outside the failing window (broke at {broke:?}, rolled back at {rolled_back:?}): {outside:?}"
    );
    let window = sent
        .iter()
        .filter(|s| s.at >= broke - Duration::from_millis(100) && s.at <= rolled_back)
        .count();
    assert!(
        failed.len() as f64 <= 0.3 * window as f64 + 3.0,
        "{} failed of {window}",
        failed.len()
    );
    // After the rollback, everything is served by blue.
    let after: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.at > rolled_back + Duration::from_millis(100))
        .collect();
    assert!(
        !after.is_empty()
            && after
                .iter()
                .all(|s| s.served_by == served_by("east") && s.status == StatusCode::OK)
    );
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_verifies_with_pinned_traffic_switches_and_rolls_back_at_once()
-> anyhow::Result<()> {
    let east_checkout = Echo::start("checkout in east").await?;
    let west_checkout = Echo::start("checkout in west").await?;
    tokio::task::block_in_place(binary::meshfed)?;
    let federation = federation(&east_checkout, &west_checkout, false).await?;
    let addrs = federation.gateway("east").addrs();
    let users = Load::start(addrs.http, 3, &[]);
    // Testers pin green with the override header (east trusts local clients with it).
    let testers = Load::start(addrs.http, 2, &[("x-meshfed-cluster", "west")]);
    move_checkout(
        addrs.admin,
        &[
            "--blue-green",
            "--verify",
            "2s",
            "--hold",
            "60s",
            "--gate-interval",
            "1s",
        ],
    )?;
    let mut admin = admin(addrs.admin).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let switched = loop {
        let m = status(&mut admin).await?;
        if m.stage == 1 {
            break Instant::now();
        }
        anyhow::ensure!(Instant::now() < deadline, "never switched: {m:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A second move of the service is refused while this one is under way.
    let again = move_checkout(addrs.admin, &["--canary", "100:1s"]);
    let refused = again.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("already being moved by east"), "{refused}");
    let rolling = Instant::now();
    let rolled =
        tokio::task::block_in_place(|| cli(&["move", "rollback", "checkout.shop"], addrs.admin))?;
    assert!(rolled.contains("rolled back"), "{rolled}");
    let rolled_back = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (users, testers) = (users.stop().await, testers.stop().await);

    let all_ok = users
        .iter()
        .chain(&testers)
        .all(|s| s.status == StatusCode::OK);
    assert!(all_ok, "a request failed");
    // Before the switch: testers on green, users on blue.
    let before = |s: &&Sent| s.at < switched - Duration::from_millis(100);
    assert!(
        testers
            .iter()
            .filter(before)
            .all(|s| s.served_by == served_by("west"))
    );
    assert!(testers.iter().filter(before).count() > 20);
    assert!(
        users
            .iter()
            .filter(before)
            .all(|s| s.served_by == served_by("east"))
    );
    // After it: every new request on green.
    let during = |s: &&Sent| s.at > switched + Duration::from_millis(100) && s.at < rolling;
    assert!(users.iter().filter(during).count() > 20);
    assert!(
        users
            .iter()
            .filter(during)
            .all(|s| s.served_by == served_by("west"))
    );
    // Rolled back: at once on blue.
    let after = |s: &&Sent| s.at > rolled_back + Duration::from_millis(100);
    assert!(users.iter().filter(after).count() > 10);
    assert!(
        users
            .iter()
            .filter(after)
            .all(|s| s.served_by == served_by("east"))
    );
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_owner_resumes_its_move_and_completes_it() -> anyhow::Result<()> {
    let east_checkout = Echo::start("checkout in east").await?;
    let west_checkout = Echo::start("checkout in west").await?;
    tokio::task::block_in_place(binary::meshfed)?;
    let mut federation = federation(&east_checkout, &west_checkout, true).await?;
    let addrs = federation.gateway("east").addrs();
    move_checkout(
        addrs.admin,
        &[
            "--canary",
            "10:1s,40:1s,100:1s",
            "--gate-interval",
            "500ms",
            "--min-requests",
            "20",
        ],
    )?;
    let load = Load::start(addrs.http, 3, &[]);
    let mut admin = admin(addrs.admin).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&mut admin).await?.stage < 1 {
        anyhow::ensure!(Instant::now() < deadline, "no second step");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Paused, it holds; resumed, it goes on.
    let paused =
        tokio::task::block_in_place(|| cli(&["move", "pause", "checkout.shop"], addrs.admin))?;
    assert!(paused.contains("paused"), "{paused}");
    assert_eq!(status(&mut admin).await?.phase, "paused");
    tokio::task::block_in_place(|| cli(&["move", "resume", "checkout.shop"], addrs.admin))?;
    assert_eq!(status(&mut admin).await?.phase, "running");
    let before = status(&mut admin).await?;
    load.stop().await;
    federation.restart("east").await?;
    federation.catalogs_exchanged().await?;
    let mut admin = self::admin(addrs.admin).await?;
    let resumed = status(&mut admin).await?;
    assert_eq!(resumed.phase, "running", "{resumed:?}");
    assert!(
        resumed.stage >= before.stage,
        "resumed at {} after {}",
        resumed.stage,
        before.stage
    );
    let load = Load::start(addrs.http, 3, &[]);
    follow(&mut admin, "completed", Duration::from_secs(30)).await?;
    let sent = load.stop().await;
    assert!(sent.iter().all(|s| s.status == StatusCode::OK));
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_apply_each_step_within_a_second_and_report_to_the_owner()
-> anyhow::Result<()> {
    let east_checkout = Echo::start("checkout in east").await?;
    let west_checkout = Echo::start("checkout in west").await?;
    let east =
        Cluster::new("east")?.export("checkout.shop", east_checkout.addr(), &["west", "north"]);
    let west =
        Cluster::new("west")?.export("checkout.shop", west_checkout.addr(), &["east", "north"]);
    let north = Cluster::new("north")?;
    tokio::task::block_in_place(binary::meshfed)?;
    let federation = Federation::builder(vec![east, north, west])
        .policy("east", STAY_IN_EAST)
        .start()
        .await?;
    let gateways = ["east", "north", "west"].map(|c| federation.gateway(c).addrs());
    // Only north sends traffic: east's gates advance on north's reports alone.
    let load = Load::start(gateways[1].http, 4, &[]);
    move_checkout(
        gateways[0].admin,
        &[
            "--canary",
            "25:2s,60:2s,100:1s",
            "--gate-interval",
            "1s",
            "--min-requests",
            "30",
        ],
    )?;
    // When each gateway first applies each share of west.
    let mut clients = Vec::new();
    for g in &gateways {
        clients.push(admin(g.admin).await?);
    }
    let mut applied: Vec<std::collections::BTreeMap<u32, Instant>> = vec![Default::default(); 3];
    let deadline = Instant::now() + Duration::from_secs(60);
    while applied.iter().any(|a| !a.contains_key(&100)) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every gateway reached 100 %: {applied:?}"
        );
        for (i, client) in clients.iter_mut().enumerate() {
            let splits = client
                .list_splits(ListSplitsRequest {})
                .await?
                .into_inner()
                .splits;
            let west = splits
                .iter()
                .find(|s| s.service == "checkout.shop")
                .and_then(|s| s.weights.iter().find(|w| w.cluster == "west"))
                .map(|w| w.weight);
            if let Some(west) = west {
                applied[i].entry(west).or_insert_with(Instant::now);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = load.stop().await;
    for share in [25, 60, 100] {
        let times: Vec<Instant> = applied
            .iter()
            .filter_map(|a| a.get(&share).copied())
            .collect();
        assert_eq!(times.len(), 3, "{share} %: {applied:?}");
        let first = times.iter().min().copied().unwrap_or_else(Instant::now);
        let last = times.iter().max().copied().unwrap_or_else(Instant::now);
        assert!(
            last - first < Duration::from_secs(1),
            "{share} % applied over {:?}",
            last - first
        );
    }
    assert!(sent.iter().all(|s| s.status == StatusCode::OK));
    assert!(sent.iter().any(|s| s.served_by == served_by("west")));
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_stay_until_a_move_that_drains_them_ends() -> anyhow::Result<()> {
    let east_db = meshfed_tests::tcp_echo::TcpEcho::start().await?;
    let west_db = meshfed_tests::tcp_echo::TcpEcho::start().await?;
    let east =
        Cluster::new("east")?.export_port("db.shop", "tcp", 5432, &[east_db.addr()], &["west"]);
    let west =
        Cluster::new("west")?.export_port("db.shop", "tcp", 5432, &[west_db.addr()], &["east"]);
    tokio::task::block_in_place(binary::meshfed)?;
    let federation = Federation::builder(vec![east, west])
        .tcp_service("east", "db.shop", 5432)
        .config("east", "access_log: { path: east/access.log }")
        .start()
        .await?;
    let addrs = federation.gateway("east").addrs();
    let listen = federation.gateway("east").tcp_services()[0].listen;
    // Pinned to east by hand first, so that the connection opened now is on blue.
    tokio::task::block_in_place(|| cli(&["split", "set", "db.shop", "east=100"], addrs.admin))?;
    let mut before = tokio::net::TcpStream::connect(listen).await?;
    echo(&mut before, b"on blue").await?;
    tokio::task::block_in_place(|| {
        cli(
            &[
                "move",
                "start",
                "db.shop",
                "--from",
                "east",
                "--to",
                "west",
                "--canary",
                "100:500ms",
                "--min-requests",
                "0",
                "--gate-interval",
                "500ms",
                "--drain-tcp",
                "2s",
            ],
            addrs.admin,
        )
    })?;
    let mut admin = admin(addrs.admin).await?;
    let request = ListMovesRequest {
        service: "db.shop".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin.list_moves(request.clone()).await?.into_inner().moves[0].phase != "completed" {
        anyhow::ensure!(Instant::now() < deadline, "the move did not complete");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Completed: the old connection still carries bytes until the drain deadline...
    echo(&mut before, b"still here").await?;
    // ...and is closed after it, while a new connection goes to green.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut before, &mut rest),
    )
    .await;
    assert!(closed.is_ok(), "the drained connection was not closed");
    let mut after = tokio::net::TcpStream::connect(listen).await?;
    echo(&mut after, b"on green").await?;
    drop(after);
    let log = federation.home("east").join("access.log");
    meshfed_tests::wait::until(Duration::from_secs(10), "both connections logged", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 2)
    })
    .await?;
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert!(
        lines
            .iter()
            .any(|l| l["destination_cluster"] == "east" && l["reason"] == "drained"),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["destination_cluster"] == "west" && l.get("reason").is_none()),
        "{lines:#?}"
    );
    federation.shutdown().await;
    Ok(())
}

/// Sends `text` on `stream` and reads it back.
async fn echo(stream: &mut tokio::net::TcpStream, text: &[u8]) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream.write_all(text).await?;
    let mut back = vec![0u8; text.len()];
    stream.read_exact(&mut back).await?;
    anyhow::ensure!(back == text, "echoed {back:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_reaches_green_stays_there_through_every_step() -> anyhow::Result<()> {
    let east_checkout = Echo::start("checkout in east").await?;
    let west_checkout = Echo::start("checkout in west").await?;
    tokio::task::block_in_place(binary::meshfed)?;
    let federation = federation(&east_checkout, &west_checkout, false).await?;
    let addrs = federation.gateway("east").addrs();
    move_checkout(
        addrs.admin,
        &[
            "--canary",
            "20:1s,50:1s,80:1s,100:1s",
            "--gate-interval",
            "500ms",
            "--session-header",
            "x-user",
        ],
    )?;
    let mut admin = admin(addrs.admin).await?;
    // 40 users call in turn until the move completes; each user's answers in order.
    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let mut seen: Vec<Vec<String>> = vec![Vec::new(); users.len()];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (i, user) in users.iter().enumerate() {
            let reply = client::send(
                addrs.http,
                http::Method::GET,
                CHECKOUT,
                "/",
                &[("x-user", user.as_str())],
                bytes::Bytes::new(),
            )
            .await?;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            seen[i].push(reply.served_by());
        }
        if status(&mut admin).await?.phase == "completed" {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the move did not complete");
    }
    for (user, answers) in users.iter().zip(&seen) {
        let first_green = answers.iter().position(|a| a == served_by("west"));
        let Some(first_green) = first_green else {
            panic!("{user} never reached green: {answers:?}");
        };
        let back = answers[first_green..]
            .iter()
            .any(|a| a == served_by("east"));
        assert!(!back, "{user} went back to blue: {answers:?}");
    }
    // Not everyone moved at the first step: the steps really moved sessions over time.
    let moved_at_once = seen
        .iter()
        .filter(|answers| answers.first().map(String::as_str) == Some(served_by("west")))
        .count();
    assert!(
        moved_at_once < users.len(),
        "every session was on green from the start"
    );
    federation.shutdown().await;
    Ok(())
}
