//! The batch the trainable transformer reads: token ids, rotary positions and the additive
//! attention bias, built right-padded or packed.

use candle_core::{Device, Result, Tensor};

/// A batch for the model: token ids `[B, T]`, each token's rotary position, and the additive
/// attention bias `[B, 1, 1, T, T]` (0 where query i may see key j, -1e9 elsewhere). Built
/// either right-padded (one sequence per row) or packed (several sequences sharing a prefix in
/// one row, see `logps::SeqBatch::pairs`).
#[derive(Debug)]
pub struct Input {
    pub ids: Tensor,
    pub bias: Tensor,
    /// Rotary position of every token, `[B * T]`.
    pub positions: Tensor,
    pub max_position: usize,
}

impl Input {
    /// Rows of tokens with their positions; `visible(row, i, j)` says whether token i may attend
    /// to token j (only asked for j <= i, and both real tokens). Rows are right-padded.
    pub fn new(
        rows: &[Vec<u32>],
        positions: &[Vec<u32>],
        visible: impl Fn(usize, usize, usize) -> bool,
        pad_id: u32,
        device: &Device,
    ) -> Result<Self> {
        let b = rows.len();
        let t = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(b * t);
        let mut pos = Vec::with_capacity(b * t);
        let mut bias = vec![-1e9f32; b * t * t];
        for (r, row) in rows.iter().enumerate() {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(pad_id, t - row.len()));
            pos.extend_from_slice(&positions[r]);
            pos.extend(std::iter::repeat_n(0, t - row.len()));
            for i in 0..t {
                // A padding query sees key 0 only, so its softmax stays finite.
                bias[(r * t + i) * t] = 0.0;
                if i >= row.len() {
                    continue;
                }
                for j in 0..=i {
                    if visible(r, i, j) {
                        bias[(r * t + i) * t + j] = 0.0;
                    } else if j == 0 {
                        bias[(r * t + i) * t] = -1e9;
                    }
                }
            }
        }
        let max_position = pos.iter().copied().max().unwrap_or(0) as usize;
        Ok(Self {
            ids: Tensor::from_vec(ids, (b, t), device)?,
            bias: Tensor::from_vec(bias, (b, 1, 1, t, t), device)?,
            positions: Tensor::from_vec(pos, b * t, device)?,
            max_position,
        })
    }

    /// One sequence per row, causal attention, positions 0.. (right padding).
    pub fn right_padded(rows: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Self> {
        let positions: Vec<Vec<u32>> = rows.iter().map(|r| (0..r.len() as u32).collect()).collect();
        Self::new(rows, &positions, |_, _, _| true, pad_id, device)
    }
}
