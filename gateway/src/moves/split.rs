//! A split of one service's requests across clusters by weight, as a move (or an operator)
//! sets it, applied by every gateway that routes the service.
//!
//! A request with a session key goes where weighted rendezvous hashing puts the key: every
//! gateway picks alike, a key stays where it is while the weights stand, and when one
//! cluster's weight grows at the others' expense keys only move to it. So through a canary's
//! steps a session that has reached green stays there.
//!
//! A request without a key takes the next turn of the service's low-discrepancy sequence (the
//! golden-ratio Weyl sequence): the shares are met within a few requests over any stretch of
//! traffic, not only on average, so that a canary step at 5 % sends 5 % from its first
//! hundred requests, and a gate sees the traffic it should.

use meshfed_discovery::Label;

use crate::policy::balance::{hash_bytes, rendezvous};

/// 2^64 divided by the golden ratio: turn `n`'s draw is `n` times this, modulo 2^64.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// Weights by cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// The clusters and their weights; at least one weight is above 0.
    pub weights: Vec<(Label, u32)>,
}

impl Split {
    /// `green_percent` of the service's requests to green, the rest to blue.
    pub fn between(blue: &Label, green: &Label, green_percent: u8) -> Split {
        let green_percent = u32::from(green_percent.min(100));
        Split {
            weights: vec![
                (blue.clone(), 100 - green_percent),
                (green.clone(), green_percent),
            ],
        }
    }

    /// The cluster for a request with session key `key` (if it has one), or else for turn
    /// `turn` of the service's sequence, among those `available` says can take it; `None` when
    /// none with weight can.
    pub fn pick(
        &self,
        key: Option<u64>,
        available: impl Fn(&Label) -> bool,
        turn: u64,
    ) -> Option<&Label> {
        let weights = self
            .weights
            .iter()
            .map(|(cluster, weight)| match available(cluster) {
                true => (cluster, *weight),
                false => (cluster, 0),
            });
        let index = match key {
            Some(key) => rendezvous(
                key,
                weights.map(|(cluster, weight)| (hash_bytes(cluster.as_str().as_bytes()), weight)),
            )?,
            None => {
                let weights: Vec<u32> = weights.map(|(_, w)| w).collect();
                let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
                if total == 0 {
                    return None;
                }
                // The draw's position in [0, total), from the top bits of the Weyl sequence.
                let point = turn.wrapping_mul(GOLDEN);
                let mut draw = u64::try_from((u128::from(point) * u128::from(total)) >> 64)
                    .unwrap_or_default();
                weights.iter().position(|w| {
                    let w = u64::from(*w);
                    let here = draw < w;
                    draw = draw.saturating_sub(w);
                    here
                })?
            }
        };
        self.weights.get(index).map(|(cluster, _)| cluster)
    }

    /// The weight of `cluster`, 0 if it has none.
    pub fn weight(&self, cluster: &Label) -> u32 {
        self.weights
            .iter()
            .find(|(c, _)| c == cluster)
            .map_or(0, |(_, w)| *w)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn label(s: &str) -> Label {
        s.parse().expect("label")
    }

    #[test]
    fn turns_meet_the_weights_over_any_stretch() {
        let (east, west) = (label("east"), label("west"));
        for share in [1u8, 5, 30, 50, 99] {
            let split = Split::between(&east, &west, share);
            let to_west: Vec<bool> = (0..20_000u64)
                .map(|turn| split.pick(None, |_| true, turn) == Some(&west))
                .collect();
            // Every stretch of 1,000 turns, wherever it starts, is within 3 requests of the
            // share (a random draw would stray by 15 or more for 30 %).
            for start in (0..19_000).step_by(337) {
                let got = to_west[start..start + 1000].iter().filter(|w| **w).count();
                let want = usize::from(share) * 10;
                assert!(got.abs_diff(want) <= 3, "{share} % from {start}: {got}");
            }
        }
        // An unavailable cluster gets nothing, the other everything; none available, none.
        let split = Split::between(&east, &west, 30);
        assert!((0..100).all(|turn| split.pick(None, |c| c == &east, turn) == Some(&east)));
        assert_eq!(split.pick(Some(7), |_| false, 0), None);
        assert_eq!(Split::between(&east, &west, 100).weight(&east), 0);
    }

    proptest! {
        /// Through any rising sequence of steps, a session key never leaves green once there,
        /// and every gateway (whatever its turn) puts it in the same place.
        #[test]
        fn sessions_move_to_green_and_never_back(
            keys in proptest::collection::vec(any::<u64>(), 50),
            mut shares in proptest::collection::vec(1u8..=100, 1..8),
            turn in any::<u64>(),
        ) {
            shares.sort_unstable();
            shares.dedup();
            let (blue, green) = (label("east"), label("west"));
            for key in keys {
                let mut on_green = false;
                for share in shares.iter().copied().chain([100]) {
                    let split = Split::between(&blue, &green, share);
                    let picked = split.pick(Some(key), |_| true, turn).cloned();
                    let elsewhere = split.pick(Some(key), |_| true, turn ^ 1).cloned();
                    prop_assert_eq!(&picked, &elsewhere);
                    let here = picked.as_ref() == Some(&green);
                    prop_assert!(here || !on_green, "key {} left green at {} %", key, share);
                    on_green |= here;
                }
                prop_assert!(on_green, "at 100 % every key is on green");
            }
        }
    }
}
