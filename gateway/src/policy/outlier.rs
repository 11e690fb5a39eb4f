//! Outlier detection: an endpoint (or a whole peer cluster) that fails several times in a row
//! is ejected, taken out of the choice for a while that grows each time it is ejected again.
//!
//! A failure is what a retry would be for: no connection, a reset, or a 5xx answer. A success
//! ends the run of failures. No I/O and no clock: outcomes and `now` come in as arguments.

use std::time::{Duration, Instant};

/// How outliers are found and for how long they are ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Failures in a row that eject.
    pub consecutive_failures: u32,
    /// The first ejection's length; the n-th lasts n times this, up to `max_ejection`.
    pub base_ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
    /// The largest share of a set that may be out at once, in percent; past it, ejections are
    /// ignored (every endpoint is chosen from), as Envoy's panic threshold does.
    pub max_ejected_percent: u8,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// One endpoint's (or cluster's) record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Failures since the last success.
    consecutive: u32,
    /// Times ejected, less one for each later run of good answers as long as the ejection
    /// threshold: the next ejection's length grows with it.
    ejections: u32,
    /// Successes since the last failure, counting towards forgiving an ejection.
    successes: u32,
    /// Out of the choice until then.
    ejected_until: Option<Instant>,
}

/// What recording an outcome did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Nothing changed in whether it is chosen.
    Kept,
    /// It was ejected for this long.
    Ejected(Duration),
}

impl Health {
    /// Records one answer at `now`: a success (`ok`) or a failure.
    pub fn record(&mut self, ok: bool, now: Instant, config: &OutlierDetection) -> Recorded {
        if ok {
            self.consecutive = 0;
            self.successes += 1;
            if self.successes >= config.consecutive_failures.max(1) {
                self.successes = 0;
                self.ejections = self.ejections.saturating_sub(1);
            }
            return Recorded::Kept;
        }
        self.successes = 0;
        // Answers to requests sent before the ejection say nothing new.
        if self.is_ejected(now) {
            return Recorded::Kept;
        }
        self.consecutive += 1;
        if self.consecutive < config.consecutive_failures.max(1) {
            return Recorded::Kept;
        }
        self.consecutive = 0;
        self.ejections += 1;
        let length = config
            .base_ejection
            .saturating_mul(self.ejections)
            .min(config.max_ejection);
        self.ejected_until = Some(now + length);
        Recorded::Ejected(length)
    }

    /// Whether it is out of the choice at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }
}

/// Whether ejections hold in a set of `total` of which `kept` are not ejected: not if that
/// would leave none, or fewer than `100 - max_ejected_percent` percent of the set; then every
/// member may be chosen (a panic, as in Envoy).
pub fn ejections_hold(total: usize, kept: usize, config: &OutlierDetection) -> bool {
    let min_kept = total * usize::from(100 - config.max_ejected_percent.min(100));
    kept > 0 && kept * 100 >= min_kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_eject_for_longer_each_time() {
        let config = OutlierDetection {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejected_percent: 50,
        };
        let start = Instant::now();
        let mut health = Health::default();
        // Two failures, a success: the run is broken.
        assert_eq!(health.record(false, start, &config), Recorded::Kept);
        assert_eq!(health.record(false, start, &config), Recorded::Kept);
        assert_eq!(health.record(true, start, &config), Recorded::Kept);
        assert_eq!(health.record(false, start, &config), Recorded::Kept);
        assert_eq!(health.record(false, start, &config), Recorded::Kept);
        let first = health.record(false, start, &config);
        assert_eq!(first, Recorded::Ejected(Duration::from_secs(10)));
        assert!(health.is_ejected(start + Duration::from_secs(9)));
        // Failures while ejected (requests already under way) do not extend it.
        assert_eq!(health.record(false, start, &config), Recorded::Kept);
        let back = start + Duration::from_secs(10);
        assert!(!health.is_ejected(back));
        for _ in 0..2 {
            health.record(false, back, &config);
        }
        let second = health.record(false, back, &config);
        assert_eq!(second, Recorded::Ejected(Duration::from_secs(20)));
        let back = back + Duration::from_secs(20);
        for _ in 0..3 {
            health.record(false, back, &config);
        }
        assert_eq!(
            health.ejected_until,
            Some(back + Duration::from_secs(25)),
            "capped"
        );
        // Good answers forgive: each run as long as the threshold takes one ejection off (3 to
        // 1 here), so the next ejection is the second's length.
        let back = back + Duration::from_secs(25);
        for _ in 0..6 {
            health.record(true, back, &config);
        }
        for _ in 0..3 {
            health.record(false, back, &config);
        }
        assert_eq!(health.ejected_until, Some(back + Duration::from_secs(20)));
    }

    #[test]
    fn no_more_than_the_maximum_share_is_ejected() {
        // The default lets half of a set be out, never all of it.
        let config = OutlierDetection::default();
        assert!(ejections_hold(3, 2, &config), "one of three out");
        assert!(ejections_hold(2, 1, &config), "half may be out");
        assert!(!ejections_hold(3, 1, &config), "more than half: none out");
        assert!(!ejections_hold(1, 0, &config), "never none");
        assert!(ejections_hold(2, 2, &config), "none ejected");
        let strict = OutlierDetection {
            max_ejected_percent: 10,
            ..OutlierDetection::default()
        };
        assert!(
            !ejections_hold(4, 3, &strict),
            "a quarter is more than a tenth"
        );
        assert!(ejections_hold(10, 9, &strict));
    }
}
