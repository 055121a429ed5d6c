//! RMSNorm as a single graph node with hand-written backward passes (CPU, f32/f64). Written
//! out from candle ops it is 7 nodes forward and about twice that backward; every node is a
//! full pass plus a thread-pool barrier, which dominates on a busy 2-core machine. Other
//! devices/dtypes use the composed version in `model.rs`. (Rotary embedding is fused into the
//! CPU attention, `attention.rs`.)

// The kernels are written once for f32 and f64 through `with3!`; `f64::from` is a no-op in
// the f64 instance.
#![allow(clippy::useless_conversion)]

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

fn slice<'a, T>(v: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg(format!("{what} not contiguous")))?;
    Ok(&v[a..b])
}

/// Runs `$body` with `$x`, `$y`, `$z` bound to f32 or f64 slices of three storages.
macro_rules! with3 {
    ($s1:expr, $l1:expr, $s2:expr, $l2:expr, $s3:expr, $l3:expr, |$x:ident, $y:ident, $z:ident| $body:expr) => {
        match ($s1, $s2, $s3) {
            (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
                let ($x, $y, $z) = (slice(a, $l1, "a")?, slice(b, $l2, "b")?, slice(c, $l3, "c")?);
                let out: Vec<f32> = $body;
                CpuStorage::F32(out)
            }
            (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
                let ($x, $y, $z) = (slice(a, $l1, "a")?, slice(b, $l2, "b")?, slice(c, $l3, "c")?);
                let out: Vec<f64> = $body;
                CpuStorage::F64(out)
            }
            _ => candle_core::bail!("fused op: f32 or f64 inputs of one dtype only"),
        }
    };
}

// ---------- RMSNorm: y = x * w / sqrt(mean(x^2) + eps), rows of width h ----------

struct RmsNorm(f64);
struct RmsNormDx(f64);
struct RmsNormDw(f64);

fn inv_rms<T: Copy + Into<f64>>(row: &[T], eps: f64) -> f64 {
    1.0 / (row.iter().map(|&v| v.into() * v.into()).sum::<f64>() / row.len() as f64 + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "verdict-rms-norm"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let h = l2.shape().elem_count();
        let out = with3!(s1, l1, s2, l2, s2, l2, |x, w, _w2| {
            x.chunks(h)
                .flat_map(|row| {
                    let r = inv_rms(row, self.0);
                    row.iter().zip(w).map(move |(&v, &wi)| (f64::from(v) * r * f64::from(wi)) as _)
                })
                .collect()
        });
        Ok((out, l1.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let dx = if x.track_op() { Some(x.apply_op3_no_bwd(w, &g, &RmsNormDx(self.0))?) } else { None };
        let dw = if w.track_op() { Some(x.apply_op3_no_bwd(w, &g, &RmsNormDw(self.0))?) } else { None };
        Ok((dx, dw))
    }
}

impl CustomOp3 for RmsNormDx {
    fn name(&self) -> &'static str {
        "verdict-rms-norm-dx"
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
        let h = l2.shape().elem_count();
        // dx = r * g*w - x * r^3 / h * sum(g*w*x)
        let out = with3!(s1, l1, s2, l2, s3, l3, |x, w, g| {
            x.chunks(h)
                .zip(g.chunks(h))
                .flat_map(|(xr, gr)| {
                    let r = inv_rms(xr, self.0);
                    let dot: f64 =
                        xr.iter().zip(gr).zip(w).map(|((&a, &b), &c)| f64::from(a) * f64::from(b) * f64::from(c)).sum();
                    let k = r * r * r * dot / h as f64;
                    xr.iter()
                        .zip(gr)
                        .zip(w)
                        .map(move |((&a, &b), &c)| (r * f64::from(b) * f64::from(c) - f64::from(a) * k) as _)
                })
                .collect()
        });
        Ok((out, l1.shape().clone()))
    }
}

impl CustomOp3 for RmsNormDw {
    fn name(&self) -> &'static str {
        "verdict-rms-norm-dw"
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
        let h = l2.shape().elem_count();
        // dw_j = sum over rows of g_j * x_j * r
        let out = with3!(s1, l1, s2, l2, s3, l3, |x, _w, g| {
            let mut acc = vec![0f64; h];
            for (xr, gr) in x.chunks(h).zip(g.chunks(h)) {
                let r = inv_rms(xr, self.0);
                for ((a, &xv), &gv) in acc.iter_mut().zip(xr).zip(gr) {
                    *a += f64::from(xv) * f64::from(gv) * r;
                }
            }
            acc.into_iter().map(|v| v as _).collect()
        });
        Ok((out, l2.shape().clone()))
    }
}

/// `x [.., h] * w [h] / sqrt(mean(x^2) + eps)`, fused on CPU.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Option<Result<Tensor>> {
    if !x.device().is_cpu() || !matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64) {
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
