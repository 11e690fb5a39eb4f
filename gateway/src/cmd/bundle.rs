//! `meshfed bundle export|show|import`: moving trust bundles between clusters by hand, and the
//! bootstrap bundle that SPIFFE-authenticated bundle endpoints need.

use std::path::Path;
use std::process::ExitCode;

use meshfed_gateway::Config;
use meshfed_gateway::credentials::{own_bundle, read_bundle_file};
use meshfed_trust::{Bundle, TrustDomain};

use super::EXIT_BAD_CONFIG;

pub(crate) fn export(config: &Path, sequence: Option<u64>) -> ExitCode {
    let config = match Config::load(config) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match own_bundle(&config) {
        Ok(bundle) => {
            let bundle = match sequence {
                Some(sequence) => bundle.with_sequence(sequence),
                None => bundle,
            };
            println!("{}", bundle.to_jwks());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("meshfed: {error}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
    }
}

pub(crate) fn show(file: &Path, trust_domain: &str) -> ExitCode {
    let bundle = match read(file, trust_domain) {
        Ok(bundle) => bundle,
        Err(code) => return code,
    };
    println!("{bundle}");
    for (i, authority) in bundle.authorities().iter().enumerate() {
        match meshfed_trust::x509::summary(authority) {
            Ok(s) => println!(
                "  [{i}] subject: {}\n      valid: {} .. {}\n      id: {}",
                s.subject,
                s.not_before,
                s.not_after,
                s.spiffe_id
                    .map_or_else(|e| format!("none ({e})"), |id| id.to_string())
            ),
            Err(error) => println!("  [{i}] unreadable: {error}"),
        }
    }
    ExitCode::SUCCESS
}

pub(crate) fn import(file: &Path, trust_domain: &str, out: &Path) -> ExitCode {
    let bundle = match read(file, trust_domain) {
        Ok(bundle) => bundle,
        Err(code) => return code,
    };
    if bundle.authorities().is_empty() {
        eprintln!(
            "meshfed: {}: the bundle has no authorities; importing it would revoke trust in {}",
            file.display(),
            bundle.trust_domain()
        );
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    if let Err(error) = std::fs::write(out, bundle.to_jwks()) {
        eprintln!("meshfed: cannot write {}: {error}", out.display());
        return ExitCode::FAILURE;
    }
    println!("imported {bundle} into {}", out.display());
    ExitCode::SUCCESS
}

fn read(file: &Path, trust_domain: &str) -> Result<Bundle, ExitCode> {
    let trust_domain: TrustDomain = trust_domain.parse().map_err(|error| {
        eprintln!("meshfed: --trust-domain {trust_domain:?}: {error}");
        ExitCode::from(EXIT_BAD_CONFIG)
    })?;
    read_bundle_file(file, &trust_domain).map_err(|error| {
        eprintln!("meshfed: {error}");
        ExitCode::from(EXIT_BAD_CONFIG)
    })
}
