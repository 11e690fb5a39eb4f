//! QUIC TLS configurations built from the current SVID and trust store.
//!
//! They are rebuilt whole whenever either changes (an SVID renewal, a reloaded bundle) and
//! swapped in: the endpoint's server config for new incoming handshakes, each peer's client
//! config for its next connect. Connections already up are not touched: TLS checked them at
//! their handshake, and they keep working across a rotation.

use std::sync::Arc;

use meshfed_trust::verify::Rejections;
use meshfed_trust::{SpiffeId, Svid, TrustStore, tls};

use super::endpoint::{self, EndpointError};
use super::wire;

/// A TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the SVID or the trust store.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// quinn refused the rustls configuration.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
}

/// The server side: presents `svid`, requires a client SVID of a trust domain in `trust`.
pub(crate) fn server(
    svid: &Svid,
    trust: &TrustStore,
    rejections: &Arc<Rejections>,
) -> Result<quinn::ServerConfig, TlsError> {
    let tls = tls::server_config(svid, trust, &[wire::ALPN], rejections)?;
    Ok(endpoint::server_config(tls)?)
}

/// The client side towards one peer: presents `svid`, accepts only the peer gateway's own
/// identity, verified against its trust domain's roots.
pub(crate) fn client(
    svid: &Svid,
    trust: &Arc<TrustStore>,
    peer: &SpiffeId,
    rejections: &Arc<Rejections>,
) -> Result<quinn::ClientConfig, TlsError> {
    let tls = tls::client_config(
        svid,
        trust.clone(),
        peer.trust_domain().clone(),
        Some(peer.clone()),
        &[wire::ALPN],
        rejections,
    )?;
    Ok(endpoint::client_config(tls)?)
}
