//! `meshfed fault set|list|clear` and `meshfed policy reload`: clients of a running gateway's
//! admin API (`meshfed.admin.v1.Admin`, gRPC on the admin listener).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use meshfed_gateway::admin::proto::admin_client::AdminClient;
use meshfed_gateway::admin::proto::{self, fault_abort};
use meshfed_gateway::policy::fault::GRPC_CODES;
use tonic::transport::Channel;

/// How long the admin listener has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Subcommand)]
pub(crate) enum FaultCommand {
    /// Inject a delay or an abort (or both) into a service's requests, until it expires.
    Set(SetFault),
    /// List the faults in force.
    List {
        /// The gateway's admin listener.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
    },
    /// End a fault before it expires.
    Clear {
        /// The fault's name, as `fault list` shows it.
        name: String,
        /// The gateway's admin listener.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SetFault {
    /// The service, `<name>.<namespace>`.
    service: String,
    /// How long the fault lasts (`90s`, `10m`, up to `24h`); it ends by itself.
    #[arg(long = "for", value_name = "DURATION")]
    duration: String,
    /// Hold requests this long (`200ms`, up to `300s`).
    #[arg(long, value_name = "DURATION")]
    delay: Option<String>,
    /// The share of requests delayed, 0 to 100.
    #[arg(long, default_value_t = 100.0, value_name = "PERCENT")]
    delay_percent: f64,
    /// Answer requests with this HTTP status (400 to 599) instead of forwarding them.
    #[arg(long, value_name = "STATUS", conflicts_with = "abort_grpc")]
    abort: Option<u32>,
    /// Answer gRPC calls with this status (`UNAVAILABLE`, or 1 to 16) instead.
    #[arg(long, value_name = "STATUS")]
    abort_grpc: Option<String>,
    /// The share of requests aborted, 0 to 100.
    #[arg(long, default_value_t = 100.0, value_name = "PERCENT")]
    abort_percent: f64,
    /// Only requests that take this route of the service's policy.
    #[arg(long)]
    route: Option<String>,
    /// The fault's name (default: the service); setting a name again replaces that fault.
    #[arg(long)]
    name: Option<String>,
    /// The gateway's admin listener.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
}

/// Runs a `meshfed fault` command.
pub(crate) fn fault(command: FaultCommand) -> ExitCode {
    let done = match command {
        FaultCommand::Set(set) => block_on(set_fault(set)),
        FaultCommand::List { admin } => block_on(list_faults(admin)),
        FaultCommand::Clear { name, admin } => block_on(async move {
            let mut client = connect(admin).await?;
            client
                .clear_fault(proto::ClearFaultRequest { name: name.clone() })
                .await?;
            println!("fault {name} cleared");
            Ok(())
        }),
    };
    report("meshfed fault", done)
}

/// Runs `meshfed policy reload`.
pub(crate) fn reload_policy(admin: SocketAddr) -> ExitCode {
    let done = block_on(async move {
        let mut client = connect(admin).await?;
        let reloaded = client
            .reload_policy(proto::ReloadPolicyRequest {})
            .await?
            .into_inner();
        match reloaded.changed {
            true => println!("policy reloaded: the new version is in force"),
            false => println!("policy unchanged: the file says what is in force"),
        }
        Ok(())
    });
    report("meshfed policy reload", done)
}

async fn set_fault(set: SetFault) -> anyhow::Result<()> {
    let abort_status = match (set.abort, &set.abort_grpc) {
        (Some(http), _) => Some(fault_abort::Status::HttpStatus(http)),
        (None, Some(grpc)) => Some(fault_abort::Status::GrpcStatus(grpc_code(grpc)?)),
        (None, None) => None,
    };
    let request = proto::SetFaultRequest {
        name: set.name.unwrap_or_default(),
        service: set.service,
        route: set.route.unwrap_or_default(),
        delay: set.delay.map(|fixed| proto::FaultDelay {
            fixed,
            percent: set.delay_percent,
        }),
        abort: abort_status.map(|status| proto::FaultAbort {
            status: Some(status),
            percent: set.abort_percent,
        }),
        duration: set.duration,
    };
    let mut client = connect(set.admin).await?;
    let fault = client.set_fault(request).await?.into_inner();
    println!("fault {} set: {}", fault.name, describe(&fault));
    Ok(())
}

async fn list_faults(admin: SocketAddr) -> anyhow::Result<()> {
    let mut client = connect(admin).await?;
    let faults = client
        .list_faults(proto::ListFaultsRequest {})
        .await?
        .into_inner()
        .faults;
    if faults.is_empty() {
        println!("no faults in force");
    }
    for fault in faults {
        println!("{}  {}", fault.name, describe(&fault));
    }
    Ok(())
}

/// One line: what a fault does, to which requests, and until when.
fn describe(fault: &proto::RuntimeFault) -> String {
    let mut parts = Vec::new();
    if let Some(delay) = &fault.delay {
        parts.push(format!("delay {} for {}%", delay.fixed, delay.percent));
    }
    if let Some(abort) = &fault.abort {
        let status = match abort.status {
            Some(fault_abort::Status::HttpStatus(code)) => format!("HTTP {code}"),
            Some(fault_abort::Status::GrpcStatus(code)) => format!("gRPC {}", grpc_name(code)),
            None => "?".to_owned(),
        };
        parts.push(format!("abort with {status} for {}%", abort.percent));
    }
    let route = match fault.route.as_str() {
        "" => String::new(),
        route => format!(" (route {route})"),
    };
    let left = Duration::from_millis(fault.remaining_ms).as_secs();
    format!(
        "{}{route}: {}; ends in {}m{:02}s",
        fault.service,
        parts.join(", "),
        left / 60,
        left % 60
    )
}

fn grpc_code(text: &str) -> anyhow::Result<u32> {
    if let Ok(code) = text.parse::<u32>() {
        return Ok(code);
    }
    GRPC_CODES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, code)| u32::from(*code))
        .with_context(|| format!("{text:?} is not a gRPC status name (UNAVAILABLE) or code"))
}

fn grpc_name(code: u32) -> String {
    GRPC_CODES
        .iter()
        .find(|(_, c)| u32::from(*c) == code)
        .map_or_else(|| code.to_string(), |(name, _)| (*name).to_owned())
}

pub(super) async fn connect(admin: SocketAddr) -> anyhow::Result<AdminClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{admin}"))?
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("cannot reach the admin listener at {admin}"))?;
    Ok(AdminClient::new(channel))
}

pub(super) fn block_on(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(work)
}

/// Prints a failure as `command: what went wrong` (a refusal's message says which field and
/// why) and picks the exit status: 2 for a request the gateway refused as invalid.
pub(super) fn report(command: &str, done: anyhow::Result<()>) -> ExitCode {
    let Err(error) = done else {
        return ExitCode::SUCCESS;
    };
    if let Some(status) = error.downcast_ref::<tonic::Status>() {
        eprintln!("{command}: {}", status.message());
        return match status.code() {
            tonic::Code::InvalidArgument => ExitCode::from(super::EXIT_BAD_CONFIG),
            _ => ExitCode::FAILURE,
        };
    }
    eprintln!("{command}: {error:#}");
    ExitCode::FAILURE
}
