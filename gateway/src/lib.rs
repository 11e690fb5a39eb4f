//! The meshfed gateway: one binary at each cluster's edge that joins clusters over QUIC.
//!
//! This crate is the gateway itself: config ([`config`]), routing ([`route`], no I/O), the local
//! listener and upstream pool ([`proxy`]), the HTTP/3 federation data plane ([`federation`]),
//! the DNS zones it serves and admin. The `meshfed` command line is the binary's (`main.rs`, `cmd/`). Identity and trust live in
//! `meshfed-trust`; service naming and the DNS server in `meshfed-discovery`.

pub(crate) mod access_log;
pub mod admin;
pub mod bind;
pub(crate) mod bundles;
pub(crate) mod catalogs;
pub mod config;
pub mod credentials;
pub(crate) mod endpoints;
pub mod federation;
pub mod metrics;
pub(crate) mod mover;
pub mod moves;
pub(crate) mod observe;
pub mod policy;
pub(crate) mod policy_file;
pub mod proxy;
pub mod reason;
pub(crate) mod recheck;
pub(crate) mod rotation;
pub mod route;
pub mod runtime;
pub mod services;
pub(crate) mod state;
pub mod stats;
pub mod telemetry;
pub(crate) mod trace;
pub(crate) mod workers;

pub use bind::Bound;
pub use config::Config;
pub use credentials::Credentials;
pub use runtime::{Running, start};
