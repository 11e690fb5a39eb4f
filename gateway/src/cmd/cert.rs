//! `meshfed cert inspect`: what an operator needs to see of a certificate.

use std::path::Path;
use std::process::ExitCode;

use meshfed_trust::x509;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub(crate) fn inspect(file: &Path) -> ExitCode {
    let pem = match std::fs::read(file) {
        Ok(pem) => pem,
        Err(error) => {
            eprintln!("meshfed: cannot read {}: {error}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let certs = match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if !certs.is_empty() => certs,
        Ok(_) => {
            eprintln!("meshfed: {}: no CERTIFICATE block", file.display());
            return ExitCode::from(super::EXIT_BAD_CONFIG);
        }
        Err(error) => {
            eprintln!("meshfed: {}: malformed PEM: {error}", file.display());
            return ExitCode::from(super::EXIT_BAD_CONFIG);
        }
    };
    let mut status = ExitCode::SUCCESS;
    for (i, cert) in certs.iter().enumerate() {
        match x509::summary(cert) {
            Ok(s) => {
                let id = s
                    .spiffe_id
                    .map_or_else(|e| format!("none ({e})"), |id| id.to_string());
                println!("certificate {i}:");
                println!("  spiffe id: {id}");
                println!("  subject:   {}", s.subject);
                println!("  issuer:    {}", s.issuer);
                println!("  valid:     {} .. {}", s.not_before, s.not_after);
                println!("  ca:        {}", s.is_ca);
            }
            Err(error) => {
                eprintln!("meshfed: {}: certificate {i} {error}", file.display());
                status = ExitCode::from(super::EXIT_BAD_CONFIG);
            }
        }
    }
    status
}
