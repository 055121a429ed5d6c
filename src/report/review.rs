//! What the blind votes say: a run's tuned model against its base (win rate with Wilson 95%
//! intervals, overall and per language, and the run's final metrics), and every model that has
//! votes ranked by a Bradley-Terry fit. `verdict eval report|arena` print these; the TUI shows
//! the same values.

use std::collections::HashMap;

use anyhow::Context;
use serde::Serialize;

use crate::domain::Outcome;
use crate::qa::arena::{ArenaOptions, ModelRating, bradley_terry};
use crate::qa::winrate::{WinRateReport, Z_95, win_rate};
use crate::store::{EvalVoteRow, Store};

/// The TRL metrics a report shows the last value of, train then eval.
pub const FINAL_METRICS: [&str; 14] = [
    "loss",
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
    "eval_loss",
    "eval_rewards/accuracies",
    "eval_rewards/margins",
    "eval_rewards/chosen",
    "eval_rewards/rejected",
    "eval_logps/chosen",
    "eval_logps/rejected",
];

/// A model by id and name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRef {
    pub id: i64,
    pub name: String,
}

/// A metric's last recorded value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinalMetric {
    pub name: String,
    pub step: i64,
    pub value: f64,
}

/// A run's tuned model against its base, from the active blind votes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub run_id: i64,
    pub base: ModelRef,
    pub tuned: ModelRef,
    /// The tuned model's win rate over the base (a tie or a both-bad verdict counts ½).
    pub win_rate: WinRateReport,
    pub metrics: Vec<FinalMetric>,
}

/// The outcome of a vote from `model`'s side (`A` = `model`'s answer won).
fn outcome_for(vote: &EvalVoteRow, model: i64) -> Option<Outcome> {
    let outcome = Outcome::parse(&vote.outcome)?;
    Some(if vote.model_a == model {
        outcome
    } else {
        match outcome {
            Outcome::A => Outcome::B,
            Outcome::B => Outcome::A,
            other => other,
        }
    })
}

fn model_names(store: &Store) -> anyhow::Result<HashMap<i64, String>> {
    Ok(store.models()?.into_iter().map(|m| (m.id, m.name)).collect())
}

/// The report of run `run_id`; an error that says why when the run has no tuned model.
pub fn run_report(store: &Store, run_id: i64) -> anyhow::Result<RunReport> {
    let (base, tuned) = store.run_models(run_id)?;
    let names = model_names(store)?;
    let name = |id: i64| ModelRef { id, name: names.get(&id).cloned().unwrap_or_default() };
    let verdicts: Vec<(String, Outcome)> = store
        .eval_votes(Some((base, tuned)))?
        .iter()
        .filter_map(|v| Some((v.language.clone(), outcome_for(v, tuned)?)))
        .collect();
    Ok(RunReport {
        run_id,
        base: name(base),
        tuned: name(tuned),
        win_rate: win_rate(&verdicts, Z_95),
        metrics: final_metrics(store, run_id)?,
    })
}

/// Stores a report's win rate in `evals` (model A = the tuned model), replacing the one saved
/// before for the run; `None` when there are no votes to summarize.
pub fn save_run_report(store: &Store, report: &RunReport) -> anyhow::Result<Option<i64>> {
    let overall = &report.win_rate.overall;
    let (Some(rate), Some(interval)) = (overall.rate, overall.interval) else {
        return Ok(None);
    };
    // Both-bad verdicts count as ties in the rate, so they are stored with the ties.
    let ties = (overall.ties + overall.both_bad) as i64;
    let id = store.save_eval(
        Some(report.run_id),
        report.tuned.id,
        report.base.id,
        (overall.wins as i64, overall.losses as i64, ties),
        rate,
        (interval.low, interval.high),
        &serde_json::to_string(&report.win_rate.by_language)?,
    )?;
    Ok(Some(id))
}

/// The last value of each of [`FINAL_METRICS`] the run has.
pub fn final_metrics(store: &Store, run_id: i64) -> anyhow::Result<Vec<FinalMetric>> {
    let mut out = Vec::new();
    for name in FINAL_METRICS {
        if let Some(&(step, value)) = store.metric_series(run_id, name)?.last() {
            out.push(FinalMetric { name: name.to_string(), step, value });
        }
    }
    Ok(out)
}

/// Every curve the plot draws: (metric, points), for `report::training_panels`.
pub fn run_curves(store: &Store, run_id: i64) -> anyhow::Result<Vec<(String, Vec<(i64, f64)>)>> {
    let mut out = Vec::new();
    for name in FINAL_METRICS {
        let points = store.metric_series(run_id, name)?;
        if !points.is_empty() {
            out.push((name.to_string(), points));
        }
    }
    Ok(out)
}

/// One model's place in the arena.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RatedModel {
    pub model_id: i64,
    pub name: String,
    /// The fit's rating, interval and counts (its `model` is the id as text).
    #[serde(flatten)]
    pub fit: ModelRating,
}

/// Every model with active blind votes, best first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArenaReport {
    pub votes: usize,
    /// The normal quantile of the intervals (1.96: 95%).
    pub z: f64,
    pub models: Vec<RatedModel>,
}

/// The Bradley-Terry ranking of every model with votes; `None` when there are none. An error
/// when the votes fall into groups never compared with each other (it names them).
pub fn arena(store: &Store) -> anyhow::Result<Option<ArenaReport>> {
    let votes = store.eval_votes(None)?;
    if votes.is_empty() {
        return Ok(None);
    }
    // Fitted by id: two models may share a name.
    let judgments: Vec<(String, String, Outcome)> = votes
        .iter()
        .filter_map(|v| Some((v.model_a.to_string(), v.model_b.to_string(), Outcome::parse(&v.outcome)?)))
        .collect();
    let options = ArenaOptions::default();
    let fit = bradley_terry(&judgments, &options)?;
    let names = model_names(store)?;
    let models = fit
        .ratings
        .into_iter()
        .map(|r| {
            let model_id: i64 = r.model.parse().context("model ids are numbers")?;
            Ok(RatedModel { model_id, name: names.get(&model_id).cloned().unwrap_or_default(), fit: r })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Some(ArenaReport { votes: fit.judgments, z: options.z, models }))
}
