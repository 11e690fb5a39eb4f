//! Local endpoint sources: where a gateway finds the endpoints of the services it exports,
//! and how it tells which of them take traffic.
//!
//! - [`dns`]: endpoints looked up in the local cluster's DNS (A/AAAA, or SRV and then the
//!   targets' addresses) with hickory-resolver, again when the answer's TTL runs out.
//! - [`health`]: a pure state machine per endpoint that turns check results into healthy or
//!   not, with thresholds; and [`probe`], the checks themselves (TCP connect, HTTP GET, the
//!   gRPC health protocol).
//!
//! The gateway wires config to these and publishes the result into its catalog and routes.

pub mod dns;
pub mod health;
pub mod probe;

use std::net::IpAddr;

use crate::name::Label;

/// An endpoint of a local service as a source gives it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalEndpoint {
    /// Its address.
    pub ip: IpAddr,
    /// Its own port, if the source gave one (an SRV record, or `ip:port` in config).
    pub port: Option<u16>,
    /// Its hostname, if the source gave one (an SRV target's first label).
    pub hostname: Option<Label>,
}

/// The gRPC health protocol's generated client and server.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod grpc_health {
    tonic::include_proto!("grpc.health.v1");
}
