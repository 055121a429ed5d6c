//! A training run from the store's resolved pairs: tokenize (TRL's rule), cache reference
//! log-probs, loop with accumulation, evaluation and checkpoints, record every step's
//! metrics in the store, export the result. `verdict train` and the TUI both call `run`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use candle_core::DType;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::domain::{Split, sha256_hex};
use crate::model::{self, ChatMessage, LoadOptions};
use crate::store::{OpenMode, RunAnswer, RunExample, Store};
use crate::train::logps::Truncation;
use crate::train::lora::LoraConfig;
use crate::train::loss::DpoConfig;
use crate::train::optim::{AdamW, OptimConfig};
use crate::train::step::{Method, PairIds, RefLogps, StepConfig};
use crate::train::{checkpoint, export, lora, step, tokenize, weights};

pub use super::train_config::TrainConfig;

/// Created in a run's folder to ask the process training it to checkpoint and stop.
pub const STOP_FILE: &str = "STOP";

/// Asks the run to stop at its next step boundary, whichever process runs it.
pub fn request_stop(config_json: &str) -> anyhow::Result<PathBuf> {
    let config: TrainConfig = serde_json::from_str(config_json).context("the run's stored config does not parse")?;
    let out = config.out.context("the run has no output folder recorded")?;
    let path = out.join(STOP_FILE);
    std::fs::write(&path, b"stop\n").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Progress of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// A step before the run starts, in words: the default model being downloaded on first use.
    Preparing(String),
    Started {
        run_id: i64,
        train_pairs: usize,
        test_pairs: usize,
        steps: usize,
        truncated: usize,
        /// How the train pairs are weighted (all 1 without `--weight-by-agreement`).
        weights: WeightStats,
    },
    ReferenceDone {
        computed: usize,
        cached: usize,
    },
    Step {
        step: usize,
        metrics: Vec<(String, f64)>,
    },
    Eval {
        step: usize,
        metrics: Vec<(String, f64)>,
    },
    Checkpoint {
        step: usize,
        path: PathBuf,
    },
    /// Answers to the fixed test prompts were generated with the weights of `step`.
    Samples {
        step: usize,
        count: usize,
    },
}

/// The distribution of the train pairs' weights, for the run summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WeightStats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    /// Pairs of weight 0: they do not change the model.
    pub zero: usize,
}

impl WeightStats {
    pub fn of(weights: &[f32]) -> WeightStats {
        let mut w: Vec<f64> = weights.iter().map(|&x| f64::from(x)).collect();
        w.sort_by(f64::total_cmp);
        let median = match w.len() {
            0 => 0.0,
            n if n % 2 == 1 => w[n / 2],
            n => (w[n / 2 - 1] + w[n / 2]) / 2.0,
        };
        WeightStats {
            min: w.first().copied().unwrap_or(0.0),
            median,
            max: w.last().copied().unwrap_or(0.0),
            zero: w.iter().filter(|&&x| x == 0.0).count(),
        }
    }
}

impl std::fmt::Display for WeightStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "min {:.2} · median {:.2} · max {:.2} · {} at 0", self.min, self.median, self.max, self.zero)
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainSummary {
    pub run_id: i64,
    pub status: String,
    pub steps: usize,
    pub output: Option<PathBuf>,
}

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
            // Stored before schema 6: its hash is known now, the counts it came from are not.
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

fn metrics_vec(m: &crate::train::loss::Metrics, prefix: &str) -> Vec<(String, f64)> {
    m.iter().map(|(k, v)| (format!("{prefix}{k}"), *v)).collect()
}

/// Runs (or, with `resume`, continues) a training run. Every start that gets past opening the
/// store leaves a row in `runs`: a run that cannot start (no pairs, a model it cannot train, an
/// output folder in the way) or that fails on the way (a NaN loss, a full disk) is `failed`
/// with the error that stopped it.
pub fn run(
    db: &Path,
    config: &TrainConfig,
    resume: Option<i64>,
    overwrite: bool,
    cancel: &AtomicBool,
    events: &mut dyn FnMut(TrainEvent),
) -> anyhow::Result<TrainSummary> {
    // Freed step buffers stay in the process for the next step (see train/heap.rs).
    crate::train::heap::keep_for_reuse();
    let result = run_keeping_memory(db, config, resume, overwrite, cancel, events);
    crate::train::heap::release();
    result
}

fn run_keeping_memory(
    db: &Path,
    config: &TrainConfig,
    resume: Option<i64>,
    overwrite: bool,
    cancel: &AtomicBool,
    events: &mut dyn FnMut(TrainEvent),
) -> anyhow::Result<TrainSummary> {
    let mut store = Store::open(db, OpenMode::MustExist)?;
    let (config, resumed) = match resume {
        Some(id) => {
            let row = store.run(id)?.with_context(|| format!("no run {id}: `verdict runs` lists them"))?;
            let config: TrainConfig = serde_json::from_str(&row.config)?;
            (config, Some(id))
        }
        None => (config.clone(), None),
    };
    // A config that does not check is the caller's mistake, caught before any run (the CLI
    // and the TUI's form check it first), not a run that failed.
    config.check()?;
    let out = config.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("run-{}", chrono_free_stamp())));
    // Stored absolute: the model is registered by this path, and later commands (or the TUI)
    // may run from another folder.
    let out = std::path::absolute(&out).unwrap_or(out);
    let model_path = {
        // The download's steps go out as events (the CLI prints them, the TUI shows them in its
        // status line); nothing is printed over the TUI's screen.
        let sink = std::cell::RefCell::new(&mut *events);
        model::resolve_model_path(config.model.as_deref(), &|line| {
            (sink.borrow_mut())(TrainEvent::Preparing(line.into()))
        })
    };
    let mut recorded = config.clone();
    recorded.out = Some(out.clone());
    if let Ok(path) = &model_path {
        recorded.model = Some(path.clone());
    }
    // One process trains a run: a resume while another holds the run folder's lock is refused
    // (and leaves the run as it is); the lock is held until this function returns.
    let _resume_lock = match resumed {
        Some(id) => Some(super::run_lock::RunLock::acquire(&out, id)?),
        None => None,
    };
    let run_id = match resumed {
        Some(id) => {
            store.set_run_status(id, "running", None)?;
            id
        }
        None => {
            let name = out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "run".into());
            if !overwrite && is_non_empty_dir(&out) {
                // Recorded without the folder: it belongs to someone else, and resuming this
                // record must never train into it.
                recorded.out = None;
                let id = store.create_run(&name, &config.method, &serde_json::to_string(&recorded)?, None)?;
                let error = format!("{} exists and is not empty: pass --overwrite, or another --out", out.display());
                store.set_run_status(id, "failed", Some(&error))?;
                bail!(error);
            }
            store.create_run(&name, &config.method, &serde_json::to_string(&recorded)?, None)?
        }
    };
    let plan = Plan { run_id, config: &config, out: &out, resumed: resumed.is_some(), overwrite };
    let result =
        model_path.map_err(anyhow::Error::from).and_then(|path| train(&mut store, &plan, &path, cancel, events));
    if let Err(error) = &result {
        // The error is what the user needs; a store that cannot record it (the disk that
        // filled up) must not hide it.
        if let Err(also) = store.set_run_status(run_id, "failed", Some(&format!("{error:#}"))) {
            tracing::warn!("run {run_id} failed and its status could not be recorded: {also:#}");
        }
    }
    result
}

/// What `train` needs to know about the run it continues or starts.
struct Plan<'a> {
    run_id: i64,
    config: &'a TrainConfig,
    /// Absolute.
    out: &'a Path,
    resumed: bool,
    overwrite: bool,
}

fn is_non_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).map(|mut d| d.next().is_some()).unwrap_or(false)
}

/// How to recover from a failed write: the OS error says what went wrong, this says what next.
fn write_hint(run_id: i64, last_checkpoint: Option<usize>) -> String {
    let from = match last_checkpoint {
        Some(step) => format!("from its checkpoint at step {step}"),
        None => "from the start (no checkpoint was written)".into(),
    };
    format!(
        "free some space (or fix the folder's permissions), then `verdict train --resume {run_id}` continues {from}"
    )
}

/// The run itself, once it has a row in `runs`.
fn train(
    store: &mut Store,
    plan: &Plan,
    model_path: &Path,
    cancel: &AtomicBool,
    events: &mut dyn FnMut(TrainEvent),
) -> anyhow::Result<TrainSummary> {
    let Plan { run_id, config, out, .. } = *plan;
    if !plan.resumed && plan.overwrite && out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    std::fs::create_dir_all(out)
        .map_err(|e| anyhow::anyhow!("cannot create the run folder {}: {e}; pass another --out", out.display()))?;
    // A new run's lock (a resumed one took it before its status changed).
    let _lock = if plan.resumed { None } else { Some(super::run_lock::RunLock::acquire(out, run_id)?) };
    // A stop asked for earlier is not a stop for this start.
    let _ = std::fs::remove_file(out.join(STOP_FILE));

    // Tokenizer and template come from the inference loader; the weights are loaded again
    // as trainable f32 tensors. Its own weights stay as stored (quantized: a fifth of f32) and
    // are only kept while the run generates samples, which replace them by the run's own.
    let inference = model::Model::load(
        model_path,
        &LoadOptions {
            threads: config.threads,
            dequantize: false,
            requantize: false,
            device: config.device.parse().map_err(|e| anyhow::anyhow!("--device: {e}"))?,
        },
    )?;
    let info = inference.info().clone();
    let device = inference.device().clone();
    let base_id = store.register_model(
        &info.sha256,
        &info.name.clone().unwrap_or_else(|| "base".into()),
        &model_path.display().to_string(),
        if model_path.is_dir() { "hf" } else { "gguf" },
        &info.architecture,
        &info.quantization,
    )?;
    store.set_run_base_model(run_id, base_id)?;
    // Resumed: exactly the pairs, outcomes and weights the run started with.
    let all = run_set(store, run_id, config)?;
    let (train_set, test_set): (Vec<&Example>, Vec<&Example>) = all.iter().partition(|e| e.split == Split::Train);
    if train_set.is_empty() {
        bail!("no resolved pairs in the train split: label some pairs (or `verdict import` them) first");
    }
    let tokenize_all = |set: &[&Example]| -> anyhow::Result<Vec<PairIds>> {
        set.iter().map(|e| Ok(tokenize::pair_ids(&inference, &e.messages, &e.chosen, &e.rejected, e.weight)?)).collect()
    };
    let train_ids = tokenize_all(&train_set)?;
    let test_ids = tokenize_all(&test_set)?;
    let tokenizer = inference.tokenizer().clone();
    let inference = (config.eval_every > 0 && config.sample_prompts > 0).then_some(inference);
    let truncation = Truncation { max_length: config.max_length, keep_end: false };
    let truncated =
        train_ids.iter().filter(|p| p.prompt.len() + p.chosen.len().max(p.rejected.len()) > config.max_length).count();

    let (cfg, mut weights_map) = if model_path.is_dir() {
        weights::load_hf_dir(model_path, DType::F32, &device)?
    } else {
        weights::load_gguf(model_path, DType::F32, &device)?
    };
    if let Err(why) = cfg.check_supported() {
        bail!("{}: cannot train this model: {why}", model_path.display());
    }
    if let Some(why) = cfg.export_gap(config.lora_rank.is_some()) {
        bail!("{}: {why}", model_path.display());
    }
    let lora_cfg = config.lora_rank.map(|rank| LoraConfig {
        rank,
        alpha: config.lora_alpha,
        targets: config.lora_targets.clone(),
    });
    // f32 on the CPU (with the fused kernels); bf16 compute over f32 master weights on a GPU.
    let precision = crate::train::precision::Precision::for_device(&device, Default::default());
    tracing::info!(device = %model::device_label(&device), %precision, "training");
    let mut net = crate::train::model::Model::with_precision(
        cfg.clone(),
        std::mem::take(&mut weights_map),
        lora_cfg.is_none(),
        precision,
    )?;
    if let Some(l) = &lora_cfg {
        lora::attach(&mut net, l, config.seed)?;
    }
    let pad_id = info.special_tokens.stop_ids.first().copied().unwrap_or(0);
    let method = match config.method.as_str() {
        "sft" => Method::Sft,
        _ => Method::Dpo(DpoConfig {
            loss: config.loss,
            beta: config.beta,
            label_smoothing: config.label_smoothing,
            simpo_gamma: config.simpo_gamma,
            sft_weight: config.sft_weight,
        }),
    };
    let step_cfg = StepConfig { method: method.clone(), truncation, pad_id };

    // Reference log-probs: computed once per (model, pair, template) and cached.
    let template_hash = sha256_hex(&["template", &info.chat_template, &config.max_length.to_string()]);
    let needs_ref = matches!(&method, Method::Dpo(d) if d.loss.needs_reference());
    let reference = |set: &[&Example], ids: &[PairIds], store: &mut Store| -> anyhow::Result<(Vec<RefLogps>, usize)> {
        if !needs_ref {
            return Ok((vec![RefLogps { chosen: 0.0, rejected: 0.0 }; ids.len()], 0));
        }
        let cached = store.ref_logps(&info.sha256, &template_hash)?;
        let missing: Vec<usize> = (0..set.len()).filter(|&i| !cached.contains_key(&set[i].key)).collect();
        let todo: Vec<PairIds> = missing.iter().map(|&i| ids[i].clone()).collect();
        let computed = step::reference_logps(&net, &todo, &truncation, pad_id, config.batch_size)?;
        let fresh: Vec<(String, f64, f64)> = missing
            .iter()
            .zip(&computed)
            .map(|(&i, r)| (set[i].key.clone(), r.chosen as f64, r.rejected as f64))
            .collect();
        // A non-finite value (a model with broken weights) is used by this run, where its
        // loss stops training, but never cached for the next one.
        let finite: Vec<(String, f64, f64)> =
            fresh.iter().filter(|(_, c, r)| c.is_finite() && r.is_finite()).cloned().collect();
        store.save_ref_logps(&info.sha256, &template_hash, &finite)?;
        let mut all = cached;
        all.extend(fresh.into_iter().map(|(k, c, r)| (k, (c, r))));
        let refs = set
            .iter()
            .map(|e| {
                let (c, r) = all[&e.key];
                RefLogps { chosen: c as f32, rejected: r as f32 }
            })
            .collect();
        Ok((refs, missing.len()))
    };
    let (train_refs, computed_train) = reference(&train_set, &train_ids, store)?;
    let (test_refs, computed_test) = reference(&test_set, &test_ids, store)?;

    let per_epoch = train_ids.len().div_ceil(config.batch_size * config.grad_accum);
    let total_steps = config.max_steps.unwrap_or(per_epoch * config.epochs.max(1));
    let optim_cfg = OptimConfig {
        learning_rate: config.learning_rate,
        weight_decay: config.weight_decay,
        warmup_steps: config.warmup_steps,
        total_steps,
        schedule: config.schedule,
        max_grad_norm: config.max_grad_norm,
        ..OptimConfig::default()
    };
    let mut optimizer = AdamW::new(net.trainable_vars(), optim_cfg)?;
    let checkpoints = out.join("checkpoints");
    let mut start_step = 0;
    if plan.resumed
        && let Some(latest) = checkpoint::latest(&checkpoints)
    {
        checkpoint::load(&latest, &net, &mut optimizer)?;
        start_step = optimizer.step;
    }
    // The step of the newest checkpoint on disk: where a resume after a failure starts.
    let mut last_checkpoint = (start_step > 0).then_some(start_step);
    store.set_run_plan(run_id, total_steps, train_ids.len(), test_ids.len(), truncated)?;
    events(TrainEvent::Started {
        run_id,
        train_pairs: train_ids.len(),
        test_pairs: test_ids.len(),
        steps: total_steps,
        truncated,
        weights: WeightStats::of(&train_ids.iter().map(|p| p.weight).collect::<Vec<_>>()),
    });
    events(TrainEvent::ReferenceDone {
        computed: computed_train + computed_test,
        cached: train_ids.len() + test_ids.len() - computed_train - computed_test,
    });

    // The data order is a function of (seed, epoch) alone, so a resumed run sees exactly
    // the batches the uninterrupted one would have.
    let order_for = |epoch: usize| {
        let mut order: Vec<usize> = (0..train_ids.len()).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(config.seed.wrapping_add(epoch as u64)));
        order
    };
    // The fixed prompts whose answers are generated at every evaluation: the first test-split
    // prompts (train prompts when there is no test split), one per prompt.
    let mut sample_prompts: Vec<(i64, Vec<ChatMessage>)> = Vec::new();
    for e in test_set.iter().chain(train_set.iter()) {
        if sample_prompts.len() < config.sample_prompts && !sample_prompts.iter().any(|(id, _)| *id == e.prompt_id) {
            sample_prompts.push((e.prompt_id, e.messages.clone()));
        }
    }
    let sample_every = if config.eval_every > 0 { config.eval_every } else { usize::MAX };
    let sample = |net: &crate::train::model::Model, step: usize, store: &Store| -> anyhow::Result<usize> {
        match &inference {
            Some(inference) => write_samples(
                net,
                inference,
                &sample_prompts,
                config.seed,
                config.sample_max_tokens,
                run_id,
                step,
                store,
            ),
            None => Ok(0),
        }
    };
    if start_step == 0 && config.eval_every > 0 && !sample_prompts.is_empty() {
        let count = sample(&net, 0, store)?;
        events(TrainEvent::Samples { step: 0, count });
    }
    // A checkpoint is written whole or not at all (`checkpoint::save`); a failed write says
    // which file and why, and how to go on from the previous one.
    let save = |net: &crate::train::model::Model,
                optimizer: &AdamW,
                store: &Store,
                last: &mut Option<usize>|
     -> anyhow::Result<PathBuf> {
        let path = checkpoint::save(&checkpoints, net, optimizer, &serde_json::json!({})).map_err(|e| {
            anyhow::anyhow!(
                "cannot write the checkpoint of step {}: {}; {}",
                optimizer.step,
                crate::train::error_text(&e),
                write_hint(run_id, *last)
            )
        })?;
        store.add_checkpoint(run_id, optimizer.step as i64, &path.display().to_string())?;
        *last = Some(optimizer.step);
        Ok(path)
    };
    let micro = config.batch_size;
    let per_step = micro * config.grad_accum;
    let mut status = "finished";
    for step_index in start_step..total_steps {
        // A STOP file in the run folder stops it too: how another process (a second
        // terminal's TUI) stops a run it did not start.
        let stop_file = out.join(STOP_FILE);
        if cancel.load(Ordering::Relaxed) || stop_file.exists() {
            let _ = std::fs::remove_file(&stop_file);
            let path = save(&net, &optimizer, store, &mut last_checkpoint)?;
            events(TrainEvent::Checkpoint { step: step_index, path });
            status = "stopped";
            break;
        }
        let first = step_index * per_step;
        let mut batches: Vec<(Vec<PairIds>, Vec<RefLogps>)> = Vec::new();
        for m in 0..config.grad_accum {
            let mut pairs = Vec::new();
            let mut refs = Vec::new();
            for k in 0..micro {
                let global = first + m * micro + k;
                let epoch = global / train_ids.len();
                let i = order_for(epoch)[global % train_ids.len()];
                pairs.push(train_ids[i].clone());
                refs.push(train_refs[i]);
            }
            batches.push((pairs, refs));
        }
        let views: Vec<(&[PairIds], &[RefLogps])> = batches.iter().map(|(p, r)| (p.as_slice(), r.as_slice())).collect();
        let step_started = std::time::Instant::now();
        // A NaN loss stops the run before the update: the weights stay as they were, and
        // the newest checkpoint on disk is the last good one.
        let metrics = step::train_step(&net, &views, &step_cfg, &mut optimizer).map_err(|e| {
            let kept = match last_checkpoint {
                Some(step) => format!("the checkpoint of step {step} is kept"),
                None => "no checkpoint was written before it".into(),
            };
            anyhow::anyhow!("{}; {kept}", crate::train::error_text(&e))
        })?;
        let step_number = step_index + 1;
        let mut values = metrics_vec(&metrics, "");
        // Wall time of the optimizer step: what a live view anywhere needs for an ETA.
        values.push(("step_seconds".into(), step_started.elapsed().as_secs_f64()));
        values.push(("epoch".into(), (step_number * per_step) as f64 / train_ids.len() as f64));
        store.add_metrics(run_id, step_number as i64, &values)?;
        events(TrainEvent::Step { step: step_number, metrics: values });
        if config.eval_every > 0 && step_number % config.eval_every == 0 && !test_ids.is_empty() {
            let eval = step::evaluate(&net, &test_ids, &test_refs, &step_cfg, config.batch_size)?;
            let values = metrics_vec(&eval, "eval_");
            store.add_metrics(run_id, step_number as i64, &values)?;
            events(TrainEvent::Eval { step: step_number, metrics: values });
        }
        if (step_number % sample_every == 0 || (step_number == total_steps && config.eval_every > 0))
            && !sample_prompts.is_empty()
        {
            let count = sample(&net, step_number, store)?;
            events(TrainEvent::Samples { step: step_number, count });
        }
        if config.save_every > 0 && step_number % config.save_every == 0 {
            let path = save(&net, &optimizer, store, &mut last_checkpoint)?;
            events(TrainEvent::Checkpoint { step: step_number, path });
        }
    }
    // The optimizer's moments (twice the trainable weights) are not needed to write the model.
    let steps_done = optimizer.step;
    drop(optimizer);
    let mut output = None;
    if status == "finished" {
        let final_dir = out.join("model");
        if let Err(e) = write_outputs(&net, lora_cfg.as_ref(), &tokenizer, &info, model_path, &final_dir) {
            // Half a model folder is no model: remove it (and free what it took).
            let _ = std::fs::remove_dir_all(&final_dir);
            bail!(
                "cannot write the trained model to {}: {e:#}; {}",
                final_dir.display(),
                write_hint(run_id, last_checkpoint)
            );
        }
        let sha = model::fetch::sha256_file(&final_dir.join("model.safetensors"))?;
        let model_id = store.register_model(
            &sha,
            &format!("{} (run {run_id})", info.name.clone().unwrap_or_else(|| "tuned".into())),
            &final_dir.display().to_string(),
            "hf",
            &info.architecture,
            "F32",
        )?;
        store.set_run_output(run_id, model_id)?;
        output = Some(final_dir);
    }
    store.set_run_status(run_id, status, None)?;
    Ok(TrainSummary { run_id, status: status.into(), steps: steps_done, output })
}

/// Generates one answer per sample prompt with the run's current weights (LoRA merged), the
/// same seed every time, and stores them with the step.
#[allow(clippy::too_many_arguments)]
fn write_samples(
    net: &crate::train::model::Model,
    inference: &model::Model,
    prompts: &[(i64, Vec<ChatMessage>)],
    seed: u64,
    max_new_tokens: usize,
    run_id: i64,
    step: usize,
    store: &Store,
) -> anyhow::Result<usize> {
    let tensors: HashMap<String, candle_core::Tensor> = export::hf_tensors(net, true)?.into_iter().collect();
    let mut current = inference.with_hf_weights(&tensors)?;
    let params = model::GenerateParams { candidates: 1, max_new_tokens, seed, ..model::GenerateParams::default() };
    let stored = serde_json::to_string(&crate::jobs::generate::StoredParams::of(&params, seed, "F32"))?;
    let never = AtomicBool::new(false);
    for (prompt_id, messages) in prompts {
        let answers = current.generate(messages, &params, &never, &mut |_| {})?;
        let text = answers.first().map(|c| c.text.as_str()).unwrap_or("");
        store.add_run_sample(run_id, step as i64, *prompt_id, text, &stored)?;
    }
    Ok(prompts.len())
}

/// The HF directory (LoRA merged), tokenizer files, and for LoRA the PEFT adapter.
fn write_outputs(
    net: &crate::train::model::Model,
    lora_cfg: Option<&LoraConfig>,
    tokenizer: &tokenizers::Tokenizer,
    info: &model::ModelInfo,
    source: &Path,
    dir: &Path,
) -> anyhow::Result<()> {
    export::export_hf(net, dir)?;
    // GGUF (Q8_0, plus the source's own quantization) for `verdict generate` and llama.cpp.
    // A GGUF needs the source's tokenizer metadata: from an HF base the run says how to convert.
    if source.is_file() {
        let tensors = export::hf_tensors(net, true)?;
        crate::train::export_gguf::export_gguf_files(&tensors, source, dir)?;
    } else {
        tracing::info!(
            "no GGUF export: the base model is an HF folder (convert with llama.cpp's convert_hf_to_gguf.py)"
        );
    }
    tokenizer
        .save(dir.join("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("cannot write tokenizer.json: {e}"))?;
    let tokenizer_config = serde_json::json!({
        "chat_template": info.chat_template,
        "bos_token": info.special_tokens.bos,
        "eos_token": info.special_tokens.eot.clone().or(info.special_tokens.eos.clone()),
        "pad_token": info.special_tokens.pad,
        "unk_token": info.special_tokens.unk,
        "add_bos_token": false,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    let path = dir.join("tokenizer_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&tokenizer_config)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if let Some(l) = lora_cfg {
        export::export_peft(net, l, &source.display().to_string(), &dir.join("adapter"))?;
    }
    Ok(())
}

/// A sortable name for a run folder without a date crate: seconds since 1970.
fn chrono_free_stamp() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
