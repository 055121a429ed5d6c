//! What the model-comparing screens (`screens::diff`, `screens::blind`) share: the worker
//! that generates missing answers (and implicit rewards) on a thread, and two models'
//! answers to the review prompts, read from the store.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::jobs::answers::{self, AnswersEvent, AnswersJob, DEFAULT_MAX_NEW_TOKENS, DEFAULT_SEED};
use crate::jobs::rewards::{AnswerRewards, RewardJob};
use crate::jobs::{Job, Update, spawn};
use crate::store::Store;

/// How many test prompts the review screens answer and judge.
pub const REVIEW_PROMPTS: usize = 20;

/// Answers (and rewards) being made on their own thread.
pub struct Worker {
    pub work: Job<WorkerMessage, ()>,
    pub missing: usize,
    pub done: usize,
    pub phase: String,
}

pub enum WorkerMessage {
    Answers(AnswersEvent),
    Rewards(Vec<AnswerRewards>),
}

impl Worker {
    /// Generates the models' missing answers to `prompts`, then, for a (base, tuned) run,
    /// scores every answer's implicit reward.
    pub fn start(db: PathBuf, models: Vec<i64>, prompts: Vec<i64>, rewards_of_run: Option<i64>) -> Worker {
        let work = spawn("answers", move |cancel, events| {
            let job = AnswersJob {
                db: db.clone(),
                models,
                prompts: prompts.clone(),
                params: answers::answer_params(DEFAULT_SEED, DEFAULT_MAX_NEW_TOKENS),
                load: answers::answer_load_options(Default::default(), None),
                batch_rows: None,
            };
            answers::run(&job, cancel, &mut |e| events(WorkerMessage::Answers(e)))?;
            if let Some(run_id) = rewards_of_run {
                let mut job = RewardJob::for_run(&db, run_id, DEFAULT_SEED)?;
                job.prompts = prompts;
                if let Some(rewards) = crate::jobs::rewards::implicit_rewards(&job, cancel, &mut |_| {})? {
                    events(WorkerMessage::Rewards(rewards));
                }
            }
            Ok(())
        });
        Worker { work, missing: 0, done: 0, phase: "loading the model".into() }
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

pub fn prompt_text(store: &Store, prompt_id: i64) -> anyhow::Result<String> {
    Ok(store
        .prompt_messages(prompt_id)?
        .iter()
        .map(|m| format!("{}: {}", m.role, m.content))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Both models' answers to each prompt (None where one is missing).
pub fn answer_pairs(store: &Store, a: i64, b: i64, prompts: &[i64]) -> anyhow::Result<Vec<AnswerPair>> {
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
pub fn drain(worker: &mut Worker) -> (bool, Option<Result<(), String>>, Option<Vec<AnswerRewards>>) {
    let (mut changed, mut finished, mut rewards) = (false, None, None);
    while let Some(update) = worker.work.try_next() {
        changed = true;
        match update {
            Update::Event(WorkerMessage::Answers(AnswersEvent::Planned { missing, .. })) => worker.missing = missing,
            Update::Event(WorkerMessage::Answers(AnswersEvent::ModelStarted { name, missing, .. })) => {
                worker.phase = format!("answering with {name} ({missing} to go)")
            }
            Update::Event(WorkerMessage::Answers(AnswersEvent::Answered { .. } | AnswersEvent::Failed { .. })) => {
                worker.done += 1
            }
            Update::Event(WorkerMessage::Answers(AnswersEvent::Progress { .. })) => changed = false,
            Update::Event(WorkerMessage::Rewards(r)) => rewards = Some(r),
            Update::Finished(result) => finished = Some(result.map_err(|e| format!("{e:#}"))),
        }
        if worker.done >= worker.missing && worker.missing > 0 {
            worker.phase = "scoring implicit rewards".into();
        }
    }
    (changed, finished, rewards)
}

/// The worker's progress for a screen's title: " · phase done/missing ".
pub fn worker_line(worker: Option<&Worker>) -> String {
    match worker {
        Some(w) if w.missing > 0 => format!(" · {} {}/{} ", w.phase, w.done.min(w.missing), w.missing),
        Some(w) => format!(" · {} ", w.phase),
        None => String::new(),
    }
}

impl Worker {
    /// Asks the thread to stop at its next safe point.
    pub fn stop(&self) {
        self.work.cancel();
    }
}
