//! Phase 1, prepare the examples: the run's training set (stored at its start, so a resume
//! sees exactly the same pairs and weights), split into train and test and tokenized with the
//! base model's tokenizer and template (TRL's rule, `train::tokenize`).

use std::collections::HashMap;

use anyhow::{Context, bail};

use crate::domain::Split;
use crate::model::{self, ChatMessage};
use crate::store::{RunAnswer, RunExample, Store};
use crate::train::step::PairIds;
use crate::train::tokenize;

use super::TrainConfig;

/// A resolved pair ready to tokenize.
struct Example {
    key: String,
    prompt_id: i64,
    chosen_id: i64,
    rejected_id: i64,
    messages: Vec<ChatMessage>,
    chosen: String,
    rejected: String,
    weight: f32,
    split: Split,
}

/// One split's pairs, tokenized.
pub(super) struct Tokenized {
    /// `chosen_id:rejected_id`, the pair's key in the reference log-prob cache.
    pub keys: Vec<String>,
    pub ids: Vec<PairIds>,
}

/// What the rest of the run trains and evaluates on.
pub(super) struct Prepared {
    pub train: Tokenized,
    pub test: Tokenized,
    /// Train pairs longer than `max_length` (prompt plus the longer answer).
    pub truncated: usize,
    /// The fixed prompts whose answers are generated at every evaluation: the first
    /// test-split prompts (train prompts when there is no test split), one per prompt.
    pub sample_prompts: Vec<(i64, Vec<ChatMessage>)>,
}

/// The run's examples, tokenized by `tokenizer` (the base model as the inference loader reads
/// it). Fails when the train split is empty.
pub(super) fn prepare(
    store: &Store,
    run_id: i64,
    config: &TrainConfig,
    tokenizer: &model::Model,
) -> anyhow::Result<Prepared> {
    // Resumed: exactly the pairs, outcomes and weights the run started with.
    let all = run_set(store, run_id, config)?;
    let (train_set, test_set): (Vec<&Example>, Vec<&Example>) = all.iter().partition(|e| e.split == Split::Train);
    if train_set.is_empty() {
        bail!("no resolved pairs in the train split: label some pairs (or `verdict import` them) first");
    }
    let tokenize_all = |set: &[&Example]| -> anyhow::Result<Tokenized> {
        let ids = set
            .iter()
            .map(|e| Ok(tokenize::pair_ids(tokenizer, &e.messages, &e.chosen, &e.rejected, e.weight)?))
            .collect::<anyhow::Result<Vec<PairIds>>>()?;
        Ok(Tokenized { keys: set.iter().map(|e| e.key.clone()).collect(), ids })
    };
    let train = tokenize_all(&train_set)?;
    let test = tokenize_all(&test_set)?;
    let truncated =
        train.ids.iter().filter(|p| p.prompt.len() + p.chosen.len().max(p.rejected.len()) > config.max_length).count();
    let mut sample_prompts: Vec<(i64, Vec<ChatMessage>)> = Vec::new();
    for e in test_set.iter().chain(train_set.iter()) {
        if sample_prompts.len() < config.sample_prompts && !sample_prompts.iter().any(|(id, _)| *id == e.prompt_id) {
            sample_prompts.push((e.prompt_id, e.messages.clone()));
        }
    }
    Ok(Prepared { train, test, truncated, sample_prompts })
}

fn examples(store: &Store, by_agreement: bool) -> anyhow::Result<Vec<Example>> {
    let pairs = crate::qa::resolved_pairs(store)?;
    let prompts: HashMap<i64, crate::store::PromptRow> = store.prompts()?.into_iter().map(|p| (p.id, p)).collect();
    let ids: Vec<i64> = pairs.iter().flat_map(|p| [p.chosen, p.rejected]).collect();
    let texts = store.response_texts(&ids)?;
    let mut out: Vec<Example> = pairs
        .iter()
        .map(|p| {
            let prompt = &prompts[&p.prompt_id];
            // A pair three people agreed on counts more than a contested or single one:
            // agreeing votes minus dissenting ones, at least a half, then normalized below to
            // mean 1, so a pair of weight 2 moves the model as much as the pair seen twice.
            let weight = if by_agreement { (p.agreeing as f32 - (p.votes - p.agreeing) as f32).max(0.5) } else { 1.0 };
            Example {
                key: format!("{}:{}", p.chosen, p.rejected),
                prompt_id: p.prompt_id,
                chosen_id: p.chosen,
                rejected_id: p.rejected,
                messages: prompt.messages.iter().map(|m| ChatMessage::new(&m.role, &m.content)).collect(),
                chosen: texts[&p.chosen].clone(),
                rejected: texts[&p.rejected].clone(),
                weight,
                split: prompt.split,
            }
        })
        .collect();
    let mean = out.iter().map(|e| e.weight).sum::<f32>() / out.len().max(1) as f32;
    for e in &mut out {
        e.weight /= mean.max(1e-6);
    }
    Ok(out)
}

/// The training set a run stored at its start (`store::run_examples`), with today's texts of
/// those same responses (responses are never edited; a rewrite is a new response).
fn stored_examples(store: &Store, stored: &[RunExample]) -> anyhow::Result<Vec<Example>> {
    let prompts: HashMap<i64, crate::store::PromptRow> = store.prompts()?.into_iter().map(|p| (p.id, p)).collect();
    let ids: Vec<i64> = stored.iter().flat_map(|e| [Some(e.answer_id), e.rejected_id()]).flatten().collect();
    let texts = store.response_texts(&ids)?;
    stored
        .iter()
        .map(|e| {
            let prompt =
                prompts.get(&e.prompt_id).with_context(|| format!("the run's prompt {} is gone", e.prompt_id))?;
            let text = |id: i64| texts.get(&id).cloned().with_context(|| format!("the run's response {id} is gone"));
            let rejected_id = e.rejected_id().context("the run's stored set is not pairs")?;
            Ok(Example {
                key: format!("{}:{}", e.answer_id, rejected_id),
                prompt_id: e.prompt_id,
                chosen_id: e.answer_id,
                rejected_id,
                messages: prompt.messages.iter().map(|m| ChatMessage::new(&m.role, &m.content)).collect(),
                chosen: text(e.answer_id)?,
                rejected: text(rejected_id)?,
                weight: e.weight as f32,
                split: e.split,
            })
        })
        .collect()
}

/// The run's training set: the one stored at its start, else (a new run, or one started before
/// schema 5) the resolved pairs of now, stored for every later resume with its content hash and
/// label counts (`qa::run_set`).
fn run_set(store: &Store, run_id: i64, config: &TrainConfig) -> anyhow::Result<Vec<Example>> {
    let stored = store.run_examples(run_id)?;
    if !stored.is_empty() {
        if store.run_set(run_id)?.is_none() {
            // Stored before schema 7: its hash is known now, the counts it came from are not.
            store.save_run_set(run_id, &crate::qa::run_set::describe(store, &config.method, &stored, None)?)?;
        }
        return stored_examples(store, &stored);
    }
    let fresh = examples(store, config.weight_by_agreement)?;
    let rows: Vec<RunExample> = fresh
        .iter()
        .map(|e| RunExample {
            prompt_id: e.prompt_id,
            answer_id: e.chosen_id,
            kind: RunAnswer::Pair { rejected_id: e.rejected_id },
            split: e.split,
            weight: f64::from(e.weight),
        })
        .collect();
    let method = crate::qa::compile::Method::parse(&config.method).unwrap_or(crate::qa::compile::Method::Dpo);
    let compiled = crate::qa::compile::compile_store(store, method)?;
    let set = crate::qa::run_set::describe(store, &config.method, &rows, Some(&compiled))?;
    store.save_run_examples(run_id, &rows, &set)?;
    Ok(fresh)
}
