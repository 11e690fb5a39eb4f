//! The DNS benchmark's meshfed side (tests/bench/dns.py): serves a synthetic clusterset of N
//! services with meshfed's DNS server, optionally rebuilding the zone R times a second, or
//! writes the same records as a zone file (for Knot DNS) and a dnsperf query file.
//!
//! ```text
//! meshfed-dns-bench serve <listen addr> <services> [changes per second]
//! meshfed-dns-bench write <services> <dir>
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use meshfed_discovery::catalog::{
    ClusterCatalog, Endpoint, Imports, Protocol, ServiceExport, ServicePort, merge,
};
use meshfed_discovery::dns::{Clusterset, ClustersetZones, DnsServer};

/// The gateway's allocator, so that the server is measured as it runs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", listen, services] => serve(listen.parse()?, services.parse()?, 0.0),
        ["serve", listen, services, rate] => {
            serve(listen.parse()?, services.parse()?, rate.parse()?)
        }
        ["write", services, dir] => write(services.parse()?, dir.as_ref()),
        _ => anyhow::bail!(
            "usage: meshfed-dns-bench serve <listen> <services> [changes/s] | write <services> <dir>"
        ),
    }
}

/// `svc-<i>.ns-<i % 100>`: one HTTP port named `http`; every tenth service headless with three
/// endpoints, the others with one.
fn catalog(services: usize) -> Imports {
    let services = (0..services)
        .map(|i| {
            let headless = i % 10 == 0;
            let endpoints = (0..if headless { 3 } else { 1 })
                .map(|e| Endpoint {
                    hostname: format!("pod-{e}").parse().expect("label"),
                    ready: true,
                    labels: BTreeMap::new(),
                })
                .collect();
            let export = ServiceExport {
                headless,
                exported_at: 1,
                ports: vec![ServicePort {
                    name: Some("http".parse().expect("label")),
                    number: 80,
                    protocol: Protocol::Http,
                }],
                endpoints,
            };
            let key = format!("svc-{i}.ns-{}", i % 100).parse().expect("key");
            (key, export)
        })
        .collect();
    merge([&ClusterCatalog {
        cluster: "east".parse().expect("label"),
        version: 1,
        services,
    }])
}

fn clusterset() -> Clusterset {
    Clusterset {
        zone: "clusterset.local".to_owned(),
        pinned_zone: "meshfed.internal".to_owned(),
        ttl: 5,
        address: "10.0.0.5".parse().expect("ip"),
        nameserver: "10.0.0.53".parse().expect("ip"),
    }
}

fn serve(listen: SocketAddr, services: usize, rate: f64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let started = Instant::now();
        let imports = catalog(services);
        let mut zones = ClustersetZones::new(clusterset(), 0)?;
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(zones.update(&imports)?));
        eprintln!("built {services} services in {:?}", started.elapsed());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut udp = Vec::new();
        for _ in 0..cores {
            udp.push(tokio::net::UdpSocket::from_std(
                meshfed_gateway::bind::udp(listen, true)?,
            )?);
        }
        let tcp = tokio::net::TcpListener::bind(listen).await?;
        let _server = DnsServer::serve(udp, tcp, rx, Default::default());
        println!("ready");
        if rate <= 0.0 {
            std::future::pending::<()>().await;
        }
        // Each change: one headless service's third endpoint turns unready or ready again (its
        // SRV answer changes; no name the queries use appears or goes), encoded and swapped in
        // as the gateway does after a catalog change.
        let headless: Vec<_> = imports
            .services
            .iter()
            .filter(|(_, s)| s.headless)
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        let zones = Arc::new(std::sync::Mutex::new(zones));
        let period = Duration::from_secs_f64(1.0 / rate);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (mut generation, mut window, mut changes) = (0usize, Instant::now(), 0u32);
        loop {
            ticker.tick().await;
            generation += 1;
            let (key, mut service) = headless[generation % headless.len()].clone();
            let ready = (generation / headless.len()) % 2 == 0;
            for endpoints in service.clusters.values_mut() {
                if let Some(third) = endpoints.get_mut(2) {
                    third.ready = !ready;
                }
            }
            let zones = zones.clone();
            let next = tokio::task::spawn_blocking(move || {
                let mut zones = zones.lock().unwrap_or_else(|e| e.into_inner());
                zones.set_service(&key, Some(&service));
                zones.commit()
            })
            .await??;
            tx.send_replace(Arc::new(next));
            changes += 1;
            if window.elapsed() >= Duration::from_secs(1) {
                eprintln!(
                    "changes/s {:.1}",
                    f64::from(changes) / window.elapsed().as_secs_f64()
                );
                (window, changes) = (Instant::now(), 0);
            }
        }
    })
}

fn write(services: usize, dir: &std::path::Path) -> anyhow::Result<()> {
    let mut zones = ClustersetZones::new(clusterset(), 0)?;
    zones.update(&catalog(services))?;
    std::fs::write(dir.join("clusterset.local.zone"), zones.zone_file()).context("zone file")?;
    // Every service's A and SRV, a per-endpoint name for the headless ones, and one name in
    // ten that does not exist.
    let mut queries = String::new();
    for i in 0..services {
        let name = format!("svc-{i}.ns-{}.svc.clusterset.local", i % 100);
        let _ = writeln!(queries, "{name} A");
        let _ = writeln!(queries, "_http._tcp.{name} SRV");
        if i % 10 == 0 {
            let _ = writeln!(queries, "pod-0.east.{name} A");
        }
        if i % 10 == 5 {
            let _ = writeln!(queries, "missing-{i}.ns-0.svc.clusterset.local A");
        }
    }
    std::fs::write(dir.join("queries.txt"), queries).context("query file")?;
    Ok(())
}
