//! Knot DNS (the Debian package `knot`) as a cluster's own DNS, for tests of endpoints found in
//! DNS: it serves `cluster.local` from a zone file that a test rewrites, and reloads on demand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;

/// A running `knotd` serving `cluster.local`; it stops when dropped.
#[derive(Debug)]
pub struct Knot {
    addr: SocketAddr,
    dir: TempDir,
    serial: u32,
    process: Child,
}

impl Knot {
    /// Starts `knotd` on a free loopback port with `records` (zone-file lines relative to
    /// `cluster.local.`, e.g. `checkout.shop.svc 1 IN A 127.0.0.11`).
    pub async fn start(records: &[&str]) -> anyhow::Result<Knot> {
        let dir = tempfile::tempdir()?;
        let port = {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
            socket.local_addr()?.port()
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let conf = format!(
            "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
             control:\n    listen: {d}/knot.sock\n\
             log:\n  - target: stderr\n    any: error\n\
             database:\n    storage: {d}/db\n\
             template:\n  - id: default\n    storage: {d}\n    semantic-checks: off\n    journal-content: none\n    zonefile-sync: -1\n\
             zone:\n  - domain: cluster.local\n    file: cluster.local.zone\n",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("knot.conf"), conf)?;
        let mut knot = Knot {
            addr,
            serial: 0,
            process: Command::new(knotd())
                .arg("-c")
                .arg(dir.path().join("knot.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting knotd (Debian package `knot`)")?,
            dir,
        };
        knot.write(records)?;
        // Until it answers the zone's SOA.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !knot.answers_soa().await {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "knotd did not answer within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(knot)
    }

    /// Where it answers, UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the zone's records and has `knotd` load them.
    pub async fn set(&mut self, records: &[&str]) -> anyhow::Result<()> {
        self.write(records)?;
        let conf = self.dir.path().join("knot.conf");
        let status = tokio::task::spawn_blocking(move || {
            Command::new(knotc())
                .arg("-c")
                .arg(conf)
                .args(["zone-reload", "cluster.local"])
                .stdout(Stdio::null())
                .status()
        })
        .await??;
        anyhow::ensure!(status.success(), "knotc zone-reload failed: {status}");
        Ok(())
    }

    fn write(&mut self, records: &[&str]) -> anyhow::Result<()> {
        self.serial += 1;
        let mut zone = format!(
            "$ORIGIN cluster.local.\n$TTL 1\n@ IN SOA ns hostmaster {} 60 60 60 1\n@ IN NS ns\nns IN A 127.0.0.1\n",
            self.serial
        );
        for record in records {
            zone.push_str(record);
            zone.push('\n');
        }
        std::fs::write(self.dir.path().join("cluster.local.zone"), zone)?;
        Ok(())
    }

    async fn answers_soa(&self) -> bool {
        let addr = self.addr;
        tokio::task::spawn_blocking(move || {
            Command::new("dig")
                .args([&format!("@{}", addr.ip()), "-p", &addr.port().to_string()])
                .args(["+tries=1", "+time=1", "cluster.local", "SOA"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("status: NOERROR"))
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// `knotd` lives in `/usr/sbin`, which a user's `PATH` may lack.
fn knotd() -> PathBuf {
    sbin("knotd")
}

fn knotc() -> PathBuf {
    sbin("knotc")
}

fn sbin(name: &str) -> PathBuf {
    let path = PathBuf::from("/usr/sbin").join(name);
    if path.exists() {
        path
    } else {
        PathBuf::from(name)
    }
}
