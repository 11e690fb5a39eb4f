//! Re-verifying live peer connections against the trust in force.
//!
//! TLS verifies a peer once, at the handshake. When trust changes (a root removed from a bundle,
//! a trust domain revoked), connections made earlier would carry on regardless. The rotation
//! task calls [`recheck`] after every change and on every tick. A connection whose peer
//! certificate no longer chains to the roots in force is drained, not cut: a peer's connection
//! to us gets GOAWAY and finishes its requests; our connection to a peer takes no new requests
//! and closes when its own are done (at most 30 s). The next request dials anew, through a
//! handshake that applies the trust in force, so a revoked peer gets no new request.
//!
//! The check is of trust, not of time: it verifies each chain as of a moment the peer's leaf
//! was valid. A connection outliving its peer's short-lived SVID is normal (TLS checks validity
//! at the handshake, and SVIDs rotate far more often than connections close); draining every
//! connection at every SVID expiry would cost requests for no gain in trust.

use std::sync::Arc;

use meshfed_trust::verify::{PeerClientVerifier, PeerServerVerifier, Rejections};
use meshfed_trust::{TrustStore, tls};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;

use crate::credentials::gateway_id_of;
use crate::state::State;

/// Closes every peer connection, in either direction, whose peer certificate does not verify
/// now against `trust`.
pub(crate) async fn recheck(state: &State, trust: &Arc<TrustStore>, rejections: &Arc<Rejections>) {
    let provider = tls::provider();
    if let Ok(verifier) = PeerClientVerifier::new(trust, provider.clone()) {
        let verifier = verifier.with_rejections(rejections.clone());
        for inbound in state.inbound() {
            if inbound.drain.is_cancelled() || inbound.connection.close_reason().is_some() {
                continue;
            }
            let verified = chain(&inbound.connection).is_some_and(|(leaf, rest)| {
                verifier
                    .verify_client_cert(&leaf, &rest, valid_moment(&leaf))
                    .is_ok()
            });
            if !verified {
                tracing::info!(
                    peer.cluster = %inbound.peer,
                    "draining a connection from a peer whose certificate no longer verifies"
                );
                inbound.drain.cancel();
            }
        }
    }
    for client in state.peers.values() {
        let connections = client.connections();
        if connections.is_empty() {
            continue;
        }
        let Some(trust_domain) = state.trust_domain_of(client.name()) else {
            continue;
        };
        let verifier = PeerServerVerifier::new(
            trust_domain.clone(),
            Some(gateway_id_of(&trust_domain, client.name())),
            trust.clone(),
            provider.clone(),
        )
        .with_rejections(rejections.clone());
        let Ok(name) = ServerName::try_from(trust_domain.to_string()) else {
            continue;
        };
        for connection in connections {
            let verified = chain(&connection).is_some_and(|(leaf, rest)| {
                verifier
                    .verify_server_cert(&leaf, &rest, &name, &[], valid_moment(&leaf))
                    .is_ok()
            });
            if !verified {
                tracing::info!(peer.cluster = %client.name(), "retiring a connection to a peer whose certificate no longer verifies");
                client.retire(connection.stable_id());
            }
        }
    }
}

/// A moment at which `leaf` was valid (just after its notBefore), so that verifying as of then
/// tests the chain and the identity, not the clock.
fn valid_moment(leaf: &CertificateDer<'_>) -> UnixTime {
    let since_epoch = |t: std::time::SystemTime| {
        t.duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
    };
    meshfed_trust::x509::validity(leaf)
        .map(|(not_before, _)| {
            UnixTime::since_unix_epoch(since_epoch(not_before) + std::time::Duration::from_secs(1))
        })
        .unwrap_or_else(|_| UnixTime::now())
}

fn chain(
    connection: &quinn::Connection,
) -> Option<(CertificateDer<'static>, Vec<CertificateDer<'static>>)> {
    let chain = connection
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    let (leaf, rest) = chain.split_first()?;
    Some((leaf.clone(), rest.to_vec()))
}
