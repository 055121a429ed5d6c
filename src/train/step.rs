//! One training step and the once-per-run reference pass.
//!
//! A micro-batch of pairs goes through the model as one right-padded batch (all chosen rows,
//! then all rejected rows), so chosen and rejected share one forward and one backward.
//! Reference log-probs are computed once, without a backward pass, by the same model (for LoRA
//! with the adapters switched off); the caller caches them.

use std::time::Instant;

use candle_core::{DType, Result, Tensor};

use super::logps::{SeqBatch, Truncation, sequence_logps};
use super::loss::{DpoConfig, Metrics, PairLogps, dpo_loss, sft_loss};
use super::model::Model;
use super::optim::AdamW;

/// A tokenized preference pair (see docs/training.md for what prompt and responses contain).
#[derive(Debug, Clone, PartialEq)]
pub struct PairIds {
    pub prompt: Vec<u32>,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
    /// Per-pair weight (1.0 unweighted; `--weight-by-agreement` sets it from the labels).
    pub weight: f32,
}

/// Summed reference log-probs of one pair's responses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefLogps {
    pub chosen: f32,
    pub rejected: f32,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Method {
    Dpo(DpoConfig),
    /// Supervised fine-tuning on the chosen responses.
    Sft,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepConfig {
    pub method: Method,
    pub truncation: Truncation,
    /// Any valid id: padded positions are masked out.
    pub pad_id: u32,
}

/// Chosen then rejected sequences, each pair packed into one row sharing its prompt (SFT:
/// chosen only, one per row).
fn batch_for(pairs: &[PairIds], cfg: &StepConfig, model: &Model) -> Result<SeqBatch> {
    if matches!(cfg.method, Method::Sft) {
        let seqs: Vec<(&[u32], &[u32])> = pairs.iter().map(|p| (p.prompt.as_slice(), p.chosen.as_slice())).collect();
        return SeqBatch::new(&seqs, &cfg.truncation, cfg.pad_id, model.device());
    }
    let triples: Vec<(&[u32], &[u32], &[u32])> =
        pairs.iter().map(|p| (p.prompt.as_slice(), p.chosen.as_slice(), p.rejected.as_slice())).collect();
    SeqBatch::pairs(&triples, &cfg.truncation, cfg.pad_id, model.device())
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
    let all_items = loss_items(pairs, cfg).max(1) as f64;
    let mut total = Metrics::new();
    for (i, chunk) in pairs.chunks(size).enumerate() {
        let chunk_refs = if refs.is_empty() { refs } else { &refs[i * size..(i * size + chunk.len()).min(refs.len())] };
        let scale = loss_items(chunk, cfg) as f64 / all_items;
        let m = forward_loss(model, chunk, chunk_refs, cfg)?.1;
        for (k, v) in &m {
            let w = if k == "num_tokens" || k == "truncated" { 1.0 } else { scale };
            *total.entry(k.clone()).or_insert(0.0) += v * w;
        }
    }
    Ok(total)
}

/// What one micro-batch's loss is a mean over: its pairs (DPO) or its response tokens (SFT, as
/// TRL's trainers with gradient accumulation count `num_items_in_batch`).
fn loss_items(pairs: &[PairIds], cfg: &StepConfig) -> usize {
    match cfg.method {
        Method::Dpo(_) => pairs.len(),
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
/// `tokens_per_second`. A non-finite loss is an error and leaves the weights untouched.
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
    let items: Vec<usize> = micro.iter().map(|(pairs, _)| loss_items(pairs, cfg)).collect();
    let all_items = items.iter().sum::<usize>().max(1) as f64;
    let mut total = Metrics::new();
    // Weight gradients written in place by the fused CPU ops rather than summed by candle.
    let sink = model.sink_weight_grads();
    for ((pairs, refs), &n) in micro.iter().zip(&items) {
        let scale = n as f64 / all_items;
        let (loss, m, _) = forward_loss(model, pairs, refs, cfg)?;
        if !m["loss"].is_finite() {
            opt.zero_grad();
            candle_core::bail!("loss is {} at step {}: stopping (lower the learning rate?)", m["loss"], opt.step + 1);
        }
        let mut grads = (loss * scale)?.backward()?;
        sink.drain_into(&mut grads)?;
        opt.accumulate(&grads)?;
        for (k, v) in &m {
            let w = if k == "num_tokens" || k == "truncated" { 1.0 } else { scale };
            *total.entry(k.clone()).or_insert(0.0) += v * w;
        }
    }
    drop(sink);
    let stats = opt.step()?;
    let secs = start.elapsed().as_secs_f64();
    total.insert("grad_norm".into(), stats.grad_norm);
    total.insert("learning_rate".into(), stats.learning_rate);
    total.insert("tokens_per_second".into(), total["num_tokens"] / secs.max(1e-9));
    Ok(total)
}

#[cfg(test)]
#[path = "step_tests.rs"]
pub(crate) mod tests;
