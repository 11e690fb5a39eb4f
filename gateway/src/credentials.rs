//! The gateway's identity and trust, loaded from what the config points at.

use std::path::Path;
use std::time::SystemTime;

use meshfed_trust::{Ca, SpiffeId, Svid, TrustStore};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::{Config, ConfigError, ConfigErrors, Identity};

/// The gateway's own SVID and the roots of every peer trust domain.
#[derive(Debug)]
pub struct Credentials {
    /// The gateway's X.509-SVID.
    pub svid: Svid,
    /// One root set per peer trust domain.
    pub trust: TrustStore,
}

impl Credentials {
    /// Loads (or, with a CA directory, issues) the SVID and reads every peer's bundle. Every
    /// problem is reported, each under the config key that names the file.
    pub fn load(config: &Config, now: SystemTime) -> Result<Credentials, ConfigErrors> {
        let mut errors = Vec::new();
        let svid = match own_svid(config, now) {
            Ok(svid) => Some(svid),
            Err(error) => {
                errors.push(error);
                None
            }
        };
        let mut trust = TrustStore::new();
        for (i, peer) in config.peers.iter().enumerate() {
            let path = format!("peers[{i}].bundle");
            let roots = match read_roots(&peer.bundle) {
                Ok(roots) => roots,
                Err(reason) => {
                    errors.push(file_error(path, &peer.bundle, reason));
                    continue;
                }
            };
            match trust.clone().with_roots(peer.trust_domain.clone(), &roots) {
                Ok(next) => trust = next,
                Err(error) => errors.push(file_error(path, &peer.bundle, error.to_string())),
            }
        }
        match svid {
            Some(svid) if errors.is_empty() => Ok(Credentials { svid, trust }),
            _ => Err(ConfigErrors { file: None, errors }),
        }
    }
}

/// The SPIFFE ID of a cluster's gateway: `spiffe://<trust-domain>/meshfed/gateway/<cluster>`.
pub fn gateway_id(config: &Config) -> SpiffeId {
    SpiffeId::new(
        config.trust_domain.clone(),
        ["meshfed", "gateway", config.cluster.as_str()],
    )
    .expect("a DNS label is always a valid SPIFFE path segment")
}

fn own_svid(config: &Config, now: SystemTime) -> Result<Svid, ConfigError> {
    let (path, file, svid) = match &config.identity {
        Identity::Ca { dir, svid_lifetime } => {
            let at = |reason: String| file_error("identity.ca_dir".into(), dir, reason);
            let ca = Ca::load(dir).map_err(|e| at(e.to_string()))?;
            if ca.trust_domain() != &config.trust_domain {
                return Err(at(format!(
                    "the CA is for trust domain {}, not {}",
                    ca.trust_domain(),
                    config.trust_domain
                )));
            }
            let svid = ca
                .issue(&gateway_id(config), now, *svid_lifetime)
                .map_err(|e| at(e.to_string()))?;
            ("identity.ca_dir", dir, svid)
        }
        Identity::Files { cert, key, bundle } => {
            read_roots(bundle).map_err(|r| file_error("identity.bundle".into(), bundle, r))?;
            let svid = Svid::from_pem_files(cert, key)
                .map_err(|e| file_error("identity.cert".into(), cert, e.to_string()))?;
            ("identity.cert", cert, svid)
        }
    };
    if svid.id().trust_domain() != &config.trust_domain {
        return Err(file_error(
            path.into(),
            file,
            format!(
                "the SVID is {}, outside trust domain {}",
                svid.id(),
                config.trust_domain
            ),
        ));
    }
    Ok(svid)
}

fn read_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let roots = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("malformed PEM: {e}"))?;
    if roots.is_empty() {
        return Err("holds no CERTIFICATE block".into());
    }
    Ok(roots)
}

fn file_error(path: String, file: &Path, reason: String) -> ConfigError {
    ConfigError {
        path,
        line: None,
        value: Some(file.display().to_string()),
        reason,
    }
}
