//! What the model-comparing screens (`screens::diff`, `screens::blind`) share: the worker
//! that generates missing answers (and implicit rewards) on a thread, and two models'
//! answers to the review prompts, read from the store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, channel};

use crate::jobs::answers::{self, AnswersEvent, AnswersJob, DEFAULT_MAX_NEW_TOKENS, DEFAULT_SEED};
use crate::jobs::rewards::{AnswerRewards, RewardJob};
use crate::store::Store;

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
        self.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
