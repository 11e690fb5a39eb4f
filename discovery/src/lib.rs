//! Service discovery for meshfed: the names services are known by, the catalog of what each
//! cluster exports, the exchange of catalogs between gateways, and the DNS server that answers
//! for the names.
//!
//! This crate owns naming (`<svc>.<ns>.svc.clusterset.local` per the Kubernetes Multi-Cluster
//! Services DNS specification, and the cluster-pinned `<svc>.<ns>.<cluster>.meshfed.internal`),
//! the catalog model and its merge rules (no I/O), the `Federation` gRPC service and its
//! messages, and the authoritative DNS server. It does not decide where traffic goes, and it
//! does not authenticate peers: the gateway does both, and publishes the zones here.

pub mod catalog;
pub mod dns;
pub mod exchange;
pub mod name;
pub mod sources;

pub use name::{Label, LabelError, ServiceKey, ServiceKeyError};
