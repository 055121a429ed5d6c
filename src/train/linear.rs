//! `x @ w^T` as one graph node whose backward computes only the gradients that are needed.
//!
//! candle's own `matmul` backward always computes both operand gradients, even for a frozen
//! weight (LoRA's base) or an input that depends on no variable, and `w.t()` adds a transpose
//! node to the graph. Here the forward is candle's matmul kernel on the storages (so it runs on
//! every backend candle has), and `bwd` skips `dW` when `w` is not a variable and `dx` when `x`
//! does not depend on one.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Layout, MetalStorage, Result, Shape, Tensor};

struct LinearOp;

fn fwd<S: BackendStorage>(x: &S, lx: &Layout, w: &S, lw: &Layout) -> Result<(S, Shape)> {
    let (m, k) = lx.shape().dims2()?;
    let (n, k2) = lw.shape().dims2()?;
    if k != k2 {
        candle_core::bail!("linear: input has {k} features, weight expects {k2}");
    }
    // w is [n, k]; its transpose as a layout (no copy) is the [k, n] right operand.
    let wt = lw.transpose(0, 1)?;
    Ok((x.matmul(w, (1, m, n, k), lx, &wt)?, Shape::from((m, n))))
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "verdict-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, lx: &Layout, w: &CpuStorage, lw: &Layout) -> Result<(CpuStorage, Shape)> {
        fwd(x, lx, w, lw)
    }

    fn cuda_fwd(&self, x: &CudaStorage, lx: &Layout, w: &CudaStorage, lw: &Layout) -> Result<(CudaStorage, Shape)> {
        fwd(x, lx, w, lw)
    }

    fn metal_fwd(&self, x: &MetalStorage, lx: &Layout, w: &MetalStorage, lw: &Layout) -> Result<(MetalStorage, Shape)> {
        fwd(x, lx, w, lw)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // `track_op` is true for variables and for anything computed from one.
        let gx = if x.track_op() { Some(g.matmul(w)?) } else { None };
        let gw = if w.track_op() { Some(g.t()?.matmul(x)?) } else { None };
        Ok((gx, gw))
    }
}

/// `x [.., k] @ w[n, k]^T -> [.., n]`, flattening leading dims.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().expect("linear input has a feature dimension");
    let x2 = if dims.len() == 2 { x.clone() } else { x.reshape(((), k))? };
    let y = x2.apply_op2(w, LinearOp)?;
    if dims.len() == 2 {
        Ok(y)
    } else {
        let mut out = dims;
        *out.last_mut().expect("non-empty") = w.dim(0)?;
        y.reshape(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_matmul_and_its_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (2, 3, 5), &dev)?;
        let w = Var::randn(0f32, 1., (4, 5), &dev)?;
        let y = linear(x.as_tensor(), w.as_tensor())?;
        let y_ref = x.as_tensor().broadcast_matmul(&w.as_tensor().t()?)?;
        let diff = (&y - &y_ref)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "forward differs by {diff}");

        let g = y.sqr()?.sum_all()?.backward()?;
        let g_ref = y_ref.sqr()?.sum_all()?.backward()?;
        for v in [&x, &w] {
            let a = g.get(v.as_tensor()).expect("grad");
            let b = g_ref.get(v.as_tensor()).expect("grad");
            let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-4, "gradient differs by {d}");
        }
        Ok(())
    }

    #[test]
    fn frozen_weight_gets_no_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (3, 5), &dev)?;
        let w = Tensor::randn(0f32, 1., (4, 5), &dev)?;
        let g = linear(x.as_tensor(), &w)?.sum_all()?.backward()?;
        assert!(g.get(&w).is_none());
        assert!(g.get(x.as_tensor()).is_some());
        Ok(())
    }
}
