//! The real `meshfed` binary: `check`, `ca init`, `run` and its shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meshfed_tests::binary;

const BAD: &str = r#"
cluster: East
trust_domain: east.example
listeners:
  http: 127.0.0.1
identity:
  ca_dir: ca
peers:
  - name: west
    address: 10.0.0.1:15443
    trust_domain: West.Example
    bundle: west.pem
    colour: blue
exports:
  - name: checkout
    namespace: shop
    ports: [{ port: 99999, protocol: http }]
    endpoints: ["10.0.0.7:8080"]
"#;

#[test]
fn check_lists_every_mistake_with_its_key_path_and_exits_2() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, BAD)?;
    let output = Command::new(binary::meshfed()?)
        .args(["check", "--config"])
        .arg(&path)
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr)?;
    for expected in [
        "5 problems",
        "peers[0].colour: unknown key",
        "cluster (line 2): \"East\": not a DNS label",
        "listeners.http (line 5): \"127.0.0.1\": expected an IP address and port",
        "peers[0].trust_domain (line 11): \"West.Example\": not a SPIFFE trust domain",
        "exports[0].ports[0].port (line 17): \"99999\": expected a port number",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    Ok(())
}

#[test]
fn check_accepts_a_config_whose_files_are_valid() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let meshfed = binary::meshfed()?;
    for (td, out) in [("east.example", "east-ca"), ("west.example", "west-ca")] {
        let init = Command::new(&meshfed)
            .args(["ca", "init", "--trust-domain", td, "--out"])
            .arg(dir.path().join(out))
            .output()?;
        assert!(init.status.success());
    }
    std::fs::copy(
        dir.path().join("west-ca/ca.pem"),
        dir.path().join("west.pem"),
    )?;
    let config = "cluster: east\ntrust_domain: east.example\nidentity: { ca_dir: east-ca }\n\
                  peers: [{ name: west, address: \"10.0.0.1:15443\", trust_domain: west.example, bundle: west.pem }]\n";
    std::fs::write(dir.path().join("east.yaml"), config)?;
    let output = Command::new(&meshfed)
        .args(["check", "--config"])
        .arg(dir.path().join("east.yaml"))
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("ok (cluster east, 1 peers, 0 exports)"),
        "{stdout}"
    );

    // The same config with the wrong CA for its trust domain is refused, naming the key.
    let wrong = config.replace("ca_dir: east-ca", "ca_dir: west-ca");
    std::fs::write(dir.path().join("wrong.yaml"), wrong)?;
    let output = Command::new(&meshfed)
        .args(["check", "--config"])
        .arg(dir.path().join("wrong.yaml"))
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr)?;
    assert!(
        stderr.contains("identity.ca_dir")
            && stderr.contains("the CA is for trust domain west.example"),
        "{stderr}"
    );

    // A policy file is checked with the config: a route to a cluster that is neither this one
    // nor a peer is refused, naming the file and the key.
    std::fs::write(
        dir.path().join("policy.yaml"),
        "services:\n  - service: greeter.demo\n    routes:\n      - backends: [{ cluster: mars }]\n",
    )?;
    std::fs::write(
        dir.path().join("with-policy.yaml"),
        format!("{config}policy: policy.yaml\n"),
    )?;
    let output = Command::new(&meshfed)
        .args(["check", "--config"])
        .arg(dir.path().join("with-policy.yaml"))
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr)?;
    assert!(
        stderr.contains("policy.yaml: 1 problem")
            && stderr.contains("services[0].routes[0].backends[0].cluster (line 4): \"mars\""),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn run_refuses_a_bad_config_before_starting() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, BAD)?;
    let output = Command::new(binary::meshfed()?)
        .args(["run", "--config"])
        .arg(&path)
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    assert!(!String::from_utf8(output.stderr)?.contains("gateway started"));
    Ok(())
}

#[test]
fn run_stops_cleanly_on_sigterm() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let meshfed = binary::meshfed()?;
    let init = Command::new(&meshfed)
        .args(["ca", "init", "--trust-domain", "solo.example", "--out"])
        .arg(dir.path().join("ca"))
        .output()?;
    assert!(init.status.success());
    let config = "cluster: solo\ntrust_domain: solo.example\nidentity: { ca_dir: ca }\n\
                  listeners: { http: \"127.0.0.1:0\", federation: \"127.0.0.1:0\", dns: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }\n";
    std::fs::write(dir.path().join("solo.yaml"), config)?;
    let mut child = Command::new(&meshfed)
        .args(["run", "--log-format", "json", "--config"])
        .arg(dir.path().join("solo.yaml"))
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    // Log lines arrive on a channel, so every wait below has a deadline.
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |message: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let needle = format!("\"message\":\"{message}\"");
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
                // Each line must be JSON, which this also checks.
                Ok(line) if line.starts_with('{') && line.contains(&needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    };
    // Wait for the lifecycle event, not for a fixed time.
    if !wait_for("gateway started") {
        let _ = child.kill();
        panic!("the gateway never reported starting");
    }

    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let stopped = wait_for("stopped");
    if !stopped {
        let _ = child.kill();
    }
    let exit = child.wait()?;
    assert!(stopped, "the gateway never reported stopping");
    assert!(exit.success(), "exit status {exit}");
    // Idle, it has nothing to drain: it must not sit out its whole grace period.
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "took {:?}",
        signalled.elapsed()
    );
    Ok(())
}
