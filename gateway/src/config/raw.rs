//! The config file as YAML gives it: every field optional and every leaf a string with its
//! location, so that one pass can report every missing key and every bad value at once.
//! Unknown keys are collected by `serde_ignored` rather than refused one at a time by serde.

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A scalar as written, with where it was written.
pub(crate) type Text = Spanned<String>;

#[derive(Debug, Deserialize)]
pub(crate) struct RawConfig {
    pub(crate) cluster: Option<Text>,
    pub(crate) trust_domain: Option<Text>,
    pub(crate) listeners: Option<RawListeners>,
    pub(crate) identity: Option<RawIdentity>,
    #[serde(default, deserialize_with = "seq")]
    pub(crate) peers: Vec<RawPeer>,
    #[serde(default, deserialize_with = "seq")]
    pub(crate) exports: Vec<RawExport>,
    #[serde(default, deserialize_with = "seq")]
    pub(crate) tcp_services: Vec<RawTcpService>,
    pub(crate) dns: Option<RawDns>,
    pub(crate) bundle_endpoint: Option<RawBundleEndpoint>,
    pub(crate) state_dir: Option<Text>,
    pub(crate) shutdown_grace: Option<Text>,
    pub(crate) workers: Option<Text>,
    pub(crate) policy: Option<Text>,
    pub(crate) tracing: Option<RawTracing>,
    pub(crate) access_log: Option<RawAccessLog>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawTracing {
    pub(crate) otlp_endpoint: Option<Text>,
    pub(crate) otlp_protocol: Option<Text>,
    pub(crate) sampling_ratio: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawAccessLog {
    pub(crate) path: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawBundleEndpoint {
    pub(crate) profile: Option<Text>,
    pub(crate) cert: Option<Text>,
    pub(crate) key: Option<Text>,
    pub(crate) refresh_hint: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawPeerBundleEndpoint {
    pub(crate) url: Option<Text>,
    pub(crate) profile: Option<Text>,
    pub(crate) endpoint_id: Option<Text>,
    pub(crate) web_roots: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawListeners {
    pub(crate) http: Option<Text>,
    pub(crate) federation: Option<Text>,
    pub(crate) dns: Option<Text>,
    pub(crate) admin: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawIdentity {
    pub(crate) ca_dir: Option<Text>,
    pub(crate) svid_lifetime: Option<Text>,
    pub(crate) renew_at: Option<Text>,
    pub(crate) cert: Option<Text>,
    pub(crate) key: Option<Text>,
    pub(crate) bundle: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawPeer {
    pub(crate) name: Option<Text>,
    pub(crate) address: Option<Text>,
    pub(crate) trust_domain: Option<Text>,
    pub(crate) bundle: Option<Text>,
    pub(crate) bundle_endpoint: Option<RawPeerBundleEndpoint>,
    #[serde(default, deserialize_with = "seq")]
    pub(crate) services: Vec<Text>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawExport {
    pub(crate) name: Option<Text>,
    pub(crate) namespace: Option<Text>,
    #[serde(default, deserialize_with = "seq")]
    pub(crate) ports: Vec<RawPort>,
    #[serde(default, deserialize_with = "seq")]
    pub(crate) endpoints: Vec<Text>,
    #[serde(default, deserialize_with = "seq")]
    pub(crate) export_to: Vec<Text>,
    pub(crate) headless: Option<Text>,
    pub(crate) endpoints_from: Option<RawEndpointsFrom>,
    pub(crate) health_check: Option<RawHealthCheck>,
    #[serde(default)]
    pub(crate) labels: std::collections::BTreeMap<String, Text>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawEndpointsFrom {
    pub(crate) dns: Option<Text>,
    pub(crate) srv: Option<Text>,
    pub(crate) server: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawHealthCheck {
    pub(crate) protocol: Option<Text>,
    pub(crate) port: Option<Text>,
    pub(crate) path: Option<Text>,
    pub(crate) service: Option<Text>,
    pub(crate) interval: Option<Text>,
    pub(crate) timeout: Option<Text>,
    pub(crate) healthy_threshold: Option<Text>,
    pub(crate) unhealthy_threshold: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawPort {
    pub(crate) name: Option<Text>,
    pub(crate) port: Option<Text>,
    pub(crate) protocol: Option<Text>,
    pub(crate) target_port: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawTcpService {
    pub(crate) service: Option<Text>,
    pub(crate) port: Option<Text>,
    pub(crate) listen: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawDns {
    pub(crate) zone: Option<Text>,
    pub(crate) pinned_zone: Option<Text>,
    pub(crate) ttl: Option<Text>,
}

/// A list that may also be written as nothing at all (`exports:` with every entry commented
/// out reads as null).
fn seq<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}
