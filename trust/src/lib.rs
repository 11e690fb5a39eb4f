//! Identity and trust for meshfed: SPIFFE IDs, per-trust-domain certificate authorities,
//! X.509-SVIDs, trust stores and the rustls verifiers that bind a peer to its own trust domain.
//!
//! This crate decides *who* a peer is and whether to believe it. It does no networking: the
//! gateway feeds it certificates and files and takes rustls configurations back. Trust domains
//! are never merged: every verifier here checks a chain against the roots of the trust domain the
//! peer's SPIFFE ID names, and only those.

pub mod bundle;
pub mod ca;
pub mod spiffe;
pub mod store;
pub mod svid;
pub mod tls;
pub mod verify;
pub mod x509;

pub use bundle::{Bundle, BundleError};
pub use ca::{Ca, CaError};
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
pub use store::TrustStore;
pub use svid::{Svid, SvidError};
