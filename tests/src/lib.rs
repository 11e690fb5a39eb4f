//! Test support for meshfed: federations of real gateways on free loopback ports, with real CAs, real QUIC
//! and real mutual TLS, and upstream servers to put behind them.
//!
//! Nothing here is a mock. A [`Federation`] writes each cluster's CA, peer bundles and YAML
//! config into a temporary directory and starts gateways through the same `Config::load` →
//! `Credentials::load` → `Bound::bind` → `start` path that `meshfed run` takes.

pub mod binary;
pub mod caller;
pub mod client;
pub mod dns;
pub mod echo;
pub mod federation;
pub mod grpc;
pub mod knot;
pub mod otlp;
pub mod pattern;
pub mod relay;
pub mod tcp_echo;
pub mod wait;

pub use federation::{Cluster, Federation};
