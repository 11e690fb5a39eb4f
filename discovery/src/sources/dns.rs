//! Endpoints found in the local cluster's DNS: A and AAAA records of a name, or its SRV records
//! and their targets' addresses, with the time the answer may be kept.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

use super::LocalEndpoint;
use crate::name::Label;

/// Answers are looked up again no sooner than this, whatever their TTL (a TTL of 0 must not
/// become a query loop), and no later than [`LONGEST_WAIT`].
pub const SHORTEST_WAIT: Duration = Duration::from_secs(1);
/// See [`SHORTEST_WAIT`].
pub const LONGEST_WAIT: Duration = Duration::from_secs(30);
/// The wait after a failed lookup (the endpoints found last are kept meanwhile): short, so
/// that a DNS server back from an outage is used again soon.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Which records give the endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Records {
    /// A and AAAA: addresses, ports from the service.
    Address,
    /// SRV: a port and a target host per endpoint, then the targets' addresses.
    Srv,
}

/// One name looked up in DNS, again and again.
#[derive(Debug)]
pub struct DnsSource {
    resolver: TokioResolver,
    name: String,
    records: Records,
}

/// What one lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The endpoints: none when the name does not exist or has no such records.
    pub endpoints: BTreeSet<LocalEndpoint>,
    /// When to look again: the answer's TTL, within [`SHORTEST_WAIT`] and [`LONGEST_WAIT`].
    pub again_in: Duration,
}

/// A lookup failed (the DNS server did not answer, or answered with an error).
#[derive(Debug, thiserror::Error)]
#[error("looking up {name}: {reason}")]
pub struct LookupError {
    /// The name looked up.
    pub name: String,
    /// Why it failed.
    pub reason: String,
}

impl DnsSource {
    /// A source for `name` (absolute, e.g. `checkout.shop.svc.cluster.local.`), asking
    /// `server` or, without one, the system's resolvers (`/etc/resolv.conf`).
    pub fn new(
        name: &str,
        records: Records,
        server: Option<SocketAddr>,
    ) -> Result<Self, LookupError> {
        let error = |reason: String| LookupError {
            name: name.to_owned(),
            reason,
        };
        let provider = TokioRuntimeProvider::default();
        let mut builder = match server {
            Some(server) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
                name_server.connections = vec![udp, tcp];
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![name_server]),
                    provider,
                )
            }
            None => TokioResolver::builder(provider)
                .map_err(|e| error(format!("cannot read the system's DNS configuration: {e}")))?,
        };
        let options = builder.options_mut();
        // We keep answers ourselves, for exactly their TTL; a cache would only hide changes.
        options.cache_size = 0;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let resolver = builder.build().map_err(|e| error(e.to_string()))?;
        Ok(DnsSource {
            resolver,
            name: name.to_owned(),
            records,
        })
    }

    /// Looks the name up once.
    pub async fn lookup(&self) -> Result<Found, LookupError> {
        let error = |reason: String| LookupError {
            name: self.name.clone(),
            reason,
        };
        match self.records {
            Records::Address => match self.resolver.lookup_ip(self.name.as_str()).await {
                Ok(lookup) => Ok(Found {
                    endpoints: lookup
                        .iter()
                        .map(|ip| LocalEndpoint {
                            ip,
                            port: None,
                            hostname: None,
                        })
                        .collect(),
                    again_in: wait_until(lookup.valid_until()),
                }),
                Err(e) if e.is_no_records_found() => Ok(none()),
                Err(e) => Err(error(e.to_string())),
            },
            Records::Srv => self.srv().await.map_err(error),
        }
    }

    async fn srv(&self) -> Result<Found, String> {
        let lookup = match self
            .resolver
            .lookup(self.name.as_str(), RecordType::SRV)
            .await
        {
            Ok(lookup) => lookup,
            Err(e) if e.is_no_records_found() => return Ok(none()),
            Err(e) => return Err(e.to_string()),
        };
        let mut valid_until = lookup.valid_until();
        let mut endpoints = BTreeSet::new();
        for record in lookup.answers() {
            let RData::SRV(srv) = &record.data else {
                continue;
            };
            let target = srv.target.to_ascii();
            let addresses = match self.resolver.lookup_ip(target.as_str()).await {
                Ok(addresses) => addresses,
                Err(e) if e.is_no_records_found() => continue,
                Err(e) => return Err(format!("target {target}: {e}")),
            };
            valid_until = valid_until.min(addresses.valid_until());
            // A StatefulSet pod's SRV target is `<pod>.<service>...`: the pod is the hostname.
            let hostname = target
                .split('.')
                .next()
                .and_then(|label| label.parse::<Label>().ok());
            for ip in addresses.iter() {
                endpoints.insert(LocalEndpoint {
                    ip,
                    port: Some(srv.port),
                    hostname: hostname.clone(),
                });
            }
        }
        Ok(Found {
            endpoints,
            again_in: wait_until(valid_until),
        })
    }
}

fn none() -> Found {
    Found {
        endpoints: BTreeSet::new(),
        again_in: SHORTEST_WAIT,
    }
}

fn wait_until(valid_until: Instant) -> Duration {
    valid_until
        .saturating_duration_since(Instant::now())
        .clamp(SHORTEST_WAIT, LONGEST_WAIT)
}
