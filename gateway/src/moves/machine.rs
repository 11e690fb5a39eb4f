//! One move's state machine.
//!
//! Feed it green's observations with [`Move::observe`] as they arrive (from this gateway and
//! the reports of the others), and call [`Move::poll`] with the time at least once per gate
//! interval: it judges the gates when an interval has passed, and ends a stage once its hold
//! has passed with enough requests to green. [`Move::split`] says what every gateway applies
//! now. Operators act through [`Move::pause`], [`Move::resume`], [`Move::rollback`] and
//! [`Move::abort`].
//!
//! Time is wall-clock ([`SystemTime`]) so that a move persisted by its owner resumes after a
//! restart where it was.

use std::time::{Duration, SystemTime};

use meshfed_discovery::Label;

use super::{Gates, OnFailure, Spec, Split, Strategy, Window};

/// Fewer requests than this say nothing about a rate: an interval with fewer is not judged but
/// carried into the next, until together they have enough.
pub(crate) const MIN_JUDGED: u64 = 5;

/// Where a move is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Moving through its stages.
    Running,
    /// Holding its current split until an operator acts.
    Paused { reason: String },
    /// Green takes all the traffic.
    Completed,
    /// Blue took all the traffic back.
    RolledBack { reason: String },
    /// Stopped by an operator: its split is withdrawn and the policy routes again.
    Aborted,
}

/// Which stage: an index into [`Spec::shares`] (for blue-green, 0 is verifying green with
/// pinned traffic, 1 is switched to green).
pub type Stage = usize;

/// What a move did when polled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// It went on to `stage`, giving green `green_percent`.
    Advanced { stage: Stage, green_percent: u8 },
    /// Green has everything.
    Completed,
    /// A gate failed and blue has everything again.
    RolledBack { reason: String },
    /// A gate failed and the move holds where it is.
    Paused { reason: String },
}

/// One judgement of the gates.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub at: SystemTime,
    /// Green's requests in the interval judged.
    pub requests: u64,
    pub error_rate: Option<f64>,
    pub p99: Option<Duration>,
    /// Why a gate failed, if one did.
    pub failed: Option<String>,
}

/// A move and where it is.
#[derive(Clone, Debug)]
pub struct Move {
    pub spec: Spec,
    pub phase: Phase,
    pub stage: Stage,
    pub started: SystemTime,
    pub stage_started: SystemTime,
    /// Green's requests since the stage began.
    pub stage_window: Window,
    /// Green's requests since the gates were last judged.
    pub interval_window: Window,
    pub interval_started: SystemTime,
    /// The last judgement of the gates.
    pub last_reading: Option<Reading>,
}

impl Move {
    /// A move starting at its first stage at `now`. `spec` must pass [`Spec::check`].
    pub fn start(spec: Spec, now: SystemTime) -> Move {
        Move {
            spec,
            phase: Phase::Running,
            stage: 0,
            started: now,
            stage_started: now,
            stage_window: Window::default(),
            interval_window: Window::default(),
            interval_started: now,
            last_reading: None,
        }
    }

    /// The split every gateway applies now; `None` once aborted (the policy routes again).
    pub fn split(&self) -> Option<Split> {
        let (blue, green) = (&self.spec.blue, &self.spec.green);
        match self.phase {
            Phase::Running | Phase::Paused { .. } => {
                Some(Split::between(blue, green, self.green_percent()))
            }
            Phase::Completed => Some(Split::between(blue, green, 100)),
            Phase::RolledBack { .. } => Some(Split::between(blue, green, 0)),
            Phase::Aborted => None,
        }
    }

    /// Green's share at the current stage.
    pub fn green_percent(&self) -> u8 {
        self.spec.shares().get(self.stage).copied().unwrap_or(100)
    }

    /// Whether the move is still under way (running or paused).
    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Running | Phase::Paused { .. })
    }

    /// When the current stage's hold ends (it may last longer, waiting for requests).
    pub fn hold_ends(&self) -> SystemTime {
        self.stage_started + self.hold()
    }

    /// Counts what `cluster` served for the service; only green's requests are gated.
    pub fn observe(&mut self, cluster: &Label, window: &Window) {
        if cluster != &self.spec.green || !self.is_active() {
            return;
        }
        self.stage_window.merge(window);
        self.interval_window.merge(window);
    }

    /// Judges the gates if an interval has passed, and ends the stage if its hold has passed
    /// with enough requests. Call at least once per gate interval.
    pub fn poll(&mut self, now: SystemTime) -> Option<Event> {
        if self.phase != Phase::Running {
            return None;
        }
        let gates = self.spec.gates;
        if now >= self.interval_started + gates.interval
            && let Some(event) = self.judge(Judged::Interval, now)
        {
            return Some(event);
        }
        let held = now >= self.hold_ends();
        if !held || self.stage_window.requests < gates.min_requests {
            return None;
        }
        // The stage as a whole is judged before it ends: none of its traffic goes unjudged,
        // however its intervals fell.
        if let Some(event) = self.judge(Judged::Stage, now) {
            return Some(event);
        }
        if self.stage + 1 >= self.spec.shares().len() {
            self.phase = Phase::Completed;
            return Some(Event::Completed);
        }
        self.enter(self.stage + 1, now);
        Some(Event::Advanced {
            stage: self.stage,
            green_percent: self.green_percent(),
        })
    }

    /// Holds the move where it is.
    pub fn pause(&mut self, reason: impl Into<String>) -> Result<(), String> {
        match self.phase {
            Phase::Running => {
                self.phase = Phase::Paused {
                    reason: reason.into(),
                };
                Ok(())
            }
            _ => Err(format!("the move is {}, not running", self.phase)),
        }
    }

    /// Goes on from a pause; the current stage is held again from `now`.
    pub fn resume(&mut self, now: SystemTime) -> Result<(), String> {
        match self.phase {
            Phase::Paused { .. } => {
                self.phase = Phase::Running;
                self.enter(self.stage, now);
                Ok(())
            }
            _ => Err(format!("the move is {}, not paused", self.phase)),
        }
    }

    /// Sends everything back to blue and ends the move.
    pub fn rollback(&mut self, reason: impl Into<String>) -> Result<(), String> {
        match self.is_active() {
            true => {
                self.phase = Phase::RolledBack {
                    reason: reason.into(),
                };
                Ok(())
            }
            false => Err(format!("the move is {}, not under way", self.phase)),
        }
    }

    /// Ends the move and withdraws its split: the policy routes the service again.
    pub fn abort(&mut self) -> Result<(), String> {
        match self.phase {
            Phase::Aborted => Err("the move is already aborted".into()),
            _ => {
                self.phase = Phase::Aborted;
                Ok(())
            }
        }
    }

    fn hold(&self) -> Duration {
        match &self.spec.strategy {
            Strategy::Canary(steps) => steps.get(self.stage).map_or(Duration::ZERO, |s| s.hold),
            Strategy::BlueGreen { verify, hold } => match self.stage {
                0 => *verify,
                _ => *hold,
            },
        }
    }

    fn enter(&mut self, stage: Stage, now: SystemTime) {
        self.stage = stage;
        self.stage_started = now;
        self.stage_window = Window::default();
        self.interval_window = Window::default();
        self.interval_started = now;
    }

    /// Judges the interval just past; on a failure, acts as the spec says.
    fn judge(&mut self, what: Judged, now: SystemTime) -> Option<Event> {
        let window = match what {
            Judged::Stage => &self.stage_window,
            Judged::Interval => &self.interval_window,
        };
        if window.requests < MIN_JUDGED {
            // Carried on: the interval keeps gathering until it has enough to judge.
            return None;
        }
        let reading = reading(window, &self.spec.gates, now);
        if what == Judged::Interval {
            self.interval_window = Window::default();
            self.interval_started = now;
        }
        let failed = reading.failed.clone();
        self.last_reading = Some(reading);
        let reason = failed?;
        Some(match self.spec.on_failure {
            OnFailure::Rollback => {
                self.phase = Phase::RolledBack {
                    reason: reason.clone(),
                };
                Event::RolledBack { reason }
            }
            OnFailure::Pause => {
                self.phase = Phase::Paused {
                    reason: reason.clone(),
                };
                Event::Paused { reason }
            }
        })
    }
}

/// What the gates judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Judged {
    /// The last gate interval (and any carried into it).
    Interval,
    /// The whole stage, at its end.
    Stage,
}

/// The gates' judgement of `window` (which has at least [`MIN_JUDGED`] requests).
fn reading(window: &Window, gates: &Gates, at: SystemTime) -> Reading {
    let error_rate = window.error_rate();
    let p99 = window.p99();
    let failed = if let Some(rate) = error_rate.filter(|r| *r > gates.max_error_rate) {
        Some(format!(
            "green's error rate {:.1} % is over {:.1} % ({} of {} requests)",
            rate * 100.0,
            gates.max_error_rate * 100.0,
            window.errors,
            window.requests
        ))
    } else if let (Some(p99), Some(max)) = (p99, gates.max_p99)
        && p99 > max
    {
        Some(format!("green's p99 latency {p99:?} is over {max:?}"))
    } else {
        None
    };
    Reading {
        at,
        requests: window.requests,
        error_rate,
        p99,
        failed,
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::Running => f.write_str("running"),
            Phase::Paused { .. } => f.write_str("paused"),
            Phase::Completed => f.write_str("completed"),
            Phase::RolledBack { .. } => f.write_str("rolled back"),
            Phase::Aborted => f.write_str("aborted"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moves::Step;

    const SECOND: Duration = Duration::from_secs(1);

    fn spec(strategy: Strategy, on_failure: OnFailure) -> Spec {
        Spec {
            service: "checkout.shop".parse().expect("service"),
            blue: "east".parse().expect("label"),
            green: "west".parse().expect("label"),
            strategy,
            gates: Gates {
                max_error_rate: 0.05,
                max_p99: Some(Duration::from_millis(100)),
                min_requests: 50,
                interval: SECOND,
            },
            on_failure,
            drain_tcp: None,
            session: None,
        }
    }

    fn canary() -> Strategy {
        Strategy::Canary(
            [10, 50, 100]
                .map(|green_percent| Step {
                    green_percent,
                    hold: 3 * SECOND,
                })
                .to_vec(),
        )
    }

    /// Green's traffic for one second: `requests` taking `latency`, `errors` of them failed.
    fn second(requests: u64, errors: u64, latency: Duration) -> Window {
        let mut window = Window::default();
        for i in 0..requests {
            window.record(latency, i < errors);
        }
        window
    }

    /// Runs `m` second by second with green serving `traffic(second)`, until it stops running
    /// or `limit` seconds pass; returns the events with the second they happened in.
    fn run(m: &mut Move, limit: u64, traffic: impl Fn(u64) -> Window) -> Vec<(u64, Event)> {
        let start = m.started;
        let green = m.spec.green.clone();
        let mut events = Vec::new();
        for t in 1..=limit {
            m.observe(&green, &traffic(t));
            // Blue's traffic is never gated.
            m.observe(&m.spec.blue.clone(), &second(100, 100, SECOND));
            if let Some(event) = m.poll(start + SECOND * u32::try_from(t).expect("small")) {
                events.push((t, event));
            }
            if m.phase != Phase::Running {
                break;
            }
        }
        events
    }

    #[test]
    fn a_healthy_canary_climbs_its_steps_and_completes() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut m = Move::start(spec(canary(), OnFailure::Rollback), now);
        assert_eq!(m.split().map(|s| s.weight(&m.spec.green)), Some(10));
        let events = run(&mut m, 60, |_| second(20, 0, Duration::from_millis(5)));
        assert_eq!(
            events,
            [
                (
                    3,
                    Event::Advanced {
                        stage: 1,
                        green_percent: 50
                    }
                ),
                (
                    6,
                    Event::Advanced {
                        stage: 2,
                        green_percent: 100
                    }
                ),
                (9, Event::Completed),
            ]
        );
        assert_eq!(m.split().map(|s| s.weight(&m.spec.blue)), Some(0));
        assert!(m.last_reading.as_ref().is_some_and(|r| r.failed.is_none()));
    }

    #[test]
    fn a_step_waits_for_enough_requests() {
        let now = SystemTime::UNIX_EPOCH;
        let mut m = Move::start(spec(canary(), OnFailure::Rollback), now);
        // 10 requests a second: 50 take five seconds, past the 3 s hold.
        let events = run(&mut m, 8, |_| second(10, 0, Duration::from_millis(5)));
        assert_eq!(
            events,
            [(
                5,
                Event::Advanced {
                    stage: 1,
                    green_percent: 50
                }
            )]
        );
    }

    #[test]
    fn a_failing_green_is_rolled_back_within_one_interval() {
        let now = SystemTime::UNIX_EPOCH;
        let mut m = Move::start(spec(canary(), OnFailure::Rollback), now);
        // Healthy through the first step, then failing from second 5.
        let events = run(&mut m, 30, |t| match t < 5 {
            true => second(20, 0, Duration::from_millis(5)),
            false => second(20, 10, Duration::from_millis(5)),
        });
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            events[0],
            (
                3,
                Event::Advanced {
                    stage: 1,
                    green_percent: 50
                }
            )
        );
        let (at, Event::RolledBack { reason }) = &events[1] else {
            panic!("{events:?}");
        };
        assert_eq!(*at, 5, "judged in the interval it failed");
        assert!(reason.contains("error rate 50.0 %"), "{reason}");
        assert_eq!(m.split().map(|s| s.weight(&m.spec.blue)), Some(100));
    }

    #[test]
    fn slow_green_pauses_when_asked_to_and_resumes() {
        let now = SystemTime::UNIX_EPOCH;
        let mut m = Move::start(spec(canary(), OnFailure::Pause), now);
        let events = run(&mut m, 30, |_| second(20, 0, Duration::from_millis(300)));
        let [(1, Event::Paused { reason })] = events.as_slice() else {
            panic!("{events:?}");
        };
        assert!(reason.contains("p99"), "{reason}");
        // Paused, the split holds and time does nothing.
        assert_eq!(m.poll(now + 100 * SECOND), None);
        assert_eq!(m.split().map(|s| s.weight(&m.spec.green)), Some(10));
        assert!(m.resume(now + 100 * SECOND).is_ok());
        assert_eq!(m.hold_ends(), now + 103 * SECOND, "the stage is held again");
        assert!(m.resume(now).is_err(), "not paused any more");
    }

    #[test]
    fn sparse_traffic_is_carried_until_it_can_be_judged() {
        let now = SystemTime::UNIX_EPOCH;
        let mut m = Move::start(spec(canary(), OnFailure::Rollback), now);
        // Two failing requests a second: no interval alone has enough to judge, but three
        // together do, and the move rolls back at the third second.
        let events = run(&mut m, 10, |_| second(2, 2, Duration::from_millis(5)));
        let [(3, Event::RolledBack { reason })] = events.as_slice() else {
            panic!("{events:?}");
        };
        assert!(reason.contains("6 of 6"), "{reason}");
    }

    #[test]
    fn a_stage_is_judged_whole_before_it_ends() {
        let now = SystemTime::UNIX_EPOCH;
        let mut m = Move::start(spec(canary(), OnFailure::Rollback), now);
        // 4 failures in 60 (6.7 % against 5 %) over the stage, none judged in an interval:
        // refused at the stage's end.
        m.observe(
            &m.spec.green.clone(),
            &second(60, 4, Duration::from_millis(5)),
        );
        m.interval_started = now + 10 * SECOND;
        let event = m.poll(now + 3 * SECOND);
        assert!(matches!(event, Some(Event::RolledBack { .. })), "{event:?}");
    }

    #[test]
    fn blue_green_verifies_then_switches_and_holds() {
        let now = SystemTime::UNIX_EPOCH;
        let strategy = Strategy::BlueGreen {
            verify: 2 * SECOND,
            hold: 4 * SECOND,
        };
        let mut m = Move::start(spec(strategy, OnFailure::Rollback), now);
        assert_eq!(
            m.split().map(|s| s.weight(&m.spec.green)),
            Some(0),
            "only pinned traffic"
        );
        let events = run(&mut m, 30, |_| second(25, 0, Duration::from_millis(5)));
        assert_eq!(
            events,
            [
                (
                    2,
                    Event::Advanced {
                        stage: 1,
                        green_percent: 100
                    }
                ),
                (6, Event::Completed),
            ]
        );
        // Operators' actions on a move that has ended are refused, except abort.
        assert!(m.rollback("late").is_err() && m.pause("late").is_err());
        assert!(m.abort().is_ok());
        assert_eq!(m.split(), None);
    }

    #[test]
    fn an_operator_rolls_back_at_once() {
        let now = SystemTime::UNIX_EPOCH;
        let mut m = Move::start(spec(canary(), OnFailure::Rollback), now);
        run(&mut m, 4, |_| second(20, 0, Duration::from_millis(5)));
        assert_eq!(m.green_percent(), 50);
        assert!(m.rollback("operator").is_ok());
        assert_eq!(m.split().map(|s| s.weight(&m.spec.blue)), Some(100));
        assert_eq!(m.poll(now + 60 * SECOND), None);
    }

    #[test]
    fn specs_are_checked() {
        let mut bad = spec(canary(), OnFailure::Rollback);
        bad.green = bad.blue.clone();
        assert!(bad.check().is_err());
        for shares in [vec![10, 50], vec![50, 10, 100], vec![0, 100], vec![]] {
            let steps = shares
                .iter()
                .map(|&green_percent| Step {
                    green_percent,
                    hold: SECOND,
                })
                .collect();
            let bad = spec(Strategy::Canary(steps), OnFailure::Rollback);
            assert!(bad.check().is_err(), "{shares:?}");
        }
        assert!(spec(canary(), OnFailure::Rollback).check().is_ok());
    }
}
