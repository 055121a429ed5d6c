//! DPO-family losses and the SFT loss, on summed response log-probs, with TRL's metric names.
//!
//! Formulas follow TRL's `DPOTrainer.dpo_loss` / `CPOTrainer` (simpo): with
//! `h = (pi_c - pi_r) - (ref_c - ref_r)`,
//! sigmoid: `-(1-e) logsig(b h) - e logsig(-b h)`; robust: `(-(1-e) logsig(b h) + e logsig(-b h)) / (1-2e)`;
//! hinge: `relu(1 - b h)`; ipo: `(h - 1/(2b))^2` on token-averaged log-probs (as TRL averages them
//! for ipo); simpo: reference-free `h = pi_c/|c| - pi_r/|r|`, `-(1-e) logsig(b h - g) - e logsig(-(b h - g))`.
//! `sft_weight` adds TRL's `sft` loss term (what `rpo_alpha` became): ONE mean NLL over all chosen
//! tokens of the batch. Metrics follow TRL 1.16: `logps/*` and `rewards/*` on summed log-probs for
//! the DPOTrainer losses (ipo included), on token-averaged ones for simpo (CPOTrainer).
//!
//! Pair weights scale each pair's term, and the sum is divided by the number of pairs (never by
//! the weights' sum): a pair of weight 0 contributes nothing, one of weight 2 as much as the pair
//! seen twice. `step::train_step` then weighs micro-batches by their share of the step's pairs.
//! Works in any float dtype (tests use f64).

use std::collections::BTreeMap;

use candle_core::{Result, Tensor};

pub type Metrics = BTreeMap<String, f64>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossType {
    Sigmoid,
    Ipo,
    Hinge,
    Robust,
    Simpo,
}

impl LossType {
    pub fn needs_reference(self) -> bool {
        self != LossType::Simpo
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DpoConfig {
    pub loss: LossType,
    pub beta: f64,
    pub label_smoothing: f64,
    /// SimPO's target margin gamma (TRL `simpo_gamma`, default 0.5).
    pub simpo_gamma: f64,
    /// Weight of the chosen response's NLL term (0 = plain DPO).
    pub sft_weight: f64,
}

impl Default for DpoConfig {
    fn default() -> Self {
        Self { loss: LossType::Sigmoid, beta: 0.1, label_smoothing: 0.0, simpo_gamma: 0.5, sft_weight: 0.0 }
    }
}

/// Per-pair inputs. Policy log-probs carry the graph; reference ones are constants.
pub struct PairLogps<'a> {
    pub chosen: &'a Tensor,
    pub rejected: &'a Tensor,
    pub ref_chosen: &'a [f32],
    pub ref_rejected: &'a [f32],
    pub chosen_len: &'a [usize],
    pub rejected_len: &'a [usize],
    /// Per-pair weights (all 1.0 for an unweighted mean).
    pub weights: &'a [f32],
}

pub(super) fn logsigmoid(x: &Tensor) -> Result<Tensor> {
    // log sigmoid(x) = -softplus(-x) = min(x, 0) - log(1 + exp(-|x|)), stable for any x, with
    // min(x, 0) written as (x - |x|) / 2 (exact in floating point). At x = 0 exactly (every pair
    // at step 0, where the policy is the reference) the slope must be 1/2. candle's `minimum`
    // gives a tie half the gradient and `abs` a slope of +1 at 0, which summed to 1 and doubled
    // the first step's gradient; with one |x| in both pieces its slope cancels whatever it is.
    let abs = x.abs()?;
    let neg_part = ((x - &abs)? * 0.5)?;
    neg_part - (abs.neg()?.exp()? + 1.0)?.log()?
}

fn consts(v: &[f32], like: &Tensor) -> Result<Tensor> {
    Tensor::from_slice(v, v.len(), like.device())?.to_dtype(like.dtype())
}

fn lens(v: &[usize], like: &Tensor) -> Result<Tensor> {
    let f: Vec<f32> = v.iter().map(|&n| n.max(1) as f32).collect();
    consts(&f, like)
}

/// `sum(w_i * x_i) / n`: the weights scale terms, the count of pairs normalizes.
fn weighted_sum_over(losses: &Tensor, w: &Tensor, n: usize) -> Result<Tensor> {
    (losses * w)?.sum_all()? / n.max(1) as f64
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    t.detach().to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()
}

/// The DPO loss (scalar tensor) and TRL-named metrics for a batch of pairs.
pub fn dpo_loss(cfg: &DpoConfig, p: &PairLogps) -> Result<(Tensor, Metrics)> {
    let (b, e) = (cfg.beta, cfg.label_smoothing);
    let w = consts(p.weights, p.chosen)?;
    let ref_c = consts(p.ref_chosen, p.chosen)?;
    let ref_r = consts(p.ref_rejected, p.chosen)?;
    let (len_c, len_r) = (lens(p.chosen_len, p.chosen)?, lens(p.rejected_len, p.chosen)?);
    let (chosen_rewards, rejected_rewards);
    let losses = match cfg.loss {
        LossType::Simpo => {
            let avg_c = (p.chosen / &len_c)?;
            let avg_r = (p.rejected / &len_r)?;
            let z = (((&avg_c - &avg_r)? * b)? - cfg.simpo_gamma)?;
            chosen_rewards = (avg_c * b)?;
            rejected_rewards = (avg_r * b)?;
            ((logsigmoid(&z)? * -(1.0 - e))? - (logsigmoid(&z.neg()?)? * e)?)?
        }
        LossType::Ipo => {
            // TRL averages the log-ratios over tokens inside the ipo loss only; its rewards stay
            // on summed log-ratios like every DPOTrainer loss.
            let (sc, sr) = ((p.chosen - &ref_c)?, (p.rejected - &ref_r)?);
            let h = ((&sc / &len_c)? - (&sr / &len_r)?)?;
            chosen_rewards = (sc * b)?;
            rejected_rewards = (sr * b)?;
            (h - 1.0 / (2.0 * b))?.sqr()?
        }
        kind => {
            let h = ((p.chosen - &ref_c)? - (p.rejected - &ref_r)?)?;
            chosen_rewards = ((p.chosen - &ref_c)? * b)?;
            rejected_rewards = ((p.rejected - &ref_r)? * b)?;
            let z = (h * b)?;
            match kind {
                LossType::Sigmoid => ((logsigmoid(&z)? * -(1.0 - e))? - (logsigmoid(&z.neg()?)? * e)?)?,
                LossType::Robust => {
                    (((logsigmoid(&z)? * -(1.0 - e))? + (logsigmoid(&z.neg()?)? * e)?)? / (1.0 - 2.0 * e))?
                }
                LossType::Hinge => (z.neg()? + 1.0)?.relu()?,
                _ => unreachable!("simpo and ipo handled above"),
            }
        }
    };
    let n = p.weights.len();
    let mut loss = weighted_sum_over(&losses, &w, n)?;
    // TRL's `sft` term: -mean of the chosen per-token log-probs over every chosen token of the
    // batch (a long answer weighs more than a short one), each pair's tokens scaled by its weight.
    let chosen_tokens: usize = p.chosen_len.iter().sum();
    let nll = ((p.chosen.neg()? * &w)?.sum_all()? / chosen_tokens.max(1) as f64)?;
    if cfg.sft_weight != 0.0 {
        loss = (loss + (&nll * cfg.sft_weight)?)?;
    }
    let (rc, rr) = (host(&chosen_rewards)?, host(&rejected_rewards)?);
    let mut m = Metrics::new();
    m.insert("loss".into(), loss.detach().to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?);
    m.insert("rewards/chosen".into(), mean(&rc));
    m.insert("rewards/rejected".into(), mean(&rr));
    let acc: Vec<f64> = rc.iter().zip(&rr).map(|(c, r)| if c > r { 1.0 } else { 0.0 }).collect();
    m.insert("rewards/accuracies".into(), mean(&acc));
    m.insert("rewards/margins".into(), mean(&rc.iter().zip(&rr).map(|(c, r)| c - r).collect::<Vec<_>>()));
    // CPOTrainer averages log-probs over tokens for simpo; DPOTrainer logs sums (ipo too).
    let (logps_c, logps_r) = if cfg.loss == LossType::Simpo {
        (host(&(p.chosen / &len_c)?)?, host(&(p.rejected / &len_r)?)?)
    } else {
        (host(p.chosen)?, host(p.rejected)?)
    };
    m.insert("logps/chosen".into(), mean(&logps_c));
    m.insert("logps/rejected".into(), mean(&logps_r));
    if cfg.sft_weight != 0.0 {
        m.insert("nll_loss".into(), nll.detach().to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?);
    }
    Ok((loss, m))
}

/// SFT: mean NLL per response token over the batch (token-weighted, as TRL's SFTTrainer), with
/// per-sequence weights multiplying each sequence's tokens; the mean is over the tokens, not the
/// weighted tokens, so a weight of 0 removes a sequence and 2 counts it twice.
pub fn sft_loss(logps: &Tensor, counts: &[usize], weights: &[f32]) -> Result<(Tensor, Metrics)> {
    let denom = counts.iter().sum::<usize>().max(1) as f64;
    let w = consts(weights, logps)?;
    let loss = ((logps.neg()? * w)?.sum_all()? / denom)?;
    let mut m = Metrics::new();
    m.insert("loss".into(), loss.detach().to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?);
    m.insert("num_tokens".into(), counts.iter().sum::<usize>() as f64);
    Ok((loss, m))
}

#[cfg(test)]
#[path = "loss_tests.rs"]
mod tests;
