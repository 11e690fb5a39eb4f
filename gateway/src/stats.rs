//! Counters the gateway keeps about itself. Prometheus export comes with the metrics work;
//! these are what tests and the admin endpoint read today.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use meshfed_trust::verify::Rejections;

/// Running totals since start.
#[derive(Debug, Default)]
pub struct Stats {
    /// QUIC connections this gateway opened to peers.
    pub peer_connections_opened: AtomicU64,
    /// QUIC Retry packets sent to validate a new peer connection's address.
    pub peer_retries: AtomicU64,
    /// QUIC connections from peers this gateway accepted (after identifying the peer).
    pub peer_connections_accepted: AtomicU64,
    /// Requests served from peers.
    pub peer_requests: AtomicU64,
    /// Requests served from local clients.
    pub local_requests: AtomicU64,
    /// Times new credentials were put in use (SVID renewals and reloads).
    pub credential_updates: AtomicU64,
    /// Peer bundles fetched from bundle endpoints and put in use.
    pub bundle_updates: AtomicU64,
    /// Policy file versions put in force after the first.
    pub policy_reloads: AtomicU64,
    /// Policy file versions refused for a problem (the policy in force was kept).
    pub policy_reloads_rejected: AtomicU64,
    /// Peer certificates refused, by reason.
    pub peer_certificates_refused: Arc<Rejections>,
}
