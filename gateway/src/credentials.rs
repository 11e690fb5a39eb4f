//! The gateway's identity and trust, loaded from what the config points at.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use meshfed_trust::{Bundle, BundleError, Ca, CaError, SpiffeId, Svid, TrustDomain, TrustStore};

use meshfed_discovery::Label;

use crate::config::{Config, ConfigError, ConfigErrors, Identity};

/// The gateway's own SVID and the roots of every peer trust domain.
#[derive(Debug)]
pub struct Credentials {
    /// The gateway's X.509-SVID.
    pub svid: Svid,
    /// One root set per peer trust domain.
    pub trust: TrustStore,
    /// With a CA directory: what issues the next SVID.
    pub(crate) issuer: Option<Issuer>,
}

/// Issues the gateway's SVIDs from its trust domain's CA.
#[derive(Debug)]
pub(crate) struct Issuer {
    ca: Ca,
    id: SpiffeId,
    lifetime: Duration,
    /// How far through its lifetime an SVID is renewed, in percent.
    pub(crate) renew_at: u8,
}

impl Credentials {
    /// Loads (or, with a CA directory, issues) the SVID and reads every peer's bundle. Every
    /// problem is reported, each under the config key that names the file.
    pub fn load(config: &Config, now: SystemTime) -> Result<Credentials, ConfigErrors> {
        let identity = own_svid(config, now);
        let trust = load_trust(config);
        match (identity, trust) {
            (Ok((svid, issuer)), Ok(trust)) => Ok(Credentials {
                svid,
                trust,
                issuer,
            }),
            (identity, trust) => {
                let mut errors: Vec<ConfigError> = identity.err().into_iter().collect();
                errors.extend(trust.err().into_iter().flatten());
                Err(ConfigErrors { file: None, errors })
            }
        }
    }
}

impl Issuer {
    pub(crate) fn issue(&self, now: SystemTime) -> Result<Svid, CaError> {
        self.ca.issue(&self.id, now, self.lifetime)
    }
}

/// This gateway's SPIFFE ID.
pub fn gateway_id(config: &Config) -> SpiffeId {
    gateway_id_of(&config.trust_domain, &config.cluster)
}

/// The SPIFFE ID of a cluster's gateway: `spiffe://<trust-domain>/meshfed/gateway/<cluster>`.
/// Peers are pinned to it: another workload of the same trust domain is not the gateway.
pub fn gateway_id_of(trust_domain: &TrustDomain, cluster: &Label) -> SpiffeId {
    SpiffeId::new(
        trust_domain.clone(),
        ["meshfed", "gateway", cluster.as_str()],
    )
    .expect("a DNS label is always a valid SPIFFE path segment")
}

/// In a CA directory, further roots to publish in the bundle beside the CA's own: the next
/// root before it signs anything, or the previous one until its last SVID expires.
pub const CA_EXTRA_ROOTS_FILE: &str = "bundle.pem";

/// This cluster's own trust bundle: with `ca_dir`, the CA's root and any roots in
/// `ca_dir/bundle.pem`; otherwise the `identity.bundle` file.
pub fn own_bundle(config: &Config) -> Result<Bundle, ConfigError> {
    match &config.identity {
        Identity::Ca { dir, .. } => {
            let ca = Ca::load(dir)
                .map_err(|e| file_error("identity.ca_dir".into(), dir, e.to_string()))?;
            let mut roots = vec![ca.root().clone()];
            let extra = dir.join(CA_EXTRA_ROOTS_FILE);
            if extra.exists() {
                let more = read_bundle(&extra, &config.trust_domain)
                    .map_err(|r| file_error("identity.ca_dir".into(), &extra, r))?;
                let own = ca.root();
                roots.extend(more.authorities().iter().filter(|r| *r != own).cloned());
            }
            Ok(Bundle::new(config.trust_domain.clone(), roots))
        }
        Identity::Files { bundle, .. } => read_bundle(bundle, &config.trust_domain)
            .map_err(|r| file_error("identity.bundle".into(), bundle, r)),
    }
}

/// Reads a bundle file, SPIFFE bundle document (JSON) or PEM, as `trust_domain`'s bundle.
pub fn read_bundle_file(path: &Path, trust_domain: &TrustDomain) -> Result<Bundle, String> {
    read_bundle(path, trust_domain).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every file the credentials are read from: a change to any of them means a reload.
pub(crate) fn files(config: &Config) -> Vec<PathBuf> {
    let mut files = match &config.identity {
        Identity::Ca { dir, .. } => vec![
            dir.join(meshfed_trust::ca::CA_CERT_FILE),
            dir.join(CA_EXTRA_ROOTS_FILE),
        ],
        Identity::Files { cert, key, bundle } => vec![cert.clone(), key.clone(), bundle.clone()],
    };
    files.extend(config.peers.iter().map(|p| p.bundle.clone()));
    files
}

/// Reads every peer's bundle into a trust store, one root set per peer trust domain.
pub(crate) fn load_trust(config: &Config) -> Result<TrustStore, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut trust = TrustStore::new();
    for (i, peer) in config.peers.iter().enumerate() {
        let path = format!("peers[{i}].bundle");
        let roots = match read_bundle(&peer.bundle, &peer.trust_domain) {
            Ok(bundle) => bundle.authorities().to_vec(),
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
    if errors.is_empty() {
        Ok(trust)
    } else {
        Err(errors)
    }
}

/// The gateway's SVID now, and what issues the next one if it comes from a CA directory.
pub(crate) fn own_svid(
    config: &Config,
    now: SystemTime,
) -> Result<(Svid, Option<Issuer>), ConfigError> {
    let (path, file, svid, issuer) = match &config.identity {
        Identity::Ca {
            dir,
            svid_lifetime,
            renew_at,
        } => {
            let at = |reason: String| file_error("identity.ca_dir".into(), dir, reason);
            let ca = Ca::load(dir).map_err(|e| at(e.to_string()))?;
            if ca.trust_domain() != &config.trust_domain {
                return Err(at(format!(
                    "the CA is for trust domain {}, not {}",
                    ca.trust_domain(),
                    config.trust_domain
                )));
            }
            let issuer = Issuer {
                ca,
                id: gateway_id(config),
                lifetime: *svid_lifetime,
                renew_at: *renew_at,
            };
            let svid = issuer.issue(now).map_err(|e| at(e.to_string()))?;
            ("identity.ca_dir", dir, svid, Some(issuer))
        }
        Identity::Files { cert, key, bundle } => {
            let own = read_bundle(bundle, &config.trust_domain)
                .map_err(|r| file_error("identity.bundle".into(), bundle, r))?;
            let svid = Svid::from_pem_files(cert, key)
                .map_err(|e| file_error("identity.cert".into(), cert, e.to_string()))?;
            meshfed_trust::tls::check_svid(&svid, own.authorities()).map_err(|e| {
                file_error(
                    "identity.cert".into(),
                    cert,
                    format!("the SVID is not usable with identity.key and identity.bundle: {e}"),
                )
            })?;
            ("identity.cert", cert, svid, None)
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
    Ok((svid, issuer))
}

/// A trust domain's roots from a bundle file (SPIFFE bundle JSON or PEM), checked: every root
/// a CA, none of another trust domain. A SPIFFE bundle with no keys is valid and revokes trust.
fn read_bundle(path: &Path, trust_domain: &TrustDomain) -> Result<Bundle, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let bundle = if bytes.trim_ascii_start().starts_with(b"{") {
        Bundle::from_jwks(trust_domain.clone(), &bytes)
    } else {
        Bundle::from_pem(trust_domain.clone(), &bytes).and_then(|b| {
            if b.authorities().is_empty() {
                Err(BundleError::Pem("holds no CERTIFICATE block".into()))
            } else {
                Ok(b)
            }
        })
    };
    bundle.map_err(|e| e.to_string())
}

fn file_error(path: String, file: &Path, reason: String) -> ConfigError {
    ConfigError {
        path,
        line: None,
        value: Some(file.display().to_string()),
        reason,
    }
}
