//! Ratings for more than two models from blind pairwise judgments: a Bradley-Terry fit with
//! 95% confidence intervals, on the Elo scale.
//!
//! The model: P(i beats j) = σ(θᵢ − θⱼ), σ the logistic function. A tie counts as half a win
//! each way, and so does a both-bad verdict (as Chatbot Arena fits its "tie (bothbad)").
//!
//! The prior: each model is credited with `prior_games` tie games (default 1) against a fixed
//! reference player of strength θ = 0. Without it a model that won every comparison would have
//! θ = +∞; with it every rating is finite and the fit is unique. One virtual game is small next
//! to the tens of real judgments a model usually has, and it pulls sparse models toward the
//! middle, where the evidence says little.
//!
//! The fit is Newton's method on the log posterior (concave, strictly so thanks to the prior),
//! with step halving; the observed information it computes at the optimum (the negative Hessian
//! H) also gives the intervals: the covariance of the centered log-strengths is P H⁻¹ P, with
//! P = I − 11ᵀ/k, and each interval is the rating ± z standard errors.
//!
//! Ratings are 1000 + 400·log₁₀(e)·(θᵢ − mean θ): a 400-point gap means 10:1 odds, as in Elo and
//! Chatbot Arena, and the average model sits at 1000.
//!
//! Models whose judgments never connect (no chain of comparisons between two groups) have no
//! common scale: only the prior would place one group against the other, so the fit refuses
//! and names the groups ([`ArenaError::Disconnected`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::winrate::Z_95;
use crate::domain::Outcome;

/// Elo points per unit of log-strength: 400 / ln 10.
const ELO_PER_LOGIT: f64 = 400.0 / std::f64::consts::LN_10;
const ELO_CENTER: f64 = 1000.0;
/// Newton stops once no log-strength moves by more than this.
const CONVERGED_STEP: f64 = 1e-10;
const MAX_NEWTON_STEPS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ArenaOptions {
    /// Normal quantile of the intervals (1.96 for 95%).
    pub z: f64,
    /// Virtual tie games each model plays against a reference of average strength (> 0).
    pub prior_games: f64,
}

impl Default for ArenaOptions {
    fn default() -> Self {
        ArenaOptions { z: Z_95, prior_games: 1.0 }
    }
}

/// One model's rating and record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRating {
    pub model: String,
    /// Elo scale, the average model at 1000.
    pub rating: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// Judgments this model was part of.
    pub games: u32,
    pub wins: u32,
    pub losses: u32,
    pub ties: u32,
    pub both_bad: u32,
}

/// The ratings of every model compared, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arena {
    pub options: ArenaOptions,
    pub judgments: usize,
    pub ratings: Vec<ModelRating>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArenaError {
    #[error("a judgment compares model {0:?} with itself: each judgment needs two different models")]
    SelfComparison(String),
    #[error(
        "the judgments fall into {} groups of models never compared with each other ({}): their ratings would share \
         no scale; judge at least one pair across each gap",
        .components.len(),
        .components.iter().map(|c| format!("[{}]", c.join(", "))).collect::<Vec<_>>().join(" ")
    )]
    Disconnected { components: Vec<Vec<String>> },
    #[error("{name} must be a positive finite number, got {value}")]
    InvalidOption { name: &'static str, value: f64 },
    #[error("the Bradley-Terry fit did not converge in {MAX_NEWTON_STEPS} Newton steps; please report this data set")]
    NoConvergence,
}

/// Fits Bradley-Terry ratings to `(model_a, model_b, outcome)` judgments, where `Outcome::A`
/// means model_a was preferred. The result does not depend on the order of the judgments nor
/// on which model of a pair is named first.
pub fn bradley_terry<S: AsRef<str>>(
    judgments: &[(S, S, Outcome)],
    options: &ArenaOptions,
) -> Result<Arena, ArenaError> {
    for (name, value) in [("z", options.z), ("prior_games", options.prior_games)] {
        if !(value.is_finite() && value > 0.0) {
            return Err(ArenaError::InvalidOption { name, value });
        }
    }
    // Models are indexed in name order, so the arithmetic is the same whatever the input order.
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (a, b, _) in judgments {
        if a.as_ref() == b.as_ref() {
            return Err(ArenaError::SelfComparison(a.as_ref().to_string()));
        }
        index.insert(a.as_ref(), 0);
        index.insert(b.as_ref(), 0);
    }
    for (position, slot) in index.values_mut().enumerate() {
        *slot = position;
    }
    let names: Vec<&str> = index.keys().copied().collect();
    let tally = Tally::count(judgments, &index);
    let components = components(&tally);
    if components.len() > 1 {
        let components = components.iter().map(|c| c.iter().map(|&i| names[i].to_string()).collect()).collect();
        return Err(ArenaError::Disconnected { components });
    }

    let theta = fit(&tally, options.prior_games)?;
    let k = names.len();
    let covariance = invert(&objective(&tally, options.prior_games, &theta).information, k)
        .expect("the information is positive definite thanks to the prior");
    let mean = theta.iter().sum::<f64>() / k.max(1) as f64;
    let mut ratings: Vec<ModelRating> = (0..k)
        .map(|i| {
            let rating = ELO_CENTER + ELO_PER_LOGIT * (theta[i] - mean);
            let half_width = options.z * ELO_PER_LOGIT * centered_variance(&covariance, k, i).sqrt();
            let record = &tally.records[i];
            ModelRating {
                model: names[i].to_string(),
                rating,
                ci_low: rating - half_width,
                ci_high: rating + half_width,
                games: record.wins + record.losses + record.ties + record.both_bad,
                wins: record.wins,
                losses: record.losses,
                ties: record.ties,
                both_bad: record.both_bad,
            }
        })
        .collect();
    ratings.sort_by(|x, y| y.rating.total_cmp(&x.rating).then_with(|| x.model.cmp(&y.model)));
    Ok(Arena { options: *options, judgments: judgments.len(), ratings })
}

#[derive(Debug, Clone, Copy, Default)]
struct Record {
    wins: u32,
    losses: u32,
    ties: u32,
    both_bad: u32,
}

impl Record {
    /// Counts a judgment seen from this model's side (`Outcome::A`: this model won).
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::A => self.wins += 1,
            Outcome::B => self.losses += 1,
            Outcome::Tie => self.ties += 1,
            Outcome::BothBad => self.both_bad += 1,
        }
    }
}

/// The judgments summed per pair of models (k × k, row-major).
struct Tally {
    k: usize,
    /// games[i·k + j]: judgments between i and j (symmetric).
    games: Vec<f64>,
    /// score[i·k + j]: i's points against j, a win 1 and a tie ½.
    score: Vec<f64>,
    records: Vec<Record>,
}

impl Tally {
    fn count<S: AsRef<str>>(judgments: &[(S, S, Outcome)], index: &BTreeMap<&str, usize>) -> Tally {
        let k = index.len();
        let mut tally =
            Tally { k, games: vec![0.0; k * k], score: vec![0.0; k * k], records: vec![Record::default(); k] };
        for (a, b, outcome) in judgments {
            let (a, b) = (index[a.as_ref()], index[b.as_ref()]);
            tally.games[a * k + b] += 1.0;
            tally.games[b * k + a] += 1.0;
            let (points_a, points_b) = match outcome {
                Outcome::A => (1.0, 0.0),
                Outcome::B => (0.0, 1.0),
                Outcome::Tie | Outcome::BothBad => (0.5, 0.5),
            };
            tally.score[a * k + b] += points_a;
            tally.score[b * k + a] += points_b;
            tally.records[a].add(*outcome);
            tally.records[b].add(match outcome {
                Outcome::A => Outcome::B,
                Outcome::B => Outcome::A,
                same => *same,
            });
        }
        tally
    }
}

/// Groups of models linked by chains of judgments, each sorted, in order of their first model.
fn components(tally: &Tally) -> Vec<Vec<usize>> {
    let k = tally.k;
    let mut group: Vec<usize> = (0..k).collect();
    fn root(group: &mut [usize], mut i: usize) -> usize {
        while group[i] != i {
            group[i] = group[group[i]];
            i = group[i];
        }
        i
    }
    for i in 0..k {
        for j in i + 1..k {
            if tally.games[i * k + j] > 0.0 {
                let (ri, rj) = (root(&mut group, i), root(&mut group, j));
                group[ri.max(rj)] = ri.min(rj);
            }
        }
    }
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..k {
        let r = root(&mut group, i);
        by_root.entry(r).or_default().push(i);
    }
    by_root.into_values().collect()
}

/// ln σ(x), without overflow for large |x|.
fn log_sigmoid(x: f64) -> f64 {
    -((-x).max(0.0) + (-x.abs()).exp().ln_1p())
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 { 1.0 / (1.0 + (-x).exp()) } else { x.exp() / (1.0 + x.exp()) }
}

/// The log posterior at θ with its gradient and the observed information (negative Hessian).
struct Objective {
    value: f64,
    gradient: Vec<f64>,
    information: Vec<f64>,
}

fn objective(tally: &Tally, prior_games: f64, theta: &[f64]) -> Objective {
    let k = tally.k;
    let mut value = 0.0;
    let mut gradient = vec![0.0; k];
    let mut information = vec![0.0; k * k];
    for i in 0..k {
        for j in i + 1..k {
            let games = tally.games[i * k + j];
            if games == 0.0 {
                continue;
            }
            let (score_i, score_j) = (tally.score[i * k + j], tally.score[j * k + i]);
            let d = theta[i] - theta[j];
            value += score_i * log_sigmoid(d) + score_j * log_sigmoid(-d);
            let p = sigmoid(d);
            gradient[i] += score_i - games * p;
            gradient[j] += score_j - games * (1.0 - p);
            let v = games * p * (1.0 - p);
            information[i * k + i] += v;
            information[j * k + j] += v;
            information[i * k + j] -= v;
            information[j * k + i] -= v;
        }
        // prior_games ties against the reference at θ = 0: prior_games/2 points each way.
        value += 0.5 * prior_games * (log_sigmoid(theta[i]) + log_sigmoid(-theta[i]));
        let p = sigmoid(theta[i]);
        gradient[i] += prior_games * (0.5 - p);
        information[i * k + i] += prior_games * p * (1.0 - p);
    }
    Objective { value, gradient, information }
}

/// The log-strengths that maximize the log posterior.
fn fit(tally: &Tally, prior_games: f64) -> Result<Vec<f64>, ArenaError> {
    let k = tally.k;
    let mut theta = vec![0.0; k];
    for _ in 0..MAX_NEWTON_STEPS {
        let here = objective(tally, prior_games, &theta);
        let factor = cholesky(&here.information, k).expect("the information is positive definite thanks to the prior");
        let step = solve(&factor, k, &here.gradient);
        let largest = step.iter().fold(0.0_f64, |m, s| m.max(s.abs()));
        if largest < CONVERGED_STEP {
            return Ok(theta.iter().zip(&step).map(|(t, s)| t + s).collect());
        }
        // Far from the optimum a full Newton step can overshoot: halve it until it helps.
        let mut scale = 1.0;
        loop {
            let next: Vec<f64> = theta.iter().zip(&step).map(|(t, s)| t + scale * s).collect();
            if objective(tally, prior_games, &next).value >= here.value || scale < 1e-12 {
                theta = next;
                break;
            }
            scale *= 0.5;
        }
    }
    Err(ArenaError::NoConvergence)
}

/// Variance of θᵢ − mean θ given the covariance Σ of θ: (PΣP)ᵢᵢ with P = I − 11ᵀ/k.
fn centered_variance(covariance: &[f64], k: usize, i: usize) -> f64 {
    let kf = k as f64;
    let row_i: f64 = (0..k).map(|j| covariance[i * k + j]).sum();
    let total: f64 = covariance.iter().sum();
    (covariance[i * k + i] - 2.0 * row_i / kf + total / (kf * kf)).max(0.0)
}

/// The lower-triangular L with L Lᵀ = a (row-major k × k), or `None` if a is not positive definite.
fn cholesky(a: &[f64], k: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|m| l[i * k + m] * l[j * k + m]).sum();
            if i == j {
                let pivot = a[i * k + i] - dot;
                if pivot <= 0.0 || !pivot.is_finite() {
                    return None;
                }
                l[i * k + i] = pivot.sqrt();
            } else {
                l[i * k + j] = (a[i * k + j] - dot) / l[j * k + j];
            }
        }
    }
    Some(l)
}

/// x with L Lᵀ x = b.
fn solve(l: &[f64], k: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; k];
    for i in 0..k {
        y[i] = (b[i] - (0..i).map(|m| l[i * k + m] * y[m]).sum::<f64>()) / l[i * k + i];
    }
    let mut x = vec![0.0; k];
    for i in (0..k).rev() {
        x[i] = (y[i] - (i + 1..k).map(|m| l[m * k + i] * x[m]).sum::<f64>()) / l[i * k + i];
    }
    x
}

/// The inverse of a symmetric positive definite matrix.
fn invert(a: &[f64], k: usize) -> Option<Vec<f64>> {
    let l = cholesky(a, k)?;
    let mut inverse = vec![0.0; k * k];
    for column in 0..k {
        let mut unit = vec![0.0; k];
        unit[column] = 1.0;
        for (row, value) in solve(&l, k, &unit).into_iter().enumerate() {
            inverse[row * k + column] = value;
        }
    }
    Some(inverse)
}

#[cfg(test)]
#[path = "arena_tests.rs"]
mod tests;
