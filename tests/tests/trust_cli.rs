//! The trust commands of the real binary: `bundle export|show|import` and `cert inspect`, and a
//! gateway that takes a peer bundle in the SPIFFE bundle format.

use std::path::Path;
use std::process::{Command, Output};

use meshfed_tests::binary;

fn meshfed(dir: &Path, args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(binary::meshfed()?)
        .current_dir(dir)
        .args(args)
        .output()?)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Two CA directories and a config for east that names west's bundle file.
fn two_cas(dir: &Path) -> anyhow::Result<()> {
    for td in ["east", "west"] {
        let out = meshfed(
            dir,
            &[
                "ca",
                "init",
                "--trust-domain",
                &format!("{td}.example"),
                "--out",
                &format!("{td}-ca"),
            ],
        )?;
        anyhow::ensure!(out.status.success(), "{}", text(&out));
        let config =
            format!("cluster: {td}\ntrust_domain: {td}.example\nidentity: {{ ca_dir: {td}-ca }}\n");
        std::fs::write(dir.join(format!("{td}.yaml")), config)?;
    }
    Ok(())
}

#[test]
fn a_bundle_exported_by_one_cluster_is_imported_and_used_by_another() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    two_cas(dir)?;

    let export = meshfed(
        dir,
        &[
            "bundle",
            "export",
            "--config",
            "west.yaml",
            "--sequence",
            "4",
        ],
    )?;
    assert!(export.status.success(), "{}", text(&export));
    std::fs::write(dir.join("west.json"), &export.stdout)?;
    let doc = String::from_utf8(export.stdout)?;
    assert!(
        doc.contains("\"use\": \"x509-svid\"") && doc.contains("\"spiffe_sequence\": 4"),
        "{doc}"
    );

    let show = meshfed(
        dir,
        &[
            "bundle",
            "show",
            "west.json",
            "--trust-domain",
            "west.example",
        ],
    )?;
    let shown = text(&show);
    assert!(
        shown.contains("trust domain west.example: 1 X.509 authorities, sequence 4"),
        "{shown}"
    );
    assert!(shown.contains("id: spiffe://west.example"), "{shown}");

    // The wrong trust domain is refused: west's CA names west.example.
    let wrong = meshfed(
        dir,
        &[
            "bundle",
            "import",
            "west.json",
            "--trust-domain",
            "north.example",
            "--out",
            "x.json",
        ],
    )?;
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    assert!(text(&wrong).contains("is a CA of trust domain west.example, not north.example"));
    assert!(!dir.join("x.json").exists());

    let import = meshfed(
        dir,
        &[
            "bundle",
            "import",
            "west.json",
            "--trust-domain",
            "west.example",
            "--out",
            "peer-west.json",
        ],
    )?;
    assert!(import.status.success(), "{}", text(&import));

    // East takes the imported SPIFFE bundle as its peer bundle.
    let config = "cluster: east\ntrust_domain: east.example\nidentity: { ca_dir: east-ca }\n\
                  peers: [{ name: west, address: \"10.0.0.1:15443\", trust_domain: west.example, bundle: peer-west.json }]\n";
    std::fs::write(dir.join("east.yaml"), config)?;
    let check = meshfed(dir, &["check", "--config", "east.yaml"])?;
    assert!(check.status.success(), "{}", text(&check));
    Ok(())
}

#[test]
fn malformed_bundles_are_refused_with_the_reason() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    let cases = [
        (
            "no-use.json",
            r#"{"keys":[{"kty":"EC","x5c":["AAAA"]}]}"#,
            "keys[0]: `use` is required",
        ),
        (
            "two.json",
            r#"{"keys":[{"use":"x509-svid","kty":"EC","x5c":["AAAA","AAAA"]}]}"#,
            "not 2",
        ),
        ("not-json.json", r#"{"keys": ["#, "not a SPIFFE bundle"),
        ("empty.pem", "", "holds no CERTIFICATE block"),
    ];
    for (file, contents, reason) in cases {
        std::fs::write(dir.join(file), contents)?;
        let out = meshfed(
            dir,
            &["bundle", "show", file, "--trust-domain", "east.example"],
        )?;
        assert_eq!(out.status.code(), Some(2), "{file}: {}", text(&out));
        assert!(text(&out).contains(reason), "{file}: {}", text(&out));
    }
    Ok(())
}

#[test]
fn cert_inspect_shows_the_spiffe_id_issuer_and_validity() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    two_cas(dir)?;
    let out = meshfed(dir, &["cert", "inspect", "east-ca/ca.pem"])?;
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("spiffe id: spiffe://east.example"),
        "{shown}"
    );
    assert!(
        shown.contains("issuer:    O=meshfed, CN=east.example meshfed root CA"),
        "{shown}"
    );
    assert!(shown.contains("ca:        true"), "{shown}");
    assert!(
        shown.lines().any(|l| l.trim_start().starts_with("valid:")),
        "{shown}"
    );
    Ok(())
}
