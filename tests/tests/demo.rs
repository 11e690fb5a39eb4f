//! `meshfed demo` as a newcomer meets it: start it, run the printed `curl` and `dig` commands
//! exactly as printed with the real tools, and check where the answers came from; follow a
//! request through both gateways in a trace (a test OTLP collector stands in for Jaeger); and
//! open the status page in headless Chromium, which must show both clusters and the services
//! (the screenshot is kept in the target directory, `tmp/status-page.png`).
//!
//! The demo listens on fixed addresses (127.0.1.1 and 127.0.2.1, ports 15000/15053/15080/15443)
//! by design: its printed commands must work as written. This is the only test that uses them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use meshfed_tests::binary;
use meshfed_tests::otlp::{Collector, hex};

/// Stops the demo even when an assertion fails.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sh(command: &str) -> anyhow::Result<String> {
    let output = Command::new("sh").args(["-c", command]).output()?;
    anyhow::ensure!(
        output.status.success(),
        "`{command}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

#[test]
fn the_printed_commands_work_as_printed() -> anyhow::Result<()> {
    // The collector's server runs on this runtime's threads while the test blocks on commands.
    let runtime = tokio::runtime::Runtime::new()?;
    let collector = runtime.block_on(Collector::start())?;
    let mut demo = Demo(
        Command::new(binary::meshfed()?)
            .args(["demo", "--otlp-endpoint", &collector.endpoint()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let stdout = demo
        .0
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut guide = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let done = line.contains("Ctrl-C stops");
        guide.push(line);
        if done {
            break;
        }
    }
    let commands: Vec<&str> = guide
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("curl ") || l.starts_with("dig "))
        .collect();
    assert_eq!(commands.len(), 8, "{guide:#?}");

    // 1. West's greeter through east's gateway: served by west, through both gateways.
    let answer = sh(commands[0])?;
    assert!(answer.contains("greeter v2 in cluster west"), "{answer}");
    assert!(
        answer.contains("reached via 1.1 meshfed-east, 3 meshfed-west"),
        "{answer}"
    );
    assert!(
        answer.to_lowercase().contains("via: 3 meshfed-east"),
        "{answer}"
    );
    // Its trace: spans from both gateways under one trace ID.
    let crossed = runtime.block_on(async {
        meshfed_tests::wait::until(
            std::time::Duration::from_secs(20),
            "spans from both gateways in one trace",
            || {
                let spans = collector.spans();
                spans.iter().any(|a| {
                    a.service == "meshfed-east"
                        && spans.iter().any(|b| {
                            b.service == "meshfed-west" && b.span.trace_id == a.span.trace_id
                        })
                })
            },
        )
        .await
    });
    crossed.map_err(|e| anyhow::anyhow!("{e}: {:#?}", collector.spans()))?;
    let trace = collector
        .spans()
        .iter()
        .find(|s| s.service == "meshfed-west")
        .map(|s| hex(&s.span.trace_id))
        .unwrap_or_default();
    assert!(
        guide
            .iter()
            .any(|l| l.contains("Both gateways send their spans")),
        "{guide:#?}"
    );
    // The whole crossing: a server and a client span at each gateway.
    let spans = runtime.block_on(collector.trace(&trace, 4))?;
    for (service, kind) in [
        ("meshfed-east", 2),
        ("meshfed-east", 3),
        ("meshfed-west", 2),
        ("meshfed-west", 3),
    ] {
        assert!(
            spans
                .iter()
                .any(|s| s.service == service && s.span.kind == kind),
            "no {service} span of kind {kind}: {spans:#?}"
        );
    }
    // 2. Checkout, only in east, through west's gateway.
    let answer = sh(commands[1])?;
    assert!(answer.contains("checkout v1 in cluster east"), "{answer}");
    // 3. Greeter by its clusterset name: served by one of the two clusters.
    // East's policy splits it 80/20: over 50 calls both versions answer, v1 more often.
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..50 {
        let answer = sh(commands[2])?;
        v1 += usize::from(answer.contains("greeter v1 in cluster east"));
        v2 += usize::from(answer.contains("greeter v2 in cluster west"));
    }
    assert_eq!(v1 + v2, 50, "every call answered by a greeter");
    assert!(v2 > 0 && v1 > v2, "v1 {v1}, v2 {v2}");
    // 4. A tester, routed by east's policy to v2 in west, every time.
    for _ in 0..5 {
        let answer = sh(commands[3])?;
        assert!(answer.contains("greeter v2 in cluster west"), "{answer}");
    }
    // 5-6. DNS: each gateway answers with its own address.
    assert_eq!(sh(commands[4])?.trim(), "127.0.1.1");
    assert_eq!(sh(commands[5])?.trim(), "127.0.2.1");
    // 7. SRV for a named port; 8. a name nobody serves.
    assert_eq!(
        sh(commands[6])?.trim(),
        "0 100 80 checkout.shop.svc.clusterset.local."
    );
    assert!(sh(commands[7])?.contains("status: NXDOMAIN"));
    // And `meshfed services` as printed, with this build's binary.
    let services = guide
        .iter()
        .map(|l| l.trim())
        .find_map(|l| l.strip_prefix("meshfed services "))
        .ok_or_else(|| anyhow::anyhow!("no meshfed services command in {guide:#?}"))?;
    let output = Command::new(binary::meshfed()?)
        .arg("services")
        .args(services.split_whitespace())
        .output()?;
    let table = String::from_utf8(output.stdout)?;
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{table}{errors}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("greeter.demo") && l.contains("local, exported to west")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("west") && l.contains("1/1 ready  imported")),
        "{table}"
    );

    // And the fault experiment, as printed: about half of greeter's calls are aborted.
    let fault = guide
        .iter()
        .map(|l| l.trim())
        .find_map(|l| l.strip_prefix("meshfed fault set "))
        .ok_or_else(|| anyhow::anyhow!("no meshfed fault command in {guide:#?}"))?;
    let output = Command::new(binary::meshfed()?)
        .args(["fault", "set"])
        .args(fault.split_whitespace())
        .output()?;
    assert!(output.status.success(), "{output:?}");
    let aborted = (0..40)
        .map(|_| {
            sh(&format!(
                "{} -o /dev/null -w '%{{http_code}}'",
                commands[2].replace("curl -s", "curl -s -S")
            ))
        })
        .collect::<anyhow::Result<Vec<String>>>()?
        .iter()
        .filter(|code| code.as_str() == "503")
        .count();
    assert!((6..=34).contains(&aborted), "{aborted} of 40 aborted");

    // The move, as printed: checkout goes from east to west while west's clients keep calling
    // it (command 2), every call answered, and ends on west's v2.
    let start = guide
        .iter()
        .map(|l| l.trim())
        .find_map(|l| l.strip_prefix("meshfed move start "))
        .ok_or_else(|| anyhow::anyhow!("no meshfed move command in {guide:#?}"))?;
    let output = Command::new(binary::meshfed()?)
        .args(["move", "start"])
        .args(start.split_whitespace())
        .output()?;
    assert!(output.status.success(), "{output:?}");
    let status = guide
        .iter()
        .map(|l| l.trim())
        .find_map(|l| l.strip_prefix("meshfed move status "))
        .ok_or_else(|| anyhow::anyhow!("no meshfed move status command in {guide:#?}"))?
        .replace("--watch ", "");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut served = std::collections::BTreeMap::<String, usize>::new();
    loop {
        let answer = sh(commands[1])?;
        *served
            .entry(answer.lines().next().unwrap_or_default().to_owned())
            .or_default() += 1;
        let output = Command::new(binary::meshfed()?)
            .args(["move", "status"])
            .args(status.split_whitespace())
            .output()?;
        let shown = String::from_utf8_lossy(&output.stdout).into_owned();
        if shown.contains("completed") {
            break;
        }
        assert!(shown.contains("running"), "{shown}");
        assert!(
            std::time::Instant::now() < deadline,
            "the move did not complete: {shown}"
        );
    }
    assert!(sh(commands[1])?.contains("checkout v2 in cluster west"));
    assert!(
        served.keys().any(|k| k.contains("in cluster west")),
        "{served:?}"
    );

    // The status page, as printed, in headless Chromium: both clusters and every service.
    let page = guide
        .iter()
        .find_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("http://127.0.1.1:15000/"))
        })
        .ok_or_else(|| anyhow::anyhow!("no status page in {guide:#?}"))?
        .to_owned();
    let dom = chromium(&page, "--dump-dom")?;
    // Text only the page's script writes (none of it is in the page's source as such): the
    // clusters and services, each cluster's ready endpoints, the split, the live peer.
    for shown in [
        "cluster east · east.demo",
        ">west</text>",
        ">greeter.demo</strong>",
        ">checkout.shop</strong>",
        "east 1/1",
        "west 1/1",
        "route split",
        "east/v1 80%",
        ">connected</span>",
        ">checkout.shop</strong><div class=\"muted\">east → west (canary)</div>",
        ">completed</span>",
    ] {
        assert!(dom.contains(shown), "{shown} not on the page: {dom}");
    }
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    chromium(&page, &format!("--screenshot={}", screenshot.display()))?;
    let png = std::fs::read(&screenshot)?;
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    // Ctrl-C stops it cleanly.
    let status = Command::new("kill")
        .args(["-INT", &demo.0.id().to_string()])
        .status()?;
    assert!(status.success());
    let exit = demo.0.wait()?;
    assert!(exit.success(), "demo exited with {exit}");
    Ok(())
}

/// Runs headless Chromium on `url` with `action` (`--dump-dom`, `--screenshot=...`), giving the
/// page's scripts time to fetch and draw; returns what it printed.
fn chromium(url: &str, action: &str) -> anyhow::Result<String> {
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,1100",
            "--virtual-time-budget=5000",
            action,
            url,
        ])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "chromium {action} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}
