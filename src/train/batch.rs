//! Batches of sequences for `logps::sequence_logps`: which tokens go in which row, where each
//! token sits (rotary position), what it may attend to, and which positions predict which
//! response tokens.
//!
//! `new` puts one sequence per right-padded row. `pairs` packs a preference pair into ONE row,
//! `prompt ++ chosen ++ rejected`, with the rejected tokens attending to the prompt and
//! themselves only and their positions continuing from the prompt: the same numbers as two
//! separate rows (causal attention makes the prompt's states independent of what follows), but
//! the prompt goes through the model once instead of twice and there is no padding inside a pair.

use candle_core::{Device, Result, Tensor};

use super::logps::{Row, Truncation, build_row};
use super::model::Input;

/// A batch plus the bookkeeping to pick out response-token log-probs.
#[derive(Debug)]
pub struct SeqBatch {
    pub input: Input,
    /// Flat index `row * T + t` of the position predicting each response token.
    pub(crate) from: Tensor,
    /// The response tokens themselves `[N, 1]`.
    pub(crate) targets: Tensor,
    /// `[S, N]` 0/1: which sequence each response token belongs to (a matmul sums them).
    pub(crate) segments: Tensor,
    /// Response tokens per sequence (SimPO's length normalization, SFT's mean).
    pub counts: Vec<usize>,
    /// Tokens of the sequences as TRL counts them (prompt counted once per sequence), for
    /// `num_tokens` and tokens/second; packing makes the model's own work smaller.
    pub tokens: usize,
    /// Tokens that actually go through the model (no padding, shared prompts once).
    pub model_tokens: usize,
    /// Sequences shortened by truncation.
    pub truncated: usize,
    /// What a forward pass over the batch computes, for its FLOPs (`flops.rs`).
    pub work: super::flops::Work,
}

/// A row under construction: tokens, positions, and where a packed rejected part starts.
struct PackedRow {
    ids: Vec<u32>,
    pos: Vec<u32>,
    /// Tokens `< shared` are the prompt both parts see; tokens `>= split` only see the prompt
    /// and each other. `split == ids.len()` for a plain row.
    shared: usize,
    split: usize,
}

/// Response token `k` of a sequence (`row`, index in the sequence -> index in the row).
type Pick = (usize, Vec<usize>, Vec<u32>);

fn picks(seq: &Row, row: usize, map: impl Fn(usize) -> usize) -> Pick {
    // The first token of a sequence has no prefix to predict it from.
    let first = seq.response_start.max(1);
    let from = (first..seq.ids.len()).map(|k| map(k - 1)).collect();
    (row, from, seq.ids[first..].to_vec())
}

impl SeqBatch {
    /// One sequence per right-padded row.
    pub fn new(seqs: &[(&[u32], &[u32])], t: &Truncation, pad_id: u32, device: &Device) -> Result<Self> {
        let rows: Vec<Row> = seqs.iter().map(|(p, r)| build_row(p, r, t)).collect();
        let truncated = rows.iter().filter(|r| r.truncated).count();
        let packed = rows
            .iter()
            .map(|r| PackedRow {
                ids: r.ids.clone(),
                pos: (0..r.ids.len() as u32).collect(),
                shared: 0,
                split: r.ids.len(),
            })
            .collect();
        let seqs = rows.iter().enumerate().map(|(i, r)| picks(r, i, |k| k)).collect();
        let tokens = rows.iter().map(|r| r.ids.len()).sum();
        Self::assemble(packed, seqs, truncated, tokens, pad_id, device)
    }

    /// `(prompt, chosen, rejected)` triples, each packed into one row; the sequences come out
    /// as all chosen then all rejected. Truncation is applied to prompt+chosen and
    /// prompt+rejected separately, exactly as for unpacked rows.
    pub fn pairs(pairs: &[(&[u32], &[u32], &[u32])], t: &Truncation, pad_id: u32, device: &Device) -> Result<Self> {
        Self::pairs_picking(pairs, t, pad_id, device, false)
    }

    /// `pairs`, and with `prompts` a third set of sequences after the rejected ones: the prompt
    /// tokens of each chosen row (every one but the first, which nothing predicts), so that a
    /// chosen sequence plus its prompt sequence is the whole row's log-prob (ORPO's NLL term).
    pub fn pairs_picking(
        pairs: &[(&[u32], &[u32], &[u32])],
        t: &Truncation,
        pad_id: u32,
        device: &Device,
        prompts: bool,
    ) -> Result<Self> {
        let mut rows = Vec::new();
        let (mut chosen, mut rejected, mut prompt_picks) = (Vec::new(), Vec::new(), Vec::new());
        let (mut truncated, mut tokens) = (0, 0);
        for (i, (p, c, r)) in pairs.iter().enumerate() {
            let (sc, sr) = (build_row(p, c, t), build_row(p, r, t));
            truncated += usize::from(sc.truncated) + usize::from(sr.truncated);
            tokens += sc.ids.len() + sr.ids.len();
            // The longest common prefix (the prompt, unless truncation cut into it differently).
            let shared = sc.ids.iter().zip(&sr.ids).take_while(|(a, b)| a == b).count();
            let shared = shared.min(sc.response_start).min(sr.response_start);
            let split = sc.ids.len();
            let mut ids = sc.ids.clone();
            ids.extend_from_slice(&sr.ids[shared..]);
            let mut pos: Vec<u32> = (0..split as u32).collect();
            pos.extend(shared as u32..sr.ids.len() as u32);
            rows.push(PackedRow { ids, pos, shared, split });
            chosen.push(picks(&sc, i, |k| k));
            rejected.push(picks(&sr, i, |k| if k < shared { k } else { split + k - shared }));
            if prompts {
                let end = sc.response_start.min(sc.ids.len());
                prompt_picks.push((i, (1..end).map(|k| k - 1).collect(), (1..end).map(|k| sc.ids[k]).collect()));
            }
        }
        chosen.extend(rejected);
        chosen.extend(prompt_picks);
        Self::assemble(rows, chosen, truncated, tokens, pad_id, device)
    }

    fn assemble(
        rows: Vec<PackedRow>,
        seqs: Vec<Pick>,
        truncated: usize,
        tokens: usize,
        pad_id: u32,
        device: &Device,
    ) -> Result<Self> {
        let width = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0).max(1);
        let (mut from, mut targets, mut seg_of, mut counts) = (vec![], vec![], vec![], vec![]);
        for (s, (row, fr, tg)) in seqs.iter().enumerate() {
            from.extend(fr.iter().map(|&k| (row * width + k) as u32));
            targets.extend_from_slice(tg);
            seg_of.extend(std::iter::repeat_n(s, tg.len()));
            counts.push(tg.len());
        }
        let n = targets.len();
        let mut seg = vec![0f32; seqs.len() * n];
        for (j, &s) in seg_of.iter().enumerate() {
            seg[s * n + j] = 1.0;
        }
        let ids: Vec<Vec<u32>> = rows.iter().map(|r| r.ids.clone()).collect();
        let pos: Vec<Vec<u32>> = rows.iter().map(|r| r.pos.clone()).collect();
        // A row's first `split` tokens attend causally; each packed rejected token sees the
        // shared prompt and the rejected tokens up to itself.
        let attended = rows
            .iter()
            .map(|r| {
                let rest = r.ids.len() - r.split;
                r.split * (r.split + 1) / 2 + rest * r.shared + rest * (rest + 1) / 2
            })
            .sum();
        let model_tokens = rows.iter().map(|r| r.ids.len()).sum();
        let visible = |r: usize, i: usize, j: usize| {
            let row = &rows[r];
            i < row.split || j < row.shared || j >= row.split
        };
        Ok(Self {
            input: Input::new(&ids, &pos, visible, pad_id, device)?,
            from: Tensor::from_vec(from, n, device)?,
            targets: Tensor::from_vec(targets, (n, 1), device)?,
            segments: Tensor::from_vec(seg, (seqs.len(), n), device)?,
            counts,
            tokens,
            model_tokens,
            truncated,
            work: super::flops::Work { tokens: model_tokens, attended, head_rows: n },
        })
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::flops::Work;

    /// The (query, key) pairs a batch's attention bias lets through, real queries only.
    fn visible_pairs(batch: &SeqBatch, lengths: &[usize]) -> usize {
        let bias = batch.input.bias.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let t = batch.input.ids.dim(1).unwrap();
        let mut n = 0;
        for (r, &len) in lengths.iter().enumerate() {
            for i in 0..len {
                n += (0..t).filter(|&j| bias[(r * t + i) * t + j] == 0.0).count();
            }
        }
        n
    }

    #[test]
    fn the_work_counts_what_the_attention_mask_lets_through() {
        let dev = Device::Cpu;
        let t = Truncation { max_length: 64, keep_end: false };
        // A pair packed: prompt 3, chosen 2, rejected 4 -> one row of 9 tokens. The chosen part
        // is causal (5 x 6 / 2 = 15); each rejected token sees the 3 prompt tokens and the
        // rejected ones up to itself (4 x 3 + 4 x 5 / 2 = 22).
        let pairs: [(&[u32], &[u32], &[u32]); 2] = [(&[1, 2, 3], &[4, 5], &[6, 7, 8, 9]), (&[1], &[2], &[3])];
        let batch = SeqBatch::pairs(&pairs, &t, 0, &dev).unwrap();
        assert_eq!(batch.work.attended, visible_pairs(&batch, &[9, 3]));
        assert_eq!(batch.work, Work { tokens: 12, attended: 15 + 22 + (3 + 2), head_rows: 2 + 4 + 1 + 1 });
        // Plain rows of 5 and 7 tokens, padded to 7: causal triangles only, padding left out.
        let seqs: [(&[u32], &[u32]); 2] = [(&[1, 2], &[3, 4, 5]), (&[1, 2, 3], &[4, 5, 6, 7])];
        let plain = SeqBatch::new(&seqs, &t, 0, &dev).unwrap();
        assert_eq!(plain.work.attended, visible_pairs(&plain, &[5, 7]));
        assert_eq!(plain.work, Work { tokens: 12, attended: 15 + 28, head_rows: 3 + 4 });
    }
}
