//! The federation data plane: HTTP/3 over QUIC between gateways, with mutual TLS on SVIDs.
//!
//! `endpoint` builds the one quinn endpoint a gateway has (server and client on one UDP socket);
//! `client` keeps one long-lived connection per peer and sends requests over it; `server` accepts
//! peers' connections and hands their requests to local endpoints; `wire` is what crosses
//! (see `docs/protocol.md`). `control` is the federation port over TCP: the control channel
//! (the catalog exchange, and `moves`: splits and observations of moves) and the bundle
//! endpoint.

pub(crate) mod client;
pub mod control;
pub(crate) mod endpoint;
pub(crate) mod moves;
pub(crate) mod probe;
pub(crate) mod server;
pub mod tls;
pub mod wire;
