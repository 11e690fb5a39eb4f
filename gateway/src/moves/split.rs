//! A split of one service's requests across clusters by weight, as a move (or an operator)
//! sets it, applied by every gateway that routes the service.
//!
//! A request with a session key goes where weighted rendezvous hashing puts the key: every
//! gateway picks alike, a key stays where it is while the weights stand, and when one
//! cluster's weight grows at the others' expense keys only move to it. So through a canary's
//! steps a session that has reached green stays there. A request without a key is drawn at
//! random by weight.

use meshfed_discovery::Label;

use crate::policy::Dice;
use crate::policy::balance::{hash_bytes, rendezvous};

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

    /// The cluster for a request with session key `key` (if it has one), among those
    /// `available` says can take it; `None` when none with weight can.
    pub fn pick(
        &self,
        key: Option<u64>,
        available: impl Fn(&Label) -> bool,
        dice: &mut impl Dice,
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
                let mut draw = dice.below(total);
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
    use crate::policy::SplitMix64;

    fn label(s: &str) -> Label {
        s.parse().expect("label")
    }

    #[test]
    fn draws_follow_the_weights() {
        let (east, west) = (label("east"), label("west"));
        let split = Split::between(&east, &west, 30);
        let mut dice = SplitMix64::new(5);
        let draws = 20_000;
        let to_west = (0..draws)
            .filter(|_| split.pick(None, |_| true, &mut dice) == Some(&west))
            .count();
        // 6,000 expected, standard deviation 65: the bounds are 7 of them.
        assert!((5_545..=6_455).contains(&to_west), "{to_west}");
        // An unavailable cluster gets nothing, the other everything; none available, none.
        assert!((0..100).all(|_| split.pick(None, |c| c == &east, &mut dice) == Some(&east)));
        assert_eq!(split.pick(Some(7), |_| false, &mut dice), None);
        assert_eq!(Split::between(&east, &west, 100).weight(&east), 0);
    }

    proptest! {
        /// Through any rising sequence of steps, a session key never leaves green once there,
        /// and every gateway (any dice) puts it in the same place.
        #[test]
        fn sessions_move_to_green_and_never_back(
            keys in proptest::collection::vec(any::<u64>(), 50),
            mut shares in proptest::collection::vec(1u8..=100, 1..8),
            seed in any::<u64>(),
        ) {
            shares.sort_unstable();
            shares.dedup();
            let (blue, green) = (label("east"), label("west"));
            for key in keys {
                let mut on_green = false;
                for share in shares.iter().copied().chain([100]) {
                    let split = Split::between(&blue, &green, share);
                    let mut dice = SplitMix64::new(seed);
                    let picked = split.pick(Some(key), |_| true, &mut dice).cloned();
                    let mut other = SplitMix64::new(seed ^ 1);
                    prop_assert_eq!(&picked, &split.pick(Some(key), |_| true, &mut other).cloned());
                    let here = picked.as_ref() == Some(&green);
                    prop_assert!(here || !on_green, "key {} left green at {} %", key, share);
                    on_green |= here;
                }
                prop_assert!(on_green, "at 100 % every key is on green");
            }
        }
    }
}
