//! An X.509-SVID: a certificate chain for one SPIFFE ID and its private key.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::spiffe::SpiffeId;
use crate::x509::{self, CertificateError};

/// A leaf certificate (first) with its intermediates, the leaf's key, and the SPIFFE ID it proves.
#[derive(Debug)]
pub struct Svid {
    id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// Why an SVID could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no PEM object of the expected kind, or a malformed one.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected and what went wrong.
        what: String,
    },
    /// The leaf certificate is not a valid X.509-SVID.
    #[error("{path}: leaf certificate {source}")]
    Leaf {
        /// The file.
        path: PathBuf,
        /// What is wrong with the leaf.
        source: CertificateError,
    },
}

impl Svid {
    /// Assembles an SVID from a chain (leaf first) and key, reading the SPIFFE ID from the leaf.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, CertificateError> {
        let leaf = chain.first().ok_or(CertificateError::NoSpiffeId)?;
        let id = x509::spiffe_id(leaf)?;
        let (not_before, not_after) = x509::validity(leaf)?;
        Ok(Svid {
            id,
            chain,
            key,
            not_before,
            not_after,
        })
    }

    /// Loads an SVID from a PEM chain file (leaf first) and a PEM private key file.
    pub fn from_pem_files(chain_path: &Path, key_path: &Path) -> Result<Self, SvidError> {
        let chain_pem = read(chain_path)?;
        let chain = CertificateDer::pem_slice_iter(&chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SvidError::Pem {
                path: chain_path.to_owned(),
                what: format!("malformed certificate PEM: {e}"),
            })?;
        if chain.is_empty() {
            return Err(SvidError::Pem {
                path: chain_path.to_owned(),
                what: "holds no CERTIFICATE block".into(),
            });
        }
        let key_pem = read(key_path)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| SvidError::Pem {
            path: key_path.to_owned(),
            what: format!("holds no usable private key: {e}"),
        })?;
        Svid::new(chain, key).map_err(|source| SvidError::Leaf {
            path: chain_path.to_owned(),
            source,
        })
    }

    /// The SPIFFE ID this SVID proves.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf's private key.
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// When the leaf expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// When to replace this SVID: `percent` of the way through its validity. SPIFFE
    /// implementations renew at 50 %, leaving the second half to retry a renewal that fails.
    pub fn renew_at(&self, percent: u8) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + lifetime.mul_f64(f64::from(percent.min(100)) / 100.0)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SvidError> {
    std::fs::read(path).map_err(|source| SvidError::Read {
        path: path.to_owned(),
        source,
    })
}
