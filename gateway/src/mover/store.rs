//! The moves (and hand-set splits) a gateway owns, kept in `<state_dir>/moves.json` so that an
//! owner that restarts resumes each move where it was. Written whole to a temporary file and
//! renamed over the old one, so that a crash never leaves half a file.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::Owned;
use crate::moves::{
    Gates, Move, OnFailure, Phase, Spec, Split, Step, Strategy, Window, millis, session_from,
    session_names,
};

/// The file's name in `state_dir`.
pub(crate) const FILE: &str = "moves.json";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kept {
    moves: Vec<KeptMove>,
    splits: Vec<KeptSplit>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeptMove {
    service: String,
    blue: String,
    green: String,
    /// Canary steps as `(green percent, hold ms)`; empty for blue-green.
    steps: Vec<(u8, u64)>,
    /// Blue-green `(verify ms, hold ms)`.
    blue_green: Option<(u64, u64)>,
    max_error_rate: f64,
    max_p99_ms: Option<u64>,
    min_requests: u64,
    interval_ms: u64,
    pause_on_failure: bool,
    drain_tcp_ms: Option<u64>,
    session_header: Option<String>,
    session_cookie: Option<String>,
    /// `running`, `paused`, `completed`, `rolled_back` or `aborted`.
    phase: String,
    reason: Option<String>,
    stage: usize,
    started_ms: u64,
    stage_started_ms: u64,
    /// Green's requests so far in the stage, so that a restart does not start counting again.
    stage_requests: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeptSplit {
    service: String,
    weights: Vec<(String, u32)>,
}

/// What `path` holds; nothing if it does not exist.
pub(crate) fn load(path: &Path) -> Result<Owned, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Owned::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let kept: Kept = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut owned = Owned::default();
    for m in kept.moves {
        let m = restore(m).map_err(|e| format!("{}: {e}", path.display()))?;
        owned.moves.insert(m.spec.service.clone(), m);
    }
    for s in kept.splits {
        let service = s
            .service
            .parse()
            .map_err(|e| format!("{}: {e}", s.service))?;
        let weights = s
            .weights
            .into_iter()
            .map(|(c, w)| Ok((c.parse().map_err(|e| format!("{c}: {e}"))?, w)))
            .collect::<Result<_, String>>()?;
        owned.manual.insert(service, Split { weights });
    }
    Ok(owned)
}

/// Keeps `owned` in `path`.
pub(crate) fn save(path: &Path, owned: &Owned) -> std::io::Result<()> {
    let kept = Kept {
        moves: owned.moves.values().map(keep).collect(),
        splits: owned
            .manual
            .iter()
            .map(|(service, split)| KeptSplit {
                service: service.to_string(),
                weights: split
                    .weights
                    .iter()
                    .map(|(c, w)| (c.to_string(), *w))
                    .collect(),
            })
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&kept).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, json)?;
    std::fs::rename(&temporary, path)
}

fn keep(m: &Move) -> KeptMove {
    let spec = &m.spec;
    let (steps, blue_green) = match &spec.strategy {
        Strategy::Canary(steps) => (
            steps
                .iter()
                .map(|s| (s.green_percent, millis(s.hold)))
                .collect(),
            None,
        ),
        Strategy::BlueGreen { verify, hold } => {
            (Vec::new(), Some((millis(*verify), millis(*hold))))
        }
    };
    let (phase, reason) = match &m.phase {
        Phase::Running => ("running", None),
        Phase::Paused { reason } => ("paused", Some(reason.clone())),
        Phase::Completed => ("completed", None),
        Phase::RolledBack { reason } => ("rolled_back", Some(reason.clone())),
        Phase::Aborted => ("aborted", None),
    };
    let (header, cookie) = session_names(spec.session.as_ref());
    let (session_header, session_cookie) = (
        (!header.is_empty()).then_some(header),
        (!cookie.is_empty()).then_some(cookie),
    );
    KeptMove {
        service: spec.service.to_string(),
        blue: spec.blue.to_string(),
        green: spec.green.to_string(),
        steps,
        blue_green,
        max_error_rate: spec.gates.max_error_rate,
        max_p99_ms: spec.gates.max_p99.map(millis),
        min_requests: spec.gates.min_requests,
        interval_ms: millis(spec.gates.interval),
        pause_on_failure: spec.on_failure == OnFailure::Pause,
        drain_tcp_ms: spec.drain_tcp.map(millis),
        session_header,
        session_cookie,
        phase: phase.to_owned(),
        reason,
        stage: m.stage,
        started_ms: unix_millis(m.started),
        stage_started_ms: unix_millis(m.stage_started),
        stage_requests: m.stage_window.requests,
    }
}

fn restore(k: KeptMove) -> Result<Move, String> {
    let strategy = match k.blue_green {
        Some((verify, hold)) => Strategy::BlueGreen {
            verify: Duration::from_millis(verify),
            hold: Duration::from_millis(hold),
        },
        None => Strategy::Canary(
            k.steps
                .iter()
                .map(|&(green_percent, hold)| Step {
                    green_percent,
                    hold: Duration::from_millis(hold),
                })
                .collect(),
        ),
    };
    let session = session_from(
        k.session_header.as_deref().unwrap_or_default(),
        k.session_cookie.as_deref().unwrap_or_default(),
    )?;
    let spec = Spec {
        service: k
            .service
            .parse()
            .map_err(|e| format!("{}: {e}", k.service))?,
        blue: k.blue.parse().map_err(|e| format!("{}: {e}", k.blue))?,
        green: k.green.parse().map_err(|e| format!("{}: {e}", k.green))?,
        strategy,
        gates: Gates {
            max_error_rate: k.max_error_rate,
            max_p99: k.max_p99_ms.map(Duration::from_millis),
            min_requests: k.min_requests,
            interval: Duration::from_millis(k.interval_ms),
        },
        on_failure: match k.pause_on_failure {
            true => OnFailure::Pause,
            false => OnFailure::Rollback,
        },
        drain_tcp: k.drain_tcp_ms.map(Duration::from_millis),
        session,
    };
    spec.check()?;
    let reason = k.reason.unwrap_or_default();
    let phase = match k.phase.as_str() {
        "running" => Phase::Running,
        "paused" => Phase::Paused { reason },
        "completed" => Phase::Completed,
        "rolled_back" => Phase::RolledBack { reason },
        "aborted" => Phase::Aborted,
        other => return Err(format!("unknown phase {other:?}")),
    };
    if k.stage >= spec.shares().len() {
        return Err(format!("stage {} of {}", k.stage, spec.shares().len()));
    }
    let started = UNIX_EPOCH + Duration::from_millis(k.started_ms);
    let stage_started = UNIX_EPOCH + Duration::from_millis(k.stage_started_ms);
    let mut m = Move::start(spec, started);
    m.phase = phase;
    m.stage = k.stage;
    m.stage_started = stage_started;
    // The count carries over; its latencies are not kept (the gates judge fresh intervals).
    m.stage_window = Window {
        requests: k.stage_requests,
        ..Window::default()
    };
    // A move under way holds its current stage again from now: the time the owner was down
    // must not count as time held.
    let now = SystemTime::now();
    if m.is_active() {
        m.stage_started = now;
    }
    m.interval_started = now;
    Ok(m)
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::balance::HashOn;

    #[test]
    fn moves_and_splits_survive_a_round_trip() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(FILE);
        assert!(load(&path).expect("nothing kept").moves.is_empty());
        let spec = Spec {
            service: "checkout.shop".parse().expect("service"),
            blue: "east".parse().expect("label"),
            green: "west".parse().expect("label"),
            strategy: Strategy::Canary(vec![
                Step {
                    green_percent: 20,
                    hold: Duration::from_secs(30),
                },
                Step {
                    green_percent: 100,
                    hold: Duration::from_secs(60),
                },
            ]),
            gates: Gates::default(),
            on_failure: OnFailure::Pause,
            drain_tcp: Some(Duration::from_secs(5)),
            session: Some(HashOn::Cookie("session".into())),
        };
        let started = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut m = Move::start(spec, started);
        m.stage = 1;
        m.stage_started = started + Duration::from_secs(40);
        m.stage_window.requests = 17;
        m.pause("held").expect("running");
        let mut owned = Owned::default();
        owned.moves.insert(m.spec.service.clone(), m.clone());
        let east: meshfed_discovery::Label = "east".parse().expect("label");
        owned.manual.insert(
            "greeter.demo".parse().expect("service"),
            Split {
                weights: vec![(east, 3)],
            },
        );
        save(&path, &owned).expect("saved");
        let before_load = SystemTime::now();
        let back = load(&path).expect("loaded");
        let again = &back.moves[&m.spec.service];
        assert_eq!(again.spec, m.spec);
        assert_eq!((&again.phase, again.stage), (&m.phase, 1));
        // A move under way holds its stage again from the restart.
        assert!(again.stage_started >= before_load);
        assert_eq!(again.started, m.started);
        assert_eq!(again.stage_window.requests, 17);
        assert_eq!(back.manual, owned.manual);
        // A file that is not ours is refused, not half read.
        std::fs::write(&path, r#"{"moves": [], "splits": [], "extra": 1}"#).expect("write");
        assert!(load(&path).is_err());
    }
}
