//! SPIFFE trust bundles: the X.509 authorities of one trust domain, in the SPIFFE bundle format
//! (a JWK set, "The SPIFFE Trust Domain and Bundle" section 4) and in PEM.
//!
//! What the specification rejects is rejected here: a set without `keys`, an element without
//! `use` or `kty`, an `x509-svid` element whose `x5c` is not exactly one CA certificate, or whose
//! key parameters contradict that certificate. Elements with a `use` or `kty` we do not know are
//! ignored, as the specification requires; so are `jwt-svid` elements, which meshfed does not
//! use. An empty `keys` list is valid and means the trust domain has no authorities: it revokes
//! trust in it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::spiffe::{SpiffeIdError, TrustDomain};
use crate::x509::{self, PublicKey};

/// The JWK `use` of an X.509 authority.
const USE_X509_SVID: &str = "x509-svid";

/// The X.509 authorities of one trust domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    trust_domain: TrustDomain,
    authorities: Vec<CertificateDer<'static>>,
    sequence: Option<u64>,
    refresh_hint: Option<Duration>,
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The document is not JSON of the bundle's shape.
    #[error("not a SPIFFE bundle: {0}")]
    Json(#[from] serde_json::Error),
    /// A `keys` element lacks a parameter the specification requires.
    #[error("keys[{index}]: `{parameter}` is required")]
    Missing {
        /// The element's position.
        index: usize,
        /// The missing parameter.
        parameter: &'static str,
    },
    /// An `x509-svid` element's `x5c` does not hold exactly one certificate.
    #[error(
        "keys[{index}]: an x509-svid element has exactly one certificate in `x5c`, not {count}"
    )]
    X5cCount {
        /// The element's position.
        index: usize,
        /// How many it holds.
        count: usize,
    },
    /// An `x509-svid` element's certificate cannot be used as a trust anchor.
    #[error("keys[{index}]: certificate {reason}")]
    Certificate {
        /// The element's position.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// An element's key parameters differ from its certificate's key.
    #[error("keys[{index}]: `{parameter}` does not match the certificate's public key")]
    KeyMismatch {
        /// The element's position.
        index: usize,
        /// The first parameter that differs.
        parameter: &'static str,
    },
    /// A PEM document could not be read.
    #[error("malformed PEM: {0}")]
    Pem(String),
    /// A bundle map names a trust domain twice.
    #[error("trust domain {0} appears more than once")]
    DuplicateTrustDomain(String),
    /// A bundle map names something that is not a trust domain.
    #[error("{name:?} is not a trust domain: {reason}")]
    BadTrustDomain {
        /// The name as written.
        name: String,
        /// Why it is not one.
        reason: SpiffeIdError,
    },
}

impl Bundle {
    /// A bundle of `authorities` (root certificates) for `trust_domain`.
    pub fn new(trust_domain: TrustDomain, authorities: Vec<CertificateDer<'static>>) -> Self {
        Bundle {
            trust_domain,
            authorities,
            sequence: None,
            refresh_hint: None,
        }
    }

    /// Sets `spiffe_sequence`.
    pub fn with_sequence(mut self, sequence: u64) -> Self {
        self.sequence = Some(sequence);
        self
    }

    /// Sets `spiffe_refresh_hint` (whole seconds on the wire).
    pub fn with_refresh_hint(mut self, hint: Duration) -> Self {
        self.refresh_hint = Some(hint);
        self
    }

    /// Parses a SPIFFE bundle document (a JWK set) for `trust_domain`.
    pub fn from_jwks(trust_domain: TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        let set: JwkSet = serde_json::from_slice(json)?;
        Bundle::from_set(trust_domain, set)
    }

    /// Parses PEM `CERTIFICATE` blocks as the authorities of `trust_domain`.
    pub fn from_pem(trust_domain: TrustDomain, pem: &[u8]) -> Result<Self, BundleError> {
        let authorities = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BundleError::Pem(e.to_string()))?;
        for (index, cert) in authorities.iter().enumerate() {
            check_authority(index, cert, &trust_domain)?;
        }
        Ok(Bundle::new(trust_domain, authorities))
    }

    /// The bundle as a SPIFFE bundle document.
    pub fn to_jwks(&self) -> String {
        let keys = self.authorities.iter().map(jwk_of).collect();
        let set = JwkSet {
            keys: Some(keys),
            spiffe_sequence: self.sequence,
            spiffe_refresh_hint: self.refresh_hint.map(|h| h.as_secs()),
        };
        // Serialising plain strings, numbers and vectors cannot fail.
        serde_json::to_string_pretty(&set).unwrap_or_default()
    }

    /// The authorities as PEM `CERTIFICATE` blocks.
    pub fn to_pem(&self) -> String {
        self.authorities
            .iter()
            .map(|cert| x509::pem("CERTIFICATE", cert.as_ref()))
            .collect()
    }

    /// The trust domain this bundle is for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The X.509 authorities. Empty means the trust domain is revoked.
    pub fn authorities(&self) -> &[CertificateDer<'static>] {
        &self.authorities
    }

    /// `spiffe_sequence`, if set.
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// `spiffe_refresh_hint`, if set.
    pub fn refresh_hint(&self) -> Option<Duration> {
        self.refresh_hint
    }

    fn from_set(trust_domain: TrustDomain, set: JwkSet) -> Result<Self, BundleError> {
        let keys = set.keys.ok_or(BundleError::Missing {
            index: 0,
            parameter: "keys",
        })?;
        let mut authorities = Vec::new();
        for (index, jwk) in keys.into_iter().enumerate() {
            if let Some(cert) = authority_of(index, jwk, &trust_domain)? {
                authorities.push(cert);
            }
        }
        Ok(Bundle {
            trust_domain,
            authorities,
            sequence: set.spiffe_sequence,
            refresh_hint: set.spiffe_refresh_hint.map(Duration::from_secs),
        })
    }
}

impl fmt::Display for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trust domain {}: {} X.509 authorities",
            self.trust_domain,
            self.authorities.len()
        )?;
        if let Some(sequence) = self.sequence {
            write!(f, ", sequence {sequence}")?;
        }
        if let Some(hint) = self.refresh_hint {
            write!(f, ", refresh hint {}s", hint.as_secs())?;
        }
        Ok(())
    }
}

/// Parses a map from trust domain name to bundle document, as federation configuration and the
/// Workload API carry them. A trust domain named twice is an error: serde_json would silently
/// keep the last one, and the specification requires refusing the document.
pub fn parse_bundle_map(json: &[u8]) -> Result<BTreeMap<TrustDomain, Bundle>, BundleError> {
    let raw: UniqueMap = serde_json::from_slice(json)?;
    let mut bundles = BTreeMap::new();
    for (name, set) in raw.0 {
        let trust_domain: TrustDomain =
            name.parse().map_err(|reason| BundleError::BadTrustDomain {
                name: name.clone(),
                reason,
            })?;
        if bundles.contains_key(&trust_domain) {
            // `a.example` and `spiffe://a.example` name the same trust domain.
            return Err(BundleError::DuplicateTrustDomain(name));
        }
        let bundle = Bundle::from_set(trust_domain.clone(), set)?;
        bundles.insert(trust_domain, bundle);
    }
    Ok(bundles)
}

// === wire types ===

#[derive(Debug, Deserialize, Serialize)]
struct JwkSet {
    keys: Option<Vec<Jwk>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spiffe_sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spiffe_refresh_hint: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct Jwk {
    #[serde(rename = "use")]
    use_: Option<String>,
    kty: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5c: Option<Vec<String>>,
}

/// A JSON object whose keys must be unique.
struct UniqueMap(Vec<(String, JwkSet)>);

impl<'de> Deserialize<'de> for UniqueMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UniqueVisitor;

        impl<'de> Visitor<'de> for UniqueVisitor {
            type Value = UniqueMap;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from trust domain to SPIFFE bundle")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueMap, A::Error> {
                let mut entries: Vec<(String, JwkSet)> = Vec::new();
                while let Some((name, set)) = map.next_entry::<String, JwkSet>()? {
                    if entries.iter().any(|(seen, _)| *seen == name) {
                        return Err(serde::de::Error::custom(format!(
                            "trust domain {name} appears more than once"
                        )));
                    }
                    entries.push((name, set));
                }
                Ok(UniqueMap(entries))
            }
        }

        deserializer.deserialize_map(UniqueVisitor)
    }
}

/// The authority an element carries, `None` for an element to ignore.
fn authority_of(
    index: usize,
    jwk: Jwk,
    trust_domain: &TrustDomain,
) -> Result<Option<CertificateDer<'static>>, BundleError> {
    let use_ = jwk.use_.as_deref().ok_or(BundleError::Missing {
        index,
        parameter: "use",
    })?;
    let kty = jwk.kty.as_deref().ok_or(BundleError::Missing {
        index,
        parameter: "kty",
    })?;
    if use_ != USE_X509_SVID || !matches!(kty, "EC" | "RSA") {
        return Ok(None);
    }
    let x5c = jwk.x5c.as_deref().unwrap_or_default();
    let [encoded] = x5c else {
        return Err(BundleError::X5cCount {
            index,
            count: x5c.len(),
        });
    };
    let der = STANDARD
        .decode(encoded)
        .map_err(|e| BundleError::Certificate {
            index,
            reason: format!("is not base64: {e}"),
        })?;
    let cert = CertificateDer::from(der);
    check_authority(index, &cert, trust_domain)?;
    check_key(index, &jwk, &cert)?;
    Ok(Some(cert))
}

/// An authority must be a CA, and one that names a trust domain (by a SPIFFE ID in its URI SAN,
/// as SPIFFE CAs do) must name this one: a bundle for another trust domain is never accepted.
fn check_authority(
    index: usize,
    cert: &CertificateDer<'_>,
    trust_domain: &TrustDomain,
) -> Result<(), BundleError> {
    let reason = match x509::is_ca(cert) {
        Ok(true) => match x509::spiffe_id(cert) {
            Ok(id) if id.trust_domain() != trust_domain => format!(
                "is a CA of trust domain {}, not {trust_domain}",
                id.trust_domain()
            ),
            _ => return Ok(()),
        },
        Ok(false) => "is not a CA (basicConstraints CA:false)".to_owned(),
        Err(e) => e.to_string(),
    };
    Err(BundleError::Certificate { index, reason })
}

/// The key parameters an element states, when it states them, must be its certificate's.
fn check_key(index: usize, jwk: &Jwk, cert: &CertificateDer<'_>) -> Result<(), BundleError> {
    let key = x509::public_key(cert).map_err(|e| BundleError::Certificate {
        index,
        reason: e.to_string(),
    })?;
    let mismatch = |parameter| BundleError::KeyMismatch { index, parameter };
    let differs = |stated: &Option<String>, actual: &[u8]| {
        stated
            .as_deref()
            .is_some_and(|s| URL_SAFE_NO_PAD.decode(s).ok().as_deref() != Some(actual))
    };
    match (jwk.kty.as_deref(), key) {
        (Some("EC"), PublicKey::Ec { curve, x, y }) => {
            if jwk.crv.as_deref().is_some_and(|c| c != curve) {
                return Err(mismatch("crv"));
            }
            if differs(&jwk.x, &x) {
                return Err(mismatch("x"));
            }
            if differs(&jwk.y, &y) {
                return Err(mismatch("y"));
            }
            Ok(())
        }
        (Some("RSA"), PublicKey::Rsa { n, e }) => {
            if differs(&jwk.n, &n) {
                return Err(mismatch("n"));
            }
            if differs(&jwk.e, &e) {
                return Err(mismatch("e"));
            }
            Ok(())
        }
        _ => Err(mismatch("kty")),
    }
}

fn jwk_of(cert: &CertificateDer<'_>) -> Jwk {
    let mut jwk = Jwk {
        use_: Some(USE_X509_SVID.to_owned()),
        x5c: Some(vec![STANDARD.encode(cert.as_ref())]),
        ..Jwk::default()
    };
    match x509::public_key(cert) {
        Ok(PublicKey::Ec { curve, x, y }) => {
            jwk.kty = Some("EC".into());
            jwk.crv = Some(curve.into());
            jwk.x = Some(URL_SAFE_NO_PAD.encode(x));
            jwk.y = Some(URL_SAFE_NO_PAD.encode(y));
        }
        Ok(PublicKey::Rsa { n, e }) => {
            jwk.kty = Some("RSA".into());
            jwk.n = Some(URL_SAFE_NO_PAD.encode(n));
            jwk.e = Some(URL_SAFE_NO_PAD.encode(e));
        }
        _ => {}
    }
    jwk
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::ca::Ca;
    use crate::spiffe::SpiffeId;

    fn td(s: &str) -> TrustDomain {
        s.parse().expect("trust domain")
    }

    fn ca(name: &str) -> Ca {
        Ca::generate(td(name), SystemTime::now()).expect("CA")
    }

    fn json(value: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&value).expect("json")
    }

    #[test]
    fn round_trips_through_jwks_and_pem() {
        let (a, b) = (ca("east.example"), ca("east.example"));
        let bundle = Bundle::new(td("east.example"), vec![a.root().clone(), b.root().clone()])
            .with_sequence(7)
            .with_refresh_hint(Duration::from_secs(300));
        let parsed =
            Bundle::from_jwks(td("east.example"), bundle.to_jwks().as_bytes()).expect("jwks");
        assert_eq!(parsed, bundle);
        let from_pem =
            Bundle::from_pem(td("east.example"), bundle.to_pem().as_bytes()).expect("pem");
        assert_eq!(from_pem.authorities(), bundle.authorities());

        let doc: serde_json::Value = serde_json::from_str(&bundle.to_jwks()).expect("json");
        assert_eq!(doc["keys"][0]["use"], "x509-svid");
        assert_eq!(doc["keys"][0]["kty"], "EC");
        assert_eq!(doc["keys"][0]["crv"], "P-256");
        assert_eq!(doc["spiffe_sequence"], 7);
        assert_eq!(doc["spiffe_refresh_hint"], 300);
    }

    #[test]
    fn unknown_uses_and_key_types_are_ignored_and_empty_keys_revoke() {
        let root = ca("east.example");
        let good = serde_json::from_str::<serde_json::Value>(
            &Bundle::new(td("east.example"), vec![root.root().clone()]).to_jwks(),
        )
        .expect("json")["keys"][0]
            .clone();
        let doc = json(serde_json::json!({ "keys": [
            { "use": "jwt-svid", "kty": "EC", "kid": "k1", "crv": "P-256", "x": "AA", "y": "AA" },
            { "use": "x509-svid-v9", "kty": "EC" },
            { "use": "x509-svid", "kty": "OKP", "x5c": [] },
            good,
        ]}));
        let bundle = Bundle::from_jwks(td("east.example"), &doc).expect("valid");
        assert_eq!(bundle.authorities(), [root.root().clone()]);

        let revoked =
            Bundle::from_jwks(td("east.example"), &json(serde_json::json!({ "keys": [] })))
                .expect("valid");
        assert!(revoked.authorities().is_empty());
    }

    #[test]
    fn what_the_specification_rejects_is_rejected() {
        let root = ca("east.example");
        let der = STANDARD.encode(root.root().as_ref());
        let id = SpiffeId::new(td("east.example"), ["leaf"]).expect("id");
        let leaf = root
            .issue(&id, SystemTime::now(), Duration::from_secs(60))
            .expect("leaf");
        let leaf_der = STANDARD.encode(leaf.chain()[0].as_ref());
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (serde_json::json!({}), "`keys` is required"),
            (
                serde_json::json!({ "keys": [{ "kty": "EC", "x5c": [der] }] }),
                "`use` is required",
            ),
            (
                serde_json::json!({ "keys": [{ "use": "x509-svid", "x5c": [der] }] }),
                "`kty` is required",
            ),
            (
                serde_json::json!({ "keys": [{ "use": "x509-svid", "kty": "EC" }] }),
                "not 0",
            ),
            (
                serde_json::json!({ "keys": [{ "use": "x509-svid", "kty": "EC", "x5c": [der, der] }] }),
                "not 2",
            ),
            (
                serde_json::json!({ "keys": [{ "use": "x509-svid", "kty": "EC", "x5c": ["%%%"] }] }),
                "not base64",
            ),
            (
                serde_json::json!({ "keys": [{ "use": "x509-svid", "kty": "EC", "x5c": ["AAAA"] }] }),
                "not a valid X.509",
            ),
            (
                serde_json::json!({ "keys": [{ "use": "x509-svid", "kty": "EC", "x5c": [leaf_der] }] }),
                "is not a CA",
            ),
            (
                serde_json::json!({ "keys": [{ "use": "x509-svid", "kty": "RSA", "x5c": [der] }] }),
                "`kty` does not match",
            ),
            (
                serde_json::json!({ "keys": [{ "use": "x509-svid", "kty": "EC", "crv": "P-384", "x5c": [der] }] }),
                "`crv` does not match",
            ),
            (
                serde_json::json!({ "keys": [{ "use": "x509-svid", "kty": "EC", "x": "AAAA", "x5c": [der] }] }),
                "`x` does not match",
            ),
            (serde_json::json!({ "keys": "none" }), "invalid type"),
            (
                serde_json::json!({ "keys": [], "keys_": 1, "spiffe_sequence": -1 }),
                "invalid value",
            ),
        ];
        for (doc, want) in cases {
            let err = Bundle::from_jwks(td("east.example"), &json(doc.clone()))
                .expect_err(&doc.to_string());
            assert!(err.to_string().contains(want), "{doc}: {err}");
        }
    }

    #[test]
    fn a_bundle_for_another_trust_domain_is_refused() {
        let west = ca("west.example");
        let jwks = Bundle::new(td("west.example"), vec![west.root().clone()]).to_jwks();
        let err = Bundle::from_jwks(td("east.example"), jwks.as_bytes()).expect_err("wrong domain");
        assert!(
            err.to_string()
                .contains("a CA of trust domain west.example, not east.example"),
            "{err}"
        );
        let pem = Bundle::new(td("west.example"), vec![west.root().clone()]).to_pem();
        assert!(Bundle::from_pem(td("east.example"), pem.as_bytes()).is_err());
    }

    #[test]
    fn duplicate_trust_domains_in_a_map_are_refused() {
        let doc = br#"{ "east.example": { "keys": [] }, "west.example": { "keys": [] }, "east.example": { "keys": [] } }"#;
        let err = parse_bundle_map(doc).expect_err("duplicate");
        assert!(
            err.to_string()
                .contains("east.example appears more than once"),
            "{err}"
        );

        let aliased =
            br#"{ "east.example": { "keys": [] }, "spiffe://east.example": { "keys": [] } }"#;
        let err = parse_bundle_map(aliased).expect_err("same trust domain twice");
        assert!(matches!(err, BundleError::DuplicateTrustDomain(_)), "{err}");

        let map = parse_bundle_map(
            br#"{ "east.example": { "keys": [] }, "west.example": { "keys": [] } }"#,
        )
        .expect("valid");
        assert_eq!(map.len(), 2);
        let bad = parse_bundle_map(br#"{ "East": { "keys": [] } }"#).expect_err("bad name");
        assert!(matches!(bad, BundleError::BadTrustDomain { .. }), "{bad}");
    }
}
