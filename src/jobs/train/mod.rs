//! A training run from the store's labels, compiled for its method (DPO, KTO, ORPO, SimPO, SFT). `verdict train` and the TUI both call `run`,
//! which gives the run its row in `runs` and then goes through its phases, one file each:
//! 1. `examples`: the run's pairs (stored at its start), tokenized with TRL's rule;
//! 2. `load`: the base model for its tokenizer and samples, and as trainable tensors (LoRA);
//! 3. `reference`: the base model's log-probs of every answer, cached per model and template;
//! 4. `steps`: the optimizer and the step loop with accumulation, checkpoints and stops;
//! 5. `evaluate`: the test split's metrics and the sample answers, inside the loop;
//! 6. `output`: the trained model written and registered.
//!
//! Every step's metrics, every checkpoint and the run's status are recorded in the store.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use serde::Serialize;

use crate::domain::RunStatus;
use crate::model;
use crate::store::{OpenMode, Store};

mod evaluate;
mod examples;
mod load;
pub mod memory;
mod output;
mod reference;
mod steps;

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
    pub status: RunStatus,
    pub steps: usize,
    pub output: Option<PathBuf>,
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
    // One process trains a run, and holds its folder's lock from before its row says `running`
    // until after its row says how it ended: a `running` row whose lock nobody holds was left by
    // a process that died (`settle_crashed`). A resume while another process holds the lock is
    // refused and leaves the run as it is.
    let (run_id, _lock) = match resumed {
        Some(id) => {
            let lock = super::run_lock::RunLock::acquire(&out, Some(id))?;
            store.set_run_status(id, RunStatus::Running, None)?;
            (id, lock)
        }
        None => {
            let name = out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "run".into());
            // Locked before it is cleared: --overwrite never clears a folder another run trains into.
            let lock = if !overwrite && is_non_empty_dir(&out) {
                Err(anyhow::anyhow!("{} exists and is not empty: pass --overwrite, or another --out", out.display()))
            } else {
                super::run_lock::RunLock::acquire(&out, None)
            };
            let lock = match lock {
                Ok(lock) => lock,
                Err(error) => {
                    // Recorded without the folder: it belongs to someone else, and resuming this
                    // record must never train into it.
                    recorded.out = None;
                    let id = store.create_run(&name, &config.method, &serde_json::to_string(&recorded)?, None)?;
                    store.set_run_status(id, RunStatus::Failed, Some(&format!("{error:#}")))?;
                    return Err(error);
                }
            };
            if overwrite {
                clear_except_lock(&out)?;
            }
            (store.create_run(&name, &config.method, &serde_json::to_string(&recorded)?, None)?, lock)
        }
    };
    let plan = Plan { run_id, config: &config, out: &out, resumed: resumed.is_some() };
    let result =
        model_path.map_err(anyhow::Error::from).and_then(|path| train(&mut store, &plan, &path, cancel, events));
    if let Err(error) = &result {
        // The error is what the user needs; a store that cannot record it (the disk that
        // filled up) must not hide it.
        if let Err(also) = store.set_run_status(run_id, RunStatus::Failed, Some(&format!("{error:#}"))) {
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
}

fn is_non_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).map(|mut d| d.next().is_some()).unwrap_or(false)
}

/// Empties a run folder for `--overwrite`, all but the lock this process holds in it.
fn clear_except_lock(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot clear {}", dir.display()))? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n == super::run_lock::LOCK_FILE) {
            continue;
        }
        let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        removed.with_context(|| format!("cannot clear {}", path.display()))?;
    }
    Ok(())
}

/// Marks `failed` each run whose row says `running` while nobody holds its folder's lock: the
/// process training it died (killed, out of memory, the machine went down) without a word.
/// The OS drops a lock with its process, and a trainer holds it from before its row says
/// `running` to after its row says how it ended, so this cannot catch a live run. Returns the
/// runs it marked. `verdict runs` and the TUI's runs list call it before they show the runs.
pub fn settle_crashed(store: &Store) -> anyhow::Result<Vec<i64>> {
    let mut settled = Vec::new();
    for run in store.runs()?.iter().filter(|r| r.status == RunStatus::Running) {
        let Some(out) = serde_json::from_str::<TrainConfig>(&run.config).ok().and_then(|c| c.out) else { continue };
        if super::run_lock::is_held(&out) {
            continue;
        }
        let reached = match run.last_step {
            Some(step) => format!("after step {step}"),
            None => "before its first step".into(),
        };
        let error = format!(
            "the process training it ended without a word {reached} (killed, out of memory, or the machine went \
             down): `verdict train --resume {}` continues from its last checkpoint (from the start if it wrote none)",
            run.id
        );
        if store.fail_if_running(run.id, &error)? {
            settled.push(run.id);
        }
    }
    Ok(settled)
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

/// The run itself, once it has a row in `runs`: its folder, then the phases in order.
fn train(
    store: &mut Store,
    plan: &Plan,
    model_path: &Path,
    cancel: &AtomicBool,
    events: &mut dyn FnMut(TrainEvent),
) -> anyhow::Result<TrainSummary> {
    let Plan { run_id, config, out, .. } = *plan;
    // A stop asked for earlier is not a stop for this start.
    let _ = std::fs::remove_file(out.join(STOP_FILE));

    // Tokenizer and template come from the inference loader; the weights are loaded again
    // as trainable tensors. Its own weights are dropped before they load (`Sampler::new`
    // keeps the model's frame: samples are generated with the run's own weights).
    let inference = load::inference(store, run_id, config, model_path)?;
    let info = inference.info().clone();
    let device = inference.device().clone();
    let prepared = examples::prepare(store, run_id, config, &inference)?;
    for line in &prepared.counts {
        events(TrainEvent::Preparing(line.clone()));
    }
    let tokenizer = inference.tokenizer().clone();
    // Refused here, before the weights load, when the plan cannot fit (`memory.rs`).
    let memory = memory::check(config, model_path, &device, &prepared, events)?;
    let sampler = evaluate::Sampler::new(inference, prepared.sample_prompts, config, run_id);
    let trained = load::trainable(model_path, config, &device, &memory)?;
    let net = &trained.net;
    let pad_id = info.special_tokens.stop_ids.first().copied().unwrap_or(0);
    let step_cfg = steps::step_config(config, pad_id, &prepared.train.ids);

    let cache = reference::Cache::new(&info, config);
    let (train_refs, computed_train) =
        reference::logps(store, &cache, net, &prepared.train, &step_cfg, config.batch_size)?;
    let (test_refs, computed_test) =
        reference::logps(store, &cache, net, &prepared.test, &step_cfg, config.batch_size)?;

    let (train_ids, test_ids) = (&prepared.train.ids, &prepared.test.ids);
    let checkpoints_dir = out.join("checkpoints");
    let mut schedule = steps::schedule(net, config, train_ids.len(), &checkpoints_dir, plan.resumed)?;
    let start_step = schedule.start_step;
    let mut checkpoints =
        steps::Checkpoints { dir: checkpoints_dir, run_id, last: (start_step > 0).then_some(start_step) };
    store.set_run_plan(run_id, schedule.total_steps, train_ids.len(), test_ids.len(), prepared.truncated)?;
    events(TrainEvent::Started {
        run_id,
        train_pairs: train_ids.len(),
        test_pairs: test_ids.len(),
        steps: schedule.total_steps,
        truncated: prepared.truncated,
        weights: WeightStats::of(&train_ids.iter().map(|p| p.weight).collect::<Vec<_>>()),
    });
    events(TrainEvent::ReferenceDone {
        computed: computed_train + computed_test,
        cached: train_ids.len() + test_ids.len() - computed_train - computed_test,
    });

    let data = steps::Data {
        train: train_ids,
        train_refs: &train_refs,
        test: test_ids,
        test_refs: &test_refs,
        step_cfg: &step_cfg,
    };
    let ending =
        steps::train_loop(net, &data, &mut schedule, &mut checkpoints, &sampler, config, out, store, cancel, events)?;
    // The optimizer's moments (twice the trainable weights) are not needed to write the model.
    let steps_done = schedule.optimizer.step;
    drop(schedule);
    let (status, output) = match ending {
        steps::Ending::Finished => {
            let dir = output::export_run(&trained, &tokenizer, &info, model_path, out, &checkpoints, store)?;
            (RunStatus::Finished, Some(dir))
        }
        steps::Ending::Stopped => (RunStatus::Stopped, None),
    };
    store.set_run_status(run_id, status, None)?;
    Ok(TrainSummary { run_id, status, steps: steps_done, output })
}

/// A sortable name for a run folder without a date crate: seconds since 1970.
fn chrono_free_stamp() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
