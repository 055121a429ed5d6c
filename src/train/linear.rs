//! `x @ w^T` as one graph node whose backward computes only the gradients that are needed.
//!
//! candle's own `matmul` backward always computes both operand gradients, even for a frozen
//! weight (LoRA's base) or an input that depends on no variable, and `w.t()` adds a transpose
//! node to the graph. Here the forward is candle's matmul kernel on the storages (so it runs on
//! every backend candle has), and `bwd` skips `dW` when `w` is not a variable and `dx` when `x`
//! does not depend on one.

use candle_core::backend::BackendStorage;
use std::sync::Arc;

use candle_core::{CpuStorage, CudaStorage, CustomOp2, DType, Layout, MetalStorage, Result, Shape, Tensor};

use super::real::{Mat, with_slice};
use super::weight_grads::WeightGrads;

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

/// `LinearOp` whose weight gradient goes into `WeightGrads` (CPU, f32/f64; see
/// `weight_grads.rs`) instead of candle's `GradStore`.
struct LinearInto {
    grads: Arc<WeightGrads>,
}

impl CustomOp2 for LinearInto {
    fn name(&self) -> &'static str {
        "verdict-linear-into"
    }

    fn cpu_fwd(&self, x: &CpuStorage, lx: &Layout, w: &CpuStorage, lw: &Layout) -> Result<(CpuStorage, Shape)> {
        fwd(x, lx, w, lw)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gx = if x.track_op() { Some(g.matmul(w)?) } else { None };
        if w.track_op() {
            let (m, k) = x.dims2()?;
            let n = w.dim(0)?;
            let (g, x) = (g.contiguous()?, x.contiguous()?);
            macro_rules! sink {
                ($t:ty) => {
                    with_slice::<$t, _>(&g, "grad", |gs| {
                        with_slice::<$t, _>(&x, "input", |xs| {
                            // dW [n, k] = g^T [n, m] x [m, k]
                            // SAFETY: g is [m, n] and x is [m, k], both contiguous.
                            unsafe {
                                self.grads.add_product(
                                    w,
                                    (n, m, k),
                                    Mat::rows(gs.as_ptr(), n).t(),
                                    Mat::rows(xs.as_ptr(), k),
                                )
                            }
                        })
                    })???
                };
            }
            match w.dtype() {
                DType::F32 => sink!(f32),
                DType::F64 => sink!(f64),
                dt => candle_core::bail!("linear: weight gradients in place for f32/f64 only, not {dt:?}"),
            }
        }
        Ok((gx, None))
    }
}

/// `linear` whose weight gradient is written into `grads` (`weight_grads.rs`); CPU, f32/f64.
pub fn linear_into(x: &Tensor, w: &Tensor, grads: &Arc<WeightGrads>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().expect("linear input has a feature dimension");
    let y = x.reshape(((), k))?.contiguous()?.apply_op2(w, LinearInto { grads: grads.clone() })?;
    let mut out = dims;
    *out.last_mut().expect("non-empty") = w.dim(0)?;
    y.reshape(out)
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
