//! The real DNS clients, `dig` (BIND) and `kdig` (Knot), as tests drive them, and their
//! output reduced to what tests check.

use std::net::SocketAddr;

/// The two clients, each over UDP and over TCP.
#[derive(Clone, Copy, Debug)]
pub enum Tool {
    /// BIND's `dig`.
    Dig,
    /// Knot's `kdig`.
    Kdig,
}

#[derive(Clone, Copy, Debug)]
pub enum Transport {
    /// UDP, falling back to TCP on truncation unless told not to.
    Udp,
    /// TCP only.
    Tcp,
}

/// What a client printed, reduced to what we check.
#[derive(Debug)]
pub struct Reply {
    /// The response code, as the tool names it (`NOERROR`).
    pub status: String,
    /// Header flags, lower case (`qr`, `aa`, `tc`).
    pub flags: Vec<String>,
    /// Answer records as `name ttl class type data`, single-spaced, sorted.
    pub answers: Vec<String>,
    /// Record types in the authority section.
    pub authority_types: Vec<String>,
    /// The UDP payload size in the response's OPT record, if it had one.
    pub edns_payload: Option<u16>,
    /// Everything the tool printed.
    pub text: String,
}

/// Runs the real tool, off the runtime's threads so that the in-process server can answer.
pub async fn ask(
    tool: Tool,
    transport: Transport,
    server: SocketAddr,
    name: &str,
    rtype: &str,
    extra: &[&str],
) -> anyhow::Result<Reply> {
    let mut args = vec![
        format!("@{}", server.ip()),
        "-p".to_owned(),
        server.port().to_string(),
        "+time=5".to_owned(),
        match tool {
            Tool::Dig => "+tries=1",
            Tool::Kdig => "+retry=0",
        }
        .to_owned(),
    ];
    // kdig sends no EDNS unless asked; dig does by default. Both the same here.
    if let Tool::Kdig = tool {
        args.push("+edns".to_owned());
    }
    if let Transport::Tcp = transport {
        args.push("+tcp".to_owned());
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.push(name.to_owned());
    args.push(rtype.to_owned());
    let program = match tool {
        Tool::Dig => "dig",
        Tool::Kdig => "kdig",
    };
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(program).args(&args).output()
    })
    .await??;
    let text = String::from_utf8(output.stdout)?;
    anyhow::ensure!(output.status.success(), "{program} failed: {text}");
    Ok(parse(&text))
}

/// Reads what `dig` or `kdig` printed.
pub fn parse(text: &str) -> Reply {
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split([',', ';']).next())
        .unwrap_or_default()
        .to_owned();
    let flags = text
        .lines()
        .find_map(|l| {
            let lower = l.to_ascii_lowercase();
            let rest = lower.strip_prefix(";; flags: ")?;
            Some(
                rest.split(';')
                    .next()?
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
            )
        })
        .unwrap_or_default();
    let section = |title: &str| -> Vec<Vec<String>> {
        let mut lines = text.lines().skip_while(|l| !l.starts_with(title)).skip(1);
        let mut records = Vec::new();
        for line in lines.by_ref() {
            if line.trim().is_empty() || line.starts_with(";;") {
                break;
            }
            records.push(line.split_whitespace().map(str::to_owned).collect());
        }
        records
    };
    let mut answers: Vec<String> = section(";; ANSWER SECTION:")
        .into_iter()
        .map(|fields| fields.join(" "))
        .collect();
    answers.sort();
    let authority_types = section(";; AUTHORITY SECTION:")
        .into_iter()
        .filter_map(|fields| fields.get(3).cloned())
        .collect();
    // dig: "; EDNS: version: 0, flags:; udp: 1232"; kdig: ";; Version: 0; flags: ; UDP size: 1232 B"
    let edns_payload = text.lines().find_map(|l| {
        let lower = l.to_ascii_lowercase();
        let at = lower
            .find("udp: ")
            .map(|i| i + 5)
            .or(lower.find("udp size: ").map(|i| i + 10))?;
        lower[at..].split_whitespace().next()?.parse().ok()
    });
    Reply {
        status,
        flags,
        answers,
        authority_types,
        edns_payload,
        text: text.to_owned(),
    }
}
