//! `meshfed move start|status|pause|resume|abort|rollback` and `meshfed split show|set|clear`:
//! clients of the admin API of the gateway that owns (or will own) the move.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use meshfed_gateway::admin::proto::{self, change_move_request::Action};

use super::admin::{block_on, connect, report};

/// How often `move status --watch` redraws.
const WATCH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Subcommand)]
pub(crate) enum MoveCommand {
    /// Start moving a service from one cluster to another; this gateway owns the move.
    Start(Box<StartMove>),
    /// Show the moves this gateway owns: step, weights, each gate against its threshold.
    Status {
        /// Only this service's move.
        service: Option<String>,
        /// Redraw every second until interrupted.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        admin: Admin,
    },
    /// Hold a move where it is.
    Pause(ServiceArg),
    /// Go on with a paused move (its current step is held again from now).
    Resume(ServiceArg),
    /// Send all traffic back to blue at once, and end the move.
    Rollback(ServiceArg),
    /// End the move and withdraw its split: the policy routes the service again.
    Abort(ServiceArg),
}

#[derive(Debug, Subcommand)]
pub(crate) enum SplitCommand {
    /// Show the splits in force at this gateway (its own and its peers').
    Show {
        /// Only this service's split.
        service: Option<String>,
        #[command(flatten)]
        admin: Admin,
    },
    /// Split a service by hand, such as `east=80,west=20`; every gateway applies it. No gates.
    Set {
        /// The service, `<name>.<namespace>`.
        service: String,
        /// `<cluster>=<weight>,...`.
        weights: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Withdraw a split set at this gateway, by hand or left by a move that ended.
    Clear(ServiceArg),
}

#[derive(Debug, Args)]
pub(crate) struct Admin {
    /// The gateway's admin listener.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
}

#[derive(Debug, Args)]
pub(crate) struct ServiceArg {
    /// The service, `<name>.<namespace>`.
    service: String,
    #[command(flatten)]
    admin: Admin,
}

#[derive(Debug, Args)]
pub(crate) struct StartMove {
    /// The service, `<name>.<namespace>`.
    service: String,
    /// Blue: the cluster it runs in now.
    #[arg(long)]
    from: String,
    /// Green: the cluster it moves to.
    #[arg(long)]
    to: String,
    /// Canary steps, `<percent>:<hold>,...`, the last at 100 (`10:1m,50:2m,100:5m`).
    #[arg(
        long,
        conflicts_with = "blue_green",
        required_unless_present = "blue_green"
    )]
    canary: Option<String>,
    /// Blue-green: verify green with pinned traffic for `--verify`, switch, hold `--hold`.
    #[arg(long)]
    blue_green: bool,
    /// Blue-green: how long green is verified before the switch.
    #[arg(long, default_value = "1m", requires = "blue_green")]
    verify: String,
    /// Blue-green: how long the switch is held, blue ready to take back.
    #[arg(long, default_value = "5m", requires = "blue_green")]
    hold: String,
    /// Gate: the highest share of green's requests that may fail, in percent.
    #[arg(long, default_value_t = 1.0, value_name = "PERCENT")]
    max_error_rate: f64,
    /// Gate: the highest p99 latency green may show (`500ms`).
    #[arg(long, value_name = "DURATION")]
    max_p99: Option<String>,
    /// Gate: green's requests a step needs before it may end.
    #[arg(long, default_value_t = 20)]
    min_requests: u64,
    /// How often the gates are judged.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    gate_interval: String,
    /// On a failed gate: `rollback` (all traffic back to blue) or `pause`.
    #[arg(long, default_value = "rollback", value_parser = ["rollback", "pause"])]
    on_failure: String,
    /// Keep sessions on one side: requests with the same value of this header.
    #[arg(long, conflicts_with = "session_cookie")]
    session_header: Option<String>,
    /// Keep sessions on one side: requests with the same value of this cookie.
    #[arg(long)]
    session_cookie: Option<String>,
    /// Close TCP connections still on blue this long after the move completes.
    #[arg(long, value_name = "DURATION")]
    drain_tcp: Option<String>,
    #[command(flatten)]
    admin: Admin,
}

/// Runs a `meshfed move` command.
pub(crate) fn run_move(command: MoveCommand) -> ExitCode {
    let (name, done) = match command {
        MoveCommand::Start(start) => ("move start", block_on(start_move(*start))),
        MoveCommand::Status {
            service,
            watch,
            admin,
        } => ("move status", block_on(status(admin.admin, service, watch))),
        MoveCommand::Pause(arg) => ("move pause", block_on(change(arg, Action::Pause))),
        MoveCommand::Resume(arg) => ("move resume", block_on(change(arg, Action::Resume))),
        MoveCommand::Rollback(arg) => ("move rollback", block_on(change(arg, Action::Rollback))),
        MoveCommand::Abort(arg) => ("move abort", block_on(change(arg, Action::Abort))),
    };
    report(name, done)
}

/// Runs a `meshfed split` command.
pub(crate) fn run_split(command: SplitCommand) -> ExitCode {
    let (name, done) = match command {
        SplitCommand::Show { service, admin } => {
            ("split show", block_on(show(admin.admin, service)))
        }
        SplitCommand::Set {
            service,
            weights,
            admin,
        } => ("split set", block_on(set(admin.admin, service, weights))),
        SplitCommand::Clear(arg) => ("split clear", block_on(clear(arg))),
    };
    report(name, done)
}

async fn start_move(start: StartMove) -> anyhow::Result<()> {
    let steps = match &start.canary {
        Some(canary) => parse_steps(canary)?,
        None => Vec::new(),
    };
    let request = proto::StartMoveRequest {
        service: start.service,
        from: start.from,
        to: start.to,
        steps,
        blue_green: start.blue_green.then_some(proto::BlueGreen {
            verify: start.verify,
            hold: start.hold,
        }),
        max_error_percent: start.max_error_rate,
        max_p99: start.max_p99.unwrap_or_default(),
        min_requests: start.min_requests,
        gate_interval: start.gate_interval,
        pause_on_failure: start.on_failure == "pause",
        session_header: start.session_header.unwrap_or_default(),
        session_cookie: start.session_cookie.unwrap_or_default(),
        drain_tcp: start.drain_tcp.unwrap_or_default(),
    };
    let started = connect(start.admin.admin)
        .await?
        .start_move(request)
        .await?
        .into_inner();
    print!("{}", describe(&started));
    Ok(())
}

/// `10:1m,50:2m,100:5m` as canary steps.
fn parse_steps(text: &str) -> anyhow::Result<Vec<proto::CanaryStep>> {
    text.split(',')
        .map(|step| {
            let (percent, hold) = step
                .trim()
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("step {step:?} is not <percent>:<hold>"))?;
            let green_percent = percent
                .trim()
                .trim_end_matches('%')
                .parse()
                .map_err(|_| anyhow::anyhow!("step {step:?}: {percent:?} is not a percent"))?;
            Ok(proto::CanaryStep {
                green_percent,
                hold: hold.trim().to_owned(),
            })
        })
        .collect()
}

async fn status(admin: SocketAddr, service: Option<String>, watch: bool) -> anyhow::Result<()> {
    let mut client = connect(admin).await?;
    loop {
        let request = proto::ListMovesRequest {
            service: service.clone().unwrap_or_default(),
        };
        let moves = client.list_moves(request).await?.into_inner().moves;
        let mut text = String::new();
        if moves.is_empty() {
            text.push_str("no moves owned by this gateway\n");
        }
        for m in &moves {
            text.push_str(&describe(m));
        }
        if !watch {
            print!("{text}");
            return Ok(());
        }
        // Clear the screen and draw from the top, as `watch` does.
        print!("\x1b[2J\x1b[H{text}\n(refreshing every second; Ctrl-C to stop)\n");
        let _ = std::io::stdout().flush();
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// A move as people read it: where it is, the weights, each gate against its threshold, and
/// the time to the next step.
fn describe(m: &proto::MoveStatus) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{}: {} -> {} ({}), {}",
        m.service, m.from, m.to, m.strategy, m.phase
    );
    if !m.reason.is_empty() {
        let _ = writeln!(text, "  why:      {}", m.reason);
    }
    let steps: Vec<String> = m
        .shares
        .iter()
        .enumerate()
        .map(|(i, share)| match i == m.stage as usize {
            true => format!("[{share}%]"),
            false => format!("{share}%"),
        })
        .collect();
    let _ = writeln!(text, "  steps:    {}", steps.join(" "));
    let _ = writeln!(
        text,
        "  weights:  {} {}%, {} {}%",
        m.from,
        100 - m.green_percent.min(100),
        m.to,
        m.green_percent
    );
    if matches!(m.phase.as_str(), "running" | "paused") {
        let wait = match m.hold_left_ms {
            0 if m.stage_requests < m.min_requests => "waiting for requests".to_owned(),
            0 => "due".to_owned(),
            ms => format!("in {:.0}s", (ms as f64 / 1000.0).ceil()),
        };
        let _ = writeln!(
            text,
            "  next step: {wait} (green requests this step: {} of {} needed)",
            m.stage_requests, m.min_requests
        );
    }
    let p99_limit = match m.max_p99_ms {
        0 => "no limit".to_owned(),
        ms => format!("max {ms} ms"),
    };
    match &m.last_reading {
        Some(r) => {
            let rate = match r.has_error_rate {
                true => format!("{:.2}%", r.error_percent),
                false => "-".to_owned(),
            };
            let p99 = match r.has_p99 {
                true => format!("{} ms", r.p99_ms),
                false => "-".to_owned(),
            };
            let verdict = match r.failed.as_str() {
                "" => "held".to_owned(),
                why => format!("FAILED: {why}"),
            };
            let _ = writeln!(
                text,
                "  gates ({} requests, {:.0}s ago): error rate {rate} (max {:.2}%), p99 {p99} ({p99_limit}): {verdict}",
                r.requests,
                r.age_ms as f64 / 1000.0,
                m.max_error_percent,
            );
        }
        None => {
            let _ = writeln!(
                text,
                "  gates: not judged yet (every {}s; error rate max {:.2}%, p99 {p99_limit})",
                m.gate_interval_ms / 1000,
                m.max_error_percent
            );
        }
    }
    text
}

async fn change(arg: ServiceArg, action: Action) -> anyhow::Result<()> {
    let request = proto::ChangeMoveRequest {
        service: arg.service,
        action: action.into(),
    };
    let changed = connect(arg.admin.admin)
        .await?
        .change_move(request)
        .await?
        .into_inner();
    print!("{}", describe(&changed));
    Ok(())
}

async fn show(admin: SocketAddr, service: Option<String>) -> anyhow::Result<()> {
    let splits = connect(admin)
        .await?
        .list_splits(proto::ListSplitsRequest {})
        .await?
        .into_inner()
        .splits;
    let shown: Vec<&proto::SplitStatus> = splits
        .iter()
        .filter(|s| service.as_ref().is_none_or(|w| &s.service == w))
        .collect();
    if shown.is_empty() {
        println!("no splits in force: the policy routes every service");
    }
    for split in shown {
        let total: u32 = split.weights.iter().map(|w| w.weight).sum();
        let weights: Vec<String> = split
            .weights
            .iter()
            .map(|w| {
                let percent = f64::from(w.weight) * 100.0 / f64::from(total.max(1));
                format!("{} {percent:.0}%", w.cluster)
            })
            .collect();
        let by = match split.moving {
            true => "move",
            false => "split",
        };
        println!(
            "{}: {} ({by} owned by {})",
            split.service,
            weights.join(", "),
            split.owner
        );
    }
    Ok(())
}

async fn set(admin: SocketAddr, service: String, weights: String) -> anyhow::Result<()> {
    let weights = weights
        .split(',')
        .map(|pair| {
            let (cluster, weight) = pair
                .trim()
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("{pair:?} is not <cluster>=<weight>"))?;
            let weight = weight
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{pair:?}: {weight:?} is not a weight"))?;
            Ok(proto::ClusterWeight {
                cluster: cluster.trim().to_owned(),
                weight,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = proto::SetSplitRequest { service, weights };
    let set = connect(admin).await?.set_split(request).await?.into_inner();
    let weights: Vec<String> = set
        .weights
        .iter()
        .map(|w| format!("{}={}", w.cluster, w.weight))
        .collect();
    println!(
        "{}: {} (every gateway applies it)",
        set.service,
        weights.join(",")
    );
    Ok(())
}

async fn clear(arg: ServiceArg) -> anyhow::Result<()> {
    let request = proto::ClearSplitRequest {
        service: arg.service.clone(),
    };
    connect(arg.admin.admin).await?.clear_split(request).await?;
    println!(
        "{}: split withdrawn; the policy routes it again",
        arg.service
    );
    Ok(())
}
