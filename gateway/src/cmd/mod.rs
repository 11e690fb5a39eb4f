//! The `meshfed` commands: `run`, `check`, `demo`, `ca init`.

mod ca;
mod demo;
mod demo_service;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshfed_gateway::telemetry::{self, LogFormat};

/// Exit status for a config that is refused.
pub(crate) const EXIT_BAD_CONFIG: u8 = 2;

/// meshfed joins clusters and meshes through a gateway at each cluster's edge, over QUIC with
/// federated SPIFFE trust.
#[derive(Debug, Parser)]
#[command(name = "meshfed", version, about, long_about = None)]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a gateway from a config file.
    Run {
        /// The gateway's YAML config.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file (and the files it names) without starting anything.
    Check {
        /// The gateway's YAML config.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start a two-cluster federation on this machine and print commands to try.
    Demo,
    /// Manage a trust domain's certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create a root key and certificate for a trust domain.
    Init {
        /// The trust domain, such as `east.example`.
        #[arg(long)]
        trust_domain: String,
        /// The directory to write `ca.pem` and `ca.key` into.
        #[arg(long)]
        out: PathBuf,
    },
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, std::env::var("MESHFED_LOG").ok());
    match cli.command {
        Command::Check { config } => run::check(&config),
        Command::Run { config } => run::run(&config),
        Command::Demo => demo::run(),
        Command::Ca {
            command: CaCommand::Init { trust_domain, out },
        } => ca::init(&trust_domain, &out),
    }
}

/// A multi-threaded tokio runtime for the long-running commands.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
pub(crate) async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the gateway");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
