//! Federations of in-process gateways for end-to-end tests.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use meshfed_gateway::config::Listeners;
use meshfed_gateway::federation::wire;
use meshfed_gateway::{Bound, Config, Credentials, Running};
use meshfed_trust::{Ca, Svid, TrustStore, tls};
use tempfile::TempDir;

/// One cluster to be: its name, its CA, its bound sockets and what it exports.
#[derive(Debug)]
pub struct Cluster {
    name: String,
    ca: Ca,
    bound: Bound,
    addrs: Listeners,
    exports: Vec<Export>,
}

#[derive(Debug)]
struct Export {
    service: String,
    protocol: &'static str,
    port: u16,
    endpoints: Vec<SocketAddr>,
    to: Vec<String>,
    headless: bool,
    /// The port the endpoints serve on, if not `port`.
    target_port: Option<u16>,
    /// More YAML for the export, such as `health_check: {...}`.
    extra: Vec<String>,
}

/// Running gateways, one per cluster, with the files they were started from.
#[derive(Debug)]
pub struct Federation {
    /// The gateways by cluster name.
    pub gateways: BTreeMap<String, Running>,
    /// The CAs by cluster name.
    pub cas: BTreeMap<String, Ca>,
    /// The config files by cluster name.
    pub configs: BTreeMap<String, std::path::PathBuf>,
    /// Configs, CAs and bundles live here.
    pub dir: TempDir,
    /// `(cluster, peer, service)`: what each gateway should import once the catalogs are
    /// exchanged, for the peers it trusts.
    expected: Vec<(String, String, String)>,
}

impl Cluster {
    /// A cluster `name` with trust domain `<name>.test`, a fresh CA and every listener bound on
    /// a free loopback port.
    pub fn new(name: &str) -> anyhow::Result<Cluster> {
        let ca = Ca::generate(format!("{name}.test").parse()?, SystemTime::now())?;
        let bound = bind_below_ephemeral()?;
        let addrs = bound.addrs()?;
        Ok(Cluster {
            name: name.to_owned(),
            ca,
            bound,
            addrs,
            exports: Vec::new(),
        })
    }

    /// Exports `service` (`<name>.<namespace>`) served over HTTP/1.1 at `endpoint` to the
    /// clusters in `to`, on service port 80.
    pub fn export(self, service: &str, endpoint: SocketAddr, to: &[&str]) -> Self {
        self.export_port(service, "http", 80, &[endpoint], to)
    }

    /// Exports `service` with one port speaking `protocol` (`http`, `http2`, `grpc`, `tcp`),
    /// served at `endpoints`, to the clusters in `to`.
    pub fn export_port(
        mut self,
        service: &str,
        protocol: &'static str,
        port: u16,
        endpoints: &[SocketAddr],
        to: &[&str],
    ) -> Self {
        self.exports.push(Export {
            service: service.to_owned(),
            protocol,
            port,
            endpoints: endpoints.to_vec(),
            to: to.iter().map(|s| (*s).to_owned()).collect(),
            headless: false,
            target_port: None,
            extra: Vec::new(),
        });
        self
    }

    /// Exports `service` as a headless service: one HTTP port 80, resolved endpoint by
    /// endpoint in DNS.
    pub fn export_headless(self, service: &str, endpoints: &[SocketAddr], to: &[&str]) -> Self {
        let mut cluster = self.export_port(service, "http", 80, endpoints, to);
        if let Some(export) = cluster.exports.last_mut() {
            export.headless = true;
        }
        cluster
    }

    /// Adds `yaml` (one `key: value` of an export, such as `health_check: { protocol: tcp }`)
    /// to the last export.
    pub fn with(mut self, yaml: &str) -> Self {
        if let Some(export) = self.exports.last_mut() {
            export.extra.push(yaml.to_owned());
        }
        self
    }

    /// Exports `service` with one `http` port 80 whose endpoints are looked up as `dns_source`
    /// says (the YAML of `endpoints_from`, e.g. `{ dns: a.b.svc.cluster.local, server: ... }`),
    /// at `target_port`.
    pub fn export_from_dns(
        mut self,
        service: &str,
        dns_source: &str,
        target_port: u16,
        to: &[&str],
    ) -> Self {
        self.exports.push(Export {
            service: service.to_owned(),
            protocol: "http",
            port: 80,
            endpoints: Vec::new(),
            to: to.iter().map(|s| (*s).to_owned()).collect(),
            headless: false,
            target_port: Some(target_port),
            extra: vec![format!("endpoints_from: {dns_source}")],
        });
        self
    }

    /// The addresses this cluster's gateway will listen on.
    pub fn addrs(&self) -> Listeners {
        self.addrs
    }
}

/// A federation about to start, with its deliberate misconfigurations.
#[derive(Debug)]
pub struct Builder {
    clusters: Vec<Cluster>,
    bundles: BTreeMap<(String, String), String>,
    svid_lifetime: Option<String>,
    bundle_exchange: Option<Profile>,
    tcp_services: Vec<(String, String, u16)>,
    peer_addresses: BTreeMap<(String, String), SocketAddr>,
    policies: BTreeMap<String, String>,
    /// Top-level config keys to add, per cluster.
    extra: BTreeMap<String, Vec<String>>,
}

/// How bundle endpoints authenticate themselves in a test federation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `https_spiffe`: with the gateway's SVID.
    Spiffe,
    /// `https_web`: with a certificate for 127.0.0.1 from a Web PKI CA made for the test.
    Web,
}

impl Federation {
    /// Starts a gateway for each cluster, each peered with all the others.
    pub async fn start(clusters: Vec<Cluster>) -> anyhow::Result<Federation> {
        Federation::builder(clusters).start().await
    }

    /// A federation of `clusters` to adjust before it starts. With `MESHFED_TEST_LOG` set (a
    /// `RUST_LOG`-style filter), the gateways' logs go to the test's stderr.
    pub fn builder(clusters: Vec<Cluster>) -> Builder {
        if let Ok(filter) = std::env::var("MESHFED_TEST_LOG") {
            meshfed_gateway::telemetry::init(
                meshfed_gateway::telemetry::LogFormat::Text,
                Some(filter),
            );
        }
        Builder {
            clusters,
            bundles: BTreeMap::new(),
            svid_lifetime: None,
            bundle_exchange: None,
            tcp_services: Vec::new(),
            peer_addresses: BTreeMap::new(),
            policies: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Where `cluster`'s policy file is (whether or not it has one).
    pub fn policy_file(&self, cluster: &str) -> std::path::PathBuf {
        self.home(cluster).join("policy.yaml")
    }

    /// `cluster`'s own directory: `<cluster>/...` in its config names a file here.
    pub fn home(&self, cluster: &str) -> std::path::PathBuf {
        self.dir.path().join(cluster)
    }

    /// The gateway of `cluster`.
    pub fn gateway(&self, cluster: &str) -> &Running {
        &self.gateways[cluster]
    }

    /// Stops `cluster`'s gateway and starts a new one from the same config on the same
    /// addresses, as a restart in production would. It returns once the new gateway serves;
    /// [`Federation::catalogs_exchanged`] waits for the catalogs to flow again.
    pub async fn restart(&mut self, cluster: &str) -> anyhow::Result<()> {
        let addrs = self.stop(cluster).await?;
        self.start_again(cluster, addrs).await
    }

    /// Shuts `cluster`'s gateway down, as an operator stopping it would; returns the addresses
    /// it listened on, for [`Federation::start_again`].
    pub async fn stop(&mut self, cluster: &str) -> anyhow::Result<Listeners> {
        let old = self
            .gateways
            .remove(cluster)
            .ok_or_else(|| anyhow::anyhow!("no cluster {cluster}"))?;
        let addrs = old.addrs();
        old.shutdown().await;
        Ok(addrs)
    }

    /// Starts a stopped cluster's gateway again from its config, on the same addresses.
    pub async fn start_again(&mut self, cluster: &str, addrs: Listeners) -> anyhow::Result<()> {
        // The old sockets close as the last tasks holding them end: retry the bind, bounded.
        // (The ports lie below the ephemeral range, so no other test's outgoing connection can
        // have taken one meanwhile.)
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(70);
        let bound = loop {
            match Bound::bind(&addrs) {
                Ok(bound) => break bound,
                Err(error) if tokio::time::Instant::now() > deadline => {
                    let holders = std::process::Command::new("ss")
                        .args(["-uatnp"])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default();
                    let port = format!(":{}", addrs.federation.port());
                    let holders: Vec<&str> =
                        holders.lines().filter(|l| l.contains(&port)).collect();
                    return Err(anyhow::anyhow!(
                        "{error}; sockets on that port: {holders:#?}"
                    ));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        let running = start(&self.configs[cluster], bound)?;
        self.gateways.insert(cluster.to_owned(), running);
        Ok(())
    }

    /// Waits until every gateway routes every service its trusted peers export to it: the
    /// catalog exchange has run.
    pub async fn catalogs_exchanged(&self) -> anyhow::Result<()> {
        for (cluster, peer, service) in &self.expected {
            let Some(running) = self.gateways.get(cluster) else {
                continue;
            };
            if !self.gateways.contains_key(peer) {
                continue;
            }
            let key: meshfed_discovery::ServiceKey = service.parse()?;
            let peer_label: meshfed_discovery::Label = peer.parse()?;
            crate::wait::until(
                std::time::Duration::from_secs(15),
                &format!("{cluster} to import {service} from {peer}"),
                || {
                    running
                        .imports()
                        .services
                        .get(&key)
                        .is_some_and(|imported| {
                            imported
                                .clusters
                                .get(&peer_label)
                                .is_some_and(|endpoints| endpoints.iter().any(|e| e.ready))
                        })
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Shuts every gateway down.
    pub async fn shutdown(self) {
        for (_, gateway) in self.gateways {
            gateway.shutdown().await;
        }
    }
}

impl Builder {
    /// Gives `cluster` the PEM roots `pem` as `peer`'s bundle, instead of `peer`'s real root.
    pub fn bundle(mut self, cluster: &str, peer: &str, pem: String) -> Self {
        self.bundles
            .insert((cluster.to_owned(), peer.to_owned()), pem);
        self
    }

    /// Gives `cluster` a local listener (on a free port) for the TCP service `service`'s
    /// port `port`; [`Running::tcp_services`] has its address.
    pub fn tcp_service(mut self, cluster: &str, service: &str, port: u16) -> Self {
        self.tcp_services
            .push((cluster.to_owned(), service.to_owned(), port));
        self
    }

    /// Makes `cluster` dial `peer` at `address` (a relay, say) instead of its federation port.
    pub fn peer_address(mut self, cluster: &str, peer: &str, address: SocketAddr) -> Self {
        self.peer_addresses
            .insert((cluster.to_owned(), peer.to_owned()), address);
        self
    }

    /// Gives `cluster` a policy file (`<dir>/<cluster>/policy.yaml`) holding `yaml`;
    /// [`Federation::policy_file`] says where, to change it while the gateway runs.
    pub fn policy(mut self, cluster: &str, yaml: &str) -> Self {
        self.policies.insert(cluster.to_owned(), yaml.to_owned());
        self
    }

    /// Adds `yaml` (top-level keys, such as `tracing: { ... }`) to `cluster`'s config.
    pub fn config(mut self, cluster: &str, yaml: &str) -> Self {
        self.extra
            .entry(cluster.to_owned())
            .or_default()
            .push(yaml.to_owned());
        self
    }

    /// Sets every gateway's `identity.svid_lifetime` (a duration as config writes it).
    pub fn svid_lifetime(mut self, lifetime: &str) -> Self {
        self.svid_lifetime = Some(lifetime.to_owned());
        self
    }

    /// Makes every gateway serve its bundle (`https_spiffe`, refresh hint 1 s), poll each peer's,
    /// and keep fetched bundles in `<dir>/<cluster>/state`.
    pub fn bundle_exchange(self) -> Self {
        self.bundle_exchange_with(Profile::Spiffe)
    }

    /// Like [`Builder::bundle_exchange`], with the given endpoint profile.
    pub fn bundle_exchange_with(mut self, profile: Profile) -> Self {
        self.bundle_exchange = Some(profile);
        self
    }

    /// Writes every cluster's files and starts its gateway.
    pub async fn start(self) -> anyhow::Result<Federation> {
        let dir = tempfile::tempdir()?;
        if self.bundle_exchange == Some(Profile::Web) {
            web_pki(dir.path(), &self.clusters)?;
        }
        let mut configs = Vec::new();
        for cluster in &self.clusters {
            let home = dir.path().join(&cluster.name);
            cluster.ca.write(&home.join("ca"))?;
            for peer in self.clusters.iter().filter(|p| p.name != cluster.name) {
                let roots = self
                    .bundles
                    .get(&(cluster.name.clone(), peer.name.clone()))
                    .cloned()
                    .unwrap_or_else(|| peer.ca.root_pem().to_owned());
                std::fs::write(home.join(format!("{}.pem", peer.name)), roots)?;
            }
            if let Some(policy) = self.policies.get(&cluster.name) {
                std::fs::write(home.join("policy.yaml"), policy)?;
            }
            let path = dir.path().join(format!("{}.yaml", cluster.name));
            std::fs::write(&path, self.config_yaml(cluster))?;
            configs.push(path);
        }
        // What each gateway should import, from each peer it trusts (both ways: the control
        // channel is mutual TLS) and that trusts it.
        let mut expected = Vec::new();
        for cluster in &self.clusters {
            for peer in self.clusters.iter().filter(|p| p.name != cluster.name) {
                let pair = (cluster.name.clone(), peer.name.clone());
                let reverse = (peer.name.clone(), cluster.name.clone());
                if self.bundles.contains_key(&pair) || self.bundles.contains_key(&reverse) {
                    continue;
                }
                for export in peer.exports.iter().filter(|e| e.to.contains(&cluster.name)) {
                    expected.push((
                        cluster.name.clone(),
                        peer.name.clone(),
                        export.service.clone(),
                    ));
                }
            }
        }
        let mut gateways = BTreeMap::new();
        let mut cas = BTreeMap::new();
        let mut paths = BTreeMap::new();
        for (cluster, path) in self.clusters.into_iter().zip(configs) {
            let running = start(&path, cluster.bound)
                .with_context(|| format!("starting {}", cluster.name))?;
            gateways.insert(cluster.name.clone(), running);
            paths.insert(cluster.name.clone(), path);
            cas.insert(cluster.name, cluster.ca);
        }
        let federation = Federation {
            gateways,
            cas,
            configs: paths,
            dir,
            expected,
        };
        federation.catalogs_exchanged().await?;
        Ok(federation)
    }

    fn config_yaml(&self, cluster: &Cluster) -> String {
        let a = cluster.addrs;
        let mut yaml = format!(
            "cluster: {name}\ntrust_domain: {name}.test\nshutdown_grace: 2s\n\
             listeners: {{ http: \"{}\", federation: \"{}\", dns: \"{}\", admin: \"{}\" }}\n\
             identity: {{ ca_dir: {name}/ca, svid_lifetime: {lifetime} }}\n",
            a.http,
            a.federation,
            a.dns,
            a.admin,
            name = cluster.name,
            lifetime = self.svid_lifetime.as_deref().unwrap_or("24h"),
        );
        if self.policies.contains_key(&cluster.name) {
            let _ = writeln!(yaml, "policy: {}/policy.yaml", cluster.name);
        }
        for extra in self.extra.get(&cluster.name).into_iter().flatten() {
            let _ = writeln!(yaml, "{extra}");
        }
        match self.bundle_exchange {
            Some(Profile::Spiffe) => {
                let _ = writeln!(
                    yaml,
                    "bundle_endpoint: {{ profile: https_spiffe, refresh_hint: 1s }}\nstate_dir: {}/state",
                    cluster.name
                );
            }
            Some(Profile::Web) => {
                let _ = writeln!(
                    yaml,
                    "bundle_endpoint: {{ profile: https_web, cert: {n}/web.pem, key: {n}/web.key, refresh_hint: 1s }}\nstate_dir: {n}/state",
                    n = cluster.name
                );
            }
            None => {}
        }
        yaml.push_str("peers:\n");
        for peer in self.clusters.iter().filter(|p| p.name != cluster.name) {
            let endpoint = match self.bundle_exchange {
                Some(Profile::Spiffe) => format!(
                    ", bundle_endpoint: {{ url: \"https://{}/\", profile: https_spiffe }}",
                    peer.addrs.federation
                ),
                Some(Profile::Web) => format!(
                    ", bundle_endpoint: {{ url: \"https://{}/\", profile: https_web, web_roots: web-roots.pem }}",
                    peer.addrs.federation
                ),
                None => String::new(),
            };
            let address = self
                .peer_addresses
                .get(&(cluster.name.clone(), peer.name.clone()))
                .copied()
                .unwrap_or(peer.addrs.federation);
            let _ = writeln!(
                yaml,
                "  - {{ name: {p}, address: \"{}\", trust_domain: {p}.test, bundle: {}/{p}.pem{endpoint} }}",
                address,
                cluster.name,
                p = peer.name,
            );
        }
        yaml.push_str("exports:\n");
        for export in &cluster.exports {
            let (name, namespace) = export
                .service
                .split_once('.')
                .unwrap_or((&export.service, ""));
            let endpoints: Vec<String> = export
                .endpoints
                .iter()
                .map(|e| format!("\"{e}\""))
                .collect();
            let target = export
                .target_port
                .map(|t| format!(", target_port: {t}"))
                .unwrap_or_default();
            let mut fields = vec![
                format!("name: {name}"),
                format!("namespace: {namespace}"),
                format!("headless: {}", export.headless),
                format!(
                    "ports: [{{ name: {p}, port: {}, protocol: {p}{target} }}]",
                    export.port,
                    p = export.protocol
                ),
                format!("export_to: [{}]", export.to.join(", ")),
            ];
            if !endpoints.is_empty() {
                fields.push(format!("endpoints: [{}]", endpoints.join(", ")));
            }
            fields.extend(export.extra.iter().cloned());
            let _ = writeln!(yaml, "  - {{ {} }}", fields.join(", "));
        }
        yaml.push_str("tcp_services:\n");
        for (_, service, port) in self
            .tcp_services
            .iter()
            .filter(|(c, _, _)| *c == cluster.name)
        {
            let _ = writeln!(
                yaml,
                "  - {{ service: {service}, port: {port}, listen: \"127.0.0.1:0\" }}"
            );
        }
        yaml
    }
}

/// Binds a gateway's listeners on free loopback ports below the system's ephemeral range
/// (32768 and up on Linux). Port 0 would pick them inside it, where, once a restarted gateway
/// has let them go, any outgoing connection of another test (a control channel, a health
/// check) may take one as its source port and keep the gateway from listening there again.
fn bind_below_ephemeral() -> anyhow::Result<Bound> {
    use std::hash::{BuildHasher as _, Hasher as _};
    const FIRST: u16 = 10_000;
    const SPAN: u16 = 22_000;
    for _ in 0..200 {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let base = FIRST + (random % u64::from(SPAN - 4)) as u16;
        let at = |offset: u16| SocketAddr::from(([127, 0, 0, 1], base + offset));
        match Bound::bind(&Listeners {
            http: at(0),
            federation: at(1),
            dns: at(2),
            admin: at(3),
        }) {
            Ok(bound) => return Ok(bound),
            Err(error) if error.error.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(error) => return Err(error.into()),
        }
    }
    anyhow::bail!("no four free loopback ports below the ephemeral range after 200 tries")
}

/// A Web PKI for `https_web` bundle endpoints: a CA (`web-roots.pem`) and, for each cluster, a
/// certificate for 127.0.0.1 (`<cluster>/web.pem`, `<cluster>/web.key`).
fn web_pki(dir: &Path, clusters: &[Cluster]) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    std::fs::write(dir.join("web-roots.pem"), ca_cert.pem())?;
    let issuer = Issuer::new(ca_params, ca_key);
    for cluster in clusters {
        let home = dir.join(&cluster.name);
        std::fs::create_dir_all(&home)?;
        let key = KeyPair::generate()?;
        let cert =
            CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&key, &issuer)?;
        std::fs::write(home.join("web.pem"), cert.pem())?;
        std::fs::write(home.join("web.key"), key.serialize_pem())?;
    }
    Ok(())
}

/// Sends one HTTP/3 `GET` for `authority` to the gateway at `addr` as an independent client
/// would: its own QUIC endpoint, presenting `svid`, trusting only the roots of `server_cas` (all
/// of the server's trust domain: more than one while that domain rotates its root).
/// Returns the response status; any failure (handshake refused, connection closed) is an error.
pub async fn h3_get(
    svid: &Svid,
    server_cas: &[&Ca],
    addr: SocketAddr,
    authority: &str,
) -> anyhow::Result<http::StatusCode> {
    Ok(h3_request(svid, server_cas, addr, authority, &[]).await?.0)
}

/// Like [`h3_get`], with extra request headers; returns the status and the body as text.
pub async fn h3_request(
    svid: &Svid,
    server_cas: &[&Ca],
    addr: SocketAddr,
    authority: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(http::StatusCode, String)> {
    let client = H3Client::connect(svid, server_cas, addr).await?;
    let mut request = http::Request::get(format!("https://{authority}/"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.send(request.body(())?).await;
    client.close().await;
    let (head, body) = response?.into_parts();
    Ok((head.status, body))
}

/// An independent HTTP/3 client of a gateway's federation port: its own QUIC endpoint and one
/// connection, presenting `svid`, trusting only the roots of `server_cas` (all of the server's
/// trust domain: more than one while that domain rotates its root).
pub struct H3Client {
    endpoint: quinn::Endpoint,
    requests: h3::client::SendRequest<h3_quinn::OpenStreams, bytes::Bytes>,
}

impl std::fmt::Debug for H3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Client")
            .field("local", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl H3Client {
    /// Connects to the gateway at `addr`; a refused handshake is an error.
    pub async fn connect(
        svid: &Svid,
        server_cas: &[&Ca],
        addr: SocketAddr,
    ) -> anyhow::Result<H3Client> {
        let trust_domain = server_cas
            .first()
            .context("no root to trust the server with")?
            .trust_domain()
            .clone();
        anyhow::ensure!(
            server_cas
                .iter()
                .all(|ca| *ca.trust_domain() == trust_domain),
            "the server's roots must all be of one trust domain"
        );
        let roots: Vec<_> = server_cas.iter().map(|ca| ca.root().clone()).collect();
        let trust = TrustStore::new().with_roots(trust_domain.clone(), &roots)?;
        let tls = tls::client_config(
            svid,
            Arc::new(trust),
            trust_domain.clone(),
            None,
            &[wire::ALPN],
            &Arc::default(),
        )?;
        let config = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(tls)?,
        ));
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let connection = endpoint
            .connect_with(config, addr, trust_domain.as_str())?
            .await?;
        let (mut driver, requests) = h3::client::new(h3_quinn::Connection::new(connection)).await?;
        tokio::spawn(async move { driver.wait_idle().await });
        Ok(H3Client { endpoint, requests })
    }

    /// Sends `request` (without a body) and returns the response with its body as text.
    pub async fn send(&self, request: http::Request<()>) -> anyhow::Result<http::Response<String>> {
        let mut requests = self.requests.clone();
        let mut stream = requests.send_request(request).await?;
        stream.finish().await?;
        let response = stream.recv_response().await?;
        read_body(stream, response).await
    }

    /// Like [`H3Client::send`], but ends the request stream only once the response head has
    /// come, as a client does whose FIN is still on its way when the gateway answers (a
    /// refusal, made without reading). Ending it must still succeed: the gateway must not have
    /// stopped the stream.
    pub async fn send_ending_late(
        &self,
        request: http::Request<()>,
    ) -> anyhow::Result<http::Response<String>> {
        let mut requests = self.requests.clone();
        let mut stream = requests.send_request(request).await?;
        let response = stream.recv_response().await?;
        stream.finish().await?;
        read_body(stream, response).await
    }

    /// Closes cleanly, so that the gateway is not left holding a connection to a vanished
    /// client until its idle timeout.
    pub async fn close(self) {
        self.endpoint.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.endpoint.wait_idle())
            .await;
    }
}

/// Reads the body of `response` from `stream`, as text.
async fn read_body(
    mut stream: h3::client::RequestStream<h3_quinn::BidiStream<bytes::Bytes>, bytes::Bytes>,
    response: http::Response<()>,
) -> anyhow::Result<http::Response<String>> {
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await? {
        use bytes::Buf as _;
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    Ok(response.map(|()| String::from_utf8_lossy(&body).into_owned()))
}

fn start(path: &Path, bound: Bound) -> anyhow::Result<Running> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let credentials =
        Credentials::load(&config, SystemTime::now()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(meshfed_gateway::start(config, bound, credentials)?)
}
