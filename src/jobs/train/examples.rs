//! Phase 1, prepare the examples: the run's training set as `qa::compile` makes it for the
//! run's method (pairs, KTO's unpaired answers or SFT's answers; stored at its start, so a
//! resume sees exactly the same examples and weights), split into train and test and tokenized
//! with the base model's tokenizer and template (TRL's rule, `train::tokenize`).

use std::collections::HashMap;

use anyhow::{Context, bail};

use crate::domain::Split;
use crate::model::{self, ChatMessage};
use crate::store::{RunAnswer, RunExample, Store};
use crate::train::step::PairIds;
use crate::train::tokenize;

use super::TrainConfig;
use crate::qa::compile::{self, Compiled, Method};

/// One example of the run's set ready to tokenize: a pair (DPO, ORPO, SimPO), an unpaired
/// answer (KTO) or an answer to imitate (SFT).
struct Example {
    prompt_id: i64,
    /// The chosen answer of a pair, else the example's only answer.
    answer_id: i64,
    kind: RunAnswer,
    messages: Vec<ChatMessage>,
    answer: String,
    /// A pair's rejected answer.
    rejected: Option<String>,
    weight: f32,
    split: Split,
}

/// One split's examples, tokenized.
pub(super) struct Tokenized {
    /// `answer_id:other_id`, the example's key in the reference log-prob cache: a pair's chosen
    /// and rejected answer, or a KTO answer and its mismatched answer (the same two sequences:
    /// the prompt of the first with each answer). Empty for SFT, which has no reference.
    pub keys: Vec<String>,
    pub ids: Vec<PairIds>,
}

/// What the rest of the run trains and evaluates on.
pub(super) struct Prepared {
    pub train: Tokenized,
    pub test: Tokenized,
    /// Train examples longer than `max_length` (prompt plus the longer answer).
    pub truncated: usize,
    /// The fixed prompts whose answers are generated at every evaluation: the first
    /// test-split prompts (train prompts when there is no test split), one per prompt.
    pub sample_prompts: Vec<(i64, Vec<ChatMessage>)>,
    /// What the set was compiled from, as lines a person reads before step 1: the label
    /// counts per kind and language for the run's method (`qa::compile`).
    pub counts: Vec<String>,
}

/// The KTO row `i`'s mismatched answer for the KL estimate: the next row of the split (wrapping
/// round) that answers another prompt, fixed once per run like TRL's KL dataset (which pairs
/// each prompt with the completion of its neighbour in the batch); the row itself when every
/// row of the split answers one prompt.
fn kl_partner(set: &[&Example], i: usize) -> usize {
    (1..set.len()).map(|d| (i + d) % set.len()).find(|&j| set[j].prompt_id != set[i].prompt_id).unwrap_or(i)
}

fn tokenize_split(tokenizer: &model::Model, set: &[&Example]) -> anyhow::Result<Tokenized> {
    let mut keys = Vec::with_capacity(set.len());
    let mut ids = Vec::with_capacity(set.len());
    for (i, e) in set.iter().enumerate() {
        let (key, pair) = match e.kind {
            RunAnswer::Pair { rejected_id } => {
                let rejected = e.rejected.as_deref().unwrap_or_default();
                let pair = tokenize::pair_ids(tokenizer, &e.messages, &e.answer, rejected, e.weight)?;
                (format!("{}:{rejected_id}", e.answer_id), pair)
            }
            RunAnswer::Unpaired { desirable } => {
                let other = set[kl_partner(set, i)];
                let mut pair = tokenize::pair_ids(tokenizer, &e.messages, &e.answer, &other.answer, e.weight)?;
                pair.desirable = Some(desirable);
                (format!("{}:{}", e.answer_id, other.answer_id), pair)
            }
            RunAnswer::Imitate => (String::new(), tokenize::answer_ids(tokenizer, &e.messages, &e.answer, e.weight)?),
        };
        keys.push(key);
        ids.push(pair);
    }
    Ok(Tokenized { keys, ids })
}

/// The run's examples, tokenized by `tokenizer` (the base model as the inference loader reads
/// it). Fails when the train split is empty.
pub(super) fn prepare(
    store: &Store,
    run_id: i64,
    config: &TrainConfig,
    tokenizer: &model::Model,
) -> anyhow::Result<Prepared> {
    // Resumed: exactly the examples, labels and weights the run started with.
    let (all, counts) = run_set(store, run_id, config)?;
    let (train_set, test_set): (Vec<&Example>, Vec<&Example>) = all.iter().partition(|e| e.split == Split::Train);
    if train_set.is_empty() {
        let what = match config.method.as_str() {
            "kto" => {
                "labeled answers for KTO in the train split: label some pairs or rate answers (`verdict thumbs \
                      rate`), or `verdict import` them, first"
            }
            "sft" => {
                "answers to imitate in the train split: label some pairs, rewrite or rate answers, or `verdict \
                      import` them, first"
            }
            _ => "resolved pairs in the train split: label some pairs (or `verdict import` them) first",
        };
        bail!("no {what}");
    }
    let train = tokenize_split(tokenizer, &train_set)?;
    let test = tokenize_split(tokenizer, &test_set)?;
    let truncated = train
        .ids
        .iter()
        .filter(|p| {
            // A KTO row's second answer is only the KL estimate's.
            let longest = if p.desirable.is_some() { p.chosen.len() } else { p.chosen.len().max(p.rejected.len()) };
            p.prompt.len() + longest > config.max_length
        })
        .count();
    let mut sample_prompts: Vec<(i64, Vec<ChatMessage>)> = Vec::new();
    for e in test_set.iter().chain(train_set.iter()) {
        if sample_prompts.len() < config.sample_prompts && !sample_prompts.iter().any(|(id, _)| *id == e.prompt_id) {
            sample_prompts.push((e.prompt_id, e.messages.clone()));
        }
    }
    Ok(Prepared { train, test, truncated, sample_prompts, counts })
}

/// The store's labels compiled for the run's method (`qa::compile`, the one source of what a
/// run trains on), with their texts and weights. `--weight-by-agreement` weighs pairs by their
/// votes; unpaired and SFT examples weigh 1.
fn examples(store: &Store, config: &TrainConfig) -> anyhow::Result<(Vec<Example>, Compiled)> {
    let method = Method::parse(&config.method).with_context(|| format!("no method {}", config.method))?;
    let compiled = compile::compile_store(store, method)?;
    let prompts: HashMap<i64, crate::store::PromptRow> = store.prompts()?.into_iter().map(|p| (p.id, p)).collect();
    // Votes per decided pair; a pair no one judged (a rewrite over an older answer) has none.
    let votes: HashMap<(i64, i64), (usize, usize)> = if config.weight_by_agreement {
        crate::qa::resolved_pairs(store)?.iter().map(|p| ((p.chosen, p.rejected), (p.agreeing, p.votes))).collect()
    } else {
        HashMap::new()
    };
    let mut rows: Vec<(i64, i64, RunAnswer, f32)> = Vec::new();
    match method {
        Method::Kto => rows.extend(
            compiled
                .unpaired
                .iter()
                .map(|u| (u.prompt_id, u.response_id, RunAnswer::Unpaired { desirable: u.desirable }, 1.0)),
        ),
        Method::Sft => rows.extend(compiled.sft.iter().map(|s| (s.prompt_id, s.response_id, RunAnswer::Imitate, 1.0))),
        Method::Dpo | Method::Orpo | Method::Simpo => rows.extend(compiled.pairs.iter().map(|p| {
            // A pair three people agreed on counts more than a contested or single one:
            // agreeing votes minus dissenting ones, at least a half, then normalized below to
            // mean 1, so a pair of weight 2 moves the model as much as the pair seen twice.
            let weight = if config.weight_by_agreement {
                let (agreeing, all) = votes.get(&(p.chosen, p.rejected)).copied().unwrap_or((0, 0));
                (agreeing as f32 - (all - agreeing) as f32).max(0.5)
            } else {
                1.0
            };
            (p.prompt_id, p.chosen, RunAnswer::Pair { rejected_id: p.rejected }, weight)
        })),
    }
    let ids: Vec<i64> = rows
        .iter()
        .flat_map(|(_, answer, kind, _)| {
            [Some(*answer), if let RunAnswer::Pair { rejected_id } = kind { Some(*rejected_id) } else { None }]
        })
        .flatten()
        .collect();
    let texts = store.response_texts(&ids)?;
    let mut out: Vec<Example> = rows
        .into_iter()
        .map(|(prompt_id, answer_id, kind, weight)| {
            let prompt = &prompts[&prompt_id];
            Example {
                prompt_id,
                answer_id,
                messages: prompt.messages.iter().map(|m| ChatMessage::new(&m.role, &m.content)).collect(),
                answer: texts[&answer_id].clone(),
                rejected: match kind {
                    RunAnswer::Pair { rejected_id } => Some(texts[&rejected_id].clone()),
                    _ => None,
                },
                kind,
                weight,
                split: prompt.split,
            }
        })
        .collect();
    let mean = out.iter().map(|e| e.weight).sum::<f32>() / out.len().max(1) as f32;
    for e in &mut out {
        e.weight /= mean.max(1e-6);
    }
    Ok((out, compiled))
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
            Ok(Example {
                prompt_id: e.prompt_id,
                answer_id: e.answer_id,
                kind: e.kind,
                messages: prompt.messages.iter().map(|m| ChatMessage::new(&m.role, &m.content)).collect(),
                answer: text(e.answer_id)?,
                rejected: e.rejected_id().map(text).transpose()?,
                weight: e.weight as f32,
                split: e.split,
            })
        })
        .collect()
}

/// The run's training set: the one stored at its start, else (a new run, or one started before
/// schema 5) the store's labels compiled now, stored for every later resume with its content
/// hash and label counts (`qa::run_set`).
fn run_set(store: &Store, run_id: i64, config: &TrainConfig) -> anyhow::Result<(Vec<Example>, Vec<String>)> {
    let stored = store.run_examples(run_id)?;
    if !stored.is_empty() {
        let set = match store.run_set(run_id)? {
            Some(set) => set,
            None => {
                // Stored before schema 7: its hash is known now, the counts it came from are not.
                let set = crate::qa::run_set::describe(store, &config.method, &stored, None)?;
                store.save_run_set(run_id, &set)?;
                set
            }
        };
        let mut counts =
            vec![format!("training set ({}, stored at the run's start): {} examples", set.method, stored.len())];
        counts.extend(crate::qa::run_set::count_lines(&set).into_iter().map(|l| format!("  {l}")));
        return Ok((stored_examples(store, &stored)?, counts));
    }
    let (fresh, compiled) = examples(store, config)?;
    let rows: Vec<RunExample> = fresh
        .iter()
        .map(|e| RunExample {
            prompt_id: e.prompt_id,
            answer_id: e.answer_id,
            kind: e.kind,
            split: e.split,
            weight: f64::from(e.weight),
        })
        .collect();
    let set = crate::qa::run_set::describe(store, &config.method, &rows, Some(&compiled))?;
    store.save_run_examples(run_id, &rows, &set)?;
    Ok((fresh, compiled.summary_lines()))
}
