//! The admin API's moves and splits: a `StartMoveRequest` checked into a [`Spec`], and moves
//! and splits reported as the CLI shows them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::proto;
use crate::config::parse_duration;
use crate::moves::{
    Gates, Move, OnFailure, Phase, Published, Spec, Step, Strategy, millis, session_from,
};

/// The spec a start request asks for, or what is wrong with it.
pub(crate) fn spec(request: &proto::StartMoveRequest) -> Result<Spec, String> {
    let service = request
        .service
        .parse()
        .map_err(|e| format!("service {:?}: {e}", request.service))?;
    let blue = request
        .from
        .parse()
        .map_err(|e| format!("from {:?}: {e}", request.from))?;
    let green = request
        .to
        .parse()
        .map_err(|e| format!("to {:?}: {e}", request.to))?;
    let duration =
        |what: &str, text: &str| parse_duration(text).map_err(|e| format!("{what} {text:?}: {e}"));
    let strategy = match (&request.blue_green, request.steps.is_empty()) {
        (Some(bg), true) => Strategy::BlueGreen {
            verify: duration("verify", &bg.verify)?,
            hold: duration("hold", &bg.hold)?,
        },
        (None, false) => Strategy::Canary(
            request
                .steps
                .iter()
                .map(|s| {
                    Ok(Step {
                        green_percent: u8::try_from(s.green_percent)
                            .map_err(|_| format!("a step of {} %", s.green_percent))?,
                        hold: duration("hold", &s.hold)?,
                    })
                })
                .collect::<Result<_, String>>()?,
        ),
        (Some(_), false) => return Err("canary steps or blue-green, not both".into()),
        (None, true) => return Err("give canary steps or blue-green".into()),
    };
    let defaults = Gates::default();
    if !(0.0..=100.0).contains(&request.max_error_percent) {
        return Err(format!(
            "max error rate {} % is not 0 to 100",
            request.max_error_percent
        ));
    }
    let gates = Gates {
        max_error_rate: request.max_error_percent / 100.0,
        max_p99: match request.max_p99.as_str() {
            "" => None,
            text => Some(duration("max p99", text)?),
        },
        min_requests: request.min_requests,
        interval: match request.gate_interval.as_str() {
            "" => defaults.interval,
            text => duration("gate interval", text)?,
        },
    };
    let session = session_from(&request.session_header, &request.session_cookie)?;
    let spec = Spec {
        service,
        blue,
        green,
        strategy,
        gates,
        on_failure: match request.pause_on_failure {
            true => OnFailure::Pause,
            false => OnFailure::Rollback,
        },
        drain_tcp: match request.drain_tcp.as_str() {
            "" => None,
            text => Some(duration("drain", text)?),
        },
        session,
    };
    spec.check()?;
    Ok(spec)
}

/// A move as the admin API reports it, at `now`.
pub(crate) fn status(m: &Move, now: SystemTime) -> proto::MoveStatus {
    let spec = &m.spec;
    let reason = match &m.phase {
        Phase::Paused { reason } | Phase::RolledBack { reason } => reason.clone(),
        _ => String::new(),
    };
    let hold_left = match m.is_active() {
        true => m.hold_ends().duration_since(now).unwrap_or_default(),
        false => Duration::ZERO,
    };
    proto::MoveStatus {
        service: spec.service.to_string(),
        from: spec.blue.to_string(),
        to: spec.green.to_string(),
        strategy: match spec.strategy {
            Strategy::Canary(_) => "canary".into(),
            Strategy::BlueGreen { .. } => "blue-green".into(),
        },
        phase: m.phase.to_string(),
        reason,
        stage: u32::try_from(m.stage).unwrap_or(u32::MAX),
        shares: spec.shares().into_iter().map(u32::from).collect(),
        green_percent: u32::from(match m.phase {
            Phase::Completed => 100,
            Phase::RolledBack { .. } | Phase::Aborted => 0,
            _ => m.green_percent(),
        }),
        started_unix_ms: millis(m.started.duration_since(UNIX_EPOCH).unwrap_or_default()),
        hold_left_ms: millis(hold_left),
        stage_requests: m.stage_window.requests,
        min_requests: spec.gates.min_requests,
        max_error_percent: spec.gates.max_error_rate * 100.0,
        max_p99_ms: spec.gates.max_p99.map_or(0, millis),
        gate_interval_ms: millis(spec.gates.interval),
        last_reading: m.last_reading.as_ref().map(|r| proto::GateReading {
            requests: r.requests,
            has_error_rate: r.error_rate.is_some(),
            error_percent: r.error_rate.unwrap_or_default() * 100.0,
            has_p99: r.p99.is_some(),
            p99_ms: r.p99.map_or(0, millis),
            failed: r.failed.clone().unwrap_or_default(),
            age_ms: millis(now.duration_since(r.at).unwrap_or_default()),
        }),
    }
}

/// A split in force as the admin API reports it.
pub(crate) fn split(p: &Published) -> proto::SplitStatus {
    proto::SplitStatus {
        service: p.service.to_string(),
        owner: p.owner.to_string(),
        weights: p
            .split
            .weights
            .iter()
            .map(|(cluster, weight)| proto::ClusterWeight {
                cluster: cluster.to_string(),
                weight: *weight,
            })
            .collect(),
        moving: p.observed,
    }
}
