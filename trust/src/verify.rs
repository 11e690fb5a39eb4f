//! rustls certificate verifiers bound to trust domains.
//!
//! Web PKI verification checks a DNS name against one merged root set. SPIFFE federation needs
//! something else: the peer's SPIFFE ID (its URI SAN) says which trust domain it claims, and the
//! chain must then verify against *that* trust domain's roots and no other. A CA of one trust
//! domain can therefore never vouch for an identity in another, even when both are trusted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::spiffe::{SpiffeId, TrustDomain};
use crate::store::TrustStore;
use crate::x509::{self, CertificateError};

/// Why a peer's certificate was refused, beyond what webpki itself reports.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The certificate carries no usable SPIFFE ID.
    #[error("peer certificate {0}")]
    Identity(#[from] CertificateError),
    /// The peer's SPIFFE ID is in a trust domain other than the one expected of it.
    #[error("peer presented {presented}, expected an identity in trust domain {expected}")]
    WrongTrustDomain {
        /// The ID in the certificate.
        presented: SpiffeId,
        /// The trust domain configured for this peer.
        expected: TrustDomain,
    },
    /// The peer's SPIFFE ID is not the one expected of it.
    #[error("peer presented {presented}, expected {expected}")]
    WrongId {
        /// The ID in the certificate.
        presented: SpiffeId,
        /// The ID configured for this peer.
        expected: SpiffeId,
    },
    /// The peer's trust domain is not one we federate with.
    #[error("peer presented {0}, whose trust domain is not federated with")]
    UnknownTrustDomain(SpiffeId),
}

/// Why a peer's certificate was refused, as a stable code for logs and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The chain does not verify against the roots of the claimed trust domain (unknown issuer,
    /// bad signature, expired, not yet valid, wrong key usage).
    Chain,
    /// The leaf is not an X.509-SVID: no single valid SPIFFE ID, a CA, or the wrong key usage.
    NotAnSvid,
    /// The SPIFFE ID is in another trust domain than the one expected.
    WrongTrustDomain,
    /// The SPIFFE ID is not the one expected.
    WrongId,
    /// The SPIFFE ID's trust domain is not federated with.
    UnknownTrustDomain,
}

/// Counts of refused peer certificates, by reason. Shared by every verifier of a gateway.
#[derive(Debug, Default)]
pub struct Rejections {
    counts: [AtomicU64; Rejection::ALL.len()],
}

/// Verifies a server (the peer we dial) against one expected trust domain's roots.
#[derive(Debug)]
pub struct PeerServerVerifier {
    trust_domain: TrustDomain,
    expected_id: Option<SpiffeId>,
    store: Arc<TrustStore>,
    provider: Arc<CryptoProvider>,
    rejections: Arc<Rejections>,
}

/// Verifies a client (a peer dialling us): its claimed trust domain must be federated, and its
/// chain must verify against that trust domain's roots only.
#[derive(Debug)]
pub struct PeerClientVerifier {
    by_domain: BTreeMap<TrustDomain, Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
    rejections: Arc<Rejections>,
}

/// A verifier could not be built from a trust store.
#[derive(Debug, thiserror::Error)]
#[error("trust domain {trust_domain}: cannot build a client verifier: {reason}")]
pub struct VerifierError {
    trust_domain: TrustDomain,
    reason: rustls::server::VerifierBuilderError,
}

// === impl Rejection, Rejections ===

impl Rejection {
    /// Every reason, in counter order.
    pub const ALL: [Rejection; 5] = [
        Rejection::Chain,
        Rejection::NotAnSvid,
        Rejection::WrongTrustDomain,
        Rejection::WrongId,
        Rejection::UnknownTrustDomain,
    ];

    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::Chain => "chain_invalid",
            Rejection::NotAnSvid => "not_an_svid",
            Rejection::WrongTrustDomain => "wrong_trust_domain",
            Rejection::WrongId => "wrong_id",
            Rejection::UnknownTrustDomain => "unknown_trust_domain",
        }
    }

    /// The reason behind a verifier's error.
    pub fn of(error: &Error) -> Rejection {
        match peer_error(error) {
            Some(PeerError::Identity(_)) => Rejection::NotAnSvid,
            Some(PeerError::WrongTrustDomain { .. }) => Rejection::WrongTrustDomain,
            Some(PeerError::WrongId { .. }) => Rejection::WrongId,
            Some(PeerError::UnknownTrustDomain(_)) => Rejection::UnknownTrustDomain,
            None => Rejection::Chain,
        }
    }
}

impl Rejections {
    /// How many certificates were refused for `reason`.
    pub fn count(&self, reason: Rejection) -> u64 {
        self.counts[reason as usize].load(Ordering::Relaxed)
    }

    /// Counts and logs (once, here) a refusal decided after the handshake. `role` is the
    /// peer's role in the handshake (`client` or `server`).
    pub fn refuse(&self, reason: Rejection, role: &'static str, detail: &dyn std::fmt::Display) {
        self.counts[reason as usize].fetch_add(1, Ordering::Relaxed);
        tracing::info!(reason = reason.code(), peer.role = role, %detail, "refused a peer certificate");
    }

    fn record(&self, error: &Error, role: &'static str) {
        self.refuse(Rejection::of(error), role, error);
    }
}

// === impl PeerServerVerifier ===

impl PeerServerVerifier {
    /// A verifier that accepts any identity in `trust_domain` whose chain verifies against that
    /// trust domain's roots in `store`, and, if `expected_id` is given, only that identity.
    pub fn new(
        trust_domain: TrustDomain,
        expected_id: Option<SpiffeId>,
        store: Arc<TrustStore>,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        PeerServerVerifier {
            trust_domain,
            expected_id,
            store,
            provider,
            rejections: Arc::default(),
        }
    }

    /// Counts refusals in `rejections` (by default, in counts of its own).
    pub fn with_rejections(mut self, rejections: Arc<Rejections>) -> Self {
        self.rejections = rejections;
        self
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Error> {
        let Some(roots) = self.store.roots(&self.trust_domain) else {
            return Err(Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let presented = x509::svid_leaf(end_entity).map_err(|e| refuse(e.into()))?;
        if presented.trust_domain() != &self.trust_domain {
            return Err(refuse(PeerError::WrongTrustDomain {
                presented,
                expected: self.trust_domain.clone(),
            }));
        }
        if let Some(expected) = &self.expected_id
            && &presented != expected
        {
            return Err(refuse(PeerError::WrongId {
                presented,
                expected: expected.clone(),
            }));
        }
        Ok(())
    }
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(end_entity, intermediates, now)
            .inspect_err(|error| self.rejections.record(error, "server"))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// === impl PeerClientVerifier ===

impl PeerClientVerifier {
    /// A verifier for clients of every trust domain in `store`, each against its own roots.
    pub fn new(store: &TrustStore, provider: Arc<CryptoProvider>) -> Result<Self, VerifierError> {
        let mut by_domain = BTreeMap::new();
        for trust_domain in store.trust_domains() {
            // A trust domain without roots (a revoked bundle) trusts nobody: leave it out, and
            // its clients are refused as unknown.
            let Some(roots) = store.roots(trust_domain).filter(|r| !r.is_empty()) else {
                continue;
            };
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(|reason| VerifierError {
                        trust_domain: trust_domain.clone(),
                        reason,
                    })?;
            by_domain.insert(trust_domain.clone(), verifier);
        }
        Ok(PeerClientVerifier {
            by_domain,
            provider,
            rejections: Arc::default(),
        })
    }

    /// Counts refusals in `rejections` (by default, in counts of its own).
    pub fn with_rejections(mut self, rejections: Arc<Rejections>) -> Self {
        self.rejections = rejections;
        self
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Error> {
        // The claimed ID is unverified here: it only picks which roots the chain must verify
        // against. A forged claim picks roots that will not verify it.
        let claimed = x509::spiffe_id(end_entity).map_err(|e| refuse(e.into()))?;
        let Some(verifier) = self.by_domain.get(claimed.trust_domain()) else {
            return Err(refuse(PeerError::UnknownTrustDomain(claimed)));
        };
        verifier.verify_client_cert(end_entity, intermediates, now)?;
        x509::svid_leaf(end_entity).map_err(|e| refuse(e.into()))?;
        Ok(())
    }
}

impl ClientCertVerifier for PeerClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints would list every federated CA to every caller; peers know which SVID to send.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check(end_entity, intermediates, now)
            .inspect_err(|error| self.rejections.record(error, "client"))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The meshfed reason behind a rustls certificate error, when it was one of ours.
pub fn peer_error(error: &Error) -> Option<&PeerError> {
    match error {
        Error::InvalidCertificate(rustls::CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<PeerError>()
        }
        _ => None,
    }
}

fn refuse(error: PeerError) -> Error {
    Error::InvalidCertificate(rustls::CertificateError::Other(OtherError(Arc::new(error))))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::ca::Ca;
    use crate::svid::Svid;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn td(s: &str) -> TrustDomain {
        s.parse().expect("valid trust domain")
    }

    fn gateway(td_name: &str) -> SpiffeId {
        SpiffeId::new(td(td_name), ["meshfed", "gateway", "gw"]).expect("valid id")
    }

    struct World {
        now: SystemTime,
        east: Ca,
        west: Ca,
        store: Arc<TrustStore>,
        rejections: Arc<Rejections>,
    }

    /// East and west CAs, both federated (both sets of roots in the store, kept apart).
    fn world() -> World {
        let now = SystemTime::now();
        let east = Ca::generate(td("east.example"), now).expect("east CA");
        let west = Ca::generate(td("west.example"), now).expect("west CA");
        let store = TrustStore::new()
            .with_roots(td("east.example"), std::slice::from_ref(east.root()))
            .and_then(|s| s.with_roots(td("west.example"), std::slice::from_ref(west.root())))
            .expect("roots");
        World {
            now,
            east,
            west,
            store: Arc::new(store),
            rejections: Arc::default(),
        }
    }

    fn check_server(w: &World, expect: &str, svid: &Svid) -> Result<(), Error> {
        let verifier =
            PeerServerVerifier::new(td(expect), None, w.store.clone(), crate::tls::provider())
                .with_rejections(w.rejections.clone());
        let name = ServerName::try_from("peer.invalid").expect("name");
        verifier
            .verify_server_cert(
                &svid.chain()[0],
                &svid.chain()[1..],
                &name,
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    fn check_client(w: &World, svid: &Svid) -> Result<(), Error> {
        let verifier = PeerClientVerifier::new(&w.store, crate::tls::provider())
            .expect("verifier")
            .with_rejections(w.rejections.clone());
        verifier
            .verify_client_cert(&svid.chain()[0], &svid.chain()[1..], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn svid_from_own_trust_domain_is_accepted_both_ways() {
        let w = world();
        let svid = w
            .west
            .issue(&gateway("west.example"), w.now, DAY)
            .expect("svid");
        assert_eq!(svid.id(), &gateway("west.example"));
        check_server(&w, "west.example", &svid).expect("server side");
        check_client(&w, &svid).expect("client side");
    }

    #[test]
    fn peer_from_another_trust_domain_is_refused() {
        let w = world();
        let east_svid = w
            .east
            .issue(&gateway("east.example"), w.now, DAY)
            .expect("svid");
        let err = check_server(&w, "west.example", &east_svid).expect_err("must refuse");
        // Chain verification against west's roots fails before the ID is even considered.
        assert!(matches!(err, Error::InvalidCertificate(_)), "{err:?}");
    }

    #[test]
    fn a_ca_cannot_vouch_for_another_trust_domain() {
        // East's CA signs an SVID that claims to be west's gateway. Both roots are trusted, but
        // west identities must chain to west's roots only.
        let w = world();
        let forged = w
            .east
            .issue(&gateway("west.example"), w.now, DAY)
            .expect("svid");
        check_server(&w, "west.example", &forged).expect_err("server side must refuse");
        check_client(&w, &forged).expect_err("client side must refuse");
    }

    #[test]
    fn a_chain_that_verifies_still_needs_the_expected_trust_domain() {
        // West's CA signs an ID in east.example: the chain verifies against west's roots, but a
        // west peer must present a west identity.
        let w = world();
        let crossed = w
            .west
            .issue(&gateway("east.example"), w.now, DAY)
            .expect("svid");
        let err = check_server(&w, "west.example", &crossed).expect_err("must refuse");
        assert!(
            matches!(peer_error(&err), Some(PeerError::WrongTrustDomain { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_trust_domain_is_refused() {
        let w = world();
        let rogue = Ca::generate(td("rogue.example"), w.now).expect("CA");
        let svid = rogue
            .issue(&gateway("rogue.example"), w.now, DAY)
            .expect("svid");
        let err = check_client(&w, &svid).expect_err("must refuse");
        assert!(
            matches!(peer_error(&err), Some(PeerError::UnknownTrustDomain(id)) if id == &svid.id().clone()),
            "{err:?}"
        );
    }

    #[test]
    fn every_refusal_is_counted_under_its_reason() {
        let w = world();
        let rogue = Ca::generate(td("rogue.example"), w.now).expect("CA");
        let cases = [
            (
                w.east.issue(&gateway("west.example"), w.now, DAY),
                Rejection::Chain,
            ),
            (
                w.west.issue(&gateway("east.example"), w.now, DAY),
                Rejection::WrongTrustDomain,
            ),
            (
                rogue.issue(&gateway("rogue.example"), w.now, DAY),
                Rejection::Chain,
            ),
        ];
        for (svid, reason) in cases {
            let before = w.rejections.count(reason);
            check_server(&w, "west.example", &svid.expect("svid")).expect_err("refused");
            assert_eq!(w.rejections.count(reason), before + 1, "{reason:?}");
        }
        let rogue_svid = rogue
            .issue(&gateway("rogue.example"), w.now, DAY)
            .expect("svid");
        check_client(&w, &rogue_svid).expect_err("refused");
        assert_eq!(w.rejections.count(Rejection::UnknownTrustDomain), 1);
    }

    /// Leaves an honest CA would not issue, each refused as not an SVID (or for its dates), on
    /// both sides, although each chains to a trusted root.
    #[test]
    fn hostile_leaves_are_refused_on_both_sides() {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType};
        let w = world();
        let id = gateway("west.example").to_string();
        let base = || {
            let mut p = CertificateParams::default();
            p.subject_alt_names = vec![SanType::URI(id.clone().try_into().expect("uri"))];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            p.is_ca = IsCa::ExplicitNoCa;
            p.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
            p.not_after = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
            p
        };
        let mut two_uris = base();
        two_uris.subject_alt_names.push(SanType::URI(
            "spiffe://west.example/other".try_into().expect("uri"),
        ));
        let mut ca_leaf = base();
        ca_leaf.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_leaf.key_usages.push(KeyUsagePurpose::KeyCertSign);
        let mut no_signature = base();
        no_signature.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
        let mut cert_signer = base();
        cert_signer.key_usages.push(KeyUsagePurpose::KeyCertSign);
        let mut not_yet = base();
        not_yet.not_before = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        not_yet.not_after = time::OffsetDateTime::now_utc() + time::Duration::hours(2);
        let mut no_uri = base();
        no_uri.subject_alt_names = vec![SanType::DnsName("west.example".try_into().expect("dns"))];

        let cases = [
            ("two URI SANs", two_uris, Rejection::NotAnSvid),
            ("no URI SAN", no_uri, Rejection::NotAnSvid),
            ("a CA leaf", ca_leaf, Rejection::Chain),
            ("no digitalSignature", no_signature, Rejection::NotAnSvid),
            ("keyCertSign on a leaf", cert_signer, Rejection::NotAnSvid),
            ("not yet valid", not_yet, Rejection::Chain),
        ];
        for (name, params, reason) in cases {
            let (cert, _key) = w.west.sign_unchecked(params);
            let provider = crate::tls::provider();
            let server = PeerServerVerifier::new(
                td("west.example"),
                None,
                w.store.clone(),
                provider.clone(),
            )
            .with_rejections(w.rejections.clone());
            let client = PeerClientVerifier::new(&w.store, provider)
                .expect("verifier")
                .with_rejections(w.rejections.clone());
            let before = w.rejections.count(reason);
            let dns = ServerName::try_from("peer.invalid").expect("name");
            let as_server = server.verify_server_cert(&cert, &[], &dns, &[], UnixTime::now());
            let as_client = client.verify_client_cert(&cert, &[], UnixTime::now());
            assert!(as_server.is_err(), "{name}: accepted as a server");
            assert!(as_client.is_err(), "{name}: accepted as a client");
            // The client verifier looks up roots by the claimed ID first, so a leaf without a
            // usable ID is refused there as not an SVID whatever the server side says.
            assert!(
                w.rejections.count(reason) > before,
                "{name}: not counted as {reason:?}"
            );
        }
    }

    #[test]
    fn expired_svid_is_refused() {
        let w = world();
        let long_ago = w.now - 10 * DAY;
        let svid = w
            .west
            .issue(&gateway("west.example"), long_ago, DAY)
            .expect("svid");
        check_server(&w, "west.example", &svid).expect_err("expired");
        check_client(&w, &svid).expect_err("expired");
    }

    #[test]
    fn expected_id_is_enforced() {
        let w = world();
        let other = SpiffeId::new(td("west.example"), ["meshfed", "gateway", "other"]).expect("id");
        let svid = w.west.issue(&other, w.now, DAY).expect("svid");
        let verifier = PeerServerVerifier::new(
            td("west.example"),
            Some(gateway("west.example")),
            w.store.clone(),
            crate::tls::provider(),
        );
        let name = ServerName::try_from("peer.invalid").expect("name");
        let err = verifier
            .verify_server_cert(&svid.chain()[0], &[], &name, &[], UnixTime::now())
            .expect_err("wrong id");
        assert!(
            matches!(peer_error(&err), Some(PeerError::WrongId { expected, .. }) if expected == &gateway("west.example")),
            "{err:?}"
        );
    }
}
