//! Reading what we need out of an X.509 certificate: its SPIFFE ID and its expiry.

use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384, OID_NIST_EC_P521};
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
    /// An X.509-SVID leaf must not be a CA.
    #[error("is a CA certificate; an X.509-SVID leaf must not be")]
    CaLeaf,
    /// An X.509-SVID leaf must have `digitalSignature` and neither `keyCertSign` nor `cRLSign`.
    #[error(
        "has key usage {0}; an X.509-SVID leaf has digitalSignature and no keyCertSign or cRLSign"
    )]
    KeyUsage(String),
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

/// The SPIFFE ID of an X.509-SVID leaf, checking what the X509-SVID specification requires of a
/// leaf beyond the chain: exactly one URI SAN holding a valid SPIFFE ID, not a CA, and key usage
/// (when present, as it must be) with `digitalSignature` and without `keyCertSign` or `cRLSign`.
pub fn svid_leaf(cert: &CertificateDer<'_>) -> Result<SpiffeId, CertificateError> {
    let id = spiffe_id(cert)?;
    let parsed = parse(cert)?;
    if parsed.is_ca() {
        return Err(CertificateError::CaLeaf);
    }
    let usage = parsed
        .key_usage()
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    if let Some(usage) = usage {
        let usage = usage.value;
        if !usage.digital_signature() || usage.key_cert_sign() || usage.crl_sign() {
            return Err(CertificateError::KeyUsage(usage.to_string()));
        }
    }
    Ok(id)
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

/// A certificate's public key, in the terms a JWK uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// An elliptic-curve key: curve name (`P-256`, `P-384`, `P-521`) and coordinates.
    Ec {
        /// The JWK `crv`.
        curve: &'static str,
        /// The x coordinate, big-endian.
        x: Vec<u8>,
        /// The y coordinate, big-endian.
        y: Vec<u8>,
    },
    /// An RSA key: modulus and exponent, big-endian without leading zeros.
    Rsa {
        /// The modulus.
        n: Vec<u8>,
        /// The public exponent.
        e: Vec<u8>,
    },
    /// Some other kind of key.
    Other,
}

/// The public key of a certificate.
pub fn public_key(cert: &CertificateDer<'_>) -> Result<PublicKey, CertificateError> {
    use x509_parser::public_key::PublicKey as Parsed;
    let cert = parse(cert)?;
    let parsed = cert
        .public_key()
        .parsed()
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    Ok(match parsed {
        Parsed::EC(point) => {
            // The curve is named by the algorithm's parameters, not guessed from the point's
            // size: other curves of the same size (secp256k1, brainpool) are not P-256.
            let curve_oid = cert
                .public_key()
                .algorithm
                .parameters
                .clone()
                .and_then(|p| x509_parser::der_parser::oid::Oid::try_from(p).ok());
            let curve = match curve_oid {
                Some(oid) if oid == OID_EC_P256 => "P-256",
                Some(oid) if oid == OID_NIST_EC_P384 => "P-384",
                Some(oid) if oid == OID_NIST_EC_P521 => "P-521",
                _ => return Ok(PublicKey::Other),
            };
            let data = point.data();
            // Uncompressed point: 0x04 || x || y.
            if data.first() != Some(&0x04) || data.len() % 2 == 0 {
                return Ok(PublicKey::Other);
            }
            let half = (data.len() - 1) / 2;
            PublicKey::Ec {
                curve,
                x: data[1..=half].to_vec(),
                y: data[1 + half..].to_vec(),
            }
        }
        Parsed::RSA(rsa) => PublicKey::Rsa {
            n: strip_zeros(rsa.modulus),
            e: strip_zeros(rsa.exponent),
        },
        _ => PublicKey::Other,
    })
}

/// Whether a certificate is a CA (basicConstraints CA:true).
pub fn is_ca(cert: &CertificateDer<'_>) -> Result<bool, CertificateError> {
    Ok(parse(cert)?.is_ca())
}

fn strip_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

/// What an operator wants to see of a certificate.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The subject's distinguished name.
    pub subject: String,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// Start of validity, as written in the certificate.
    pub not_before: String,
    /// End of validity, as written in the certificate.
    pub not_after: String,
    /// The SPIFFE ID, or why there is none.
    pub spiffe_id: Result<SpiffeId, String>,
    /// Whether it is a CA.
    pub is_ca: bool,
}

/// Summarises a certificate for `meshfed cert inspect` and `meshfed bundle show`.
pub fn summary(cert: &CertificateDer<'_>) -> Result<Summary, CertificateError> {
    let spiffe_id = spiffe_id(cert).map_err(|e| e.to_string());
    let parsed = parse(cert)?;
    let validity = parsed.validity();
    Ok(Summary {
        subject: parsed.subject().to_string(),
        issuer: parsed.issuer().to_string(),
        not_before: validity.not_before.to_string(),
        not_after: validity.not_after.to_string(),
        spiffe_id,
        is_ca: parsed.is_ca(),
    })
}

/// A PEM block (RFC 7468) of `der` under `label`, such as `CERTIFICATE` or `PRIVATE KEY`.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 is ASCII, so 64-byte chunks are whole characters.
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
