//! Gateway configuration: one YAML file per gateway, validated whole before anything starts.
//!
//! [`Config::parse`] turns text into a [`Config`] whose fields cannot hold bad values (a
//! [`TrustDomain`], a [`Label`], a [`SocketAddr`]), or into [`ConfigErrors`] listing every problem
//! at once with its key path, line, value and reason. Nothing past this module re-checks.
//! `docs/config.md` is the reference for the format.

mod bundle_endpoint;
mod duration;
mod endpoints;
mod error;
pub mod policy;
mod raw;
mod service;
mod telemetry;
mod validate;

pub(crate) use duration::parse as parse_duration;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshfed_discovery::{Label, ServiceKey};
use meshfed_trust::TrustDomain;

pub use error::{ConfigError, ConfigErrors};
pub use meshfed_discovery::catalog::Protocol;
pub use meshfed_discovery::sources::LocalEndpoint;
/// Which DNS records give a service's endpoints: A and AAAA, or SRV.
pub use meshfed_discovery::sources::dns::Records as DnsRecord;
pub use meshfed_discovery::sources::probe::Probe;

/// A validated gateway configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// This cluster's name, unique in the federation.
    pub cluster: Label,
    /// This cluster's SPIFFE trust domain.
    pub trust_domain: TrustDomain,
    /// Where the gateway listens.
    pub listeners: Listeners,
    /// Where the gateway's own SVID comes from.
    pub identity: Identity,
    /// The gateways of the other clusters.
    pub peers: Vec<Peer>,
    /// The local services this cluster offers to peers.
    pub exports: Vec<Export>,
    /// Opaque TCP services with a local listener each.
    pub tcp_services: Vec<TcpService>,
    /// The DNS zones the gateway answers for.
    pub dns: Dns,
    /// Serving this cluster's trust bundle to peers, if enabled.
    pub bundle_endpoint: Option<BundleEndpoint>,
    /// Where state that outlives a restart (peer bundles fetched from their endpoints) is kept.
    pub state_dir: Option<PathBuf>,
    /// How long in-flight requests may take to finish once shutdown begins.
    pub shutdown_grace: Duration,
    /// The data plane's threads; `None`: one per core (at most [`MAX_WORKERS`]).
    pub workers: Option<usize>,
    /// The traffic policy file (routes, splits, faults, overrides), read again when it changes.
    pub policy_file: Option<PathBuf>,
    /// Where spans go, if traces are recorded.
    pub tracing: Option<Tracing>,
    /// Where one JSON line per request and per TCP connection goes, if anywhere.
    pub access_log: Option<AccessLog>,
}

/// The most data-plane threads a gateway runs: past this, its bottleneck is not its thread count.
pub const MAX_WORKERS: usize = 64;

/// Recording traces and exporting them to an OpenTelemetry collector.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracing {
    /// The collector: an `http://` URL.
    pub otlp_endpoint: http::Uri,
    /// OTLP over gRPC or over HTTP.
    pub otlp_protocol: OtlpProtocol,
    /// The share of traces starting at this gateway that are recorded, 0 to 1; a caller's
    /// decision is always followed.
    pub sampling_ratio: f64,
}

/// How spans reach the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (`TraceService/Export`).
    Grpc,
    /// OTLP over HTTP: `POST /v1/traces` with a protobuf body.
    HttpProtobuf,
}

/// Where access log lines are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLog {
    /// The gateway's standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

/// The gateway's listening sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listeners {
    /// Local HTTP listener that applications call (TCP).
    pub http: SocketAddr,
    /// Federation port: QUIC (UDP) from peer gateways.
    pub federation: SocketAddr,
    /// Authoritative DNS (UDP and TCP).
    pub dns: SocketAddr,
    /// Admin HTTP: `/healthz`, `/readyz` (TCP). Loopback by default.
    pub admin: SocketAddr,
}

/// Where the gateway's X.509-SVID comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A CA directory (`ca.pem`, `ca.key`, as `meshfed ca init` writes): the gateway issues its
    /// own SVID from it.
    Ca {
        /// The CA directory.
        dir: PathBuf,
        /// How long each issued SVID is valid.
        svid_lifetime: Duration,
        /// How far through its lifetime an SVID is renewed, in percent.
        renew_at: u8,
    },
    /// An SVID written by another system (cert-manager, a SPIRE helper).
    Files {
        /// PEM certificate chain, leaf first.
        cert: PathBuf,
        /// PEM private key of the leaf.
        key: PathBuf,
        /// PEM roots of this cluster's own trust domain.
        bundle: PathBuf,
    },
}

/// Another cluster's gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The peer cluster's name.
    pub name: Label,
    /// The peer gateway's federation address (QUIC, UDP).
    pub address: SocketAddr,
    /// The peer's trust domain: its certificate must chain to this domain's roots only.
    pub trust_domain: TrustDomain,
    /// The peer trust domain's roots (SPIFFE bundle or PEM): the bootstrap bundle when
    /// `bundle_endpoint` is set.
    pub bundle: PathBuf,
    /// Where to fetch the peer's bundle from, and how to authenticate that endpoint.
    pub bundle_endpoint: Option<PeerBundleEndpoint>,
}

/// This gateway's SPIFFE bundle endpoint, served on the federation port over TCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleEndpoint {
    /// How the endpoint authenticates itself.
    pub profile: ServeProfile,
    /// The `spiffe_refresh_hint` it advertises.
    pub refresh_hint: Duration,
}

/// How a bundle endpoint we serve authenticates itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeProfile {
    /// With the gateway's own SVID.
    HttpsSpiffe,
    /// With a Web PKI certificate from files.
    HttpsWeb {
        /// PEM certificate chain.
        cert: PathBuf,
        /// PEM private key.
        key: PathBuf,
    },
}

/// A peer's SPIFFE bundle endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerBundleEndpoint {
    /// The endpoint's `https://` URL.
    pub url: http::Uri,
    /// How to authenticate it.
    pub profile: FetchProfile,
}

/// How to authenticate a peer's bundle endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchProfile {
    /// The endpoint presents this SPIFFE ID, verified with the peer's current bundle.
    HttpsSpiffe {
        /// The endpoint's expected ID (in the peer's trust domain).
        endpoint_id: meshfed_trust::SpiffeId,
    },
    /// The endpoint presents a Web PKI certificate for the URL's host, verified with these roots.
    HttpsWeb {
        /// PEM roots.
        roots: PathBuf,
    },
}

/// A local service offered to peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// The service's name and namespace.
    pub service: ServiceKey,
    /// The service's ports, each with the endpoint addresses that serve it.
    pub ports: Vec<Port>,
    /// Peers (by cluster name) allowed to reach it. Nobody else is.
    pub export_to: Vec<Label>,
    /// Resolved endpoint by endpoint in DNS (a Kubernetes headless service), rather than to
    /// one address.
    pub headless: bool,
    /// The endpoints listed in config (empty when they come from DNS).
    pub endpoints: Vec<LocalEndpoint>,
    /// Where the endpoints come from.
    pub source: EndpointSource,
    /// How endpoints are checked; without one, every endpoint found takes traffic.
    pub health_check: Option<HealthCheck>,
    /// Labels of every endpoint of this export (`version: v2`), which policy subsets select.
    pub labels: BTreeMap<String, String>,
}

/// Where an export's endpoints come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointSource {
    /// `endpoints` in config.
    Static,
    /// The local cluster's DNS, looked up again when the answer's TTL runs out.
    Dns {
        /// The name to look up, e.g. `checkout.shop.svc.cluster.local`.
        name: String,
        /// A/AAAA records (endpoint ports from the service's ports), or SRV records (each
        /// with its own port and target host).
        record: DnsRecord,
        /// The DNS server to ask; the system's resolvers (`/etc/resolv.conf`) if not given.
        server: Option<SocketAddr>,
    },
}

/// An active health check of every endpoint of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// What a check does.
    pub probe: Probe,
    /// The service port whose endpoint port is checked.
    pub port: u16,
    /// Time between checks of one endpoint.
    pub interval: Duration,
    /// A check that takes longer fails.
    pub timeout: Duration,
    /// Consecutive passes that bring a failing endpoint back.
    pub healthy_threshold: u32,
    /// Consecutive failures that take an endpoint out of rotation.
    pub unhealthy_threshold: u32,
}

/// One port of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    /// The port's name, as in a Kubernetes Service (`http`, `grpc`).
    pub name: Option<Label>,
    /// The service port number.
    pub port: u16,
    /// What the port speaks.
    pub protocol: Protocol,
    /// The port the endpoints serve this port on, if not the service port.
    pub target_port: Option<u16>,
    /// Where the service's endpoints that take traffic serve this port: each endpoint's IP with
    /// its own port, the port's `target_port`, or the service port, in that order.
    pub endpoints: Vec<SocketAddr>,
}

impl Port {
    /// Where `endpoint` serves this port.
    pub fn address_of(&self, endpoint: &LocalEndpoint) -> SocketAddr {
        let port = endpoint.port.or(self.target_port).unwrap_or(self.port);
        SocketAddr::new(endpoint.ip, port)
    }
}

impl Export {
    /// The port an HTTP request for this service goes to: the one numbered `requested` if that
    /// is an HTTP port, else the first HTTP port.
    pub fn http_port(&self, requested: Option<u16>) -> Option<&Port> {
        let mut http = self.ports.iter().filter(|p| p.protocol.is_http());
        let first = http.clone().next();
        requested
            .and_then(|number| http.find(|p| p.port == number))
            .or(first)
    }

    /// The TCP port numbered `number`, if the service has one.
    pub fn tcp_port(&self, number: u16) -> Option<&Port> {
        self.ports
            .iter()
            .find(|p| p.port == number && p.protocol == Protocol::Tcp)
    }
}

/// An opaque TCP service that local clients reach through a listener of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpService {
    /// The service (exported here or by a peer).
    pub service: ServiceKey,
    /// The service port the connections go to.
    pub port: u16,
    /// Where local clients connect: by default the HTTP listener's address with `port`.
    pub listen: SocketAddr,
}

/// The DNS zones the gateway serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dns {
    /// The Multi-Cluster Services zone, `clusterset.local` by default.
    pub zone: String,
    /// The cluster-pinned zone, `meshfed.internal` by default.
    pub pinned_zone: String,
    /// TTL of every answer.
    pub ttl: Duration,
}

/// A config or policy file's text; failing to read it is the file's one problem.
pub(crate) fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: Some(path.to_owned()),
        errors: vec![ConfigError {
            path: String::new(),
            line: None,
            value: None,
            reason: format!("cannot read the file: {e}"),
        }],
    })
}

impl Config {
    /// Reads and validates a config file. Relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = read(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|mut e| {
            e.file = Some(path.to_owned());
            e
        })
    }

    /// Validates config text. Relative paths in it are taken relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigErrors> {
        validate::parse(text, base).map_err(|errors| ConfigErrors { file: None, errors })
    }
}
