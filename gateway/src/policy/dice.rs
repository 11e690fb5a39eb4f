//! Randomness for the decision core, passed in rather than reached for, so that a test can fix
//! it and a property can be checked over many draws.

/// A source of uniformly distributed 64-bit values.
pub trait Dice {
    /// The next value.
    fn roll(&mut self) -> u64;

    /// Whether an event of probability `chance` happens on this roll.
    fn chance(&mut self, chance: Chance) -> bool {
        chance.0 > 0 && self.roll() % Chance::WHOLE < u64::from(chance.0)
    }

    /// A value in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.roll() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A value in `0..bound` (`bound` > 0). The bias of the modulo is below 2^-32 for the
    /// bounds used here (sums of weights).
    fn below(&mut self, bound: u64) -> u64 {
        self.roll() % bound.max(1)
    }
}

/// SplitMix64 (Steele, Lea and Flood, 2014): one addition and three multiply-xorshift steps a
/// value, no lock, good enough statistically for weighted choices and fault rates (it passes
/// BigCrush). Not for secrets.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The increment between successive states (the golden ratio in 64 bits).
    pub const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }
}

impl Dice for SplitMix64 {
    fn roll(&mut self) -> u64 {
        self.state = self.state.wrapping_add(Self::GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A probability, in parts per million: a percentage with up to four decimals, as the
/// `percent` of a fault is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Chance(u32);

impl Chance {
    const WHOLE: u64 = 1_000_000;

    /// Never.
    pub const NEVER: Chance = Chance(0);

    /// `percent` (0 to 100, at most four decimals), or `None` outside that.
    pub fn from_percent(percent: f64) -> Option<Chance> {
        if !(0.0..=100.0).contains(&percent) {
            return None;
        }
        let per_million = (percent * 10_000.0).round();
        Some(Chance(per_million as u32))
    }

    /// As a percentage.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }
}

impl std::fmt::Display for Chance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}%", self.percent())
    }
}
