//! QA reports over the store: agreement (overall, per language, domain and reason tag)
//! and per-annotator habits (speed, position bias, tie rate, gold accuracy, agreement
//! with the resolved label).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::agreement::{self, AgreementReport, Metric, Rating};
use super::resolve::{PairVerdict, majority};
use crate::domain::Outcome;
use crate::store::{JudgmentFacts, Result, Store};

/// Outcomes as categories, in ordinal order (left/a better > tie > right/b better);
/// both-bad is only nominal.
const CATEGORIES: usize = 4;

fn category(outcome: Outcome) -> usize {
    match outcome {
        Outcome::A => 0,
        Outcome::Tie => 1,
        Outcome::B => 2,
        Outcome::BothBad => 3,
    }
}

/// Agreement on one slice of the data.
#[derive(Debug, Clone, Serialize)]
pub struct Slice {
    pub key: String,
    pub report: AgreementReport,
}

/// Everything `verdict agreement` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// Category names, in index order.
    pub categories: Vec<&'static str>,
    pub annotators: BTreeMap<u64, String>,
    pub overall: AgreementReport,
    pub by_language: Vec<Slice>,
    pub by_domain: Vec<Slice>,
    /// Agreement on whether each reason tag applies (binary), over pairs judged twice or more.
    pub by_reason: Vec<Slice>,
}

fn ratings(facts: &[&JudgmentFacts], units: &mut HashMap<(i64, i64), u64>) -> Vec<Rating> {
    facts
        .iter()
        .map(|j| {
            let next = units.len() as u64;
            let unit = *units.entry((j.response_a, j.response_b)).or_insert(next);
            Rating { unit, rater: j.annotator_id as u64, category: category(j.outcome) }
        })
        .collect()
}

/// The agreement report with ordinal alpha computed over left > tie > right only.
fn full_report(facts: &[&JudgmentFacts]) -> AgreementReport {
    let mut units = HashMap::new();
    let all = ratings(facts, &mut units);
    let mut report = agreement::report(&all, CATEGORIES);
    let ordered: Vec<Rating> = all.iter().copied().filter(|r| r.category < 3).collect();
    report.alpha_ordinal = agreement::krippendorff_alpha(&ordered, 3, Metric::Ordinal);
    report
}

pub fn overview(store: &Store) -> Result<Overview> {
    let facts = store.judgment_facts()?;
    let keys = store.prompt_keys()?;
    let all: Vec<&JudgmentFacts> = facts.iter().collect();
    let slice = |key_of: &dyn Fn(&JudgmentFacts) -> String| -> Vec<Slice> {
        let mut groups: BTreeMap<String, Vec<&JudgmentFacts>> = BTreeMap::new();
        for j in &facts {
            groups.entry(key_of(j)).or_default().push(j);
        }
        groups.into_iter().map(|(key, group)| Slice { key, report: full_report(&group) }).collect()
    };
    let by_language = slice(&|j| keys.get(&j.prompt_id).map(|k| k.0.clone()).unwrap_or_default());
    let by_domain = slice(&|j| keys.get(&j.prompt_id).map(|k| k.1.clone()).unwrap_or_default());
    let tags: BTreeSet<String> = store.reason_taxonomy()?.into_iter().map(|r| r.key).collect();
    let mut units = HashMap::new();
    let by_reason = tags
        .into_iter()
        .map(|tag| {
            let ratings: Vec<Rating> = ratings(&all, &mut units)
                .into_iter()
                .zip(&facts)
                .map(|(r, j)| Rating { category: j.reasons.contains(&tag) as usize, ..r })
                .collect();
            Slice { key: tag, report: agreement::report(&ratings, 2) }
        })
        .collect();
    let annotators = store.annotators()?.into_iter().map(|a| (a.id as u64, a.name)).collect();
    Ok(Overview {
        categories: vec!["a better", "tie", "b better", "both bad"],
        annotators,
        overall: full_report(&all),
        by_language,
        by_domain,
        by_reason,
    })
}

/// One annotator's habits.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AnnotatorReport {
    pub name: String,
    pub role: String,
    pub judgments: usize,
    pub median_seconds: Option<f64>,
    /// Share of a/b verdicts that chose the side shown on the left (0.5 = no bias).
    pub left_rate: Option<f64>,
    pub tie_rate: Option<f64>,
    pub both_bad_rate: Option<f64>,
    pub gold_items: usize,
    pub gold_accuracy: Option<f64>,
    /// Gold accuracy week by week: (week, items, accuracy), oldest first.
    pub gold_by_week: Vec<(String, usize, f64)>,
    /// Pairs with someone else's vote too, and how often this annotator matched the
    /// resolved verdict (adjudication, else majority) there.
    pub resolved_items: usize,
    pub agreement_with_resolved: Option<f64>,
}

pub fn annotator_reports(store: &Store) -> Result<Vec<AnnotatorReport>> {
    let facts = store.judgment_facts()?;
    let gold = store.gold()?;
    let adjudicated = store.adjudications()?;
    let mut votes: HashMap<(i64, i64), Vec<Outcome>> = HashMap::new();
    for j in store.active_judgments()? {
        votes.entry((j.response_a, j.response_b)).or_default().push(j.outcome);
    }
    let resolved = |pair: (i64, i64)| -> Option<Outcome> {
        adjudicated.get(&pair).copied().or_else(|| match majority(votes.get(&pair)?.iter().copied()) {
            PairVerdict::Decided(o) => Some(o),
            PairVerdict::Disputed => None,
        })
    };
    let ratio = |hits: usize, total: usize| (total > 0).then(|| hits as f64 / total as f64);
    let mut out = Vec::new();
    for annotator in store.annotators()? {
        let mine: Vec<&JudgmentFacts> = facts.iter().filter(|j| j.annotator_id == annotator.id).collect();
        if mine.is_empty() && annotator.role == "system" {
            continue;
        }
        let mut seconds: Vec<f64> = mine.iter().filter_map(|j| j.seconds).collect();
        seconds.sort_by(f64::total_cmp);
        let decisive: Vec<&&JudgmentFacts> =
            mine.iter().filter(|j| matches!(j.outcome, Outcome::A | Outcome::B) && j.shown_left.is_some()).collect();
        let chose_left = decisive
            .iter()
            .filter(|j| j.shown_left.as_deref() == Some(if j.outcome == Outcome::A { "a" } else { "b" }))
            .count();
        let on_gold: Vec<(String, bool)> = mine
            .iter()
            .filter_map(|j| gold.get(&(j.response_a, j.response_b)).map(|g| (j.week.clone(), *g == j.outcome)))
            .collect();
        let mut weeks: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for (week, hit) in &on_gold {
            let entry = weeks.entry(week.clone()).or_default();
            entry.0 += 1;
            entry.1 += *hit as usize;
        }
        let gold_by_week = weeks.into_iter().map(|(w, (n, hits))| (w, n, hits as f64 / n as f64)).collect();
        let shared: Vec<bool> = mine
            .iter()
            .filter(|j| votes.get(&(j.response_a, j.response_b)).is_some_and(|v| v.len() > 1))
            .filter_map(|j| resolved((j.response_a, j.response_b)).map(|r| r == j.outcome))
            .collect();
        let count = |o: Outcome| mine.iter().filter(|j| j.outcome == o).count();
        out.push(AnnotatorReport {
            name: annotator.name,
            role: annotator.role,
            judgments: mine.len(),
            median_seconds: (!seconds.is_empty()).then(|| seconds[seconds.len() / 2]),
            left_rate: ratio(chose_left, decisive.len()),
            tie_rate: ratio(count(Outcome::Tie), mine.len()),
            both_bad_rate: ratio(count(Outcome::BothBad), mine.len()),
            gold_items: on_gold.len(),
            gold_accuracy: ratio(on_gold.iter().filter(|(_, hit)| *hit).count(), on_gold.len()),
            gold_by_week,
            resolved_items: shared.len(),
            agreement_with_resolved: ratio(shared.iter().filter(|x| **x).count(), shared.len()),
        });
    }
    Ok(out)
}
