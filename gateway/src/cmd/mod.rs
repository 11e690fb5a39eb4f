//! The `meshfed` commands: `run`, `check`, `demo`, `services`, `fault`, `policy`, `ca`,
//! `bundle`, `cert`.

mod admin;
mod bundle;
mod ca;
mod cert;
mod demo;
mod demo_service;
mod moves;
mod run;
mod services;

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
    Demo {
        /// Send both gateways' spans to this OpenTelemetry collector over OTLP/gRPC, such as
        /// `http://127.0.0.1:4317` (Jaeger all-in-one, or an OpenTelemetry Collector).
        #[arg(long)]
        otlp_endpoint: Option<String>,
    },
    /// List the services a running gateway exports and imports, from which clusters, with
    /// endpoint health.
    Services {
        /// The gateway's admin listener.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: std::net::SocketAddr,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Inject faults into a running gateway's traffic, each with an expiry.
    Fault {
        #[command(subcommand)]
        command: admin::FaultCommand,
    },
    /// Move a service from one cluster to another, gated on live health.
    Move {
        #[command(subcommand)]
        command: moves::MoveCommand,
    },
    /// Show or set how a service's requests are split across clusters.
    Split {
        #[command(subcommand)]
        command: moves::SplitCommand,
    },
    /// Act on a running gateway's traffic policy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Manage a trust domain's certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Export, inspect and import SPIFFE trust bundles.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Inspect certificates.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Read the policy file now and put it in force if it is valid as a whole; otherwise print
    /// every problem (exit status 2) and keep the policy in force.
    Reload {
        /// The gateway's admin listener.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: std::net::SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Print this cluster's trust bundle (SPIFFE bundle JSON) for its peers.
    Export {
        /// The gateway's YAML config.
        #[arg(long, short)]
        config: PathBuf,
        /// `spiffe_sequence` to put in the bundle.
        #[arg(long)]
        sequence: Option<u64>,
    },
    /// Show the authorities in a bundle file (SPIFFE bundle JSON or PEM).
    Show {
        /// The bundle file.
        file: PathBuf,
        /// The trust domain the bundle is for.
        #[arg(long)]
        trust_domain: String,
    },
    /// Check a peer's bundle file and write it where `peers[].bundle` can name it.
    Import {
        /// The bundle file received from the peer (SPIFFE bundle JSON or PEM).
        file: PathBuf,
        /// The peer's trust domain.
        #[arg(long)]
        trust_domain: String,
        /// Where to write the checked bundle (SPIFFE bundle JSON).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Show each certificate in a PEM file: SPIFFE ID, subject, issuer, validity.
    Inspect {
        /// The PEM file.
        file: PathBuf,
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
        Command::Demo { otlp_endpoint } => demo::run(otlp_endpoint.as_deref()),
        Command::Services { admin, json } => services::run(admin, json),
        Command::Fault { command } => admin::fault(command),
        Command::Move { command } => moves::run_move(command),
        Command::Split { command } => moves::run_split(command),
        Command::Policy {
            command: PolicyCommand::Reload { admin },
        } => admin::reload_policy(admin),
        Command::Ca {
            command: CaCommand::Init { trust_domain, out },
        } => ca::init(&trust_domain, &out),
        Command::Bundle { command } => match command {
            BundleCommand::Export { config, sequence } => bundle::export(&config, sequence),
            BundleCommand::Show { file, trust_domain } => bundle::show(&file, &trust_domain),
            BundleCommand::Import {
                file,
                trust_domain,
                out,
            } => bundle::import(&file, &trust_domain, &out),
        },
        Command::Cert {
            command: CertCommand::Inspect { file },
        } => cert::inspect(&file),
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
