//! `log_softmax(logits)[target]` per row as one fused CPU op with a one-pass backward.
//!
//! The logits at response positions are the largest activations in a step (`[N, vocab]`,
//! 6.3 M floats for 128 tokens of SmolLM2). Composed from candle ops, log-softmax + gather
//! allocate and backprop through about a dozen full-size tensors; fused, the forward reads
//! the logits once and the backward writes `g * (onehot - softmax)` once. Other devices and
//! dtypes use the composed ops (`target_logps` picks).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, D, DType, Layout, Result, Shape, Tensor};

use super::model::log_softmax_last;
use super::real::{Real, max, par_parts, simd_fn};

struct TargetLogp;
struct TargetLogpGrad;

fn rows<'a, T>(s: &'a [T], l: &Layout) -> Result<(&'a [T], usize, usize)> {
    let (n, v) = l.shape().dims2()?;
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("logits not contiguous".into()))?;
    Ok((&s[a..b], n, v))
}

fn targets<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [u32]> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("targets not contiguous".into()))?;
    match s {
        CpuStorage::U32(t) => Ok(&t[a..b]),
        _ => candle_core::bail!("targets must be u32"),
    }
}

/// Row log-sum-exp: max and exponentials in the row's type (f32's vectorizing exp), the sum in
/// f64 lanes.
#[inline(always)]
fn lse<T: Real>(row: &[T]) -> f64 {
    let m = max(row);
    let mut acc = [0f64; 8];
    let chunks = row.chunks_exact(8);
    let mut total: f64 = chunks.remainder().iter().map(|&x| (x - m).exp().to_f64()).sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += (c[l] - m).exp().to_f64();
        }
    }
    total += acc.iter().sum::<f64>();
    m.to_f64() + total.ln()
}

simd_fn! {
    fn logps_part<T: Real>(x: &[T], v: usize, t: &[u32], out: &mut [T]) {
        for ((row, &ti), o) in x.chunks(v).zip(t).zip(out) {
            *o = T::from_f64(row[ti as usize].to_f64() - lse(row));
        }
    }
}

simd_fn! {
    /// `g * (onehot(t) - softmax(row))` per row.
    fn logp_grad_part<T: Real>(x: &[T], v: usize, t: &[u32], g: &[T], out: &mut [T]) {
        for (((row, o), &ti), &gi) in x.chunks(v).zip(out.chunks_mut(v)).zip(t).zip(g) {
            let l = T::from_f64(lse(row));
            // d logp_t / d x_j = [j == t] - softmax_j
            for (o, &xj) in o.iter_mut().zip(row) {
                *o = -gi * (xj - l).exp();
            }
            o[ti as usize] += gi;
        }
    }
}

/// Rows of logits per part on the thread pool (a row is a whole vocabulary: 49k-262k values).
const ROWS_PER_PART: usize = 2;

/// The log-probability of each row's target, rows spread over the thread pool.
fn logps<T: Real>(x: &[T], v: usize, t: &[u32]) -> Vec<T> {
    let mut out = vec![T::ZERO; t.len()];
    par_parts(&mut out, ROWS_PER_PART, |r, o| logps_part(&x[r * v..(r + o.len()) * v], v, &t[r..r + o.len()], o));
    out
}

/// The gradient of `logps` with respect to the logits, rows spread over the thread pool.
fn logp_grad<T: Real>(x: &[T], v: usize, t: &[u32], g: &[T]) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    par_parts(&mut out, ROWS_PER_PART * v, |at, o| {
        let (r, n) = (at / v, o.len() / v);
        logp_grad_part(&x[at..at + o.len()], v, &t[r..r + n], &g[r..r + n], o)
    });
    out
}

impl CustomOp2 for TargetLogp {
    fn name(&self) -> &'static str {
        "verdict-target-logp"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let t = targets(s2, l2)?;
        let out = match s1 {
            CpuStorage::F32(x) => {
                let (x, _, v) = rows(x, l1)?;
                CpuStorage::F32(logps(x, v, t))
            }
            CpuStorage::F64(x) => {
                let (x, _, v) = rows(x, l1)?;
                CpuStorage::F64(logps(x, v, t))
            }
            _ => candle_core::bail!("target-logp: f32 or f64 logits only"),
        };
        Ok((out, Shape::from(t.len())))
    }

    fn bwd(&self, logits: &Tensor, tg: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.to_dtype(logits.dtype())?.contiguous()?;
        Ok((Some(logits.apply_op3_no_bwd(tg, &g, &TargetLogpGrad)?), None))
    }
}

impl CustomOp3 for TargetLogpGrad {
    fn name(&self) -> &'static str {
        "verdict-target-logp-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let t = targets(s2, l2)?;
        let (a, _) = l3.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("grad not contiguous".into()))?;
        let out = match (s1, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                let (x, n, v) = rows(x, l1)?;
                CpuStorage::F32(logp_grad(x, v, t, &g[a..a + n]))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                let (x, n, v) = rows(x, l1)?;
                CpuStorage::F64(logp_grad(x, v, t, &g[a..a + n]))
            }
            _ => candle_core::bail!("target-logp grad: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// `log_softmax(logits [N, V])[n, targets[n]]` -> `[N]`. Fused on CPU for f32/f64.
pub fn target_logps(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets = targets.flatten_all()?.to_dtype(DType::U32)?;
    if logits.device().is_cpu() && matches!(logits.dtype(), DType::F32 | DType::F64) {
        return logits.contiguous()?.apply_op2(&targets.contiguous()?, TargetLogp);
    }
    composed_target_logps(logits, &targets)
}

/// `g * (onehot(targets) - softmax(logits))` `[N, V]` by the fused kernel: `None` off the CPU or
/// for dtypes other than f32/f64 (the caller composes it). `g` `[N]` in the logits' dtype.
pub fn target_logp_grad(logits: &Tensor, targets: &Tensor, g: &Tensor) -> Option<Result<Tensor>> {
    if !logits.device().is_cpu() || !matches!(logits.dtype(), DType::F32 | DType::F64) {
        return None;
    }
    let run = || -> Result<Tensor> {
        let targets = targets.flatten_all()?.to_dtype(DType::U32)?.contiguous()?;
        logits.contiguous()?.apply_op3_no_bwd(&targets, &g.contiguous()?, &TargetLogpGrad)
    };
    Some(run())
}

/// The same from candle's differentiable ops, on any device and dtype (what a GPU runs).
pub fn composed_target_logps(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets = targets.flatten_all()?.to_dtype(DType::U32)?;
    log_softmax_last(logits)?.gather(&targets.unsqueeze(D::Minus1)?, 1)?.squeeze(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn spread_over_threads_every_row_is_what_one_pass_computes() {
        // Seven rows: three parts of two and a last of one.
        let (n, v) = (7, 1000);
        let x: Vec<f32> = (0..n * v).map(|i| ((i * 13) as f32 * 0.01).sin() * 9.0).collect();
        let t: Vec<u32> = (0..n as u32).map(|r| r * 97 % v as u32).collect();
        let g: Vec<f32> = (0..n).map(|r| r as f32 - 2.5).collect();
        let mut one = vec![0f32; n];
        logps_part(&x, v, &t, &mut one);
        assert_eq!(logps(&x, v, &t), one);
        let mut one = vec![0f32; n * v];
        logp_grad_part(&x, v, &t, &g, &mut one);
        assert_eq!(logp_grad(&x, v, &t, &g), one);
    }

    #[test]
    fn fused_matches_composed_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f64, 3., (5, 11), &dev)?;
        let t = Tensor::new(&[0u32, 3, 10, 7, 3], &dev)?;
        let w = Tensor::new(&[1.0f64, -2.0, 0.5, 3.0, 1.5], &dev)?;
        let fused = target_logps(x.as_tensor(), &t)?;
        let composed = log_softmax_last(x.as_tensor())?.gather(&t.unsqueeze(1)?, 1)?.squeeze(1)?;
        let d = (&fused - &composed)?.abs()?.max(0)?.to_scalar::<f64>()?;
        assert!(d < 1e-12, "forward differs by {d}");
        let g1 = (fused * &w)?.sum_all()?.backward()?;
        let g2 = (composed * &w)?.sum_all()?.backward()?;
        let d = (g1.get(x.as_tensor()).unwrap() - g2.get(x.as_tensor()).unwrap())?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f64>()?;
        assert!(d < 1e-12, "gradient differs by {d}");
        Ok(())
    }
}
