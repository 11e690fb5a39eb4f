//! Versioned changes to a [`ClusterCatalog`].

use super::{ClusterCatalog, ServiceExport};
use crate::name::ServiceKey;

/// The change from one version of a cluster's catalog to another: services added or changed
/// (whole), and services withdrawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogDiff {
    /// The version the diff applies to.
    pub from: u64,
    /// The version it produces.
    pub to: u64,
    /// Services new or changed since `from`, each in full.
    pub upserts: Vec<(ServiceKey, ServiceExport)>,
    /// Services withdrawn since `from`.
    pub removals: Vec<ServiceKey>,
}

/// A diff that does not start at the catalog's version: the receiver missed a change and needs
/// a full copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the change goes from version {from} but the catalog is at version {at}")]
pub struct StaleDiff {
    /// The version the diff applies to.
    pub from: u64,
    /// The catalog's version.
    pub at: u64,
}

impl CatalogDiff {
    /// Whether the diff changes no service.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

impl ClusterCatalog {
    /// The change that turns `self` into `new`.
    pub fn diff(&self, new: &ClusterCatalog) -> CatalogDiff {
        let upserts = new
            .services
            .iter()
            .filter(|(key, export)| self.services.get(*key) != Some(*export))
            .map(|(key, export)| (key.clone(), export.clone()))
            .collect();
        let removals = self
            .services
            .keys()
            .filter(|key| !new.services.contains_key(*key))
            .cloned()
            .collect();
        CatalogDiff {
            from: self.version,
            to: new.version,
            upserts,
            removals,
        }
    }

    /// Applies a diff made against this catalog's version; anything else changes nothing.
    pub fn apply(&mut self, diff: CatalogDiff) -> Result<(), StaleDiff> {
        if diff.from != self.version {
            return Err(StaleDiff {
                from: diff.from,
                at: self.version,
            });
        }
        for key in &diff.removals {
            self.services.remove(key);
        }
        self.services.extend(diff.upserts);
        self.version = diff.to;
        Ok(())
    }
}
