//! `meshfed demo`: a whole federation on this machine, with nothing to prepare.
//!
//! Two clusters, each with its own generated CA and trust domain, each gateway on its own
//! loopback address with the standard ports, demo services behind them. The configs and CAs
//! are written to a temporary directory and loaded through the same path `meshfed run` uses, so
//! the demo shows real config files a newcomer can open.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use meshfed_gateway::{Bound, Config, Credentials, Running};
use meshfed_trust::Ca;
use tokio_util::sync::CancellationToken;

use super::demo_service::{self, Identity};

struct Cluster {
    name: &'static str,
    trust_domain: &'static str,
    ip: Ipv4Addr,
    services: &'static [(&'static str, &'static str, &'static str)],
}

/// `(name, namespace, version)` of each demo service.
const CLUSTERS: [Cluster; 2] = [
    Cluster {
        name: "east",
        trust_domain: "east.demo",
        ip: Ipv4Addr::new(127, 0, 1, 1),
        services: &[("greeter", "demo", "v1"), ("checkout", "shop", "v1")],
    },
    Cluster {
        name: "west",
        trust_domain: "west.demo",
        ip: Ipv4Addr::new(127, 0, 2, 1),
        // checkout v2 in west is green: it takes no traffic until it is moved there.
        services: &[("greeter", "demo", "v2"), ("checkout", "shop", "v2")],
    },
];

/// East's traffic policy: greeter split 80/20 between v1 in east and v2 in west, and testers
/// (`x-tester: yes`) always on v2.
const EAST_POLICY: &str = r#"# meshfed demo: east's traffic policy (docs/config.md). Edit it while the demo runs:
# east reads it again within a second, and refuses a version with a mistake, keeping this one.
services:
  - service: greeter.demo
    subsets:
      v1: { version: v1 }
      v2: { version: v2 }
    routes:
      - name: testers
        match:
          - headers: { x-tester: { exact: "yes" } }
        backends: [{ cluster: west, subset: v2 }]
      - name: split
        backends:
          - { cluster: east, subset: v1, weight: 80 }
          - { cluster: west, subset: v2, weight: 20 }
  # checkout stays in east (blue) until `meshfed move` takes it to west (green).
  - service: checkout.shop
    routes:
      - name: stay
        backends: [{ cluster: east }]
"#;

/// West's traffic policy: checkout stays in east until it is moved.
const WEST_POLICY: &str = r#"# meshfed demo: west's traffic policy (docs/config.md).
services:
  - service: checkout.shop
    routes:
      - name: stay
        backends: [{ cluster: east }]
"#;

/// Runs the demo until Ctrl-C, its gateways sending spans to `otlp_endpoint` if given.
pub(crate) fn run(otlp_endpoint: Option<&str>) -> ExitCode {
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("meshfed: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let dir = std::env::temp_dir().join(format!("meshfed-demo-{}", std::process::id()));
    let result = runtime.block_on(demo(&dir, otlp_endpoint));
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("meshfed demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(dir: &Path, otlp_endpoint: Option<&str>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let now = SystemTime::now();
    let cas = CLUSTERS
        .iter()
        .map(|c| Ca::generate(c.trust_domain.parse()?, now).context("cannot generate a CA"))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let services_stop = CancellationToken::new();
    let mut configs = Vec::new();
    for (i, cluster) in CLUSTERS.iter().enumerate() {
        let cluster_dir = dir.join(cluster.name);
        cas[i].write(&cluster_dir.join("ca"))?;
        let peer = &CLUSTERS[1 - i];
        let bundle = cluster_dir.join(format!("{}-bundle.pem", peer.name));
        std::fs::write(&bundle, cas[1 - i].root_pem())?;
        let mut endpoints = Vec::new();
        for &(service, _, version) in cluster.services {
            let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(cluster.ip), 0))
                .with_context(|| format!("cannot bind a demo service on {}", cluster.ip))?;
            endpoints.push(listener.local_addr()?);
            let identity = Identity {
                service,
                version,
                cluster: cluster.name,
            };
            tokio::spawn(demo_service::serve(
                listener,
                identity,
                services_stop.clone(),
            ));
        }
        let policy = match cluster.name {
            "east" => EAST_POLICY,
            _ => WEST_POLICY,
        };
        std::fs::write(dir.join(format!("{}-policy.yaml", cluster.name)), policy)?;
        let path = dir.join(format!("{}.yaml", cluster.name));
        std::fs::write(&path, config_yaml(cluster, peer, &endpoints, otlp_endpoint))?;
        configs.push(path);
    }

    let mut gateways: Vec<Running> = Vec::new();
    for path in &configs {
        gateways.push(start(path).await?);
    }
    exchanged(&gateways).await?;
    print!("{}", guide(dir, otlp_endpoint));

    super::stop_signal().await;
    let stopping: Vec<_> = gateways.into_iter().map(Running::shutdown).collect();
    futures_join_all(stopping).await;
    services_stop.cancel();
    Ok(())
}

async fn start(path: &Path) -> anyhow::Result<Running> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let credentials =
        Credentials::load(&config, SystemTime::now()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let bound = Bound::bind(&config.listeners).context(
        "is another meshfed demo running? (each gateway needs ports 15000, 15053, 15080, 15443)",
    )?;
    Ok(meshfed_gateway::start(config, bound, credentials)?)
}

/// Waits until each gateway has its peer's catalog, so that every printed command works.
async fn exchanged(gateways: &[Running]) -> anyhow::Result<()> {
    let complete = || {
        gateways.iter().enumerate().all(|(i, gateway)| {
            let peer = &CLUSTERS[1 - i];
            let imports = gateway.imports();
            peer.services.iter().all(|(name, namespace, _)| {
                let key = format!("{name}.{namespace}").parse();
                let cluster = peer.name.parse();
                match (key, cluster) {
                    (Ok(key), Ok(cluster)) => imports
                        .services
                        .get(&key)
                        .is_some_and(|s| s.clusters.contains_key(&cluster)),
                    _ => false,
                }
            })
        })
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !complete() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the gateways did not exchange their catalogs within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Awaits every future, concurrently.
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(futures: Vec<F>) {
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    for task in tasks {
        let _ = task.await;
    }
}

fn config_yaml(
    cluster: &Cluster,
    peer: &Cluster,
    endpoints: &[SocketAddr],
    otlp_endpoint: Option<&str>,
) -> String {
    let ip = cluster.ip;
    let mut yaml = format!(
        "# meshfed demo: the gateway of cluster {name}.\n\
         cluster: {name}\n\
         trust_domain: {td}\n\
         listeners:\n  http: {ip}:15080\n  federation: {ip}:15443\n  dns: {ip}:15053\n  admin: {ip}:15000\n\
         identity:\n  ca_dir: {name}/ca\n  svid_lifetime: 24h\n\
         policy: {name}-policy.yaml\n\
         peers:\n  - name: {peer}\n    address: {peer_ip}:15443\n    trust_domain: {peer_td}\n    bundle: {name}/{peer}-bundle.pem\n\
         exports:\n",
        name = cluster.name,
        td = cluster.trust_domain,
        peer = peer.name,
        peer_ip = peer.ip,
        peer_td = peer.trust_domain,
    );
    for ((service, namespace, version), endpoint) in cluster.services.iter().zip(endpoints) {
        let _ = write!(
            yaml,
            "  - name: {service}\n    namespace: {namespace}\n    ports: [{{ name: http, port: 80, protocol: http }}]\n    endpoints: [\"{endpoint}\"]\n    labels: {{ version: {version} }}\n    export_to: [{}]\n",
            peer.name
        );
    }
    if let Some(endpoint) = otlp_endpoint {
        let _ = write!(yaml, "tracing:\n  otlp_endpoint: \"{endpoint}\"\n");
    }
    yaml
}

fn guide(dir: &Path, otlp_endpoint: Option<&str>) -> String {
    let traces = match otlp_endpoint {
        Some(endpoint) => format!(
            "Both gateways send their spans to {endpoint}: each request above is one trace\n\
             through east and west (service names meshfed-east and meshfed-west)."
        ),
        None => "Traces: start the demo with --otlp-endpoint http://127.0.0.1:4317 to send both\n\
                 gateways' spans to an OpenTelemetry collector or Jaeger."
            .to_owned(),
    };
    format!(
        r#"
meshfed demo is running: two clusters, each with its own CA and trust domain.

  cluster  trust domain  gateway    services
  east     east.demo     127.0.1.1  greeter.demo (v1), checkout.shop (v1)
  west     west.demo     127.0.2.1  greeter.demo (v2), checkout.shop (v2, no traffic until moved)

Try these in another terminal.

  # greeter in west, called through east's gateway: it crosses to west over QUIC with mTLS
  curl -si -H 'Host: greeter.demo.west.meshfed.internal' http://127.0.1.1:15080/

  # checkout is served by east (west's v2 waits to be moved to); west's gateway reaches it
  # by its clusterset name
  curl -s -H 'Host: checkout.shop.svc.clusterset.local' http://127.0.2.1:15080/

  # greeter runs in both clusters; east's policy (east-policy.yaml) splits it 80/20 between
  # v1 in east and v2 in west (run it a few times)
  curl -s -H 'Host: greeter.demo.svc.clusterset.local' http://127.0.1.1:15080/

  # the policy sends testers to v2, in west, every time
  curl -s -H 'Host: greeter.demo.svc.clusterset.local' -H 'x-tester: yes' http://127.0.1.1:15080/

  # each gateway answers DNS for the services it can route, with its own address
  dig @127.0.1.1 -p 15053 +short greeter.demo.svc.clusterset.local
  dig @127.0.2.1 -p 15053 +short checkout.shop.east.meshfed.internal

  # named ports have SRV records (the port numbers come from east's catalog)
  dig @127.0.2.1 -p 15053 +short _http._tcp.checkout.shop.svc.clusterset.local SRV

  # a name nobody serves gets NXDOMAIN
  dig @127.0.1.1 -p 15053 nothing.demo.svc.clusterset.local

What each gateway knows, from which clusters, with endpoint health:
  meshfed services --admin 127.0.1.1:15000

An experiment that ends by itself: for one minute, east answers half of greeter's requests
with 503 (the response says `x-meshfed-fault: abort`); `meshfed fault list` shows it:
  meshfed fault set greeter.demo --abort 503 --abort-percent 50 --for 1m --admin 127.0.1.1:15000

Move checkout from east to west in three steps, each held 10s and gated on the error rate of
what every gateway sees (docs/moves.md); keep calling it meanwhile, and watch:
  meshfed move start checkout.shop --from east --to west --canary 10:10s,50:10s,100:10s --admin 127.0.1.1:15000
  meshfed move status --watch --admin 127.0.1.1:15000

The federation at a glance, refreshing itself: open in a browser
  http://127.0.1.1:15000/   (east's view; west's is http://127.0.2.1:15000/)

Prometheus metrics: scrape 127.0.1.1:15000 and 127.0.2.1:15000 (path /metrics).
{traces}

Configs and CAs: {dir} (removed on exit). Ctrl-C stops.
"#,
        dir = dir.display()
    )
}
