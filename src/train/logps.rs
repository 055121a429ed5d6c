//! Summed log-probabilities of response tokens, TRL's way.
//!
//! A sequence is `prompt_ids ++ response_ids` (the caller tokenizes: the prompt is the chat
//! template rendered with the generation prompt, the response is what the template renders for
//! the assistant turn after it, e.g. for ChatML the answer + `<|im_end|>` + "\n"; see
//! docs/training.md). It is truncated to `max_length` keeping the start (TRL's default
//! `keep_start`) or the end, and log p(token | prefix) is summed over the response tokens that
//! survive. Logits are computed only at the positions that predict a response token, so prompt
//! and padding cost no `lm_head` work, and a chunk of positions at a time (`head_logp.rs`).

#[cfg(test)]
use candle_core::Device;
use candle_core::{D, DType, Result, Tensor};

#[cfg(test)]
use super::model::Input;
use super::model::Model;
#[cfg(test)]
use super::model::log_softmax_last;

/// TRL's `max_length` / `truncation_mode`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Truncation {
    pub max_length: usize,
    pub keep_end: bool,
}

impl Default for Truncation {
    fn default() -> Self {
        Self { max_length: 1024, keep_end: false }
    }
}

/// One sequence after truncation: ids and the index of its first response token.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub ids: Vec<u32>,
    pub response_start: usize,
    pub truncated: bool,
}

/// `prompt ++ response`, truncated as TRL does.
pub fn build_row(prompt: &[u32], response: &[u32], t: &Truncation) -> Row {
    let mut ids = Vec::with_capacity(prompt.len() + response.len());
    ids.extend_from_slice(prompt);
    ids.extend_from_slice(response);
    let mut start = prompt.len();
    let truncated = ids.len() > t.max_length;
    if truncated {
        if t.keep_end {
            let cut = ids.len() - t.max_length;
            ids.drain(..cut);
            start = start.saturating_sub(cut);
        } else {
            ids.truncate(t.max_length);
            start = start.min(ids.len());
        }
    }
    Row { ids, response_start: start, truncated }
}

pub use super::batch::SeqBatch;

/// Summed response log-probs per sequence, `[B]` f32, differentiable w.r.t. the trainable
/// weights. A sequence whose response was truncated away gets 0.
pub fn sequence_logps(model: &Model, batch: &SeqBatch) -> Result<Tensor> {
    let b = batch.len();
    let dev = model.device();
    if batch.targets.dim(0)? == 0 {
        let dt = if model.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
        return Tensor::zeros(b, dt, dev);
    }
    let hidden = model.hidden(&batch.input)?;
    let h = hidden.dim(D::Minus1)?;
    let rows = hidden.reshape(((), h))?.index_select(&batch.from, 0)?;
    // In chunks of positions: the [N, vocab] logits never exist whole (`head_logp.rs`).
    let lp = model.response_logps(&rows, &batch.targets)?;
    let lp = lp.unsqueeze(1)?; // [N, 1]
    batch.segments.to_dtype(lp.dtype())?.matmul(&lp)?.reshape(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_start_like_trl() {
        let t = Truncation { max_length: 5, keep_end: false };
        let r = build_row(&[1, 2, 3], &[4, 5, 6, 7], &t);
        assert_eq!(r.ids, vec![1, 2, 3, 4, 5]);
        assert_eq!(r.response_start, 3);
        assert!(r.truncated);
        let r = build_row(&[1, 2, 3, 4, 5, 6], &[7], &t);
        assert_eq!((r.ids.len(), r.response_start), (5, 5));
        let r = build_row(&[1, 2, 3], &[4, 5, 6, 7], &Truncation { max_length: 5, keep_end: true });
        assert_eq!(r.ids, vec![3, 4, 5, 6, 7]);
        assert_eq!(r.response_start, 1);
        let r = build_row(&[1], &[2], &Truncation::default());
        assert!(!r.truncated);
    }

    #[test]
    fn logps_equal_a_plain_full_logits_computation() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = crate::train::weights::tiny_config("llama", true);
        let w = crate::train::weights::random(&cfg, 3, &dev)?;
        let model = Model::new(cfg, w, false)?;
        let seqs: Vec<(Vec<u32>, Vec<u32>)> = vec![(vec![1, 5, 9], vec![7, 8, 2]), (vec![1, 4], vec![3, 2, 11, 12, 2])];
        let refs: Vec<(&[u32], &[u32])> = seqs.iter().map(|(p, r)| (p.as_slice(), r.as_slice())).collect();
        let batch = SeqBatch::new(&refs, &Truncation::default(), 0, &dev)?;
        let got = sequence_logps(&model, &batch)?.to_vec1::<f32>()?;
        assert_eq!(batch.counts, vec![3, 5]);
        for (i, (p, r)) in seqs.iter().enumerate() {
            // Each sequence alone, unpadded, full logits, explicit sum.
            let ids: Vec<u32> = p.iter().chain(r).copied().collect();
            let input = Input::right_padded(std::slice::from_ref(&ids), 0, &dev)?;
            let lp = log_softmax_last(&model.forward(&input)?.squeeze(0)?)?.to_vec2::<f32>()?;
            let want: f32 = (p.len()..ids.len()).map(|t| lp[t - 1][ids[t] as usize]).sum();
            assert!((got[i] - want).abs() < 1e-4, "seq {i}: {} vs {want}", got[i]);
        }
        Ok(())
    }

    #[test]
    fn packed_pairs_equal_separate_rows() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = crate::train::weights::tiny_config("qwen2", false);
        let model = Model::new(cfg.clone(), crate::train::weights::random(&cfg, 6, &dev)?, true)?;
        let pairs: Vec<(Vec<u32>, Vec<u32>, Vec<u32>)> = vec![
            (vec![1, 5, 9, 4], vec![7, 8, 2], vec![3, 2, 11, 12, 2]),
            (vec![1, 4], vec![13, 2, 14, 15, 16, 17], vec![30, 2]),
            (vec![1], vec![20], vec![21, 22]),
        ];
        for t in [
            Truncation::default(),
            Truncation { max_length: 5, keep_end: false },
            Truncation { max_length: 6, keep_end: true },
        ] {
            let triples: Vec<(&[u32], &[u32], &[u32])> =
                pairs.iter().map(|(p, c, r)| (p.as_slice(), c.as_slice(), r.as_slice())).collect();
            let mut seqs: Vec<(&[u32], &[u32])> = pairs.iter().map(|(p, c, _)| (p.as_slice(), c.as_slice())).collect();
            seqs.extend(pairs.iter().map(|(p, _, r)| (p.as_slice(), r.as_slice())));
            let packed = SeqBatch::pairs(&triples, &t, 0, &dev)?;
            let plain = SeqBatch::new(&seqs, &t, 0, &dev)?;
            assert_eq!(packed.counts, plain.counts);
            assert_eq!(packed.truncated, plain.truncated);
            let a = sequence_logps(&model, &packed)?;
            let b = sequence_logps(&model, &plain)?;
            let d = (&a - &b)?.abs()?.max(0)?.to_scalar::<f32>()?;
            assert!(d < 1e-4, "{t:?}: packed logps differ by {d}: {a} {b}");
            // Gradients agree too.
            let ga = a.sum_all()?.backward()?;
            let gb = b.sum_all()?.backward()?;
            for (name, v) in model.trainable_vars() {
                let d = (ga.get(v.as_tensor()).unwrap() - gb.get(v.as_tensor()).unwrap())?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f32>()?;
                assert!(d < 1e-4, "{t:?}: gradient of {name} differs by {d}");
            }
        }
        Ok(())
    }
}
