//! rustls configurations for a gateway's federation connections: TLS 1.3 only, mutual, SPIFFE.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::spiffe::{SpiffeId, TrustDomain};
use crate::store::TrustStore;
use crate::svid::Svid;
use crate::verify::{PeerClientVerifier, PeerServerVerifier, Rejections, VerifierError};

/// A TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the SVID or the protocol settings.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// A client verifier could not be built from the trust store.
    #[error(transparent)]
    Verifier(#[from] VerifierError),
}

/// The one crypto provider meshfed uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration that presents `svid` and requires a client SVID from any trust domain
/// in `store`, each verified against its own roots.
pub fn server_config(
    svid: &Svid,
    store: &TrustStore,
    alpn: &[&[u8]],
    rejections: &Arc<Rejections>,
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let verifier =
        PeerClientVerifier::new(store, provider.clone())?.with_rejections(rejections.clone());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(svid.chain().to_vec(), svid.key().clone_key())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client configuration for dialling one peer: it presents `svid` and accepts only a server
/// identity in `peer` (and, if given, exactly `peer_id`), verified against `peer`'s roots.
pub fn client_config(
    svid: &Svid,
    store: Arc<TrustStore>,
    peer: TrustDomain,
    peer_id: Option<SpiffeId>,
    alpn: &[&[u8]],
    rejections: &Arc<Rejections>,
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = PeerServerVerifier::new(peer, peer_id, store, provider.clone())
        .with_rejections(rejections.clone());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(svid.chain().to_vec(), svid.key().clone_key())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Checks that `svid` is usable as it stands: its key matches its leaf, and its chain verifies
/// now, for both sides of mutual TLS, against `roots` (its own trust domain's authorities).
/// For SVIDs written by another system, which could be stale, mismatched or from the wrong CA.
pub fn check_svid(svid: &Svid, roots: &[CertificateDer<'_>]) -> Result<(), rustls::Error> {
    let provider = provider();
    rustls::sign::CertifiedKey::from_der(svid.chain().to_vec(), svid.key().clone_key(), &provider)?;
    let trust_domain = svid.id().trust_domain().clone();
    let store = TrustStore::new()
        .with_roots(trust_domain.clone(), roots)
        .map_err(|e| e.reason)?;
    let (leaf, intermediates) = svid
        .chain()
        .split_first()
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    let now = UnixTime::now();
    let client = PeerClientVerifier::new(&store, provider.clone())
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    client.verify_client_cert(leaf, intermediates, now)?;
    let server = PeerServerVerifier::new(
        trust_domain,
        Some(svid.id().clone()),
        Arc::new(store),
        provider,
    );
    let name =
        ServerName::try_from("svid.invalid").map_err(|e| rustls::Error::General(e.to_string()))?;
    server.verify_server_cert(leaf, intermediates, &name, &[], now)?;
    Ok(())
}
