//! SPIFFE bundle interop with an independent implementation: the `spiffe` (py-spiffe) and
//! `cryptography` Python packages, driven by `tests/interop/spiffe_bundle.py`.
//!
//! - py-spiffe reads the bundle our endpoint serves (authenticated as `https_spiffe`) and finds
//!   the same authority as the CA the gateway issues from;
//! - a bundle made by `cryptography` is read by `meshfed bundle show`.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use meshfed_tests::{Cluster, Federation, binary};

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/spiffe_bundle.py")
}

/// Runs the interop script off the runtime's threads (the gateway must keep serving).
async fn python(args: Vec<String>) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let output = Command::new("python3").arg(script()).args(&args).output()?;
        anyhow::ensure!(
            output.status.success(),
            "python3 {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    })
    .await?
}

#[tokio::test]
async fn py_spiffe_reads_the_bundle_our_endpoint_serves() -> anyhow::Result<()> {
    let federation = Federation::builder(vec![Cluster::new("east")?, Cluster::new("west")?])
        .bundle_exchange()
        .start()
        .await?;
    let west = federation.gateway("west").addrs().federation;
    let ca_pem = federation.dir.path().join("west/ca/ca.pem");
    let authorities = python(vec![
        "fetch".into(),
        format!("https://{west}/"),
        ca_pem.display().to_string(),
        "spiffe://west.test/meshfed/gateway/west".into(),
        "west.test".into(),
    ])
    .await?;
    let ours = base64::engine::general_purpose::STANDARD.encode(federation.cas["west"].root());
    assert_eq!(authorities.lines().collect::<Vec<_>>(), [ours.as_str()]);

    // The same client expecting another endpoint ID refuses the endpoint.
    let refused = python(vec![
        "fetch".into(),
        format!("https://{west}/"),
        ca_pem.display().to_string(),
        "spiffe://west.test/somebody-else".into(),
        "west.test".into(),
    ])
    .await;
    assert!(refused.is_err(), "the script must check the endpoint's ID");
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_bundle_made_by_another_implementation_is_read() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("north.json");
    let der = python(vec![
        "make".into(),
        "north.example".into(),
        out.display().to_string(),
    ])
    .await?;
    let show = Command::new(binary::meshfed()?)
        .args(["bundle", "show"])
        .arg(&out)
        .args(["--trust-domain", "north.example"])
        .output()?;
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&show.stderr)
    );
    assert!(
        text.contains("trust domain north.example: 1 X.509 authorities, sequence 1"),
        "{text}"
    );
    assert!(text.contains("id: spiffe://north.example"), "{text}");
    // And it is the same certificate: re-export through `bundle import` and compare the DER.
    let imported = dir.path().join("imported.json");
    let import = Command::new(binary::meshfed()?)
        .args(["bundle", "import"])
        .arg(&out)
        .args(["--trust-domain", "north.example", "--out"])
        .arg(&imported)
        .output()?;
    assert!(import.status.success());
    let document: String = std::fs::read_to_string(&imported)?;
    assert!(document.contains(der.trim()), "{document}");
    Ok(())
}
