//! Every example config shipped in `deploy/` and `docs/` parses: the docs cannot drift from the
//! code without this failing.

use std::path::{Path, PathBuf};

use meshfed_gateway::Config;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `yaml` fenced blocks of a Markdown file, with their first line numbers.
fn yaml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut current, line.trim_start()) {
            (None, "```yaml") => current = Some((i + 2, String::new())),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn deploy_examples_parse() {
    let dir = repo().join("deploy/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            if let Err(errors) = Config::load(&path) {
                panic!("{errors}");
            }
            seen += 1;
        }
    }
    assert!(
        seen >= 2,
        "expected the example configs in {}",
        dir.display()
    );
}

#[test]
fn docs_examples_parse() {
    let mut seen = 0;
    for entry in std::fs::read_dir(repo().join("docs")).expect("docs") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let markdown = std::fs::read_to_string(&path).expect("readable");
        for (line, block) in yaml_blocks(&markdown) {
            // A policy file example says so on its first line, and whose it is: it is checked
            // against that cluster's example config (east's unless it says west's).
            if block.starts_with("# policy file") {
                let cluster = match block.starts_with("# policy file (west's") {
                    true => "west",
                    false => "east",
                };
                let config = repo().join(format!("deploy/examples/{cluster}.yaml"));
                let config = Config::load(&config).expect("example config");
                if let Err(errors) = meshfed_gateway::config::policy::parse(&block, &config) {
                    panic!("{}:{line}: {errors}", path.display());
                }
                seen += 1;
                continue;
            }
            if let Err(errors) = Config::parse(&block, Path::new("/etc/meshfed")) {
                panic!("{}:{line}: {errors}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen >= 1, "docs should show at least one complete config");
}

/// The benchmark's gateway configs (`tests/bench/bench.py`, Python format strings) are valid
/// configs: a benchmark that cannot start measures nothing.
#[test]
fn benchmark_configs_parse() {
    let bench = std::fs::read_to_string(repo().join("tests/bench/bench.py")).expect("readable");
    for name in ["WEST_YAML", "EAST_YAML"] {
        let start = bench
            .find(&format!("{name} = \"\"\""))
            .unwrap_or_else(|| panic!("no {name} in bench.py"));
        let body = &bench[start..];
        let open = body.find("\"\"\"").expect("opening quotes") + 3;
        let close = body[open..].find("\"\"\"").expect("closing quotes");
        let mut text = body[open..open + close].to_owned();
        if name == "EAST_YAML" {
            // A Python format string: braces doubled, and the peer's address filled in.
            text = text
                .replace("{{", "{")
                .replace("}}", "}")
                .replace("{west}", "127.0.2.1:15443");
        }
        if let Err(errors) = Config::parse(&text, Path::new("/tmp/bench")) {
            panic!("bench.py {name}: {errors}");
        }
    }
}
