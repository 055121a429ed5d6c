//! What `App` reads from the store for the screens that compare models and show a run's
//! answers: the diff's answer pairs, the blind evaluation's pairs left to judge and its results
//! (the win rate it stores after each vote, or the arena's ranking), and a run's sample
//! answers. The screens keep only what these functions hand them.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::domain::sha256_hex;
use crate::jobs::answers::DEFAULT_SEED;
use crate::store::{RunSample, Store};
use crate::tui::judge::{REVIEW_PROMPTS, Worker, answer_pairs, prompt_text};
use crate::tui::screens::Screen;
use crate::tui::screens::blind::{BlindPair, BlindView, a_on_left};
use crate::tui::screens::diff::DiffView;
use crate::tui::screens::samples::SamplesView;

/// A run's base against its tuned model, with a worker making the missing answers and the
/// implicit rewards.
pub fn open_diff(store: &Store, run_id: i64) -> anyhow::Result<DiffView> {
    let (base, tuned) = store.run_models(run_id)?;
    let prompts = store.evaluation_prompts(Some(REVIEW_PROMPTS))?;
    let pairs = answer_pairs(store, base, tuned, &prompts)?;
    let worker = Worker::start(store.path().to_path_buf(), vec![base, tuned], prompts, Some(run_id));
    Ok(DiffView::new(Some(run_id), base, tuned, pairs, Some(worker)))
}

/// Any two models from the `models` table: `old` on the left, `new` on the right.
pub fn open_between(store: &Store, old: i64, new: i64) -> anyhow::Result<DiffView> {
    let prompts = store.evaluation_prompts(Some(REVIEW_PROMPTS))?;
    let pairs = answer_pairs(store, old, new, &prompts)?;
    let worker = Worker::start(store.path().to_path_buf(), vec![old, new], prompts, None);
    Ok(DiffView::new(None, old, new, pairs, Some(worker)))
}

/// Blind evaluation of a run: its tuned model (A) against its base (B).
pub fn open_blind(store: &Store, run_id: i64, annotator: &str, annotator_id: i64) -> anyhow::Result<BlindView> {
    let (base, tuned) = store.run_models(run_id)?;
    let prompts = store.evaluation_prompts(Some(REVIEW_PROMPTS))?;
    let names: HashMap<i64, String> = store.models()?.into_iter().map(|m| (m.id, m.name)).collect();
    let models = [tuned, base].iter().map(|id| (*id, names.get(id).cloned().unwrap_or_default())).collect();
    let worker = Worker::start(store.path().to_path_buf(), vec![base, tuned], prompts.clone(), None);
    let mut view = BlindView::new(Some(run_id), models, prompts, Some(worker));
    reload_blind(store, &mut view, annotator, annotator_id)?;
    Ok(view)
}

/// The arena: every model with answers for the review seed, pairwise.
pub fn open_arena(store: &Store, annotator: &str, annotator_id: i64) -> anyhow::Result<BlindView> {
    let mut with_answers: BTreeMap<i64, usize> = BTreeMap::new();
    for model in store.models()? {
        let n = store.model_answers(model.id, DEFAULT_SEED)?.len();
        if n > 0 {
            with_answers.insert(model.id, n);
        }
    }
    if with_answers.len() < 2 {
        anyhow::bail!(
            "the arena needs answers from at least two models: open a finished run's diff (d) or blind \
             evaluation (e), or run `verdict eval answers --models A,B,C`"
        );
    }
    let names: HashMap<i64, String> = store.models()?.into_iter().map(|m| (m.id, m.name)).collect();
    let prompts = store.evaluation_prompts(Some(REVIEW_PROMPTS))?;
    let models = with_answers.keys().map(|id| (*id, names.get(id).cloned().unwrap_or_default())).collect();
    let mut view = BlindView::new(None, models, prompts, None);
    reload_blind(store, &mut view, annotator, annotator_id)?;
    Ok(view)
}

/// Rebuilds what is left to judge and the results so far.
pub fn reload_blind(store: &Store, view: &mut BlindView, annotator: &str, annotator_id: i64) -> anyhow::Result<()> {
    let ids: Vec<i64> = view.models.iter().map(|m| m.0).collect();
    let mut todo = Vec::new();
    let mut identical = 0;
    for (i, &a) in ids.iter().enumerate() {
        for &b in &ids[i + 1..] {
            let voted = store.voted_prompts(annotator_id, a, b)?;
            for &prompt_id in &view.prompts {
                let (ra, rb) =
                    (store.model_answer(a, prompt_id, DEFAULT_SEED)?, store.model_answer(b, prompt_id, DEFAULT_SEED)?);
                match (ra, rb) {
                    (Some(x), Some(y)) if x == y => identical += 1,
                    (Some(_), Some(_)) if !voted.contains(&prompt_id) => todo.push((prompt_id, a, b)),
                    _ => {}
                }
            }
        }
    }
    // Interleave the model pairs so an arena session covers every pair early.
    todo.sort_by_key(|(p, a, b)| {
        sha256_hex(&["arena-order", annotator, &p.to_string(), &a.to_string(), &b.to_string()])
    });
    view.todo = todo;
    view.identical = identical;
    blind_results(store, view)?;
    if view.current.is_none() {
        next_blind_pair(store, view, annotator)?;
    }
    Ok(())
}

/// After a vote or a skip: the results so far and the next pair.
pub fn refresh_blind(store: &Store, view: &mut BlindView, annotator: &str) -> anyhow::Result<()> {
    blind_results(store, view)?;
    next_blind_pair(store, view, annotator)
}

fn next_blind_pair(store: &Store, view: &mut BlindView, annotator: &str) -> anyhow::Result<()> {
    view.current = None;
    view.scroll = 0;
    if let Some(&(prompt_id, a, b)) = view.todo.first()
        && let Some(pair) = answer_pairs(store, a, b, &[prompt_id])?.pop()
    {
        view.current =
            Some(BlindPair { pair, a_on_left: a_on_left(annotator, prompt_id, a, b), shown_at: Instant::now() });
    }
    Ok(())
}

/// The win rate of the tuned model over the base (stored in `evals` after each vote), or
/// the arena's ranking: both from `report::review`, as `verdict eval report|arena` print.
fn blind_results(store: &Store, view: &mut BlindView) -> anyhow::Result<()> {
    use crate::report::review;
    if let Some(run_id) = view.run_id {
        let report = review::run_report(store, run_id)?;
        review::save_run_report(store, &report)?;
        view.report = Some(report.win_rate);
    } else {
        view.ranking = Some(match review::arena(store) {
            Ok(None) => "no judgments yet".into(),
            Ok(Some(arena)) => arena
                .models
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    format!(
                        "{}. {}: {}  {:.0} [{:.0}, {:.0}]  {} games, {} won",
                        i + 1,
                        m.model_id,
                        m.name,
                        m.fit.rating,
                        m.fit.ci_low,
                        m.fit.ci_high,
                        m.fit.games,
                        m.fit.wins
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("{e:#}"),
        });
    }
    Ok(())
}

/// A run's answers to its fixed prompts, by prompt and evaluation step.
pub fn open_samples(store: &Store, run_id: i64) -> anyhow::Result<SamplesView> {
    let mut by_prompt: BTreeMap<i64, Vec<(i64, String)>> = BTreeMap::new();
    for RunSample { step, prompt_id, content } in store.run_samples(run_id)? {
        by_prompt.entry(prompt_id).or_default().push((step, content));
    }
    let mut prompts = Vec::new();
    for (prompt_id, steps) in by_prompt {
        prompts.push((prompt_id, prompt_text(store, prompt_id)?, steps));
    }
    Ok(SamplesView::new(run_id, prompts))
}

/// Reads again what a screen's worker stored (`Polled::reread`): the diff's pairs, the blind
/// evaluation's pairs left and results.
pub fn reread(store: &Store, screen: &mut Screen, annotator: &str, annotator_id: i64) -> anyhow::Result<()> {
    match screen {
        Screen::Diff(diff) => {
            let pairs = answer_pairs(store, diff.base, diff.tuned, &diff.prompts())?;
            diff.show_pairs(pairs);
            Ok(())
        }
        Screen::Blind(blind) => reload_blind(store, blind, annotator, annotator_id),
        _ => Ok(()),
    }
}
