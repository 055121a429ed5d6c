//! A LoRA projection on the CPU as one graph node: `y = x Wᵀ + s (x Aᵀ) Bᵀ` with a frozen base
//! `W [n, k]` (dense f32, or lean: bf16 or quantized, multiplied a tile at a time as
//! `frozen.rs` does), adapters `A [r, k]`, `B [n, r]` and scale `s`.
//!
//! Composed, it is five nodes (the base product, two adapter products, the scale, the sum), and
//! candle's backward zeroes and then adds a gradient buffer for every edge between them: on a
//! 2-thread Intel Xeon those small element-wise passes and their thread-pool barriers ran on
//! one thread while the other waited, about a tenth of a LoRA step. Here the forward is three
//! products (the adapter's added into the base's output by the product itself) and the
//! backward four, with `x Aᵀ` recomputed (`m x k x r`, a few percent of the base product)
//! instead of kept.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::frozen::ProjWeight;
use super::real::{Mat, cpu_slice, matmul_threaded};

struct LoraProj {
    /// The frozen base `[n, k]`: contiguous f32 on the CPU, or lean.
    w: ProjWeight,
    scale: f32,
}

/// Whether `lora_proj` takes this projection: activations and adapters f32 and contiguous on
/// the CPU, the base frozen: dense f32 (a full fine-tune's weights are variables and go through
/// `linear_into`), or lean.
pub fn applies(x: &Tensor, w: &ProjWeight, a: &Tensor, b: &Tensor) -> bool {
    let base = match w {
        ProjWeight::Dense(w) => {
            w.device().is_cpu() && w.dtype() == DType::F32 && !w.is_variable() && w.rank() == 2 && w.is_contiguous()
        }
        ProjWeight::Half(_) | ProjWeight::Quant(_) => true,
    };
    base && [x, a, b].iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// `x [.., k] Wᵀ + scale (x Aᵀ) Bᵀ -> [.., n]`, one node; gradients for `x`, `A` and `B`.
pub fn lora_proj(x: &Tensor, w: &ProjWeight, a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().expect("a projection's input has a feature dimension");
    let op = LoraProj { w: w.clone(), scale: scale as f32 };
    let y = x.reshape(((), k))?.contiguous()?.apply_op3(&a.contiguous()?, &b.contiguous()?, op)?;
    let mut out = dims;
    *out.last_mut().expect("non-empty") = w.dims2()?.0;
    y.reshape(out)
}

fn f32s<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let Some((a, b)) = l.contiguous_offsets() else { candle_core::bail!("LoRA projection: {what} is not contiguous") };
    match s {
        CpuStorage::F32(v) => Ok(&v[a..b]),
        _ => candle_core::bail!("LoRA projection: {what} is not f32"),
    }
}

impl CustomOp3 for LoraProj {
    fn name(&self) -> &'static str {
        "verdict-lora-proj"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, a, b) = (f32s(sx, lx, "input")?, f32s(sa, la, "A")?, f32s(sb, lb, "B")?);
        let (m, k) = lx.shape().dims2()?;
        let (r, ka) = la.shape().dims2()?;
        let (n, rb) = lb.shape().dims2()?;
        let (nw, kw) = self.w.dims2()?;
        if ka != k || kw != k || rb != r || nw != n {
            candle_core::bail!("LoRA projection: input [{m}, {k}], A [{r}, {ka}], B [{n}, {rb}], base [{nw}, {kw}]");
        }
        let mut y = vec![0f32; m * n];
        let mut h = vec![0f32; m * r];
        self.w.mul_xwt(x, m, &mut y)?;
        // SAFETY: every matrix is contiguous with the shapes checked above; y and h are fresh
        // buffers no other thread sees.
        unsafe {
            let at = Mat::rows(a.as_ptr(), k).t();
            matmul_threaded((m, r, k), h.as_mut_ptr(), r, false, Mat::rows(x.as_ptr(), k), at, 1.0);
            let bt = Mat::rows(b.as_ptr(), r).t();
            matmul_threaded((m, n, r), y.as_mut_ptr(), n, true, Mat::rows(h.as_ptr(), r), bt, self.scale);
        }
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let (m, k) = x.dims2()?;
        let (r, n) = (a.dim(0)?, b.dim(0)?);
        let s = self.scale;
        let want_gx = x.track_op();
        let (mut ga, mut gb) = (vec![0f32; r * k], vec![0f32; n * r]);
        let mut gx = if want_gx { vec![0f32; m * k] } else { Vec::new() };
        let (mut h, mut u) = (vec![0f32; m * r], vec![0f32; m * r]);
        let (hx, ha, hb, hg) =
            (x.storage_and_layout(), a.storage_and_layout(), b.storage_and_layout(), g.storage_and_layout());
        let xs = cpu_slice::<f32>(&hx.0, hx.1, "input")?;
        let as_ = cpu_slice::<f32>(&ha.0, ha.1, "A")?;
        let (bs, gs) = (cpu_slice::<f32>(&hb.0, hb.1, "B")?, cpu_slice::<f32>(&hg.0, hg.1, "gradient")?);
        if xs.len() != m * k || as_.len() != r * k || bs.len() != n * r || gs.len() != m * n {
            candle_core::bail!(
                "LoRA projection backward: operands do not match input [{m}, {k}], rank {r}, output {n}"
            );
        }
        if want_gx {
            // dx = g W, then + s u A below
            self.w.mul_gw(gs, m, &mut gx)?;
        }
        // SAFETY: contiguous operands of the checked lengths; every destination is a fresh
        // buffer.
        unsafe {
            let (xm, gm) = (Mat::rows(xs.as_ptr(), k), Mat::rows(gs.as_ptr(), n));
            // h = x Aᵀ [m, r]; u = g B [m, r]
            matmul_threaded((m, r, k), h.as_mut_ptr(), r, false, xm, Mat::rows(as_.as_ptr(), k).t(), 1.0);
            matmul_threaded((m, r, n), u.as_mut_ptr(), r, false, gm, Mat::rows(bs.as_ptr(), r), 1.0);
            // dB = s gᵀ h [n, r]; dA = s uᵀ x [r, k]
            matmul_threaded((n, r, m), gb.as_mut_ptr(), r, false, gm.t(), Mat::rows(h.as_ptr(), r), s);
            let ut = Mat::rows(u.as_ptr(), r).t();
            matmul_threaded((r, k, m), ga.as_mut_ptr(), k, false, ut, xm, s);
            if want_gx {
                let um = Mat::rows(u.as_ptr(), r);
                matmul_threaded((m, k, r), gx.as_mut_ptr(), k, true, um, Mat::rows(as_.as_ptr(), k), s);
            }
        }
        drop((hx, ha, hb, hg));
        let dev = x.device();
        let gx = if want_gx { Some(Tensor::from_vec(gx, (m, k), dev)?) } else { None };
        Ok((gx, Some(Tensor::from_vec(ga, (r, k), dev)?), Some(Tensor::from_vec(gb, (n, r), dev)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::linear::linear;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// The one node over `base` against the composed projection over `dense`, its values.
    fn matches_composed(base: &ProjWeight, dense: &Tensor, m: usize, r: usize) -> Result<()> {
        let dev = Device::Cpu;
        let (n, k) = dense.dims2()?;
        let x = Var::randn(0f32, 1., (m, k), &dev)?;
        let a = Var::randn(0f32, 0.2, (r, k), &dev)?;
        let b = Var::randn(0f32, 0.2, (n, r), &dev)?;
        let c = Tensor::randn(0f32, 1., (m, n), &dev)?;
        assert!(applies(x.as_tensor(), base, a.as_tensor(), b.as_tensor()));
        let fused = lora_proj(x.as_tensor(), base, a.as_tensor(), b.as_tensor(), 2.0)?;
        let composed =
            (linear(x.as_tensor(), dense)? + (linear(&linear(x.as_tensor(), a.as_tensor())?, b.as_tensor())? * 2.0)?)?;
        let d = max_diff(&fused, &composed);
        assert!(d < 1e-3, "{base:?}: forward differs by {d}");
        let g1 = (fused * &c)?.sum_all()?.backward()?;
        let g2 = (composed * &c)?.sum_all()?.backward()?;
        for (name, v) in [("x", &x), ("A", &a), ("B", &b)] {
            let (p, q) = (g1.get(v.as_tensor()).expect("fused gradient"), g2.get(v.as_tensor()).expect("gradient"));
            let d = max_diff(p, q) / q.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-4, "{base:?}: d{name} differs by {d} of its largest value");
            assert!(q.abs()?.max_all()?.to_scalar::<f32>()? > 0.1, "d{name} is not trivially zero");
        }
        assert!(g1.get(dense).is_none(), "the frozen base gets no gradient");
        Ok(())
    }

    #[test]
    fn one_node_matches_the_composed_projection_and_its_gradients() -> Result<()> {
        let w = Tensor::randn(0f32, 0.2, (40, 48), &Device::Cpu)?;
        matches_composed(&ProjWeight::Dense(w.clone()), &w, 37, 4)
    }

    #[test]
    fn a_lean_base_in_several_tiles_matches_the_composed_projection_over_its_values() -> Result<()> {
        let dev = Device::Cpu;
        // 2600 rows of 512: two tiles of the tests' 1M values, the second short.
        let w = Tensor::randn(0f32, 0.05, (2600, 512), &dev)?;
        let bf = w.to_dtype(DType::BF16)?.to_dtype(DType::F32)?;
        matches_composed(&ProjWeight::half(&w)?, &bf, 9, 4)?;
        let q = candle_core::quantized::QTensor::quantize(&w, candle_core::quantized::GgmlDType::Q8_0)?;
        let rows = super::super::frozen::QuantRows::new(q.dtype(), &q.data()?, 2600, 512)?;
        let quant = ProjWeight::Quant(std::sync::Arc::new(rows));
        matches_composed(&quant, &q.dequantize(&dev)?, 9, 4)
    }

    #[test]
    fn an_input_that_needs_no_gradient_gets_none_and_a_variable_base_is_not_taken() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (5, 8), &dev)?;
        let w = Tensor::randn(0f32, 1., (6, 8), &dev)?;
        let a = Var::randn(0f32, 1., (2, 8), &dev)?;
        let b = Var::randn(0f32, 1., (6, 2), &dev)?;
        let g =
            lora_proj(&x, &ProjWeight::Dense(w.clone()), a.as_tensor(), b.as_tensor(), 0.5)?.sum_all()?.backward()?;
        assert!(g.get(&x).is_none());
        assert!(g.get(a.as_tensor()).is_some() && g.get(b.as_tensor()).is_some());
        let wv = Var::from_tensor(&w)?;
        assert!(!applies(&x, &ProjWeight::Dense(wv.as_tensor().clone()), a.as_tensor(), b.as_tensor()));
        assert!(!applies(&x.to_dtype(DType::F64)?, &ProjWeight::Dense(w), a.as_tensor(), b.as_tensor()));
        Ok(())
    }
}
