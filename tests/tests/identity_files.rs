//! An SVID written by another system (`identity.cert`, `key`, `bundle`) is checked before the
//! gateway uses it: a stale, mismatched or foreign SVID is refused under its config key.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use meshfed_tests::binary;
use meshfed_trust::x509::pem;
use meshfed_trust::{Ca, SpiffeId, Svid};

fn write_svid(dir: &Path, svid: &Svid, key_of: &Svid, root: &Ca) -> anyhow::Result<()> {
    let chain: String = svid.chain().iter().map(|c| pem("CERTIFICATE", c)).collect();
    std::fs::write(dir.join("svid.pem"), chain)?;
    std::fs::write(
        dir.join("svid.key"),
        pem("PRIVATE KEY", key_of.key().secret_der()),
    )?;
    std::fs::write(dir.join("bundle.pem"), root.root_pem())?;
    Ok(())
}

fn check(dir: &Path) -> anyhow::Result<(Option<i32>, String)> {
    let config = "cluster: east\ntrust_domain: east.example\n\
                  identity: { cert: svid.pem, key: svid.key, bundle: bundle.pem }\n";
    std::fs::write(dir.join("east.yaml"), config)?;
    let out = Command::new(binary::meshfed()?)
        .current_dir(dir)
        .args(["check", "--config", "east.yaml"])
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code(), text))
}

#[test]
fn svid_files_are_checked_before_use() -> anyhow::Result<()> {
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let ca = Ca::generate("east.example".parse()?, now)?;
    let other_ca = Ca::generate("east.example".parse()?, now)?;
    let id = SpiffeId::new("east.example".parse()?, ["meshfed", "gateway", "east"])?;
    let good = ca.issue(&id, now, hour)?;
    let other = ca.issue(&id, now, hour)?;
    let expired = ca.issue(&id, now - 48 * hour, hour)?;
    let foreign = other_ca.issue(&id, now, hour)?;

    let cases: [(&str, &Svid, &Svid, &Ca, Option<&str>); 4] = [
        ("valid", &good, &good, &ca, None),
        ("expired", &expired, &expired, &ca, Some("expired")),
        (
            "key of another SVID",
            &good,
            &other,
            &ca,
            Some("keymismatch"),
        ),
        (
            "signed by another CA",
            &foreign,
            &foreign,
            &ca,
            Some("badsignature"),
        ),
    ];
    for (name, svid, key_of, root, refusal) in cases {
        let dir = tempfile::tempdir()?;
        write_svid(dir.path(), svid, key_of, root)?;
        let (code, text) = check(dir.path())?;
        match refusal {
            None => assert_eq!(code, Some(0), "{name}: {text}"),
            Some(reason) => {
                assert_eq!(code, Some(2), "{name}: {text}");
                assert!(text.contains("identity.cert"), "{name}: {text}");
                assert!(text.to_lowercase().contains(reason), "{name}: {text}");
            }
        }
    }
    Ok(())
}
