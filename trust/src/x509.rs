//! Reading what we need out of an X.509 certificate: its SPIFFE ID and its expiry.

use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::spiffe::{SpiffeId, SpiffeIdError};

/// Why a certificate does not carry a usable SPIFFE identity.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The bytes are not a DER X.509 certificate.
    #[error("not a valid X.509 certificate: {0}")]
    Malformed(String),
    /// An X.509-SVID has exactly one URI SAN; this certificate has none.
    #[error("has no URI subject alternative name (an X.509-SVID carries its SPIFFE ID there)")]
    NoSpiffeId,
    /// An X.509-SVID has exactly one URI SAN; this certificate has several.
    #[error("has {0} URI subject alternative names; an X.509-SVID has exactly one")]
    SeveralUris(usize),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("URI SAN {uri:?} is not a valid SPIFFE ID: {reason}")]
    BadSpiffeId {
        /// The URI as found in the certificate.
        uri: String,
        /// What is wrong with it.
        reason: SpiffeIdError,
    },
}

/// The SPIFFE ID in a certificate's single URI SAN.
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Result<SpiffeId, CertificateError> {
    let cert = parse(cert)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(CertificateError::NoSpiffeId),
        [uri] => uri.parse().map_err(|reason| CertificateError::BadSpiffeId {
            uri: (*uri).to_owned(),
            reason,
        }),
        several => Err(CertificateError::SeveralUris(several.len())),
    }
}

/// A certificate's validity period: `(notBefore, notAfter)`.
pub fn validity(cert: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), CertificateError> {
    let cert = parse(cert)?;
    let validity = cert.validity();
    Ok((
        to_system_time(validity.not_before.timestamp())?,
        to_system_time(validity.not_after.timestamp())?,
    ))
}

fn to_system_time(secs: i64) -> Result<SystemTime, CertificateError> {
    let secs = u64::try_from(secs)
        .map_err(|_| CertificateError::Malformed("validity date is before 1970".into()))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

fn parse<'a>(cert: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, CertificateError> {
    let (rest, cert) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertificateError::Malformed(
            "trailing bytes after the certificate".into(),
        ));
    }
    Ok(cert)
}
