//! Response log-probs straight from hidden rows, through the output projection in chunks of
//! positions, so the `[N, vocab]` logits never exist whole, in the forward or the backward.
//!
//! `log_softmax(h W^T)[target]` for N response positions needs N x vocab logits: 151,936 per
//! token for Qwen2.5, 128,256 for Llama 3, so 1,000 response tokens are 0.6 GB in f32, held from
//! the forward to the backward and matched there by a gradient of the same size. Here one graph
//! node takes the hidden rows `[N, hidden]` and the output weight `[vocab, hidden]`; its forward
//! computes the logits of `chunk` rows at a time and keeps only the `[N]` log-probs; its backward
//! recomputes each chunk's logits and turns them into that chunk's share of the gradients
//! (`dh = dz W`, `dW += dz^T h`, with `dz = g (onehot - softmax)` through Gemma 2's soft-cap), so
//! at most a few `[chunk, vocab]` buffers live at once. The price is the output projection's
//! product run a second time in the backward; when all rows fit in one chunk the forward keeps
//! its logits and nothing is recomputed.
//!
//! Every step is a candle op, so it runs on any device; on the CPU in f32/f64 the fused
//! log-softmax kernels (`target_logp.rs`) do the per-row work and a trainable output weight's
//! gradient is written in place (`weight_grads.rs`) when the model sinks them.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp3, DType, Layout, MetalStorage, Result, Shape, Tensor};

use super::linear::linear;
use super::precision::is_half;
use super::real::{Mat, with_slice};
use super::target_logp::{composed_target_logps, target_logp_grad, target_logps};
use super::weight_grads::WeightGrads;

/// Logit entries computed at once: `chunk rows = max(1, LOGITS_CHUNK_ELEMENTS / vocab)` (170
/// rows of SmolLM2's 49,152 tokens, 55 of Qwen2.5's 151,936). 32 MB in f32.
pub const LOGITS_CHUNK_ELEMENTS: usize = 1 << 23;

/// Rows per chunk for a vocabulary, under `LOGITS_CHUNK_ELEMENTS`.
pub fn chunk_rows(vocab: usize) -> usize {
    (LOGITS_CHUNK_ELEMENTS / vocab.max(1)).max(1)
}

/// How the response log-probs are computed from the hidden rows.
#[derive(Clone)]
pub struct Head {
    /// `tanh(x / cap) * cap` on the logits (Gemma 2).
    pub softcap: Option<f64>,
    /// The fused CPU kernels (f32/f64 on the CPU).
    pub fused: bool,
    /// Where a trainable output weight's gradient goes instead of candle's `GradStore`.
    pub sink: Option<Arc<WeightGrads>>,
    /// Rows per chunk; `None`: the whole `[N, vocab]` at once (the path before chunking, kept
    /// to test against).
    pub chunk: Option<usize>,
}

/// `log_softmax(softcap(rows W^T))[n, targets[n]]` -> `[N]` (f32, or f64 for f64 rows):
/// differentiable w.r.t. `rows` and, when it is a variable (or computed from one), `w`.
pub fn response_logps(head: &Head, rows: &Tensor, w: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets = targets.flatten_all()?.to_dtype(DType::U32)?.contiguous()?;
    let n = rows.dim(0)?;
    let Some(chunk) = head.chunk else {
        return unchunked(head, rows, w, &targets);
    };
    let chunk = chunk.max(1);
    let op = ChunkedHeadLogp { head: head.clone(), targets: targets.clone(), chunk, kept: Mutex::new(None) };
    // The value, computed without a graph; the op node below carries it and the backward.
    let rd = rows.detach();
    let wc = w.detach().to_dtype(rows.dtype())?;
    let mut parts = Vec::with_capacity(n.div_ceil(chunk));
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let logits = op.logits(&rd.narrow(0, start, len)?, &wc)?;
        parts.push(log_probs(head, &logits, &targets.narrow(0, start, len)?)?);
        if n <= chunk && (rows.track_op() || w.track_op()) {
            *op.kept.lock().expect("kept logits lock") = Some(logits);
        }
    }
    let value = Tensor::cat(&parts, 0)?;
    rows.apply_op3(w, &value, op)
}

/// The whole `[N, vocab]` logits as one tensor in the graph (what every step did before).
fn unchunked(head: &Head, rows: &Tensor, w: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = match head.sink.as_ref().filter(|_| w.is_variable()) {
        Some(g) => super::linear::linear_into(rows, w, g)?,
        None => linear(rows, &w.to_dtype(rows.dtype())?)?,
    };
    let logits = softcap(&logits, head.softcap)?;
    log_probs(head, &upcast(&logits)?, targets)
}

fn softcap(x: &Tensor, cap: Option<f64>) -> Result<Tensor> {
    match cap {
        Some(c) => (x / c)?.tanh()? * c,
        None => Ok(x.clone()),
    }
}

/// Half precision logits are upcast for the log-softmax; f32/f64 stay as they are.
fn upcast(logits: &Tensor) -> Result<Tensor> {
    if is_half(logits.dtype()) { logits.to_dtype(DType::F32) } else { Ok(logits.clone()) }
}

fn log_probs(head: &Head, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = upcast(logits)?;
    if head.fused { target_logps(&logits, targets) } else { composed_target_logps(&logits, targets) }
}

struct ChunkedHeadLogp {
    head: Head,
    targets: Tensor,
    chunk: usize,
    /// The soft-capped logits (detached) when all rows fit in one chunk: the backward reuses them.
    kept: Mutex<Option<Tensor>>,
}

impl ChunkedHeadLogp {
    /// Soft-capped logits of detached rows by the output weight in the rows' dtype.
    fn logits(&self, rows: &Tensor, w: &Tensor) -> Result<Tensor> {
        softcap(&linear(rows, w)?, self.head.softcap)
    }

    /// `g (onehot(t) - softmax(l))` for one chunk's (soft-capped, upcast) logits `l`.
    fn logit_grad(&self, logits: &Tensor, targets: &Tensor, g: &Tensor) -> Result<Tensor> {
        let g = g.to_dtype(logits.dtype())?.contiguous()?;
        if self.head.fused
            && let Some(d) = target_logp_grad(logits, targets, &g)
        {
            return d;
        }
        let p = super::model::softmax_last(logits)?;
        let dl = p.broadcast_mul(&g.neg()?.unsqueeze(1)?)?;
        dl.scatter_add(&targets.unsqueeze(1)?, &g.unsqueeze(1)?, 1)
    }
}

/// The forward's output is the value computed beside the op (its third input), copied.
fn copy_value<S: BackendStorage>(s: &S, l: &Layout) -> Result<(S, Shape)> {
    Ok((s.try_clone(l)?, l.shape().clone()))
}

impl CustomOp3 for ChunkedHeadLogp {
    fn name(&self) -> &'static str {
        "verdict-chunked-head-logp"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        v: &CpuStorage,
        lv: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        copy_value(v, lv)
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        v: &CudaStorage,
        lv: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        copy_value(v, lv)
    }

    fn metal_fwd(
        &self,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
        v: &MetalStorage,
        lv: &Layout,
    ) -> Result<(MetalStorage, Shape)> {
        copy_value(v, lv)
    }

    fn bwd(
        &self,
        rows: &Tensor,
        w: &Tensor,
        _value: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = rows.dim(0)?;
        let (want_rows, want_w) = (rows.track_op(), w.track_op());
        let sink = self.head.sink.as_ref().filter(|_| w.is_variable() && matches!(w.dtype(), DType::F32 | DType::F64));
        let (rd, wd) = (rows.detach(), w.detach());
        let wc = wd.to_dtype(rows.dtype())?;
        let kept = self.kept.lock().expect("kept logits lock").take();
        let mut drows = Vec::with_capacity(n.div_ceil(self.chunk));
        let mut dw: Option<Tensor> = None;
        for start in (0..n).step_by(self.chunk) {
            let len = self.chunk.min(n - start);
            let x = rd.narrow(0, start, len)?.contiguous()?;
            let logits = match &kept {
                Some(k) => k.clone(),
                None => self.logits(&x, &wc)?,
            };
            let (t, gc) = (self.targets.narrow(0, start, len)?, g.narrow(0, start, len)?);
            let mut dz = self.logit_grad(&upcast(&logits)?, &t, &gc)?.to_dtype(logits.dtype())?;
            if let Some(c) = self.head.softcap {
                // l = c tanh(z/c): dl/dz = 1 - tanh(z/c)^2 = 1 - (l/c)^2
                dz = (dz * (&logits / c)?.sqr()?.affine(-1.0, 1.0)?)?;
            }
            drop(logits);
            if want_rows {
                drows.push(dz.matmul(&wc)?);
            }
            if want_w {
                match sink {
                    Some(s) => sink_product(s, w, &dz, &x)?,
                    None => {
                        // Summed over chunks in the weight's own dtype (f32 masters of bf16 compute).
                        let part = dz.t()?.matmul(&x)?.to_dtype(w.dtype())?;
                        dw = Some(match dw {
                            Some(acc) => (acc + part)?,
                            None => part,
                        });
                    }
                }
            }
        }
        let drows = if want_rows && !drows.is_empty() { Some(Tensor::cat(&drows, 0)?) } else { None };
        Ok((drows, dw, None))
    }
}

/// `dW += dz^T x` written into the model's in-place weight gradients (CPU, f32/f64).
fn sink_product(sink: &WeightGrads, w: &Tensor, dz: &Tensor, x: &Tensor) -> Result<()> {
    let (m, n) = dz.dims2()?;
    let k = x.dim(1)?;
    let (dz, x) = (dz.to_dtype(w.dtype())?.contiguous()?, x.to_dtype(w.dtype())?.contiguous()?);
    macro_rules! add {
        ($t:ty) => {
            with_slice::<$t, _>(&dz, "grad", |gs| {
                with_slice::<$t, _>(&x, "input", |xs| {
                    // SAFETY: dz is [m, n] and x is [m, k], both contiguous.
                    unsafe { sink.add_product(w, (n, m, k), Mat::rows(gs.as_ptr(), n).t(), Mat::rows(xs.as_ptr(), k)) }
                })
            })???
        };
    }
    match w.dtype() {
        DType::F32 => add!(f32),
        DType::F64 => add!(f64),
        dt => candle_core::bail!("output weight gradients in place for f32/f64 only, not {dt:?}"),
    }
    Ok(())
}

#[cfg(test)]
#[path = "head_logp_tests.rs"]
mod tests;
