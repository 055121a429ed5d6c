//! Phase 4, the step loop: the optimizer (restored from the newest checkpoint on a resume),
//! then one optimizer step per iteration over micro-batches in a seeded order, each step's
//! metrics stored, evaluation and samples every `eval_every` steps, checkpoints every
//! `save_every` steps and on a stop (the cancel flag, or a STOP file in the run folder).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::store::Store;
use crate::train::checkpoint;
use crate::train::kto::KtoConfig;
use crate::train::logps::Truncation;
use crate::train::loss::{DpoConfig, LossType};
use crate::train::model::Model as Net;
use crate::train::optim::{AdamW, OptimConfig};
use crate::train::step::{self, Method, PairIds, RefLogps, StepConfig};

use super::evaluate::{self, Sampler};
use super::{STOP_FILE, TrainConfig, TrainEvent, write_hint};

/// What one step computes: the method's loss, TRL's truncation, the padding id. KTO's class
/// weights default to the balance of the train split's answers (`KtoConfig::balanced`).
pub(super) fn step_config(config: &TrainConfig, pad_id: u32, train: &[PairIds]) -> StepConfig {
    let dpo = |loss| DpoConfig {
        loss,
        beta: config.beta,
        label_smoothing: config.label_smoothing,
        simpo_gamma: config.simpo_gamma,
        sft_weight: config.sft_weight,
    };
    let method = match config.method.as_str() {
        "sft" => Method::Sft,
        "orpo" => Method::Orpo { beta: config.beta },
        "simpo" => Method::Dpo(dpo(LossType::Simpo)),
        "kto" => {
            let desirable = train.iter().filter(|p| p.desirable == Some(true)).count();
            let balanced = KtoConfig::balanced(config.beta, desirable, train.len() - desirable);
            Method::Kto(KtoConfig {
                desirable_weight: config.desirable_weight.unwrap_or(balanced.desirable_weight),
                undesirable_weight: config.undesirable_weight.unwrap_or(balanced.undesirable_weight),
                ..balanced
            })
        }
        _ => Method::Dpo(dpo(config.loss)),
    };
    StepConfig { method, truncation: Truncation { max_length: config.max_length, keep_end: false }, pad_id }
}

/// The tokenized pairs with their reference log-probs, and how a step uses them.
pub(super) struct Data<'a> {
    pub train: &'a [PairIds],
    pub train_refs: &'a [RefLogps],
    pub test: &'a [PairIds],
    pub test_refs: &'a [RefLogps],
    pub step_cfg: &'a StepConfig,
}

/// The optimizer and where the loop starts and ends.
pub(super) struct Schedule {
    pub optimizer: AdamW,
    /// 0, or the step of the checkpoint a resume continues from.
    pub start_step: usize,
    pub total_steps: usize,
}

/// The optimizer over the trainable weights, its learning-rate schedule over the run's steps,
/// and on a resume the newest checkpoint's weights and optimizer state.
pub(super) fn schedule(
    net: &Net,
    config: &TrainConfig,
    train_pairs: usize,
    checkpoints: &Path,
    resumed: bool,
) -> anyhow::Result<Schedule> {
    let per_epoch = train_pairs.div_ceil(config.batch_size * config.grad_accum);
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
    let mut start_step = 0;
    if resumed && let Some(latest) = checkpoint::latest(checkpoints) {
        checkpoint::load(&latest, net, &mut optimizer)?;
        start_step = optimizer.step;
    }
    Ok(Schedule { optimizer, start_step, total_steps })
}

/// The run's checkpoints folder and the step of the newest checkpoint on disk: where a resume
/// after a failure starts.
pub(super) struct Checkpoints {
    pub dir: PathBuf,
    pub run_id: i64,
    pub last: Option<usize>,
}

impl Checkpoints {
    /// A checkpoint is written whole or not at all (`checkpoint::save`); a failed write says
    /// which file and why, and how to go on from the previous one.
    fn save(&mut self, net: &Net, optimizer: &AdamW, store: &Store) -> anyhow::Result<PathBuf> {
        let path = checkpoint::save(&self.dir, net, optimizer, &serde_json::json!({})).map_err(|e| {
            anyhow::anyhow!(
                "cannot write the checkpoint of step {}: {}; {}",
                optimizer.step,
                crate::train::error_text(&e),
                write_hint(self.run_id, self.last)
            )
        })?;
        store.add_checkpoint(self.run_id, optimizer.step as i64, &path.display().to_string())?;
        self.last = Some(optimizer.step);
        Ok(path)
    }
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Ending {
    /// Every step ran.
    Finished,
    /// Stopped by the cancel flag or a STOP file, after a checkpoint.
    Stopped,
}

/// The step loop from `schedule.start_step` (samples first when it is 0) to its end or a stop. Returns how it ended; the
/// optimizer's step count is the number of steps done.
#[allow(clippy::too_many_arguments)]
pub(super) fn train_loop(
    net: &Net,
    data: &Data,
    schedule: &mut Schedule,
    checkpoints: &mut Checkpoints,
    sampler: &Sampler,
    config: &TrainConfig,
    out: &Path,
    store: &mut Store,
    cancel: &AtomicBool,
    events: &mut dyn FnMut(TrainEvent),
) -> anyhow::Result<Ending> {
    let run_id = checkpoints.run_id;
    let train_len = data.train.len();
    // The data order is a function of (seed, epoch) alone, so a resumed run sees exactly
    // the batches the uninterrupted one would have.
    let order_for = |epoch: usize| {
        let mut order: Vec<usize> = (0..train_len).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(config.seed.wrapping_add(epoch as u64)));
        order
    };
    let sample_every = if config.eval_every > 0 { config.eval_every } else { usize::MAX };
    let micro = config.batch_size;
    let per_step = micro * config.grad_accum;
    let total_steps = schedule.total_steps;
    let optimizer = &mut schedule.optimizer;
    // The device's peak, for each step's model FLOPs utilisation (`train::flops`).
    // The thread count in force (the loader configured it), not re-derived from the options.
    let peak = crate::train::flops::peak(net.device(), candle_core::utils::get_num_threads());
    if let Some(peak) = &peak {
        tracing::info!(peak = %peak.source, "model FLOPs utilisation against");
    }
    // The answers before any training: the first point of the samples' history.
    if schedule.start_step == 0 && config.eval_every > 0 && sampler.has_prompts() {
        sampler.sample(net, 0, store, events)?;
    }
    for step_index in schedule.start_step..total_steps {
        // A STOP file in the run folder stops it too: how another process (a second
        // terminal's TUI) stops a run it did not start.
        let stop_file = out.join(STOP_FILE);
        if cancel.load(Ordering::Relaxed) || stop_file.exists() {
            let _ = std::fs::remove_file(&stop_file);
            let path = checkpoints.save(net, optimizer, store)?;
            events(TrainEvent::Checkpoint { step: step_index, path });
            return Ok(Ending::Stopped);
        }
        let first = step_index * per_step;
        let mut batches: Vec<(Vec<PairIds>, Vec<RefLogps>)> = Vec::new();
        for m in 0..config.grad_accum {
            let mut pairs = Vec::new();
            let mut refs = Vec::new();
            for k in 0..micro {
                let global = first + m * micro + k;
                let epoch = global / train_len;
                let i = order_for(epoch)[global % train_len];
                pairs.push(data.train[i].clone());
                refs.push(data.train_refs[i]);
            }
            batches.push((pairs, refs));
        }
        let views: Vec<(&[PairIds], &[RefLogps])> = batches.iter().map(|(p, r)| (p.as_slice(), r.as_slice())).collect();
        let step_started = std::time::Instant::now();
        // A NaN loss stops the run before the update: the weights stay as they were, and
        // the newest checkpoint on disk is the last good one.
        let metrics = step::train_step(net, &views, data.step_cfg, optimizer).map_err(|e| {
            let kept = match checkpoints.last {
                Some(step) => format!("the checkpoint of step {step} is kept"),
                None => "no checkpoint was written before it".into(),
            };
            anyhow::anyhow!("{}; {kept}", crate::train::error_text(&e))
        })?;
        let step_number = step_index + 1;
        let mut values = evaluate::metrics_vec(&metrics, "");
        // Wall time of the optimizer step: what a live view anywhere needs for an ETA.
        values.push(("step_seconds".into(), step_started.elapsed().as_secs_f64()));
        values.push(("epoch".into(), (step_number * per_step) as f64 / train_len as f64));
        if let (Some(peak), Some(tflops)) = (&peak, metrics.get("model_tflops_per_second")) {
            values.push(("mfu".into(), tflops * 1e12 / peak.flops_per_second));
        }
        store.add_metrics(run_id, step_number as i64, &values)?;
        events(TrainEvent::Step { step: step_number, metrics: values });
        if config.eval_every > 0 && step_number % config.eval_every == 0 {
            evaluate::test_split(net, data, config.batch_size, (run_id, step_number), store, events)?;
        }
        if (step_number % sample_every == 0 || (step_number == total_steps && config.eval_every > 0))
            && sampler.has_prompts()
        {
            sampler.sample(net, step_number, store, events)?;
        }
        if config.save_every > 0 && step_number % config.save_every == 0 {
            let path = checkpoints.save(net, optimizer, store)?;
            events(TrainEvent::Checkpoint { step: step_number, path });
        }
    }
    Ok(Ending::Finished)
}
