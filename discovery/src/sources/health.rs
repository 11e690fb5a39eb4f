//! Turning check results into a verdict. No I/O: the caller runs the checks and reports each
//! result with [`Health::observe`].

/// How many consecutive results change a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive passes that bring a failing endpoint back.
    pub healthy: u32,
    /// Consecutive failures that take a healthy endpoint out.
    pub unhealthy: u32,
}

/// One endpoint's health. A new endpoint is not healthy until its first check, which decides
/// at once; after that a verdict changes only after the threshold's number of consecutive
/// contrary results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    checked: bool,
    healthy: bool,
    /// Consecutive results contrary to the verdict.
    streak: u32,
}

impl Health {
    /// Whether the endpoint takes traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Takes one check result; returns whether the verdict changed.
    pub fn observe(&mut self, passed: bool, thresholds: Thresholds) -> bool {
        if !self.checked {
            self.checked = true;
            self.healthy = passed;
            return passed;
        }
        if passed == self.healthy {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = match passed {
            true => thresholds.healthy,
            false => thresholds.unhealthy,
        };
        if self.streak < needed.max(1) {
            return false;
        }
        self.healthy = passed;
        self.streak = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const T: Thresholds = Thresholds {
        healthy: 2,
        unhealthy: 3,
    };

    #[test]
    fn verdicts_follow_the_thresholds() {
        // (results, verdict after each)
        let cases: &[(&[bool], &[bool])] = &[
            (&[true], &[true]),
            (&[false], &[false]),
            (&[true, false, false, false], &[true, true, true, false]),
            (
                &[true, false, true, false, false],
                &[true, true, true, true, true],
            ),
            (&[false, true, true], &[false, false, true]),
            (
                &[false, true, false, true, true],
                &[false, false, false, false, true],
            ),
        ];
        for (results, verdicts) in cases {
            let mut health = Health::default();
            let got: Vec<bool> = results
                .iter()
                .map(|passed| {
                    health.observe(*passed, T);
                    health.is_healthy()
                })
                .collect();
            assert_eq!(got, *verdicts, "{results:?}");
        }
        assert!(!Health::default().is_healthy(), "unchecked is not healthy");
    }

    proptest! {
        #[test]
        fn a_verdict_changes_only_after_enough_contrary_results(
            results in proptest::collection::vec(any::<bool>(), 1..60),
        ) {
            let mut health = Health::default();
            let mut history: Vec<bool> = Vec::new();
            for passed in results {
                let before = health.is_healthy();
                let changed = health.observe(passed, T);
                history.push(passed);
                prop_assert_eq!(changed, before != health.is_healthy());
                if history.len() > 1 && changed {
                    let needed = if passed { T.healthy } else { T.unhealthy } as usize;
                    let tail = &history[history.len() - needed..];
                    prop_assert!(tail.iter().all(|r| *r == passed), "{:?}", history);
                }
            }
        }
    }
}
