//! One training step and the once-per-run reference pass, for every method: DPO and its loss
//! family (SimPO included), KTO, ORPO and SFT.
//!
//! A micro-batch of pairs goes through the model as one right-padded batch (each pair packed in
//! one row, `train::batch`), so chosen and rejected share one forward and one backward. A KTO
//! row is packed the same way: its answer in the `chosen` place and, in the `rejected` place,
//! the answer of another prompt (the mismatched pair whose log-ratio estimates the KL term,
//! computed without gradient as TRL does). ORPO's rows also pick out the prompt tokens of the
//! chosen row (its NLL term covers the prompt). SFT has one row per answer.
//! Reference log-probs are computed once, without a backward pass, by the same model (for LoRA
//! with the adapters switched off); the caller caches them.

use std::time::Instant;

use candle_core::{DType, Result, Tensor};

use super::kto::{KtoConfig, UnpairedLogps, kto_loss};
use super::logps::{SeqBatch, Truncation, sequence_logps};
use super::loss::{DpoConfig, Metrics, PairLogps, dpo_loss, sft_loss};
use super::model::Model;
use super::optim::AdamW;
use super::orpo::{OrpoLogps, orpo_loss};

/// A tokenized preference pair (see docs/training.md for what prompt and responses contain).
/// For KTO, `chosen` is the row's answer, `desirable` its label and `rejected` the mismatched
/// answer of the KL estimate; for SFT `rejected` is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct PairIds {
    pub prompt: Vec<u32>,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
    /// Per-pair weight (1.0 unweighted; `--weight-by-agreement` sets it from the labels).
    pub weight: f32,
    /// KTO's label of `chosen`; `None` for the other methods.
    pub desirable: Option<bool>,
}

/// Summed reference log-probs of one pair's responses (KTO: of the answer, and of the
/// mismatched answer after this row's prompt).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefLogps {
    pub chosen: f32,
    pub rejected: f32,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Method {
    Dpo(DpoConfig),
    /// KTO on unpaired answers (`train::kto`).
    Kto(KtoConfig),
    /// ORPO, reference-free (`train::orpo`); `beta` is TRL's.
    Orpo {
        beta: f64,
    },
    /// Supervised fine-tuning on the chosen responses.
    Sft,
}

impl Method {
    /// Whether the loss compares with the frozen base model (a reference pass before step 1).
    pub fn needs_reference(&self) -> bool {
        match self {
            Method::Dpo(d) => d.loss.needs_reference(),
            Method::Kto(_) => true,
            Method::Orpo { .. } | Method::Sft => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepConfig {
    pub method: Method,
    pub truncation: Truncation,
    /// Any valid id: padded positions are masked out.
    pub pad_id: u32,
}

/// Chosen then rejected sequences, each pair packed into one row sharing its prompt (SFT:
/// chosen only, one per row; ORPO: then the chosen rows' prompt tokens).
fn batch_for(pairs: &[PairIds], cfg: &StepConfig, model: &Model) -> Result<SeqBatch> {
    if matches!(cfg.method, Method::Sft) {
        let seqs: Vec<(&[u32], &[u32])> = pairs.iter().map(|p| (p.prompt.as_slice(), p.chosen.as_slice())).collect();
        return SeqBatch::new(&seqs, &cfg.truncation, cfg.pad_id, model.device());
    }
    let triples: Vec<(&[u32], &[u32], &[u32])> =
        pairs.iter().map(|p| (p.prompt.as_slice(), p.chosen.as_slice(), p.rejected.as_slice())).collect();
    let with_prompts = matches!(cfg.method, Method::Orpo { .. });
    SeqBatch::pairs_picking(&triples, &cfg.truncation, cfg.pad_id, model.device(), with_prompts)
}

/// Reference log-probs for `pairs`, `batch_size` pairs per forward, no backward. LoRA models are
/// evaluated with adapters off (the base model); a fully trainable model should be passed before
/// its first update.
pub fn reference_logps(
    model: &Model,
    pairs: &[PairIds],
    trunc: &Truncation,
    pad_id: u32,
    batch_size: usize,
) -> Result<Vec<RefLogps>> {
    let was_on = model.adapter_enabled();
    model.set_adapter_enabled(false);
    let cfg = StepConfig { method: Method::Dpo(DpoConfig::default()), truncation: *trunc, pad_id };
    let mut out = Vec::with_capacity(pairs.len());
    let result = (|| -> Result<()> {
        for chunk in pairs.chunks(batch_size.max(1)) {
            let batch = batch_for(chunk, &cfg, model)?;
            let lp = sequence_logps(model, &batch)?.detach().to_dtype(DType::F32)?.to_vec1::<f32>()?;
            let n = chunk.len();
            out.extend((0..n).map(|i| RefLogps { chosen: lp[i], rejected: lp[n + i] }));
        }
        Ok(())
    })();
    model.set_adapter_enabled(was_on);
    result.map(|()| out)
}

/// Forward and loss for one micro-batch; the loss keeps its graph.
pub fn forward_loss(
    model: &Model,
    pairs: &[PairIds],
    refs: &[RefLogps],
    cfg: &StepConfig,
) -> Result<(Tensor, Metrics, SeqBatch)> {
    let batch = batch_for(pairs, cfg, model)?;
    let lp = sequence_logps(model, &batch)?;
    let weights: Vec<f32> = pairs.iter().map(|p| p.weight).collect();
    let n = pairs.len();
    let (loss, mut m) = match &cfg.method {
        Method::Sft => sft_loss(&lp, &batch.counts, &weights)?,
        Method::Dpo(dpo) => {
            if dpo.loss.needs_reference() && refs.len() != n {
                candle_core::bail!("{} pairs but {} reference log-probs", n, refs.len());
            }
            let (rc, rr): (Vec<f32>, Vec<f32>) = if dpo.loss.needs_reference() {
                refs.iter().map(|r| (r.chosen, r.rejected)).unzip()
            } else {
                (vec![0.0; n], vec![0.0; n])
            };
            let (chosen, rejected) = (lp.narrow(0, 0, n)?, lp.narrow(0, n, n)?);
            dpo_loss(
                dpo,
                &PairLogps {
                    chosen: &chosen,
                    rejected: &rejected,
                    ref_chosen: &rc,
                    ref_rejected: &rr,
                    chosen_len: &batch.counts[..n],
                    rejected_len: &batch.counts[n..],
                    weights: &weights,
                },
            )?
        }
        Method::Kto(kto) => {
            if refs.len() != n {
                candle_core::bail!("{} answers but {} reference log-probs", n, refs.len());
            }
            let desirable: Vec<bool> = pairs.iter().map(|p| p.desirable.unwrap_or(true)).collect();
            let (ref_answer, ref_kl): (Vec<f32>, Vec<f32>) = refs.iter().map(|r| (r.chosen, r.rejected)).unzip();
            // The mismatched pairs' log-probs are constants: TRL computes them under no_grad.
            let kl_logps = lp.narrow(0, n, n)?.detach().to_dtype(DType::F32)?.to_vec1::<f32>()?;
            kto_loss(
                kto,
                &UnpairedLogps {
                    logps: &lp.narrow(0, 0, n)?,
                    ref_logps: &ref_answer,
                    desirable: &desirable,
                    kl_logps: &kl_logps,
                    ref_kl_logps: &ref_kl,
                    weights: &weights,
                },
            )?
        }
        Method::Orpo { beta } => {
            let (chosen, rejected, prompt) = (lp.narrow(0, 0, n)?, lp.narrow(0, n, n)?, lp.narrow(0, 2 * n, n)?);
            let row_tokens: Vec<usize> = (0..n).map(|i| batch.counts[i] + batch.counts[2 * n + i]).collect();
            orpo_loss(
                *beta,
                &OrpoLogps {
                    chosen: &chosen,
                    rejected: &rejected,
                    chosen_len: &batch.counts[..n],
                    rejected_len: &batch.counts[n..2 * n],
                    chosen_row: &(&chosen + &prompt)?,
                    chosen_row_tokens: &row_tokens,
                    weights: &weights,
                },
            )?
        }
    };
    m.insert("num_tokens".into(), batch.tokens as f64);
    m.insert("truncated".into(), batch.truncated as f64);
    Ok((loss, m, batch))
}

/// Metrics of `pairs` without a backward pass (evaluation; the caller prefixes `eval_`), `batch_size`
/// pairs per forward like the reference pass, so memory stays that of one training micro-batch.
/// Chunks are combined as `train_step` combines micro-batches: the result equals one forward
/// over all pairs (`num_tokens`, `truncated` summed, the rest averaged by pairs or tokens).
pub fn evaluate(
    model: &Model,
    pairs: &[PairIds],
    refs: &[RefLogps],
    cfg: &StepConfig,
    batch_size: usize,
) -> Result<Metrics> {
    let size = batch_size.max(1);
    let mut total = Totals::new(&[pairs], cfg);
    for (i, chunk) in pairs.chunks(size).enumerate() {
        let chunk_refs = if refs.is_empty() { refs } else { &refs[i * size..(i * size + chunk.len()).min(refs.len())] };
        let m = forward_loss(model, chunk, chunk_refs, cfg)?.1;
        total.add(chunk, cfg, &m);
    }
    Ok(total.finish())
}

/// Metrics of several micro-batches combined as one batch of all their items would give them:
/// `num_tokens` and `truncated` summed, the rest averaged by each batch's share of the items
/// (pairs, or tokens for SFT). KTO's per-class means (`*/chosen` over the desirable answers,
/// `*/rejected` over the undesirable ones) are averaged by each batch's share of that class, and
/// `rewards/margins` is their difference, present only when both classes are.
struct Totals {
    metrics: Metrics,
    items: f64,
    /// Desirable and undesirable answers (KTO).
    classes: (f64, f64),
}

fn classes(pairs: &[PairIds]) -> (f64, f64) {
    let desirable = pairs.iter().filter(|p| p.desirable == Some(true)).count();
    let undesirable = pairs.iter().filter(|p| p.desirable == Some(false)).count();
    (desirable as f64, undesirable as f64)
}

impl Totals {
    fn new(batches: &[&[PairIds]], cfg: &StepConfig) -> Totals {
        let items = batches.iter().map(|b| loss_items(b, cfg)).sum::<usize>().max(1) as f64;
        let classes = batches.iter().map(|b| classes(b)).fold((0.0, 0.0), |a, c| (a.0 + c.0, a.1 + c.1));
        Totals { metrics: Metrics::new(), items, classes }
    }

    fn add(&mut self, batch: &[PairIds], cfg: &StepConfig, m: &Metrics) {
        let scale = loss_items(batch, cfg) as f64 / self.items;
        let kto = matches!(cfg.method, Method::Kto(_));
        let (desirable, undesirable) = classes(batch);
        for (k, v) in m {
            let w = match k.as_str() {
                "num_tokens" | "truncated" => 1.0,
                "rewards/margins" if kto => continue,
                _ if kto && k.ends_with("/chosen") => desirable / self.classes.0.max(1.0),
                _ if kto && k.ends_with("/rejected") => undesirable / self.classes.1.max(1.0),
                _ => scale,
            };
            *self.metrics.entry(k.clone()).or_insert(0.0) += v * w;
        }
    }

    fn finish(mut self) -> Metrics {
        let chosen = self.metrics.get("rewards/chosen").copied();
        let rejected = self.metrics.get("rewards/rejected").copied();
        if self.classes != (0.0, 0.0)
            && let (Some(c), Some(r)) = (chosen, rejected)
        {
            self.metrics.insert("rewards/margins".into(), c - r);
        }
        self.metrics
    }
}

/// What one micro-batch's loss is a mean over: its pairs (DPO) or its response tokens (SFT, as
/// TRL's trainers with gradient accumulation count `num_items_in_batch`).
fn loss_items(pairs: &[PairIds], cfg: &StepConfig) -> usize {
    match cfg.method {
        Method::Dpo(_) | Method::Kto(_) | Method::Orpo { .. } => pairs.len(),
        Method::Sft => pairs
            .iter()
            .map(|p| {
                let row = super::logps::build_row(&p.prompt, &p.chosen, &cfg.truncation);
                row.ids.len().saturating_sub(row.response_start.max(1))
            })
            .sum(),
    }
}

/// One optimizer step over `micro` batches (gradient accumulation = `micro.len()`): forward,
/// loss, backward per micro-batch, then clip and update. Each micro-batch's loss (a mean over
/// its pairs, or its tokens for SFT) counts by its share of the step's pairs (tokens), so the
/// step's loss is `sum(w_i * loss_i) / pairs in the step` whatever the split into micro-batches,
/// and a pair's weight scales its gradient as if it were seen that many times. Metrics are
/// averaged the same way (`num_tokens`, `truncated` summed) plus `grad_norm`, `learning_rate`,
/// `tokens_per_second`, `model_flops` and `model_tflops_per_second`. A non-finite loss is an
/// error and leaves the weights untouched.
pub fn train_step(
    model: &Model,
    micro: &[(&[PairIds], &[RefLogps])],
    cfg: &StepConfig,
    opt: &mut AdamW,
) -> Result<Metrics> {
    if micro.is_empty() {
        candle_core::bail!("train_step needs at least one micro-batch");
    }
    let start = Instant::now();
    let batches: Vec<&[PairIds]> = micro.iter().map(|(pairs, _)| *pairs).collect();
    let items: Vec<usize> = batches.iter().map(|pairs| loss_items(pairs, cfg)).collect();
    let all_items = items.iter().sum::<usize>().max(1) as f64;
    let mut total = Totals::new(&batches, cfg);
    // Weight gradients written in place by the fused CPU ops rather than summed by candle.
    let sink = model.sink_weight_grads();
    let full = !model.has_adapters();
    let mut flops = 0.0;
    for ((pairs, refs), &n) in micro.iter().zip(&items) {
        let scale = n as f64 / all_items;
        let (loss, m, batch) = forward_loss(model, pairs, refs, cfg)?;
        flops += super::flops::training(&model.cfg, &batch.work, full);
        if !m["loss"].is_finite() {
            opt.zero_grad();
            candle_core::bail!("loss is {} at step {}: stopping (lower the learning rate?)", m["loss"], opt.step + 1);
        }
        let mut grads = (loss * scale)?.backward()?;
        sink.drain_into(&mut grads)?;
        opt.accumulate(&grads)?;
        total.add(pairs, cfg, &m);
    }
    drop(sink);
    let mut total = total.finish();
    let stats = opt.step()?;
    let secs = start.elapsed().as_secs_f64();
    total.insert("grad_norm".into(), stats.grad_norm);
    total.insert("learning_rate".into(), stats.learning_rate);
    total.insert("tokens_per_second".into(), total["num_tokens"] / secs.max(1e-9));
    // Model FLOPs (`flops.rs`): the step's, and per second of it.
    total.insert("model_flops".into(), flops);
    total.insert("model_tflops_per_second".into(), flops / secs.max(1e-9) / 1e12);
    Ok(total)
}

#[cfg(test)]
#[path = "step_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "step_methods_tests.rs"]
mod methods_tests;
