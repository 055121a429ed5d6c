//! Blind evaluation of model A against model B: win rate with a Wilson score interval, overall
//! and per language.
//!
//! How verdicts count: a win for A is 1, a loss 0, a tie ½, and a both-bad verdict also ½. Ties
//! as half a win is what AlpacaEval and MT-Bench's adjusted win rate do; both-bad as a tie
//! follows Chatbot Arena, which records "tie (bothbad)" and fits it exactly as a tie: on that
//! prompt neither model was better. Leaving both-bad out instead would measure the models only
//! on the prompts one of them could answer, and a model whose edge is on easy prompts would look
//! better than it is; the count stays in the report so a reader sees how often neither was good.
//!
//! The interval is Wilson's score interval. With ties the number of successes can be a
//! half-integer; the Wilson formula takes a fractional count as it is (as statsmodels'
//! `proportion_confint(method="wilson")` does), a usual approximation for ties.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::Outcome;

/// The standard normal quantile for a two-sided 95% interval, Φ⁻¹(0.975).
pub const Z_95: f64 = 1.959_963_984_540_054_5;

/// A closed interval of proportions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// Counts and win rate of model A over one set of blind verdicts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WinRate {
    /// Verdicts for A.
    pub wins: u32,
    /// Verdicts for B.
    pub losses: u32,
    pub ties: u32,
    pub both_bad: u32,
    /// All verdicts: wins + losses + ties + both_bad.
    pub n: u32,
    /// (wins + (ties + both_bad) / 2) / n; `None` when n = 0.
    pub rate: Option<f64>,
    /// Wilson score interval of `rate`; `None` when n = 0.
    pub interval: Option<Interval>,
}

impl WinRate {
    /// Counts the verdicts and computes the rate and its interval at normal quantile `z`.
    pub fn from_outcomes(outcomes: impl IntoIterator<Item = Outcome>, z: f64) -> WinRate {
        let mut counts = WinRate::default();
        for outcome in outcomes {
            counts.add(outcome);
        }
        counts.finish(z)
    }

    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::A => self.wins += 1,
            Outcome::B => self.losses += 1,
            Outcome::Tie => self.ties += 1,
            Outcome::BothBad => self.both_bad += 1,
        }
        self.n += 1;
    }

    /// Model A's score: a win is 1, a tie or both-bad ½.
    pub fn successes(&self) -> f64 {
        self.wins as f64 + 0.5 * (self.ties + self.both_bad) as f64
    }

    fn finish(mut self, z: f64) -> WinRate {
        let n = self.n as f64;
        self.rate = (self.n > 0).then(|| self.successes() / n);
        self.interval = wilson_interval(self.successes(), n, z);
        self
    }
}

/// The blind comparison of two models: overall and per language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WinRateReport {
    /// The normal quantile the intervals were computed with (1.96 for 95%).
    pub z: f64,
    pub overall: WinRate,
    /// Keyed by the prompt's language code.
    pub by_language: BTreeMap<String, WinRate>,
}

/// Win rate of model A over `(language, outcome)` verdicts, where `Outcome::A` means A was
/// preferred (whichever side it was shown on), with Wilson intervals at normal quantile `z`
/// (use [`Z_95`] for 95%).
pub fn win_rate<L: AsRef<str>>(verdicts: &[(L, Outcome)], z: f64) -> WinRateReport {
    let mut overall = WinRate::default();
    let mut by_language: BTreeMap<String, WinRate> = BTreeMap::new();
    for (language, outcome) in verdicts {
        overall.add(*outcome);
        let language = language.as_ref();
        match by_language.get_mut(language) {
            Some(counts) => counts.add(*outcome),
            None => {
                let mut counts = WinRate::default();
                counts.add(*outcome);
                by_language.insert(language.to_string(), counts);
            }
        }
    }
    WinRateReport {
        z,
        overall: overall.finish(z),
        by_language: by_language.into_iter().map(|(language, counts)| (language, counts.finish(z))).collect(),
    }
}

/// Wilson's score interval for `successes` out of `n` at normal quantile `z`:
/// (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n). `successes` may be fractional
/// (ties count ½). `None` when `n` is 0 (no data, no interval).
pub fn wilson_interval(successes: f64, n: f64, z: f64) -> Option<Interval> {
    if n <= 0.0 {
        return None;
    }
    let p = successes / n;
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    // max(0): p(1-p) is never negative in exact arithmetic, but is -0.0-ish at p = 0 or 1.
    let half_width = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).max(0.0).sqrt() / denominator;
    // Clamped because rounding at p = 0 or 1 can land a hair outside [0, 1].
    Some(Interval { low: (center - half_width).clamp(0.0, 1.0), high: (center + half_width).clamp(0.0, 1.0) })
}

#[cfg(test)]
#[path = "winrate_tests.rs"]
mod tests;
