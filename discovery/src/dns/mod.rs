//! The gateway's authoritative DNS server.
//!
//! Authoritative only: names outside our zones are REFUSED, nothing is recursed or forwarded,
//! and zone transfers are not offered. Answers are prepared in wire format when a zone
//! snapshot is built ([`ZoneSet`]), so that answering is a lookup and a copy; a change
//! re-encodes only what changed ([`LiveZones`]); snapshots are published whole through a
//! `watch` channel, so a query sees one snapshot or the next, never a mix. UDP is served on a socket per core; answers too large for the client's UDP payload
//! size are truncated (TC) and the client retries over TCP.
//!
//! What the zones hold is decided in [`mcs`]; this module knows only names and records.

pub mod mcs;
mod message;
mod server;
mod zone;

pub use mcs::{Clusterset, ClustersetZones};
pub use server::{DnsServer, DnsStats};
pub use zone::{LiveZones, ZoneError, ZoneSet};

#[cfg(test)]
mod tests;
