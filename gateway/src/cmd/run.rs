//! `meshfed run` and `meshfed check`.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use meshfed_gateway::config::ConfigErrors;
use meshfed_gateway::runtime::StartError;
use meshfed_gateway::{Bound, Config, Credentials};

use super::EXIT_BAD_CONFIG;

/// Validates a config and everything it names (its policy file too); prints every problem;
/// exits 2 if there are any.
pub(crate) fn check(path: &Path) -> ExitCode {
    let loaded = load(path).and_then(|(config, credentials)| {
        if let Some(policy) = &config.policy_file {
            meshfed_gateway::config::policy::load(policy, &config)?;
        }
        Ok((config, credentials))
    });
    match loaded {
        Ok((config, _)) => {
            println!(
                "{}: ok (cluster {}, {} peers, {} exports)",
                path.display(),
                config.cluster,
                config.peers.len(),
                config.exports.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprint!("{errors}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
    }
}

/// Runs a gateway until SIGINT or SIGTERM.
pub(crate) fn run(path: &Path) -> ExitCode {
    let (config, credentials) = match load(path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("meshfed: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let bound = match Bound::bind(&config.listeners) {
            Ok(bound) => bound,
            Err(error) => {
                eprintln!("meshfed: {error}");
                return ExitCode::FAILURE;
            }
        };
        let running = match meshfed_gateway::start(config, bound, credentials) {
            Ok(running) => running,
            // A bad policy file is a bad config, reported and answered the same way.
            Err(StartError::Policy(errors)) => {
                eprint!("{errors}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            Err(error) => {
                eprintln!("meshfed: {error}");
                return ExitCode::FAILURE;
            }
        };
        super::stop_signal().await;
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn load(path: &Path) -> Result<(Config, Credentials), ConfigErrors> {
    let config = Config::load(path)?;
    let credentials = Credentials::load(&config, SystemTime::now()).map_err(|mut e| {
        e.file = Some(path.to_owned());
        e
    })?;
    Ok((config, credentials))
}
