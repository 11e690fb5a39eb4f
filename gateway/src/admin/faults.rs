//! Faults set through the admin API: a request checked into a [`RuntimeFault`], its report, and
//! the task that ends each fault when it expires.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use meshfed_discovery::ServiceKey;
use tokio_util::sync::CancellationToken;

use super::proto;
use crate::config::parse_duration;
use crate::config::policy::MAX_DELAY;
use crate::policy::runtime_faults::RuntimeFault;
use crate::policy::{Abort, AbortStatus, Chance, Delay, Fault, Policy};
use crate::state::State;

/// The longest a fault may last.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// How often expired faults are looked for (and logged as ended).
const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// The fault `request` asks for, starting `now`, or what is wrong with it (field and why).
/// A route must be one of the service's routes in `policy`, to catch a mistyped name.
pub(crate) fn check(
    request: &proto::SetFaultRequest,
    policy: &Policy,
    now: Instant,
) -> Result<RuntimeFault, String> {
    let service: ServiceKey = request.service.parse().map_err(|e| {
        format!(
            "service: {:?} is not `<name>.<namespace>`: {e}",
            request.service
        )
    })?;
    let name = match request.name.as_str() {
        "" => service.to_string(),
        name => name.to_owned(),
    };
    let name_ok = name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !name_ok {
        return Err(format!(
            "name: {name:?} must be 1 to 63 lower-case letters, digits, `-` or `.`"
        ));
    }
    let route = match request.route.as_str() {
        "" => None,
        route => {
            let known = policy
                .services
                .get(&service)
                .is_some_and(|s| s.routes.iter().any(|r| r.name == route));
            if !known {
                return Err(format!(
                    "route: the policy has no route {route:?} for {service}"
                ));
            }
            Some(route.to_owned())
        }
    };
    let delay = request.delay.as_ref().map(delay).transpose()?;
    let abort = request.abort.as_ref().map(abort).transpose()?;
    if delay.is_none() && abort.is_none() {
        return Err("delay, abort: give at least one".to_owned());
    }
    let duration = parse_duration(&request.duration)
        .ok()
        .filter(|d| !d.is_zero() && *d <= MAX_DURATION)
        .ok_or_else(|| {
            format!(
                "duration: {:?} is not a duration of more than 0 and at most 24h (`10m`)",
                request.duration
            )
        })?;
    Ok(RuntimeFault {
        name,
        service,
        route,
        fault: Fault { delay, abort },
        expires: now + duration,
    })
}

fn delay(delay: &proto::FaultDelay) -> Result<Delay, String> {
    let duration = parse_duration(&delay.fixed)
        .ok()
        .filter(|d| !d.is_zero() && *d <= MAX_DELAY)
        .ok_or_else(|| {
            format!(
                "delay.fixed: {:?} is not a duration of more than 0 and at most {}s",
                delay.fixed,
                MAX_DELAY.as_secs()
            )
        })?;
    let chance = chance("delay.percent", delay.percent)?;
    Ok(Delay { duration, chance })
}

fn abort(abort: &proto::FaultAbort) -> Result<Abort, String> {
    use proto::fault_abort::Status;
    let status = match abort.status {
        Some(Status::HttpStatus(code)) => u16::try_from(code)
            .ok()
            .filter(|c| (400..=599).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
            .map(AbortStatus::Http)
            .ok_or_else(|| format!("abort.http_status: {code} is not from 400 to 599"))?,
        Some(Status::GrpcStatus(code)) => u8::try_from(code)
            .ok()
            .filter(|c| (1..=16).contains(c))
            .map(AbortStatus::Grpc)
            .ok_or_else(|| format!("abort.grpc_status: {code} is not from 1 to 16"))?,
        None => return Err("abort: give http_status or grpc_status".to_owned()),
    };
    let chance = chance("abort.percent", abort.percent)?;
    Ok(Abort { status, chance })
}

fn chance(field: &str, percent: f64) -> Result<Chance, String> {
    Chance::from_percent(percent).ok_or_else(|| format!("{field}: {percent} is not from 0 to 100"))
}

/// `fault` as the admin API reports it at `now`.
pub(crate) fn report(fault: &RuntimeFault, now: Instant) -> proto::RuntimeFault {
    use proto::fault_abort::Status;
    proto::RuntimeFault {
        name: fault.name.clone(),
        service: fault.service.to_string(),
        route: fault.route.clone().unwrap_or_default(),
        delay: fault.fault.delay.map(|d| proto::FaultDelay {
            fixed: format!("{}ms", d.duration.as_millis()),
            percent: d.chance.percent(),
        }),
        abort: fault.fault.abort.map(|a| proto::FaultAbort {
            status: Some(match a.status {
                AbortStatus::Http(code) => Status::HttpStatus(u32::from(code.as_u16())),
                AbortStatus::Grpc(code) => Status::GrpcStatus(u32::from(code)),
            }),
            percent: a.chance.percent(),
        }),
        remaining_ms: u64::try_from(fault.expires.saturating_duration_since(now).as_millis())
            .unwrap_or(u64::MAX),
    }
}

/// Ends faults as they expire, each with a log line, until `shutdown`. (They stop applying
/// at their expiry whether or not this has run: requests compare the time themselves.)
pub(crate) async fn expire(state: Arc<State>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(EXPIRY_CHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if state.runtime_faults().is_empty() {
            continue;
        }
        let now = Instant::now();
        let expired = state.change_runtime_faults(|faults| faults.expire(now));
        for fault in expired {
            tracing::info!(fault = %fault.name, svc = %fault.service, "fault expired");
        }
    }
}
