//! Comparing models in the TUI: base and tuned answers side by side with their differences
//! and implicit rewards, blind judging of two models (win rate with a Wilson interval) and
//! of several (an arena ranked by Bradley-Terry). Missing answers are generated on a thread.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::Instant;

use crate::domain::{Outcome, sha256_hex};
use crate::jobs::answers::{self, AnswersEvent, AnswersJob, DEFAULT_MAX_NEW_TOKENS, DEFAULT_SEED};
use crate::jobs::rewards::{AnswerRewards, RewardJob};
use crate::qa::winrate::WinRateReport;
use crate::store::{NewEvalVote, Store};

/// How many test prompts the review screens answer and judge.
pub const REVIEW_PROMPTS: usize = 20;

/// Answers (and rewards) being made on their own thread.
pub struct Worker {
    pub cancel: Arc<AtomicBool>,
    pub events: Receiver<WorkerMessage>,
    pub missing: usize,
    pub done: usize,
    pub phase: String,
}

pub enum WorkerMessage {
    Answers(AnswersEvent),
    Rewards(Vec<AnswerRewards>),
    Finished(Result<(), String>),
}

impl Worker {
    /// Generates the models' missing answers to `prompts`, then, for a (base, tuned) run,
    /// scores every answer's implicit reward.
    pub fn start(db: PathBuf, models: Vec<i64>, prompts: Vec<i64>, rewards_of_run: Option<i64>) -> Worker {
        let (sender, receiver) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        std::thread::spawn(move || {
            let result = (|| -> anyhow::Result<()> {
                let job = AnswersJob {
                    db: db.clone(),
                    models,
                    prompts: prompts.clone(),
                    params: answers::answer_params(DEFAULT_SEED, DEFAULT_MAX_NEW_TOKENS),
                    load: answers::answer_load_options(Default::default(), None),
                };
                let events = sender.clone();
                answers::run(&job, &stop, &mut |e| {
                    let _ = events.send(WorkerMessage::Answers(e));
                })?;
                if let Some(run_id) = rewards_of_run {
                    let mut job = RewardJob::for_run(&db, run_id, DEFAULT_SEED)?;
                    job.prompts = prompts;
                    if let Some(rewards) = crate::jobs::rewards::implicit_rewards(&job, &stop, &mut |_| {})? {
                        let _ = sender.send(WorkerMessage::Rewards(rewards));
                    }
                }
                Ok(())
            })();
            let _ = sender.send(WorkerMessage::Finished(result.map_err(|e| format!("{e:#}"))));
        });
        Worker { cancel, events: receiver, missing: 0, done: 0, phase: "loading the model".into() }
    }
}

/// One prompt's answers from two models.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerPair {
    pub prompt_id: i64,
    pub prompt: String,
    pub language: String,
    /// (model id, response id, text) of each side, in model order (A, B).
    pub a: Option<(i64, i64, String)>,
    pub b: Option<(i64, i64, String)>,
}

/// Base vs tuned answers, prompt by prompt.
pub struct DiffView {
    /// The run whose base and tuned model are compared (with implicit rewards); None for any
    /// two models.
    pub run_id: Option<i64>,
    pub base: i64,
    pub tuned: i64,
    pub pairs: Vec<AnswerPair>,
    pub index: usize,
    pub scroll: u16,
    pub rewards: HashMap<i64, AnswerRewards>,
    pub worker: Option<Worker>,
}

/// Blind judging: each pair of answers shown in a random order the annotator never learns.
pub struct BlindView {
    /// The run whose tuned model (A) is judged against its base (B); None in the arena.
    pub run_id: Option<i64>,
    pub models: Vec<(i64, String)>,
    /// The pairs still to judge: (prompt, model A, model B).
    pub todo: Vec<(i64, i64, i64)>,
    pub current: Option<BlindPair>,
    pub judged: usize,
    pub identical: usize,
    pub report: Option<WinRateReport>,
    /// The arena's ranking text (several models).
    pub ranking: Option<String>,
    pub worker: Option<Worker>,
    pub scroll: u16,
    prompts: Vec<i64>,
}

/// The pair on screen, and which model is on the left (recorded with the vote).
#[derive(Debug, Clone, PartialEq)]
pub struct BlindPair {
    pub pair: AnswerPair,
    pub a_on_left: bool,
    pub shown_at: Instant,
}

impl BlindPair {
    /// (left text, right text).
    pub fn sides(&self) -> (&str, &str) {
        let a = self.pair.a.as_ref().map(|x| x.2.as_str()).unwrap_or("");
        let b = self.pair.b.as_ref().map(|x| x.2.as_str()).unwrap_or("");
        if self.a_on_left { (a, b) } else { (b, a) }
    }
}

fn prompt_text(store: &Store, prompt_id: i64) -> anyhow::Result<String> {
    Ok(store
        .prompt_messages(prompt_id)?
        .iter()
        .map(|m| format!("{}: {}", m.role, m.content))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Both models' answers to each prompt (None where one is missing).
fn answer_pairs(store: &Store, a: i64, b: i64, prompts: &[i64]) -> anyhow::Result<Vec<AnswerPair>> {
    let languages: HashMap<i64, String> = store.prompts()?.into_iter().map(|p| (p.id, p.language)).collect();
    let mut ids = Vec::new();
    let mut found = Vec::new();
    for &prompt_id in prompts {
        let ra = store.model_answer(a, prompt_id, DEFAULT_SEED)?;
        let rb = store.model_answer(b, prompt_id, DEFAULT_SEED)?;
        ids.extend(ra.into_iter().chain(rb));
        found.push((prompt_id, ra, rb));
    }
    let texts = store.response_texts(&ids)?;
    let mut out = Vec::new();
    for (prompt_id, ra, rb) in found {
        out.push(AnswerPair {
            prompt_id,
            prompt: prompt_text(store, prompt_id)?,
            language: languages.get(&prompt_id).cloned().unwrap_or_default(),
            a: ra.map(|r| (a, r, texts.get(&r).cloned().unwrap_or_default())),
            b: rb.map(|r| (b, r, texts.get(&r).cloned().unwrap_or_default())),
        });
    }
    Ok(out)
}

/// Drains a worker; returns (changed, finished message, rewards).
fn drain(worker: &mut Worker) -> (bool, Option<Result<(), String>>, Option<Vec<AnswerRewards>>) {
    let (mut changed, mut finished, mut rewards) = (false, None, None);
    while let Ok(message) = worker.events.try_recv() {
        changed = true;
        match message {
            WorkerMessage::Answers(AnswersEvent::Planned { missing, .. }) => worker.missing = missing,
            WorkerMessage::Answers(AnswersEvent::ModelStarted { name, missing, .. }) => {
                worker.phase = format!("answering with {name} ({missing} to go)")
            }
            WorkerMessage::Answers(AnswersEvent::Answered { .. } | AnswersEvent::Failed { .. }) => worker.done += 1,
            WorkerMessage::Answers(AnswersEvent::Progress { .. }) => changed = false,
            WorkerMessage::Rewards(r) => rewards = Some(r),
            WorkerMessage::Finished(result) => finished = Some(result),
        }
        if worker.done >= worker.missing && worker.missing > 0 {
            worker.phase = "scoring implicit rewards".into();
        }
    }
    (changed, finished, rewards)
}

impl DiffView {
    pub fn open(store: &Store, run_id: i64) -> anyhow::Result<DiffView> {
        let (base, tuned) = answers::run_models(store, run_id)?;
        let prompts = answers::evaluation_prompts(store, Some(REVIEW_PROMPTS))?;
        let pairs = answer_pairs(store, base, tuned, &prompts)?;
        let worker = Some(Worker::start(store.path().to_path_buf(), vec![base, tuned], prompts, Some(run_id)));
        Ok(DiffView { run_id: Some(run_id), base, tuned, pairs, index: 0, scroll: 0, rewards: HashMap::new(), worker })
    }

    /// Any two models from the `models` table: `old` on the left, `new` on the right.
    pub fn between(store: &Store, old: i64, new: i64) -> anyhow::Result<DiffView> {
        let prompts = answers::evaluation_prompts(store, Some(REVIEW_PROMPTS))?;
        let pairs = answer_pairs(store, old, new, &prompts)?;
        let worker = Some(Worker::start(store.path().to_path_buf(), vec![old, new], prompts, None));
        Ok(DiffView {
            run_id: None,
            base: old,
            tuned: new,
            pairs,
            index: 0,
            scroll: 0,
            rewards: HashMap::new(),
            worker,
        })
    }

    /// Picks up answers and rewards as the worker stores them; a message when it ends.
    pub fn poll(&mut self, store: &Store) -> anyhow::Result<Option<String>> {
        let Some(worker) = &mut self.worker else { return Ok(None) };
        let (changed, finished, rewards) = drain(worker);
        if let Some(rewards) = rewards {
            self.rewards = rewards.into_iter().map(|r| (r.prompt_id, r)).collect();
        }
        if changed {
            let prompts: Vec<i64> = self.pairs.iter().map(|p| p.prompt_id).collect();
            self.pairs = answer_pairs(store, self.base, self.tuned, &prompts)?;
        }
        Ok(finished.map(|result| {
            self.worker = None;
            match result {
                Ok(()) => "answers and implicit rewards are ready".to_string(),
                Err(e) => format!("error: {e}"),
            }
        }))
    }
}

/// Which side model A is shown on: random per (annotator, prompt, models), stable.
fn a_on_left(annotator: &str, prompt_id: i64, a: i64, b: i64) -> bool {
    let key = sha256_hex(&["blind", annotator, &prompt_id.to_string(), &a.min(b).to_string(), &a.max(b).to_string()]);
    key.as_bytes()[0] % 2 == 0
}

impl BlindView {
    /// Blind evaluation of a run: its tuned model (A) against its base (B).
    pub fn for_run(store: &Store, run_id: i64, annotator: &str, annotator_id: i64) -> anyhow::Result<BlindView> {
        let (base, tuned) = answers::run_models(store, run_id)?;
        let prompts = answers::evaluation_prompts(store, Some(REVIEW_PROMPTS))?;
        let names: HashMap<i64, String> = store.models()?.into_iter().map(|m| (m.id, m.name)).collect();
        let mut view = BlindView {
            run_id: Some(run_id),
            models: [tuned, base].iter().map(|id| (*id, names.get(id).cloned().unwrap_or_default())).collect(),
            todo: Vec::new(),
            current: None,
            judged: 0,
            identical: 0,
            report: None,
            ranking: None,
            worker: Some(Worker::start(store.path().to_path_buf(), vec![base, tuned], prompts.clone(), None)),
            scroll: 0,
            prompts,
        };
        view.reload(store, annotator, annotator_id)?;
        Ok(view)
    }

    /// The arena: every model with answers for the review seed, pairwise.
    pub fn arena(store: &Store, annotator: &str, annotator_id: i64) -> anyhow::Result<BlindView> {
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
        let prompts = answers::evaluation_prompts(store, Some(REVIEW_PROMPTS))?;
        let mut view = BlindView {
            run_id: None,
            models: with_answers.keys().map(|id| (*id, names.get(id).cloned().unwrap_or_default())).collect(),
            todo: Vec::new(),
            current: None,
            judged: 0,
            identical: 0,
            report: None,
            ranking: None,
            worker: None,
            scroll: 0,
            prompts,
        };
        view.reload(store, annotator, annotator_id)?;
        Ok(view)
    }

    /// Rebuilds what is left to judge and the results so far.
    pub fn reload(&mut self, store: &Store, annotator: &str, annotator_id: i64) -> anyhow::Result<()> {
        let ids: Vec<i64> = self.models.iter().map(|m| m.0).collect();
        let mut todo = Vec::new();
        let mut identical = 0;
        for (i, &a) in ids.iter().enumerate() {
            for &b in &ids[i + 1..] {
                let voted = store.voted_prompts(annotator_id, a, b)?;
                for &prompt_id in &self.prompts {
                    let (ra, rb) = (
                        store.model_answer(a, prompt_id, DEFAULT_SEED)?,
                        store.model_answer(b, prompt_id, DEFAULT_SEED)?,
                    );
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
        self.todo = todo;
        self.identical = identical;
        self.results(store)?;
        if self.current.is_none() {
            self.next(store, annotator)?;
        }
        Ok(())
    }

    fn next(&mut self, store: &Store, annotator: &str) -> anyhow::Result<()> {
        self.current = None;
        self.scroll = 0;
        if let Some(&(prompt_id, a, b)) = self.todo.first() {
            if let Some(pair) = answer_pairs(store, a, b, &[prompt_id])?.pop() {
                self.current = Some(BlindPair {
                    pair,
                    a_on_left: a_on_left(annotator, prompt_id, a, b),
                    shown_at: Instant::now(),
                });
            }
        }
        Ok(())
    }

    /// Skips the pair on screen for now (it comes back at the end).
    pub fn skip(&mut self, store: &Store, annotator: &str) -> anyhow::Result<()> {
        if !self.todo.is_empty() {
            let first = self.todo.remove(0);
            self.todo.push(first);
        }
        self.next(store, annotator)
    }

    /// Records a vote for the side on the left (`Outcome::A`), the right (`B`), a tie or both
    /// bad — translated to the models' order, committed before the next pair shows.
    pub fn vote(&mut self, store: &mut Store, annotator: &str, annotator_id: i64, side: Outcome) -> anyhow::Result<()> {
        let Some(current) = &self.current else { return Ok(()) };
        let (Some(a), Some(b)) = (&current.pair.a, &current.pair.b) else { return Ok(()) };
        let outcome = match (side, current.a_on_left) {
            (Outcome::A, true) | (Outcome::B, false) => Outcome::A,
            (Outcome::A, false) | (Outcome::B, true) => Outcome::B,
            (other, _) => other,
        };
        store.record_eval_vote(&NewEvalVote {
            annotator_id,
            prompt_id: current.pair.prompt_id,
            model_a: a.0,
            model_b: b.0,
            response_a: a.1,
            response_b: b.1,
            a_on_left: current.a_on_left,
            outcome,
            seconds: Some(current.shown_at.elapsed().as_secs_f64()),
        })?;
        self.judged += 1;
        self.todo.retain(|&(p, x, y)| !(p == current.pair.prompt_id && x == a.0 && y == b.0));
        self.results(store)?;
        self.next(store, annotator)
    }

    /// The win rate of the tuned model over the base (stored in `evals` after each vote), or
    /// the arena's ranking: both from `report::review`, as `verdict eval report|arena` print.
    fn results(&mut self, store: &Store) -> anyhow::Result<()> {
        use crate::report::review;
        if let Some(run_id) = self.run_id {
            let report = review::run_report(store, run_id)?;
            review::save_run_report(store, &report)?;
            self.report = Some(report.win_rate);
        } else {
            self.ranking = Some(match review::arena(store) {
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

    pub fn poll(&mut self, store: &Store, annotator: &str, annotator_id: i64) -> anyhow::Result<Option<String>> {
        let Some(worker) = &mut self.worker else { return Ok(None) };
        let (changed, finished, _) = drain(worker);
        if changed {
            self.reload(store, annotator, annotator_id)?;
        }
        Ok(finished.map(|result| {
            self.worker = None;
            match result {
                Ok(()) => "all answers are ready".to_string(),
                Err(e) => format!("error: {e}"),
            }
        }))
    }

    pub fn stop_worker(&self) {
        if let Some(w) = &self.worker {
            w.cancel.store(true, Ordering::SeqCst);
        }
    }
}

impl DiffView {
    pub fn stop_worker(&self) {
        if let Some(w) = &self.worker {
            w.cancel.store(true, Ordering::SeqCst);
        }
    }
}
