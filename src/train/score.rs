//! `verdict logps`'s engine: each pair's summed response log-probs under a model, tokenized and
//! truncated exactly as the trainer does, and against a reference model DPO's implicit rewards
//! and sigmoid loss, one JSON object per pair with TRL's metric names.

use anyhow::Context;
use std::path::Path;

use candle_core::DType;

use super::load::{Weights, load};
use super::logps::{Truncation, build_row};
use super::precision::Precision;
use super::step::reference_logps;
use super::tokenize::pair_ids;
use crate::model::{ChatMessage, LoadOptions};

/// A pair to score: the prompt's messages, the chosen and the rejected answer.
pub struct Pair {
    pub messages: Vec<ChatMessage>,
    pub chosen: String,
    pub rejected: String,
}

/// One pair's numbers under one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairScore {
    pub chosen: f32,
    pub rejected: f32,
    /// Response tokens whose log-probs are summed: those left after truncation.
    pub chosen_tokens: usize,
    pub rejected_tokens: usize,
}

/// One line per pair: the model's log-probs and scored tokens, and with a reference its
/// log-probs, β-scaled rewards and the sigmoid DPO loss.
pub fn logps_lines(
    model: &Path,
    reference: Option<&Path>,
    pairs: &[Pair],
    beta: f64,
    max_length: usize,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let policy = score(model, pairs, max_length)?;
    let refs = match reference {
        Some(r) => Some(score(r, pairs, max_length)?),
        None => None,
    };
    Ok(policy.iter().enumerate().map(|(i, p)| line(i, p, refs.as_ref().map(|r| &r[i]), beta)).collect())
}

/// The pairs' log-probs under the model at `path` (tokenized by its own tokenizer and template).
pub fn score(path: &Path, pairs: &[Pair], max_length: usize) -> anyhow::Result<Vec<PairScore>> {
    let inference = crate::model::Model::load(
        path,
        &LoadOptions { dequantize: true, requantize: false, ..LoadOptions::default() },
    )?;
    let device = inference.device().clone();
    let net = load(path, &device, Weights::Frozen, Precision::uniform(DType::F32))?;
    // A pair the model's template cannot render is named; the template's error names the model.
    let ids = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            pair_ids(&inference, &p.messages, &p.chosen, &p.rejected, 1.0).with_context(|| format!("pair {}", i + 1))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pad = inference.info().special_tokens.stop_ids.first().copied().unwrap_or(0);
    let trunc = Truncation { max_length, keep_end: false };
    let logps = reference_logps(&net, &ids, &trunc, pad, 1)?;
    Ok(logps
        .iter()
        .zip(&ids)
        .map(|(r, p)| PairScore {
            chosen: r.chosen,
            rejected: r.rejected,
            chosen_tokens: scored_tokens(&p.prompt, &p.chosen, &trunc),
            rejected_tokens: scored_tokens(&p.prompt, &p.rejected, &trunc),
        })
        .collect())
}

/// Response tokens whose log-probs are summed: those left after truncation.
fn scored_tokens(prompt: &[u32], response: &[u32], truncation: &Truncation) -> usize {
    let row = build_row(prompt, response, truncation);
    row.ids.len().saturating_sub(row.response_start)
}

/// Pair `index`'s line: rewards β(π − ref) per answer and the sigmoid DPO loss
/// −log σ(β((π_c − ref_c) − (π_r − ref_r))) when a reference is given.
pub fn line(index: usize, policy: &PairScore, reference: Option<&PairScore>, beta: f64) -> serde_json::Value {
    let (c, r) = (&policy.chosen, &policy.rejected);
    let mut line = serde_json::json!({
        "index": index,
        "logps/chosen": c,
        "logps/rejected": r,
        "tokens/chosen": policy.chosen_tokens,
        "tokens/rejected": policy.rejected_tokens,
    });
    if let Some(reference) = reference {
        let (rc, rr) = (reference.chosen, reference.rejected);
        let chosen_reward = beta * (*c as f64 - rc as f64);
        let rejected_reward = beta * (*r as f64 - rr as f64);
        let margin = chosen_reward - rejected_reward;
        let loss = (1.0 + (-margin).exp()).ln();
        line["ref_logps/chosen"] = rc.into();
        line["ref_logps/rejected"] = rr.into();
        line["rewards/chosen"] = chosen_reward.into();
        line["rewards/rejected"] = rejected_reward.into();
        line["loss"] = loss.into();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line `verdict logps` prints, in its key order and number formatting.
    #[test]
    fn a_line_has_trls_names_the_rewards_and_the_sigmoid_loss() {
        let policy = PairScore { chosen: -10.5, rejected: -12.25, chosen_tokens: 7, rejected_tokens: 9 };
        let reference = PairScore { chosen: -11.0, rejected: -12.0, chosen_tokens: 7, rejected_tokens: 9 };
        assert_eq!(
            line(3, &policy, None, 0.1).to_string(),
            r#"{"index":3,"logps/chosen":-10.5,"logps/rejected":-12.25,"tokens/chosen":7,"tokens/rejected":9}"#
        );
        let with_ref = line(0, &policy, Some(&reference), 0.1);
        let margin: f64 = 0.1 * 0.5 - 0.1 * -0.25;
        assert!((with_ref["loss"].as_f64().unwrap() - (1.0f64 + (-margin).exp()).ln()).abs() < 1e-12);
        assert!((with_ref["loss"].as_f64().unwrap() - 0.656_350_1).abs() < 1e-6, "{with_ref}");
        assert_eq!(with_ref["rewards/chosen"], 0.05);
        assert_eq!(with_ref["ref_logps/rejected"], -12.0);
    }
}
