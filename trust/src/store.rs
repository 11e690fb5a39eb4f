//! The trust store: one root set per trust domain, never merged.
//!
//! A `TrustStore` is an immutable snapshot. Changing trust (a bundle refresh, a rotation) means
//! building a new snapshot and publishing it whole, so a handshake in progress sees either the old
//! roots or the new ones, never a mixture.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

use crate::spiffe::TrustDomain;

/// Root certificates keyed by the trust domain they are authoritative for.
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    domains: BTreeMap<TrustDomain, Arc<RootCertStore>>,
}

/// A root certificate that could not be added to a trust domain's root set.
#[derive(Debug, thiserror::Error)]
#[error(
    "trust domain {trust_domain}: root certificate {index} is unusable as a trust anchor: {reason}"
)]
pub struct RootError {
    /// The trust domain whose roots were being set.
    pub trust_domain: TrustDomain,
    /// The position of the bad certificate in the list given.
    pub index: usize,
    /// Why webpki refused it.
    pub reason: rustls::Error,
}

impl TrustStore {
    /// An empty store that trusts nobody.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns a copy of this store with `trust_domain`'s roots set to `roots` (replacing any).
    pub fn with_roots(
        mut self,
        trust_domain: TrustDomain,
        roots: &[CertificateDer<'_>],
    ) -> Result<Self, RootError> {
        let mut store = RootCertStore::empty();
        for (index, root) in roots.iter().enumerate() {
            store
                .add(root.clone().into_owned())
                .map_err(|reason| RootError {
                    trust_domain: trust_domain.clone(),
                    index,
                    reason,
                })?;
        }
        self.domains.insert(trust_domain, Arc::new(store));
        Ok(self)
    }

    /// The roots of one trust domain, if it is known.
    pub fn roots(&self, trust_domain: &TrustDomain) -> Option<&Arc<RootCertStore>> {
        self.domains.get(trust_domain)
    }

    /// Every trust domain with roots in this store.
    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.domains.keys()
    }
}
