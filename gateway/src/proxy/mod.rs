//! The HTTP plumbing shared by both sides of the gateway: bodies that stream between hyper and
//! h3, header hygiene, the local listener that applications call, and the pool of connections to
//! local endpoints.

pub(crate) mod balancer;
pub mod body;
pub(crate) mod forward;
pub(crate) mod headers;
pub(crate) mod http1;
pub(crate) mod local;
pub mod serve;
pub(crate) mod tcp;
pub(crate) mod tunnel;
pub(crate) mod upstream;
