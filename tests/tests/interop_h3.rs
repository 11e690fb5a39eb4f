//! HTTP/3 interop with an independent implementation: aioquic (PyPI), driven by
//! `tests/interop/h3_client.py`, speaks to a gateway's federation port as docs/protocol.md
//! describes. With a valid SVID of a peer it gets the upstream's answer, and tunnels TCP
//! with a standard `CONNECT`; without one it is refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use meshfed_tests::echo::Echo;
use meshfed_tests::tcp_echo::TcpEcho;
use meshfed_tests::{Cluster, Federation};
use meshfed_trust::{Ca, SpiffeId, Svid, x509};

const GREETER: &str = "greeter.demo.svc.clusterset.local";
const WEST_ID: &str = "spiffe://west.test/meshfed/gateway/west";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/h3_client.py")
}

/// What the script printed, or its exit code and error output.
#[derive(Debug)]
enum Outcome {
    Answered(serde_json::Value),
    Failed(Option<i32>, String),
}

/// Writes `svid` as `<name>.pem` and `<name>.key` in `dir`.
fn write_svid(dir: &Path, name: &str, svid: &Svid) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let chain: String = svid
        .chain()
        .iter()
        .map(|c| x509::pem("CERTIFICATE", c))
        .collect();
    std::fs::write(&cert, chain)?;
    std::fs::write(&key, x509::pem("PRIVATE KEY", svid.key().secret_der()))?;
    Ok((cert, key))
}

async fn aioquic(args: Vec<String>) -> anyhow::Result<Outcome> {
    tokio::task::spawn_blocking(move || {
        let output = Command::new("python3").arg(script()).args(&args).output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if output.status.success() {
            return Ok(Outcome::Answered(serde_json::from_str(stdout.trim())?));
        }
        Ok(Outcome::Failed(
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_with_a_peer_svid_is_served_and_without_one_is_refused() -> anyhow::Result<()> {
    let upstream = Echo::start("greeter in west").await?;
    let tcp = TcpEcho::start().await?;
    let west = Cluster::new("west")?
        .export("greeter.demo", upstream.addr(), &["east"])
        .export_port("db.shop", "tcp", 5432, &[tcp.addr()], &["east"]);
    let federation = Federation::start(vec![Cluster::new("east")?, west]).await?;
    let west_addr = federation.gateway("west").addrs().federation.to_string();
    let west_ca = federation.dir.path().join("west/ca/ca.pem");
    let dir = tempfile::tempdir()?;
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let run = |cert: &Path, key: &Path, request: &[&str]| {
        let mut args = vec![
            west_addr.clone(),
            request[0].to_owned(),
            cert.display().to_string(),
            key.display().to_string(),
            west_ca.display().to_string(),
            WEST_ID.into(),
        ];
        args.extend(request[1..].iter().map(|s| (*s).to_owned()));
        aioquic(args)
    };

    // East's gateway identity, issued by east's CA: a peer of west.
    let east_id = SpiffeId::new("east.test".parse()?, ["meshfed", "gateway", "east"])?;
    let (cert, key) = write_svid(
        dir.path(),
        "east",
        &federation.cas["east"].issue(&east_id, now, hour)?,
    )?;
    match run(&cert, &key, &[GREETER]).await? {
        Outcome::Answered(reply) => {
            assert_eq!(reply["status"], 200, "{reply}");
            let body = reply["body"].as_str().unwrap_or_default();
            assert!(body.starts_with("greeter in west\n"), "{reply}");
        }
        failed => panic!("aioquic with a valid SVID was not served: {failed:?}"),
    }
    let connect = [
        "db.shop.svc.clusterset.local:5432",
        "CONNECT",
        "ping through the tunnel",
    ];
    match run(&cert, &key, &connect).await? {
        Outcome::Answered(reply) => {
            assert_eq!(reply["status"], 200, "{reply}");
            assert_eq!(reply["body"], "ping through the tunnel", "{reply}");
        }
        failed => panic!("aioquic's CONNECT was not served: {failed:?}"),
    }

    // The same ID from a CA that is not east's: the handshake is refused.
    let rogue = Ca::generate("east.test".parse()?, now)?;
    let (cert, key) = write_svid(dir.path(), "rogue", &rogue.issue(&east_id, now, hour)?)?;
    match run(&cert, &key, &[GREETER]).await? {
        Outcome::Failed(Some(2), stderr) => assert!(stderr.contains("no connection"), "{stderr}"),
        other => panic!("aioquic with a rogue SVID was not refused: {other:?}"),
    }
    federation.shutdown().await;
    Ok(())
}
