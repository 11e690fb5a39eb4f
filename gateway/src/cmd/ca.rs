//! `meshfed ca init`.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use meshfed_trust::{Ca, TrustDomain};

pub(crate) fn init(trust_domain: &str, out: &Path) -> ExitCode {
    let trust_domain: TrustDomain = match trust_domain.parse() {
        Ok(td) => td,
        Err(error) => {
            eprintln!("meshfed: --trust-domain {trust_domain:?}: {error}");
            return ExitCode::from(super::EXIT_BAD_CONFIG);
        }
    };
    let result = Ca::generate(trust_domain.clone(), SystemTime::now()).and_then(|ca| ca.write(out));
    match result {
        Ok(()) => {
            println!(
                "wrote the root CA of trust domain {trust_domain} to {}",
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("meshfed: {error}");
            ExitCode::FAILURE
        }
    }
}
