//! What some gateways saw of one destination (a service in one cluster) over some time:
//! requests, failures and a latency histogram, mergeable so that the owner of a move can add up
//! every gateway's reports.

use std::time::Duration;

/// Latency bucket bounds: 0.5 ms doubling to about 16 s (the bounds of
/// `meshfed_request_duration_seconds`), and one more for anything slower.
pub(crate) const BUCKETS: usize = 16;
const FIRST_BOUND_MICROS: u64 = 500;

/// Requests seen, failed, and their latencies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub requests: u64,
    /// Of which failed: a 5xx, or no answer.
    pub errors: u64,
    /// Requests by latency bucket: `buckets[i]` took at most `bound(i)`; the last holds the rest.
    pub buckets: [u64; BUCKETS + 1],
}

impl Window {
    /// Counts one request that took `latency`, failed or not.
    pub fn record(&mut self, latency: Duration, failed: bool) {
        self.requests += 1;
        self.errors += u64::from(failed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = (0..BUCKETS)
            .find(|&i| micros <= FIRST_BOUND_MICROS << i)
            .unwrap_or(BUCKETS);
        self.buckets[bucket] += 1;
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Window) {
        // Saturating: counts come from peers' reports too.
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine = mine.saturating_add(theirs);
        }
    }

    /// The share of requests that failed, if there were any.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    /// The 99th-percentile latency, as the upper bound of its bucket: `None` without requests,
    /// [`Duration::MAX`] when it is past the last bound.
    pub fn p99(&self) -> Option<Duration> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        // The smallest bucket holding the 99th percentile: ceil(0.99 * total) requests.
        let rank = total - total / 100;
        let mut seen = 0;
        for (i, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(if i < BUCKETS { bound(i) } else { Duration::MAX });
            }
        }
        Some(Duration::MAX)
    }
}

/// The upper bound of bucket `i`.
pub(crate) fn bound(i: usize) -> Duration {
    Duration::from_micros(FIRST_BOUND_MICROS << i.min(BUCKETS - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rates_and_percentiles() {
        let mut window = Window::default();
        assert_eq!((window.error_rate(), window.p99()), (None, None));
        for i in 0..1000u64 {
            // 990 fast (1 ms bucket: 0.5 < x <= 1 ms), 10 slow (100 ms, in the 128 ms bucket).
            let latency = match i < 990 {
                true => Duration::from_micros(800),
                false => Duration::from_millis(100),
            };
            window.record(latency, i % 100 == 0);
        }
        assert_eq!(window.requests, 1000);
        assert_eq!(window.error_rate(), Some(0.01));
        assert_eq!(window.p99(), Some(Duration::from_millis(1)));
        window.record(Duration::from_millis(100), false);
        window.record(Duration::from_millis(100), false);
        assert_eq!(window.p99(), Some(Duration::from_millis(128)));

        let mut sum = Window::default();
        sum.merge(&window);
        sum.merge(&window);
        assert_eq!(sum.requests, 2 * window.requests);
        assert_eq!(sum.p99(), window.p99());
        // Past the last bound: slower than anything a gate can allow.
        let mut slow = Window::default();
        slow.record(Duration::from_secs(60), true);
        assert_eq!(slow.p99(), Some(Duration::MAX));
        assert_eq!(slow.buckets[BUCKETS], 1);
    }
}
