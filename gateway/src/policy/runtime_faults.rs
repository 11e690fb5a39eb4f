//! Faults set while the gateway runs (through the admin API), each with an expiry, so that a
//! forgotten experiment ends by itself. They are not part of the policy file, survive its
//! reloads, and are lost on restart (which also ends every experiment).
//!
//! Like the rest of the decision core this does no I/O and reads no clock: the caller passes
//! `now`.

use std::collections::BTreeMap;
use std::time::Instant;

use meshfed_discovery::ServiceKey;

use super::dice::Dice;
use super::fault::{Fault, Injected};

/// The most faults that may be set at once.
pub const MAX_RUNTIME_FAULTS: usize = 64;

/// One fault set at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeFault {
    /// Its name, unique among the faults set; setting one with the same name replaces it.
    pub name: String,
    /// The service whose requests it affects.
    pub service: ServiceKey,
    /// Only requests that take this route (by name); all the service's requests if `None`.
    pub route: Option<String>,
    /// What it injects.
    pub fault: Fault,
    /// When it stops.
    pub expires: Instant,
}

/// The faults set at run time, by name.
#[derive(Clone, Debug, Default)]
pub struct RuntimeFaults {
    faults: BTreeMap<String, RuntimeFault>,
}

/// There are [`MAX_RUNTIME_FAULTS`] faults already.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{MAX_RUNTIME_FAULTS} faults are set already; clear one first")]
pub struct TooMany;

impl RuntimeFaults {
    /// Sets `fault`, replacing any of the same name. Expired faults are dropped first.
    pub fn set(&mut self, fault: RuntimeFault, now: Instant) -> Result<(), TooMany> {
        self.expire(now);
        if !self.faults.contains_key(&fault.name) && self.faults.len() >= MAX_RUNTIME_FAULTS {
            return Err(TooMany);
        }
        self.faults.insert(fault.name.clone(), fault);
        Ok(())
    }

    /// Clears the fault named `name`; whether there was one (unexpired).
    pub fn clear(&mut self, name: &str, now: Instant) -> bool {
        self.expire(now);
        self.faults.remove(name).is_some()
    }

    /// Drops the faults that have expired by `now`, and returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<RuntimeFault> {
        let (expired, live) = std::mem::take(&mut self.faults)
            .into_iter()
            .partition(|(_, f)| f.expires <= now);
        self.faults = live;
        expired.into_values().collect()
    }

    /// The faults in force at `now`, by name.
    pub fn active(&self, now: Instant) -> impl Iterator<Item = &RuntimeFault> {
        self.faults.values().filter(move |f| f.expires > now)
    }

    /// Whether no fault is set (expired or not).
    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// Adds to `injected` (drawn from the route's own faults) what the faults in force for
    /// `service` and `route` draw: the longest delay drawn holds, and the first abort drawn
    /// (the route's, then these by name) answers.
    pub fn roll(
        &self,
        service: &ServiceKey,
        route: Option<&str>,
        now: Instant,
        dice: &mut impl Dice,
        mut injected: Injected,
    ) -> Injected {
        let applying = self.active(now).filter(|f| {
            f.service == *service && f.route.as_deref().is_none_or(|r| Some(r) == route)
        });
        for fault in applying {
            let drawn = fault.fault.roll(dice);
            injected.delay = injected.delay.max(drawn.delay);
            injected.abort = injected.abort.or(drawn.abort);
        }
        injected
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::StatusCode;

    use super::*;
    use crate::policy::{Abort, AbortStatus, Chance, Delay, SplitMix64};

    fn fault(name: &str, route: Option<&str>, fault: Fault, expires: Instant) -> RuntimeFault {
        RuntimeFault {
            name: name.into(),
            service: "greeter.demo".parse().expect("service"),
            route: route.map(str::to_owned),
            fault,
            expires,
        }
    }

    fn always_delay(ms: u64) -> Fault {
        Fault {
            delay: Some(Delay {
                duration: Duration::from_millis(ms),
                chance: Chance::from_percent(100.0).expect("chance"),
            }),
            abort: None,
        }
    }

    fn always_abort(status: u16) -> Fault {
        Fault {
            delay: None,
            abort: Some(Abort {
                status: AbortStatus::Http(StatusCode::from_u16(status).expect("status")),
                chance: Chance::from_percent(100.0).expect("chance"),
            }),
        }
    }

    #[test]
    fn faults_apply_to_their_service_and_route_until_they_expire() {
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        let mut faults = RuntimeFaults::default();
        let slow = fault("slow", None, always_delay(100), start + minute);
        faults.set(slow, start).expect("room");
        let abort = fault(
            "broken",
            Some("writes"),
            always_abort(503),
            start + 2 * minute,
        );
        faults.set(abort, start).expect("room");
        let greeter: ServiceKey = "greeter.demo".parse().expect("service");
        let other: ServiceKey = "other.demo".parse().expect("service");
        let mut dice = SplitMix64::new(1);
        let none = Injected::default();
        let roll =
            |service, route, at, dice: &mut SplitMix64| faults.roll(service, route, at, dice, none);

        let both = roll(&greeter, Some("writes"), start, &mut dice);
        assert_eq!(both.delay, Some(Duration::from_millis(100)));
        assert!(both.abort.is_some());
        let reads = roll(&greeter, Some("reads"), start, &mut dice);
        assert_eq!((reads.delay.is_some(), reads.abort), (true, None));
        assert_eq!(roll(&other, None, start, &mut dice), none);
        // After a minute the delay has expired; the abort has not.
        let later = start + minute;
        let writes = roll(&greeter, Some("writes"), later, &mut dice);
        assert_eq!((writes.delay, writes.abort.is_some()), (None, true));
        assert_eq!(faults.active(later).count(), 1);
        // A route's own drawn fault stands; the longer delay holds.
        let own = Injected {
            delay: Some(Duration::from_millis(500)),
            abort: None,
        };
        let merged = faults.roll(&greeter, None, start, &mut dice, own);
        assert_eq!(merged.delay, Some(Duration::from_millis(500)));
    }

    #[test]
    fn setting_replaces_by_name_and_is_bounded() {
        let now = Instant::now();
        let soon = now + Duration::from_secs(1);
        let mut faults = RuntimeFaults::default();
        for i in 0..MAX_RUNTIME_FAULTS {
            let f = fault(&format!("f{i}"), None, always_delay(1), soon);
            faults.set(f, now).expect("room");
        }
        let extra = fault("extra", None, always_delay(1), soon);
        assert_eq!(faults.set(extra.clone(), now), Err(TooMany));
        // Replacing one by name needs no room.
        faults
            .set(fault("f0", None, always_abort(500), soon), now)
            .expect("replace");
        assert_eq!(faults.active(now).count(), MAX_RUNTIME_FAULTS);
        // Expired faults make room, and are returned once.
        assert_eq!(faults.expire(soon).len(), MAX_RUNTIME_FAULTS);
        assert!(faults.is_empty());
        faults
            .set(extra, soon - Duration::from_millis(1))
            .expect("room");
        assert!(faults.clear("extra", now));
        assert!(!faults.clear("extra", now));
    }
}
