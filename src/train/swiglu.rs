//! The MLP's `silu(gate) * up` as one graph node on the CPU (f32/f64), with a one-pass backward.
//!
//! Composed (`silu` then `mul`) it keeps two `[T, intermediate]` tensors in the graph and its
//! backward makes four more passes plus candle's zero-and-add for each gradient it sums. Here
//! the forward reads gate and up once and the backward writes both gradients in one loop.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::real::{ELEMENTWISE_PART, Real, par_parts, simd_fn, with_slice};

struct SwiGlu;

#[inline(always)]
fn sigmoid<T: Real>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp())
}

simd_fn! {
    fn forward_part<T: Real>(gate: &[T], up: &[T], out: &mut [T]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = g * sigmoid(g) * u;
        }
    }
}

simd_fn! {
    /// d/dgate = dy * up * s * (1 + gate * (1 - s)), d/dup = dy * gate * s, with s = sigmoid(gate).
    fn backward_part<T: Real>(gate: &[T], up: &[T], dy: &[T], dg: &mut [T], du: &mut [T]) {
        for (((dg, du), (&g, &u)), &d) in dg.iter_mut().zip(du.iter_mut()).zip(gate.iter().zip(up)).zip(dy) {
            let s = sigmoid(g);
            *du = d * g * s;
            *dg = d * u * s * (T::ONE + g * (T::ONE - s));
        }
    }
}

/// `silu(gate) * up`, element by element, over the thread pool.
fn forward<T: Real>(gate: &[T], up: &[T]) -> Vec<T> {
    let mut out = vec![T::ZERO; gate.len()];
    par_parts(&mut out, ELEMENTWISE_PART, |at, o| forward_part(&gate[at..at + o.len()], &up[at..at + o.len()], o));
    out
}

/// Both gradients, element by element, over the thread pool (as `par_parts`, two outputs).
fn backward<T: Real>(gate: &[T], up: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    use rayon::prelude::*;
    let n = gate.len();
    let (mut dg, mut du) = (vec![T::ZERO; n], vec![T::ZERO; n]);
    let part = |at: usize, dg: &mut [T], du: &mut [T]| {
        let r = at..at + dg.len();
        backward_part(&gate[r.clone()], &up[r.clone()], &dy[r], dg, du)
    };
    if candle_core::utils::get_num_threads() <= 1 || n <= ELEMENTWISE_PART {
        part(0, &mut dg, &mut du);
    } else {
        dg.par_chunks_mut(ELEMENTWISE_PART)
            .zip(du.par_chunks_mut(ELEMENTWISE_PART))
            .enumerate()
            .for_each(|(i, (dg, du))| part(i * ELEMENTWISE_PART, dg, du));
    }
    (dg, du)
}

fn slice_of<'a, T: Real>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("swiglu: not contiguous".into()))?;
    T::slice(s).map(|v| &v[a..b]).ok_or_else(|| candle_core::Error::Msg("swiglu: mixed dtypes".into()))
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "verdict-swiglu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(forward::<f32>(slice_of(s1, l1)?, slice_of(s2, l2)?)),
            CpuStorage::F64(_) => CpuStorage::F64(forward::<f64>(slice_of(s1, l1)?, slice_of(s2, l2)?)),
            _ => candle_core::bail!("swiglu: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Real + candle_core::WithDType>(
            gate: &Tensor,
            up: &Tensor,
            grad: &Tensor,
        ) -> Result<(Tensor, Tensor)> {
            let (dg, du) = with_slice::<T, _>(gate, "gate", |g| {
                with_slice::<T, _>(up, "up", |u| with_slice::<T, _>(grad, "grad", |d| backward(g, u, d)))
            })???;
            Ok((Tensor::from_vec(dg, gate.shape(), gate.device())?, Tensor::from_vec(du, up.shape(), up.device())?))
        }
        let grad = grad.contiguous()?;
        let (dg, du) = match gate.dtype() {
            candle_core::DType::F32 => run::<f32>(gate, up, &grad)?,
            candle_core::DType::F64 => run::<f64>(gate, up, &grad)?,
            dt => candle_core::bail!("swiglu: f32 or f64 only, not {dt:?}"),
        };
        Ok((gate.track_op().then_some(dg), up.track_op().then_some(du)))
    }
}

/// `silu(gate) * up`, fused on the CPU for f32/f64; `None` elsewhere (use the composed ops).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Option<Result<Tensor>> {
    if !gate.device().is_cpu() || !matches!(gate.dtype(), candle_core::DType::F32 | candle_core::DType::F64) {
        return None;
    }
    Some((|| gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu))())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn spread_over_threads_every_element_is_what_one_pass_computes() {
        // Three parts and a short fourth: the same bits as one pass over the whole.
        let n = 3 * ELEMENTWISE_PART + 77;
        let wave = |k: usize, f: f32| (0..n).map(|i| ((i * k) as f32 * f).sin() * 6.0).collect::<Vec<f32>>();
        let (g, u, d) = (wave(7, 0.001), wave(3, 0.002), wave(5, 0.003));
        let mut one = vec![0f32; n];
        forward_part(&g, &u, &mut one);
        assert_eq!(forward(&g, &u), one);
        let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
        backward_part(&g, &u, &d, &mut dg, &mut du);
        assert_eq!(backward(&g, &u, &d), (dg, du));
    }

    #[test]
    fn fused_swiglu_matches_silu_times_up_with_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let g = Var::randn(0f64, 3., (4, 7), &dev)?;
        let u = Var::randn(0f64, 1., (4, 7), &dev)?;
        let c = Tensor::randn(0f64, 1., (4, 7), &dev)?;
        let fused = swiglu(g.as_tensor(), u.as_tensor()).unwrap()?;
        let plain = (g.as_tensor().silu()? * u.as_tensor())?;
        let diff =
            |a: &Tensor, b: &Tensor| -> Result<f64> { (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>() };
        assert!(diff(&fused, &plain)? < 1e-12);
        let (g1, g2) = ((&fused * &c)?.sum_all()?.backward()?, (&plain * &c)?.sum_all()?.backward()?);
        for v in [&g, &u] {
            assert!(diff(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap())? < 1e-12);
        }
        // f32 goes through the polynomial exp.
        let f = swiglu(
            &g.as_tensor().to_dtype(candle_core::DType::F32)?,
            &u.as_tensor().to_dtype(candle_core::DType::F32)?,
        )
        .unwrap()?;
        assert!(diff(&f.to_dtype(candle_core::DType::F64)?, &plain)? < 1e-5);
        Ok(())
    }
}
