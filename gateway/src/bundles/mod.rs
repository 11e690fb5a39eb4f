//! SPIFFE bundle exchange: serving this cluster's bundle on the federation port (TCP), and
//! polling each peer's bundle endpoint for theirs.
//!
//! A fetched bundle that passes every check goes to the rotation task, which folds it into the
//! trust store and swaps in new TLS configurations; it is also written to `state_dir`, so that a
//! restarted gateway trusts its peers even while their endpoints are down.

pub(crate) mod endpoint;
pub(crate) mod fetch;
pub(crate) mod poll;
pub(crate) mod store;

#[cfg(test)]
mod tests;
