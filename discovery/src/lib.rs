//! Service discovery for meshfed: the names services are known by, and the DNS server that
//! answers for them.
//!
//! This crate owns naming (`<svc>.<ns>.svc.clusterset.local` per the Kubernetes Multi-Cluster
//! Services DNS specification, and the cluster-pinned `<svc>.<ns>.<cluster>.meshfed.internal`) and
//! the authoritative DNS server for those zones. It does not decide where traffic goes: the
//! gateway builds a [`dns::ZoneSet`] snapshot from what it can route and publishes it here.

pub mod catalog;
pub mod dns;
pub mod name;

pub use name::{Label, LabelError, ServiceKey, ServiceKeyError};
