//! RMSNorm as a single graph node with a hand-written backward pass (CPU, f32/f64). Written
//! out from candle ops it is 7 nodes forward and about twice that backward; every node is a
//! full pass plus a thread-pool barrier, which dominates on a busy 2-core machine. Other
//! devices/dtypes use the composed version in `model.rs`. (Rotary embedding is fused into the
//! CPU attention, `attention.rs`.)

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::real::{Real, dot, simd_fn, with_slice};

// ---------- RMSNorm: y = x * w / sqrt(mean(x^2) + eps), rows of width h ----------

struct RmsNorm(f64);

/// `1 / sqrt(mean(row^2) + eps)`.
#[inline(always)]
fn inv_rms<T: Real>(row: &[T], eps: f64) -> T {
    T::from_f64(1.0 / (dot(row, row).to_f64() / row.len() as f64 + eps).sqrt())
}

simd_fn! {
    fn forward<T: Real>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
        let mut out = vec![T::ZERO; x.len()];
        for (row, o) in x.chunks(w.len()).zip(out.chunks_mut(w.len())) {
            let r = inv_rms(row, eps);
            for ((o, &v), &wi) in o.iter_mut().zip(row).zip(w) {
                *o = v * r * wi;
            }
        }
        out
    }
}

simd_fn! {
    /// dx = r g w - x r^3 / h * sum(g w x) per row; dw = sum over rows of g x r (when `want_dw`).
    fn backward<T: Real>(x: &[T], w: &[T], g: &[T], eps: f64, want_dw: bool) -> (Vec<T>, Vec<T>) {
        let h = w.len();
        let mut dx = vec![T::ZERO; x.len()];
        let mut dw = vec![T::ZERO; if want_dw { h } else { 0 }];
        let mut gw = vec![T::ZERO; h];
        for ((xr, gr), dxr) in x.chunks(h).zip(g.chunks(h)).zip(dx.chunks_mut(h)) {
            let r = inv_rms(xr, eps);
            for ((p, &gv), &wv) in gw.iter_mut().zip(gr).zip(w) {
                *p = gv * wv;
            }
            let k = r * r * r * dot(&gw, xr) / T::from_f64(h as f64);
            for ((d, &p), &xv) in dxr.iter_mut().zip(&gw).zip(xr) {
                *d = r * p - xv * k;
            }
            if want_dw {
                for ((a, &xv), &gv) in dw.iter_mut().zip(xr).zip(gr) {
                    *a += gv * xv * r;
                }
            }
        }
        (dx, dw)
    }
}

fn slice_of<'a, T: Real>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("rms norm: not contiguous".into()))?;
    T::slice(s).map(|v| &v[a..b]).ok_or_else(|| candle_core::Error::Msg("rms norm: mixed dtypes".into()))
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "verdict-rms-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(forward::<f32>(slice_of(s1, l1)?, slice_of(s2, l2)?, self.0)),
            CpuStorage::F64(_) => CpuStorage::F64(forward::<f64>(slice_of(s1, l1)?, slice_of(s2, l2)?, self.0)),
            _ => candle_core::bail!("rms norm: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Real + candle_core::WithDType>(
            x: &Tensor,
            w: &Tensor,
            g: &Tensor,
            eps: f64,
        ) -> Result<(Option<Tensor>, Option<Tensor>)> {
            let want_dw = w.track_op();
            let (dx, dw) = with_slice::<T, _>(x, "x", |xs| {
                with_slice::<T, _>(w, "w", |ws| with_slice::<T, _>(g, "grad", |gs| backward(xs, ws, gs, eps, want_dw)))
            })???;
            let dx = if x.track_op() { Some(Tensor::from_vec(dx, x.shape(), x.device())?) } else { None };
            let dw = if want_dw { Some(Tensor::from_vec(dw, w.shape(), w.device())?) } else { None };
            Ok((dx, dw))
        }
        let g = g.contiguous()?;
        match x.dtype() {
            DType::F32 => run::<f32>(x, w, &g, self.0),
            DType::F64 => run::<f64>(x, w, &g, self.0),
            dt => candle_core::bail!("rms norm: f32 or f64 only, not {dt:?}"),
        }
    }
}

/// `x [.., h] * w [h] / sqrt(mean(x^2) + eps)`, fused on CPU.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Option<Result<Tensor>> {
    if !x.device().is_cpu() || !matches!(x.dtype(), DType::F32 | DType::F64) {
        return None;
    }
    Some((|| x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm(eps)))())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn fused_rms_norm_matches_composed_ops_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f64, 1., (6, 8), &dev)?;
        let w = Var::randn(1f64, 0.2, 8, &dev)?;
        let c = Tensor::randn(0f64, 1., (6, 8), &dev)?;
        let fused = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap()?;
        let r = (x.as_tensor().sqr()?.mean_keepdim(D::Minus1)? + 1e-5)?.sqrt()?.recip()?;
        let plain = x.as_tensor().broadcast_mul(&r)?.broadcast_mul(w.as_tensor())?;
        assert!(max_diff(&fused, &plain) < 1e-12);
        let (g1, g2) = ((&fused * &c)?.sum_all()?.backward()?, (&plain * &c)?.sum_all()?.backward()?);
        for v in [&x, &w] {
            assert!(max_diff(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap()) < 1e-10);
        }
        Ok(())
    }
}
