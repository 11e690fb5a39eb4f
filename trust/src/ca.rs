//! A certificate authority for one trust domain, built on rcgen.
//!
//! `meshfed ca init` writes one to a directory (`ca.pem`, `ca.key`); a gateway configured with that
//! directory issues its own short-lived X.509-SVIDs from it. The root carries the trust domain's
//! own SPIFFE ID (`spiffe://<td>`) as its URI SAN, so that loading a directory tells which trust
//! domain it serves.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::spiffe::{SpiffeId, TrustDomain};
use crate::svid::Svid;
use crate::x509::{self, CertificateError};

/// The root certificate file in a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The root private key file in a CA directory (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";

/// How long a generated root is valid.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start up to this long before "now", to tolerate clock skew between clusters;
/// never more than a twentieth of an SVID's lifetime, so that any renewal point from 10 % on
/// stays in the future.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A root CA for one trust domain: its certificate and signing key.
pub struct Ca {
    trust_domain: TrustDomain,
    cert: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// Why a CA could not be made, loaded, written, or could not issue.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A CA file is not what it should be.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The root certificate does not name its trust domain.
    #[error("{path}: root certificate {source}")]
    RootIdentity {
        /// The file.
        path: PathBuf,
        /// What is wrong with its identity.
        source: CertificateError,
    },
    /// rcgen could not generate a key or sign a certificate.
    #[error("cannot sign: {0}")]
    Sign(#[from] rcgen::Error),
    /// The requested validity ends past what X.509 can express.
    #[error("a lifetime of {0:?} ends too far in the future")]
    Lifetime(Duration),
    /// A freshly issued certificate could not be read back.
    #[error("issued certificate is unusable: {0}")]
    Issued(#[from] CertificateError),
}

impl Ca {
    /// Generates a new root key and self-signed root certificate for `trust_domain`.
    pub fn generate(trust_domain: TrustDomain, now: SystemTime) -> Result<Self, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&format!("{trust_domain} meshfed root CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![uri_san(&trust_domain.id())?];
        params.not_before = to_offset(now - BACKDATE);
        params.not_after = to_offset(valid_until(now, ROOT_LIFETIME)?);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            trust_domain,
            cert_pem: cert.pem(),
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from a directory written by [`Ca::write`] (or by `meshfed ca init`).
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read_to_string(&cert_path)?;
        let key_pem = read_to_string(&key_path)?;
        let cert =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| CaError::Invalid {
                path: cert_path.clone(),
                what: format!("holds no certificate: {e}"),
            })?;
        let id = x509::spiffe_id(&cert).map_err(|source| CaError::RootIdentity {
            path: cert_path.clone(),
            source,
        })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Invalid {
            path: key_path.clone(),
            what: format!("holds no usable private key: {e}"),
        })?;
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|e| CaError::Invalid {
            path: cert_path,
            what: format!("cannot be used as an issuer: {e}"),
        })?;
        Ok(Ca {
            trust_domain: id.trust_domain().clone(),
            cert,
            cert_pem,
            issuer,
        })
    }

    /// Writes `ca.pem` and `ca.key` (mode 0600) into `dir`, creating it. Refuses to overwrite.
    pub fn write(&self, dir: &Path) -> Result<(), CaError> {
        std::fs::create_dir_all(dir).map_err(|source| CaError::Io {
            path: dir.to_owned(),
            source,
        })?;
        write_new(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        write_new(
            &dir.join(CA_KEY_FILE),
            self.issuer.key().serialize_pem().as_bytes(),
            0o600,
        )
    }

    /// Issues an X.509-SVID for `id`, valid from now for `lifetime`, with a fresh key.
    ///
    /// The SVID is good for both sides of mutual TLS (serverAuth and clientAuth).
    pub fn issue(
        &self,
        id: &SpiffeId,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Svid, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&id.to_string());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.subject_alt_names = vec![uri_san(id)?];
        params.not_before = to_offset(now - BACKDATE.min(lifetime / 20));
        params.not_after = to_offset(valid_until(now, lifetime)?);
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(Svid::new(vec![cert.der().clone()], key)?)
    }

    /// Signs a leaf made from `params` with a fresh key, with no checks: for tests that need
    /// certificates an honest CA would never issue.
    #[cfg(test)]
    pub(crate) fn sign_unchecked(
        &self,
        params: CertificateParams,
    ) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }

    /// The trust domain this CA issues for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The root certificate (the trust anchor peers must hold for this trust domain).
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The root certificate as PEM.
    pub fn root_pem(&self) -> &str {
        &self.cert_pem
    }
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "meshfed");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn uri_san(id: &SpiffeId) -> Result<SanType, rcgen::Error> {
    Ok(SanType::URI(id.to_string().try_into()?))
}

/// `now + lifetime`, refused past the year 9999 (the end of X.509's GeneralizedTime).
fn valid_until(now: SystemTime, lifetime: Duration) -> Result<SystemTime, CaError> {
    const LATEST: Duration = Duration::from_secs(253_402_300_799); // 9999-12-31T23:59:59Z
    now.checked_add(lifetime)
        .filter(|end| {
            end.duration_since(SystemTime::UNIX_EPOCH)
                .is_ok_and(|d| d <= LATEST)
        })
        .ok_or(CaError::Lifetime(lifetime))
}

fn to_offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

fn read_to_string(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(contents).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_ca_loads_back_and_issues() {
        let dir = std::env::temp_dir().join(format!("meshfed-ca-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let now = SystemTime::now();
        let ca = Ca::generate("east.example".parse().expect("td"), now).expect("CA");
        ca.write(&dir).expect("write");
        assert!(ca.write(&dir).is_err(), "must refuse to overwrite");

        let mode = std::fs::metadata(dir.join(CA_KEY_FILE))
            .expect("key")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        let loaded = Ca::load(&dir).expect("load");
        assert_eq!(loaded.trust_domain().as_str(), "east.example");
        assert_eq!(loaded.root(), ca.root());
        let id =
            SpiffeId::new(loaded.trust_domain().clone(), ["meshfed", "gateway", "a"]).expect("id");
        let svid = loaded
            .issue(&id, now, Duration::from_secs(3600))
            .expect("issue");
        assert_eq!(svid.id(), &id);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn loading_a_missing_ca_names_the_file() {
        let err = Ca::load(Path::new("/nonexistent/meshfed-ca")).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("/nonexistent/meshfed-ca/ca.pem:"),
            "{err}"
        );
    }
}
