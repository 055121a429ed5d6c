//! The implicit reward DPO gives an answer: r(x, y) = β (log π_tuned(y|x) − log π_base(y|x)),
//! with the log-probs summed over the response tokens exactly as the trainer computes them
//! (TRL's tokenization, `train::tokenize::pair_ids`; truncation and the summed log-probs,
//! `train::step::reference_logps`). For each prompt both the base model's and the tuned
//! model's answer are scored, so the diff screen can show which answer the tuned model now
//! prefers. Takes seconds per prompt on a CPU: call it off the UI thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use candle_core::DType;
use serde::Serialize;

use crate::jobs::train::TrainConfig;
use crate::model::{ChatMessage, DeviceChoice, LoadOptions};
use crate::store::{OpenMode, Store};
use crate::train::load::{Weights, load};
use crate::train::logps::Truncation;
use crate::train::precision::Precision;
use crate::train::step::{PairIds, RefLogps, reference_logps};

/// Which rewards to compute.
#[derive(Debug, Clone)]
pub struct RewardJob {
    pub db: PathBuf,
    pub base: i64,
    pub tuned: i64,
    /// Only these prompts; empty: every prompt both models have an answer to for `seed`.
    pub prompts: Vec<i64>,
    pub seed: u64,
    pub beta: f64,
    /// The trainer's `max_length`: tokens past it do not count, as in training.
    pub max_length: usize,
    pub device: DeviceChoice,
    pub threads: Option<usize>,
}

impl RewardJob {
    /// The rewards of a run's output model against its base, with the run's β, max length,
    /// device and threads.
    pub fn for_run(db: &Path, run_id: i64, seed: u64) -> anyhow::Result<RewardJob> {
        let store = Store::open(db, OpenMode::MustExist)?;
        let (base, tuned) = store.run_models(run_id)?;
        let row = store.run(run_id)?.with_context(|| format!("no run {run_id}"))?;
        let config: TrainConfig = crate::store::json::parse(&row.config, "runs", run_id, "config")?;
        Ok(RewardJob {
            db: db.to_path_buf(),
            base,
            tuned,
            prompts: Vec::new(),
            seed,
            beta: config.beta,
            max_length: config.max_length,
            device: config.device.parse().unwrap_or_default(),
            threads: config.threads,
        })
    }
}

/// The implicit rewards of both models' answers to one prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnswerRewards {
    pub prompt_id: i64,
    pub base_response: i64,
    pub tuned_response: i64,
    /// β (log π_tuned − log π_base) of the base model's answer.
    pub base_answer: f64,
    /// The same for the tuned model's answer; above `base_answer` when training moved the
    /// tuned model towards its own answer.
    pub tuned_answer: f64,
}

/// Progress: `done` of `total` answer pairs scored under the model being run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RewardEvent {
    Scoring { model_id: i64, done: usize, total: usize },
}

/// Pairs scored per forward pass; the cancel flag is checked between them.
const CHUNK: usize = 4;

/// Computes the rewards for every prompt both models answered; `None` when cancelled.
pub fn implicit_rewards(
    job: &RewardJob,
    cancel: &AtomicBool,
    events: &mut dyn FnMut(RewardEvent),
) -> anyhow::Result<Option<Vec<AnswerRewards>>> {
    let store = Store::open(&job.db, OpenMode::MustExist)?;
    let base_answers: HashMap<i64, i64> = store.model_answers(job.base, job.seed)?.into_iter().collect();
    let tuned_answers: HashMap<i64, i64> = store.model_answers(job.tuned, job.seed)?.into_iter().collect();
    let wanted = |id: &i64| job.prompts.is_empty() || job.prompts.contains(id);
    let mut rows: Vec<AnswerRewards> = base_answers
        .iter()
        .filter(|(p, _)| wanted(p))
        .filter_map(|(&prompt_id, &base_response)| {
            tuned_answers.get(&prompt_id).map(|&tuned_response| AnswerRewards {
                prompt_id,
                base_response,
                tuned_response,
                base_answer: 0.0,
                tuned_answer: 0.0,
            })
        })
        .collect();
    rows.sort_by_key(|r| r.prompt_id);
    if rows.is_empty() {
        return Ok(Some(rows));
    }
    let texts =
        store.response_texts(&rows.iter().flat_map(|r| [r.base_response, r.tuned_response]).collect::<Vec<_>>())?;
    let prompts: HashMap<i64, _> = store.prompts()?.into_iter().map(|p| (p.id, p)).collect();
    let base_path = store.model_path(job.base)?;
    let tuned_path = store.model_path(job.tuned)?;

    // The trainer tokenizes with the base model's tokenizer and template: so does this.
    let (pairs, pad_id) = {
        let opts = LoadOptions { device: job.device, threads: job.threads, dequantize: false, requantize: false };
        let tokenizer = crate::model::Model::load(&base_path, &opts)?;
        let pairs = rows
            .iter()
            .map(|r| {
                let messages: Vec<ChatMessage> =
                    prompts[&r.prompt_id].messages.iter().map(|m| ChatMessage::new(&m.role, &m.content)).collect();
                // `chosen` = the base model's answer, `rejected` = the tuned model's: the names
                // only say which slot, nothing is preferred here.
                Ok(crate::train::tokenize::pair_ids(
                    &tokenizer,
                    &messages,
                    &texts[&r.base_response],
                    &texts[&r.tuned_response],
                    1.0,
                )?)
            })
            .collect::<anyhow::Result<Vec<PairIds>>>()?;
        (pairs, tokenizer.info().special_tokens.stop_ids.first().copied().unwrap_or(0))
    };
    let truncation = Truncation { max_length: job.max_length, keep_end: false };
    let device = job.device.device()?;
    // One model in memory at a time: the tuned one, then the base.
    let mut score = |model_id: i64, path: &Path| -> anyhow::Result<Option<Vec<RefLogps>>> {
        let net = load(path, &device, Weights::Frozen, Precision::uniform(DType::F32))?;
        let mut out = Vec::with_capacity(pairs.len());
        for chunk in pairs.chunks(CHUNK) {
            if cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            out.extend(reference_logps(&net, chunk, &truncation, pad_id, CHUNK)?);
            events(RewardEvent::Scoring { model_id, done: out.len(), total: pairs.len() });
        }
        Ok(Some(out))
    };
    let Some(tuned) = score(job.tuned, &tuned_path)? else { return Ok(None) };
    let Some(base) = score(job.base, &base_path)? else { return Ok(None) };
    for ((row, t), b) in rows.iter_mut().zip(&tuned).zip(&base) {
        row.base_answer = job.beta * (t.chosen as f64 - b.chosen as f64);
        // The same text twice (the models answered alike) is one answer: one reward, not two
        // that differ in the last float bits of their packing.
        row.tuned_answer = if row.tuned_response == row.base_response {
            row.base_answer
        } else {
            job.beta * (t.rejected as f64 - b.rejected as f64)
        };
    }
    Ok(Some(rows))
}
