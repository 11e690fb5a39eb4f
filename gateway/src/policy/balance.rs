//! Load balancing: which endpoint of a set takes a request.
//!
//! - **Peak EWMA with the power of two choices** (the default, as Linkerd does): two endpoints
//!   drawn at random, the one with the lower cost wins; cost is the endpoint's latency estimate
//!   times its requests in flight plus one. The estimate jumps up to a slower response at once
//!   (the "peak") and decays towards faster ones, so a slowing endpoint is shunned quickly and
//!   trusted again slowly.
//! - **Least request**: two at random, the one with fewer requests in flight.
//! - **Round robin**: in turn.
//! - **Consistent hashing** on a key (a header, a cookie, the client's address): weighted
//!   rendezvous hashing, so a key keeps its endpoint while the set is unchanged, and when an
//!   endpoint leaves only its keys move.
//!
//! No I/O and no clock: loads, `now` and the dice come in as arguments.

use std::time::{Duration, Instant};

use http::HeaderName;

use super::dice::Dice;
use super::matching::RequestView;

/// How an endpoint is chosen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// Power of two choices over peak-EWMA latency times load.
    #[default]
    PeakEwma,
    /// Power of two choices over requests in flight.
    LeastRequest,
    /// In turn.
    RoundRobin,
    /// Rendezvous hashing on a request key; requests without the key fall back to peak EWMA.
    Hash(HashOn),
}

/// What a consistent hash is taken of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashOn {
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The client's IP address.
    Source,
}

/// How long a latency observation takes to fade to about a third of its weight (Linkerd's
/// default decay).
pub const DECAY: Duration = Duration::from_secs(10);
/// The latency assumed for an endpoint not yet measured (Linkerd's default RTT).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// A peak-EWMA latency estimate.
#[derive(Clone, Copy, Debug)]
pub struct PeakEwma {
    /// The estimate, in nanoseconds.
    estimate: f64,
    /// When it was last updated.
    stamp: Instant,
}

impl PeakEwma {
    /// An estimate of [`DEFAULT_RTT`] at `now`.
    pub fn new(now: Instant) -> Self {
        PeakEwma {
            estimate: DEFAULT_RTT.as_nanos() as f64,
            stamp: now,
        }
    }

    /// Takes in a response that took `rtt`, observed at `now`.
    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        self.estimate = match rtt > self.estimate {
            true => rtt,
            false => {
                let weight = self.decay(now);
                self.estimate * weight + rtt * (1.0 - weight)
            }
        };
        self.stamp = self.stamp.max(now);
    }

    /// An estimate of `like`'s value at `now`: for a new endpoint, the best of its peers',
    /// so that it is tried soon rather than starved (a default guess far above the others'
    /// would keep it out for as long as they stay fast).
    pub fn like(like: &PeakEwma, now: Instant) -> Self {
        PeakEwma {
            estimate: like.estimate,
            stamp: now,
        }
    }

    /// The estimate, in nanoseconds.
    pub fn estimate(&self) -> f64 {
        self.estimate
    }

    /// The estimate as it stands at `now`: decayed towards zero for the time without an
    /// answer, so that an endpoint shunned for one slow answer is tried again in time (as
    /// tower's and Linkerd's do).
    pub fn at(&self, now: Instant) -> PeakEwma {
        PeakEwma {
            estimate: self.estimate * self.decay(now),
            stamp: self.stamp.max(now),
        }
    }

    /// How much of the old estimate still counts at `now`.
    fn decay(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.stamp).as_nanos() as f64;
        (-elapsed / DECAY.as_nanos() as f64).exp()
    }
}

/// What the balancer knows of one endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Requests sent to it and not yet finished.
    pub pending: u32,
    /// Its latency estimate.
    pub latency: PeakEwma,
}

impl Load {
    /// A fresh endpoint's load at `now`.
    pub fn new(now: Instant) -> Self {
        Load {
            pending: 0,
            latency: PeakEwma::new(now),
        }
    }

    /// What taking one more request would cost here.
    fn cost(&self) -> f64 {
        self.latency.estimate() * f64::from(self.pending + 1)
    }
}

/// One endpoint as the balancer sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    /// A stable identity (a hash of its address), for consistent hashing.
    pub id: u64,
    /// Its load.
    pub load: Load,
}

/// Which of `candidates` (not empty) takes the request. `key` is the request's hash key if
/// the algorithm hashes and the request has one; `turn` counts requests, for round robin.
pub fn pick(
    algorithm: &Algorithm,
    candidates: &[Candidate],
    key: Option<u64>,
    turn: u64,
    dice: &mut impl Dice,
) -> usize {
    if candidates.len() <= 1 {
        return 0;
    }
    match (algorithm, key) {
        (Algorithm::RoundRobin, _) => (turn % candidates.len() as u64) as usize,
        (Algorithm::LeastRequest, _) => {
            two_choices(candidates, dice, |c| f64::from(c.load.pending))
        }
        (Algorithm::Hash(_), Some(key)) => {
            rendezvous(key, candidates.iter().map(|c| (c.id, 1))).unwrap_or(0)
        }
        (Algorithm::PeakEwma | Algorithm::Hash(_), _) => {
            two_choices(candidates, dice, |c| c.load.cost())
        }
    }
}

/// The consistent-hash key of `request`, if it has what `on` names.
pub fn key(on: &HashOn, request: &RequestView<'_>) -> Option<u64> {
    match on {
        HashOn::Header(name) => {
            let value = request.headers.get(name)?;
            Some(hash_bytes(value.as_bytes()))
        }
        HashOn::Cookie(name) => request
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k.trim() == name).then(|| hash_bytes(v.trim().as_bytes()))
            }),
        HashOn::Source => match request.client? {
            std::net::IpAddr::V4(ip) => Some(hash_bytes(&ip.octets())),
            std::net::IpAddr::V6(ip) => Some(hash_bytes(&ip.octets())),
        },
    }
}

/// Two distinct candidates at random; the cheaper (the first drawn on a tie).
fn two_choices(
    candidates: &[Candidate],
    dice: &mut impl Dice,
    cost: impl Fn(&Candidate) -> f64,
) -> usize {
    let n = candidates.len() as u64;
    let a = dice.below(n) as usize;
    let b = (a + 1 + dice.below(n - 1) as usize) % candidates.len();
    match cost(&candidates[b]) < cost(&candidates[a]) {
        true => b,
        false => a,
    }
}

/// Weighted rendezvous hashing: the index of the item (`id`, `weight`) with the highest score
/// for `key`; `None` if every weight is 0. A key keeps its item while the items and weights
/// are unchanged; raising one item's weight only ever moves keys to it, and removing an item
/// only moves the keys it had.
pub fn rendezvous(key: u64, items: impl IntoIterator<Item = (u64, u32)>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (index, (id, weight)) in items.into_iter().enumerate() {
        if weight == 0 {
            continue;
        }
        // A uniform draw in (0, 1) from the pair, and the score -w / ln(u) (Schindelhauer and
        // Schomaker's weighted distributed hash tables): the item with the highest score wins,
        // each with probability proportional to its weight.
        let hash = mix(key ^ mix(id));
        let uniform = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = -f64::from(weight) / uniform.ln();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((index, score));
        }
    }
    best.map(|(index, _)| index)
}

/// A 64-bit hash of `bytes` (FNV-1a, then mixed): stable across processes and versions, so
/// that every gateway hashes a key the same way.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(hash)
}

/// SplitMix64's finaliser: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::policy::SplitMix64;

    fn candidate(id: u64, pending: u32, rtt_ms: u64, now: Instant) -> Candidate {
        let mut latency = PeakEwma::new(now);
        latency.observe(Duration::from_millis(rtt_ms), now);
        // Decay towards the measured value from the default.
        latency.observe(Duration::from_millis(rtt_ms), now + DECAY * 10);
        Candidate {
            id,
            load: Load { pending, latency },
        }
    }

    #[test]
    fn peak_ewma_jumps_to_a_slow_answer_and_decays_from_it() {
        let start = Instant::now();
        let mut ewma = PeakEwma::new(start);
        ewma.observe(Duration::from_millis(200), start);
        assert_eq!(ewma.estimate(), 200e6, "a slower answer is taken at once");
        ewma.observe(Duration::from_millis(10), start + Duration::from_millis(1));
        assert!(
            ewma.estimate() > 190e6,
            "one fast answer right after barely moves it"
        );
        ewma.observe(Duration::from_millis(10), start + DECAY * 5);
        assert!(ewma.estimate() < 12e6, "{}", ewma.estimate());
    }

    #[test]
    fn two_choices_shun_slow_and_busy_endpoints() {
        let now = Instant::now();
        let mut dice = SplitMix64::new(7);
        let fast = candidate(1, 0, 5, now);
        let slow = candidate(2, 0, 100, now);
        let busy = candidate(3, 40, 5, now);
        let set = [fast, slow, busy];
        let mut counts = [0u32; 3];
        for turn in 0..3_000 {
            counts[pick(&Algorithm::PeakEwma, &set, None, turn, &mut dice)] += 1;
        }
        // The fast idle endpoint wins every pair it is in: two thirds of the picks.
        assert!(counts[0] > 1_900, "{counts:?}");
        assert!(counts[1] < 1_100 && counts[2] < 1_100, "{counts:?}");
        let mut counts = [0u32; 3];
        for turn in 0..3_000 {
            counts[pick(&Algorithm::LeastRequest, &set, None, turn, &mut dice)] += 1;
        }
        // By requests in flight alone, the busy one loses every pair.
        assert!(
            counts[2] == 0 && counts[0] > 900 && counts[1] > 900,
            "{counts:?}"
        );
        let turns: Vec<usize> = (0..6)
            .map(|turn| pick(&Algorithm::RoundRobin, &set, None, turn, &mut dice))
            .collect();
        assert_eq!(turns, [0, 1, 2, 0, 1, 2]);
    }

    proptest! {
        /// A sticky key keeps its endpoint while the set and weights are unchanged; when
        /// another endpoint leaves it still keeps it; and raising one weight only ever moves a
        /// key to that endpoint (what a canary that grows step by step needs).
        #[test]
        fn rendezvous_is_sticky_and_moves_only_one_way(
            key in any::<u64>(),
            weights in prop::collection::vec(0u32..100, 2..8),
            raised in any::<prop::sample::Index>(),
            by in 1u32..100,
            removed in any::<prop::sample::Index>(),
        ) {
            let items: Vec<(u64, u32)> = weights.iter().enumerate().map(|(i, w)| (i as u64 * 7919, *w)).collect();
            let chosen = rendezvous(key, items.iter().copied());
            prop_assert_eq!(chosen, rendezvous(key, items.iter().copied()));
            let Some(chosen) = chosen else {
                prop_assert!(weights.iter().all(|w| *w == 0));
                return Ok(());
            };
            prop_assert!(weights[chosen] > 0);

            let raised = raised.index(items.len());
            let mut more = items.clone();
            more[raised].1 += by;
            let after = rendezvous(key, more.iter().copied()).expect("some weight");
            prop_assert!(after == chosen || after == raised, "{} -> {} when {} grew", chosen, after, raised);

            let removed = removed.index(items.len());
            prop_assume!(removed != chosen);
            let fewer: Vec<(u64, u32)> = items.iter().enumerate().filter(|(i, _)| *i != removed).map(|(_, item)| *item).collect();
            let after = rendezvous(key, fewer.iter().copied()).expect("some weight");
            prop_assert_eq!(fewer[after].0, items[chosen].0);
        }

        /// Over many keys, each item's share is within 2 % of its weight's share.
        #[test]
        fn rendezvous_shares_follow_weights(weights in prop::collection::vec(1u32..20, 2..5), salt in any::<u64>()) {
            let items: Vec<(u64, u32)> = weights.iter().enumerate().map(|(i, w)| (i as u64, *w)).collect();
            let mut counts = vec![0u32; items.len()];
            let n = 40_000u64;
            for key in 0..n {
                counts[rendezvous(mix(key ^ salt), items.iter().copied()).expect("some")] += 1;
            }
            let total: u32 = weights.iter().sum();
            for (count, weight) in counts.iter().zip(&weights) {
                let share = f64::from(*count) / n as f64;
                let want = f64::from(*weight) / f64::from(total);
                prop_assert!((share - want).abs() < 0.02, "{} for {}", share, want);
            }
        }
    }
}
