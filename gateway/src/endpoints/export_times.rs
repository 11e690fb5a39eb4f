//! When each export was first offered, kept in `state_dir/exports.json` so that a restart does
//! not make an export younger: the oldest export of a service wins a conflict between clusters
//! (KEP-1645), and that must not flip because a gateway restarted.

use std::collections::BTreeMap;
use std::path::Path;

use meshfed_discovery::ServiceKey;

use crate::config::Config;

const FILE: &str = "exports.json";

/// Each export's first-offered time, in seconds since the Unix epoch: kept from an earlier run
/// where there is one, `now` for new exports. With a `state_dir`, the result is written back.
pub(crate) fn load_or_record(config: &Config, now: u64) -> BTreeMap<ServiceKey, u64> {
    let kept = config.state_dir.as_deref().map(read).unwrap_or_default();
    let times: BTreeMap<ServiceKey, u64> = config
        .exports
        .iter()
        .map(|export| {
            let at = kept
                .get(&export.service.to_string())
                .copied()
                .unwrap_or(now);
            (export.service.clone(), at)
        })
        .collect();
    if let Some(dir) = &config.state_dir
        && let Err(error) = write(dir, &times)
    {
        tracing::warn!(dir = %dir.display(), %error, "cannot keep the export times");
    }
    times
}

fn read(dir: &Path) -> BTreeMap<String, u64> {
    let path = dir.join(FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return BTreeMap::new();
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|error| {
        tracing::warn!(path = %path.display(), %error, "ignoring export times that cannot be read");
        BTreeMap::new()
    })
}

/// Replaces the file atomically (write, then rename).
fn write(dir: &Path, times: &BTreeMap<ServiceKey, u64>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let text: BTreeMap<String, u64> = times.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let json = serde_json::to_vec_pretty(&text).map_err(std::io::Error::other)?;
    let temporary = dir.join(format!("{FILE}.new"));
    std::fs::write(&temporary, json)?;
    std::fs::rename(&temporary, dir.join(FILE))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn times_survive_a_restart_and_new_exports_start_now() {
        let dir = tempfile::tempdir().expect("dir");
        let config = |exports: &str| {
            let text = format!(
                "cluster: east\ntrust_domain: east.example\nidentity: {{ ca_dir: ca }}\nstate_dir: {}\nexports:\n{exports}",
                dir.path().display()
            );
            Config::parse(&text, Path::new("/")).expect("valid")
        };
        let one = "  - { name: a, namespace: n, ports: [{port: 80, protocol: http}], endpoints: [\"10.0.0.1\"] }\n";
        let two = "  - { name: b, namespace: n, ports: [{port: 80, protocol: http}], endpoints: [\"10.0.0.2\"] }\n";
        let key = |s: &str| s.parse::<ServiceKey>().expect("key");
        let first = load_or_record(&config(one), 100);
        assert_eq!(first[&key("a.n")], 100);
        let second = load_or_record(&config(&format!("{one}{two}")), 200);
        assert_eq!(
            (second[&key("a.n")], second[&key("b.n")]),
            (100, 200),
            "a keeps its time; b is new"
        );
        std::fs::write(dir.path().join(FILE), b"{ not json").expect("write");
        let third = load_or_record(&config(one), 300);
        assert_eq!(third[&key("a.n")], 300, "an unreadable file is ignored");
    }
}
