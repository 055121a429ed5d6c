//! `log_softmax(logits)[target]` per row as one fused CPU op with a one-pass backward.
//!
//! The logits at response positions are the largest activations in a step (`[N, vocab]`,
//! 6.3 M floats for 128 tokens of SmolLM2). Composed from candle ops, log-softmax + gather
//! allocate and backprop through about a dozen full-size tensors; fused, the forward reads
//! the logits once and the backward writes `g * (onehot - softmax)` once. Other devices and
//! dtypes use the composed ops (`target_logps` picks).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, D, DType, Layout, Result, Shape, Tensor};

use super::model::log_softmax_last;

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

/// Row log-sum-exp in f64.
fn lse<T: Copy + Into<f64>>(row: &[T]) -> f64 {
    let m = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x.into()));
    m + row.iter().map(|&x| (x.into() - m).exp()).sum::<f64>().ln()
}

impl CustomOp2 for TargetLogp {
    fn name(&self) -> &'static str {
        "verdict-target-logp"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let t = targets(s2, l2)?;
        macro_rules! run {
            ($x:expr, $ty:ty, $variant:ident) => {{
                let (x, n, v) = rows($x, l1)?;
                let out: Vec<$ty> = (0..n)
                    .map(|i| {
                        let row = &x[i * v..(i + 1) * v];
                        (f64::from(row[t[i] as usize]) - lse(row)) as $ty
                    })
                    .collect();
                Ok((CpuStorage::$variant(out), Shape::from(n)))
            }};
        }
        match s1 {
            CpuStorage::F32(x) => run!(x, f32, F32),
            CpuStorage::F64(x) => run!(x, f64, F64),
            _ => candle_core::bail!("target-logp: f32 or f64 logits only"),
        }
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
        macro_rules! run {
            ($x:expr, $g:expr, $ty:ty, $variant:ident) => {{
                let (x, n, v) = rows($x, l1)?;
                let g = &$g[a..a + n];
                let mut out: Vec<$ty> = Vec::with_capacity(n * v);
                for i in 0..n {
                    let row = &x[i * v..(i + 1) * v];
                    let l = lse(row);
                    let gi = f64::from(g[i]);
                    // d logp_t / d x_j = [j == t] - softmax_j
                    out.extend(row.iter().map(|&xj| (-gi * (f64::from(xj) - l).exp()) as $ty));
                    out[i * v + t[i] as usize] += g[i];
                }
                Ok((CpuStorage::$variant(out), l1.shape().clone()))
            }};
        }
        match (s1, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => run!(x, g, f32, F32),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => run!(x, g, f64, F64),
            _ => candle_core::bail!("target-logp grad: f32 or f64 only"),
        }
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
