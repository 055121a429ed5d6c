//! The fused, in-place AdamW update for f32 parameters on the CPU.
//!
//! candle-nn's `AdamW` builds about ten full-size temporaries per parameter per step. Here one
//! pass over each parameter reads the gradient and updates the parameter, m and v in place (the
//! parameter's own storage through candle's `InplaceOp2`, m and v as plain vectors the optimizer
//! owns), split across candle's CPU threads. Same arithmetic as `torch.optim.AdamW`.

use std::cell::RefCell;

use candle_core::{CpuStorage, InplaceOp2, Layout, Result};

use super::real::{dot, simd_fn};

/// Hyper-parameters of one update, with the bias corrections already folded in.
#[derive(Debug, Clone, Copy)]
pub struct Update {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Gradient multiplier (clipping).
    pub grad_scale: f32,
    /// 1 - beta1^t
    pub bc1: f32,
    /// sqrt(1 - beta2^t)
    pub bc2_sqrt: f32,
}

impl Update {
    /// The update on plain slices: `p`, `m`, `v` in place, `g` read; parts of the slices over
    /// rayon's pool (the one the other kernels share, its workers flushing denormals like the
    /// caller), so no threads are started per parameter.
    pub fn apply(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        use rayon::prelude::*;
        if candle_core::utils::get_num_threads() <= 1 || p.len() <= PART {
            return self.apply_serial(p, g, m, v);
        }
        p.par_chunks_mut(PART)
            .zip(g.par_chunks(PART))
            .zip(m.par_chunks_mut(PART))
            .zip(v.par_chunks_mut(PART))
            .for_each(|(((p, g), m), v)| self.apply_serial(p, g, m, v));
    }

    fn apply_serial(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        update_slices(self, p, g, m, v)
    }
}

simd_fn! {
    /// The update over zipped slices (no bounds checks), 8 lanes at a time with AVX2.
    fn update_slices(u: &Update, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let Update { lr, beta1, beta2, eps, weight_decay, grad_scale, bc1, bc2_sqrt } = *u;
        let decay = 1.0 - lr * weight_decay;
        let step = lr / bc1;
        for ((p, &g), (m, v)) in p.iter_mut().zip(g).zip(m.iter_mut().zip(v.iter_mut())) {
            let gi = g * grad_scale;
            let mi = beta1 * *m + (1.0 - beta1) * gi;
            let vi = beta2 * *v + (1.0 - beta2) * gi * gi;
            *m = mi;
            *v = vi;
            // torch: p *= 1 - lr*wd; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
            *p = *p * decay - step * mi / (vi.sqrt() / bc2_sqrt + eps);
        }
    }
}

simd_fn! {
    /// Sum of squares: chunks summed in f32 lanes (small rounding error, vectorizes), in f64.
    fn sum_squares(v: &[f32]) -> f64 {
        v.chunks(4096).map(|c| f64::from(dot(c, c))).sum()
    }
}

/// The in-place op: the parameter tensor is the destination, the gradient the source.
pub struct InPlace<'a> {
    pub update: Update,
    pub m: RefCell<&'a mut [f32]>,
    pub v: RefCell<&'a mut [f32]>,
}

fn f32_slice<'s>(s: &'s CpuStorage, l: &Layout, what: &str) -> Result<&'s [f32]> {
    let (start, end) =
        l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg(format!("{what} is not contiguous")))?;
    match s {
        CpuStorage::F32(v) => Ok(&v[start..end]),
        _ => candle_core::bail!("{what} is not f32"),
    }
}

impl InplaceOp2 for InPlace<'_> {
    fn name(&self) -> &'static str {
        "verdict-adamw"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let g = f32_slice(s2, l2, "gradient")?;
        let (start, end) =
            l1.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("parameter is not contiguous".into()))?;
        let CpuStorage::F32(p) = s1 else { candle_core::bail!("parameter is not f32") };
        let p = &mut p[start..end];
        let (mut m, mut v) = (self.m.borrow_mut(), self.v.borrow_mut());
        if p.len() != g.len() || m.len() != p.len() || v.len() != p.len() {
            candle_core::bail!("adamw: parameter, gradient and state sizes differ");
        }
        self.update.apply(p, g, &mut m, &mut v);
        Ok(())
    }
}

/// Elements per part of the update and of the sum of squares.
const PART: usize = 1 << 16;

/// Sum of squares of a CPU f32 tensor, read in place (no copy); `None` for other storages.
/// Parts are summed over the pool, then in order, so the total does not depend on the thread
/// count (single-threaded it was a visible share of a 2-thread full fine-tuning step).
pub fn sum_sq_cpu(t: &candle_core::Tensor) -> Option<f64> {
    use rayon::prelude::*;
    let (s, l) = t.storage_and_layout();
    let (start, end) = l.contiguous_offsets()?;
    let candle_core::Storage::Cpu(CpuStorage::F32(v)) = &*s else { return None };
    let v = &v[start..end];
    let parts: Vec<f64> = if candle_core::utils::get_num_threads() <= 1 || v.len() <= PART {
        v.chunks(PART).map(sum_squares).collect()
    } else {
        v.par_chunks(PART).map(sum_squares).collect()
    };
    Some(parts.iter().sum())
}
