//! Self-attention as one graph node on the CPU (f32/f64): rotary embedding of q and k, the
//! grouped-query scores, the additive mask, softmax and the weighted sum of values in one
//! forward, and one backward that returns dq, dk and dv.
//!
//! Composed from candle ops (`model.rs`, what a GPU runs) attention is about a dozen graph
//! nodes per layer, half of them `[heads, T, T]` tensors that the graph keeps until the end of
//! the backward, plus transposes of q, k, v and the output to and from a heads-first layout.
//! Here q, k, v and the output stay in the `[B * T, heads * head_dim]` layout the projections
//! produce (each head is a strided matrix the products read in place), the only extra tensor
//! kept is the softmax (taken, and freed, by the backward), and the element-wise passes are
//! loops over rows. Heads run on candle's CPU threads, one matrix product each at a time.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::real::{Mat, Real, Shared, dot, for_each_unit, matmul, max, sum, vectorized, with_slice};

/// How the rows of q, k and v split into sequences and heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub batch: usize,
    pub seq: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl Heads {
    fn rep(&self) -> usize {
        self.q_heads / self.kv_heads
    }
}

struct Attention {
    heads: Heads,
    scale: f64,
    /// `[B * T, head_dim / 2]` rotary tables for each token's position.
    cos: Tensor,
    sin: Tensor,
    /// `[B, T, T]` additive mask (0 visible, -1e9 hidden).
    bias: Tensor,
    /// The softmax `[B, q_heads, T, T]` of the forward, for the backward (which takes it).
    probs: Mutex<Option<CpuStorage>>,
}

/// `x` with HF (non-interleaved) rotary embedding applied to every head of every row; `sign`
/// -1 rotates back (the transpose, i.e. the gradient).
fn rope<T: Real>(x: &[T], cos: &[T], sin: &[T], head_dim: usize, sign: T) -> Vec<T> {
    let half = head_dim / 2;
    let width = x.len() / (cos.len() / half);
    let mut out = vec![T::ZERO; x.len()];
    vectorized(|| {
        for ((row, o), (c, s)) in x.chunks(width).zip(out.chunks_mut(width)).zip(cos.chunks(half).zip(sin.chunks(half)))
        {
            for (xh, oh) in row.chunks(head_dim).zip(o.chunks_mut(head_dim)) {
                let (x1, x2) = xh.split_at(half);
                let (o1, o2) = oh.split_at_mut(half);
                for i in 0..half {
                    let s = sign * s[i];
                    o1[i] = x1[i] * c[i] - x2[i] * s;
                    o2[i] = x2[i] * c[i] + x1[i] * s;
                }
            }
        }
    });
    out
}

/// In place: `row + bias`, then softmax. (Separate passes, each of which vectorizes.)
#[inline(always)]
fn softmax_row<T: Real>(row: &mut [T], bias: &[T]) {
    for (r, &b) in row.iter_mut().zip(bias) {
        *r = *r + b;
    }
    let top = max(row);
    for r in row.iter_mut() {
        *r = (*r - top).exp();
    }
    let inv = T::ONE / sum(row);
    for r in row.iter_mut() {
        *r = *r * inv;
    }
}

/// In place: `dp <- scale * p * (dp - sum(dp * p))`, the softmax backward with the score scale.
#[inline(always)]
fn softmax_grad_row<T: Real>(dp: &mut [T], p: &[T], scale: T) {
    let d = dot(dp, p);
    for (x, &q) in dp.iter_mut().zip(p) {
        *x = scale * q * (*x - d);
    }
}

impl Attention {
    /// Forward on slices: returns the output `[B * T, q_heads * head_dim]` and the softmax.
    fn forward<T: Real>(&self, q: &[T], k: &[T], v: &[T]) -> Result<(Vec<T>, Vec<T>)> {
        let Heads { batch, seq, q_heads, kv_heads, head_dim: hd } = self.heads;
        let (qw, kw, rep) = (q_heads * hd, kv_heads * hd, self.heads.rep());
        let (qr, kr) = with_slice::<T, _>(&self.cos, "rope cos", |cos| {
            with_slice::<T, _>(&self.sin, "rope sin", |sin| {
                (rope(q, cos, sin, hd, T::ONE), rope(k, cos, sin, hd, T::ONE))
            })
        })??;
        let mut probs = vec![T::ZERO; batch * q_heads * seq * seq];
        let mut out = vec![T::ZERO; batch * seq * qw];
        let (p_all, o_all) = (Shared(probs.as_mut_ptr()), Shared(out.as_mut_ptr()));
        let scale = T::from_f64(self.scale);
        with_slice::<T, _>(&self.bias, "attention mask", |bias| {
            for_each_unit(batch * q_heads, |unit| {
                let (b, h) = (unit / q_heads, unit % q_heads);
                let g = h / rep;
                let qh = Mat::rows(qr[b * seq * qw + h * hd..].as_ptr(), qw);
                let kg = Mat::rows(kr[b * seq * kw + g * hd..].as_ptr(), kw);
                let vg = Mat::rows(v[b * seq * kw + g * hd..].as_ptr(), kw);
                // SAFETY: unit (b, h) alone writes its softmax block and its head's output columns.
                let p = unsafe { std::slice::from_raw_parts_mut(p_all.at(unit * seq * seq), seq * seq) };
                unsafe { matmul((seq, seq, hd), p.as_mut_ptr(), seq, false, qh, kg.t(), scale) };
                let mask = &bias[b * seq * seq..(b + 1) * seq * seq];
                vectorized(|| {
                    for (row, m) in p.chunks_mut(seq).zip(mask.chunks(seq)) {
                        softmax_row(row, m);
                    }
                });
                let o = unsafe { o_all.at(b * seq * qw + h * hd) };
                unsafe { matmul((seq, hd, seq), o, qw, false, Mat::rows(p.as_ptr(), seq), vg, T::ONE) };
            })
        })?;
        Ok((out, probs))
    }

    /// Backward on slices: dq, dk, dv for the output gradient `dy`.
    fn backward<T: Real>(&self, q: &[T], k: &[T], v: &[T], dy: &[T]) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let Heads { batch, seq, q_heads, kv_heads, head_dim: hd } = self.heads;
        let (qw, kw, rep) = (q_heads * hd, kv_heads * hd, self.heads.rep());
        let saved = self.probs.lock().expect("attention probs lock").take();
        let probs: Vec<T> = match saved.and_then(T::into_vec) {
            Some(p) => p,
            // A second backward through the same graph: recompute.
            None => self.forward(q, k, v)?.1,
        };
        let (qr, kr) = with_slice::<T, _>(&self.cos, "rope cos", |cos| {
            with_slice::<T, _>(&self.sin, "rope sin", |sin| {
                (rope(q, cos, sin, hd, T::ONE), rope(k, cos, sin, hd, T::ONE))
            })
        })??;
        let mut dqr = vec![T::ZERO; q.len()];
        // Per query head; the heads sharing a kv head are summed below.
        let mut dk_heads = vec![T::ZERO; batch * q_heads * seq * hd];
        let mut dv_heads = vec![T::ZERO; batch * q_heads * seq * hd];
        let (dq_all, dk_all, dv_all) =
            (Shared(dqr.as_mut_ptr()), Shared(dk_heads.as_mut_ptr()), Shared(dv_heads.as_mut_ptr()));
        let scale = T::from_f64(self.scale);
        for_each_unit(batch * q_heads, |unit| {
            let (b, h) = (unit / q_heads, unit % q_heads);
            let g = h / rep;
            let qh = Mat::rows(qr[b * seq * qw + h * hd..].as_ptr(), qw);
            let kg = Mat::rows(kr[b * seq * kw + g * hd..].as_ptr(), kw);
            let vg = Mat::rows(v[b * seq * kw + g * hd..].as_ptr(), kw);
            let dyh = Mat::rows(dy[b * seq * qw + h * hd..].as_ptr(), qw);
            let p = &probs[unit * seq * seq..(unit + 1) * seq * seq];
            let mut ds = vec![T::ZERO; seq * seq];
            // SAFETY: unit (b, h) alone writes its head's dq columns and its dk/dv blocks.
            unsafe {
                matmul((seq, seq, hd), ds.as_mut_ptr(), seq, false, dyh, vg.t(), T::ONE);
                vectorized(|| {
                    for (d, pr) in ds.chunks_mut(seq).zip(p.chunks(seq)) {
                        softmax_grad_row(d, pr, scale);
                    }
                });
                let ds = Mat::rows(ds.as_ptr(), seq);
                matmul((seq, hd, seq), dq_all.at(b * seq * qw + h * hd), qw, false, ds, kg, T::ONE);
                matmul((seq, hd, seq), dk_all.at(unit * seq * hd), hd, false, ds.t(), qh, T::ONE);
                let pm = Mat::rows(p.as_ptr(), seq);
                matmul((seq, hd, seq), dv_all.at(unit * seq * hd), hd, false, pm.t(), dyh, T::ONE);
            }
        });
        drop(probs);
        // Sum the query heads of each kv head into the `[B * T, kv_heads * head_dim]` layout.
        let (mut dkr, mut dv) = (vec![T::ZERO; k.len()], vec![T::ZERO; v.len()]);
        for b in 0..batch {
            for h in 0..q_heads {
                let g = h / rep;
                let src = (b * q_heads + h) * seq * hd;
                for t in 0..seq {
                    let dst = (b * seq + t) * kw + g * hd;
                    for i in 0..hd {
                        dkr[dst + i] += dk_heads[src + t * hd + i];
                        dv[dst + i] += dv_heads[src + t * hd + i];
                    }
                }
            }
        }
        let (dq, dk) = with_slice::<T, _>(&self.cos, "rope cos", |cos| {
            with_slice::<T, _>(&self.sin, "rope sin", |sin| {
                (rope(&dqr, cos, sin, hd, -T::ONE), rope(&dkr, cos, sin, hd, -T::ONE))
            })
        })??;
        Ok((dq, dk, dv))
    }
}

fn slice_of<'a, T: Real>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [T]> {
    let (a, b) =
        l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg(format!("attention: {what} not contiguous")))?;
    T::slice(s).map(|v| &v[a..b]).ok_or_else(|| candle_core::Error::Msg(format!("attention: {what} has another dtype")))
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "verdict-attention"
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
        fn run<T: Real>(
            op: &Attention,
            (s1, l1, s2, l2, s3, l3): (&CpuStorage, &Layout, &CpuStorage, &Layout, &CpuStorage, &Layout),
        ) -> Result<CpuStorage> {
            let (q, k, v) = (slice_of::<T>(s1, l1, "q")?, slice_of::<T>(s2, l2, "k")?, slice_of::<T>(s3, l3, "v")?);
            let (out, probs) = op.forward(q, k, v)?;
            *op.probs.lock().expect("attention probs lock") = Some(T::storage(probs));
            Ok(T::storage(out))
        }
        let args = (s1, l1, s2, l2, s3, l3);
        let out = match s1 {
            CpuStorage::F32(_) => run::<f32>(self, args)?,
            CpuStorage::F64(_) => run::<f64>(self, args)?,
            _ => candle_core::bail!("attention: f32 or f64 only"),
        };
        let h = self.heads;
        Ok((out, Shape::from((h.batch * h.seq, h.q_heads * h.head_dim))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        fn run<T: Real + candle_core::WithDType>(
            op: &Attention,
            q: &Tensor,
            k: &Tensor,
            v: &Tensor,
            grad: &Tensor,
        ) -> Result<(Tensor, Tensor, Tensor)> {
            let (dq, dk, dv) = with_slice::<T, _>(q, "q", |q| {
                with_slice::<T, _>(k, "k", |k| {
                    with_slice::<T, _>(v, "v", |v| with_slice::<T, _>(grad, "grad", |g| op.backward(q, k, v, g)))
                })
            })?????;
            let dev = q.device();
            Ok((
                Tensor::from_vec(dq, q.shape(), dev)?,
                Tensor::from_vec(dk, k.shape(), dev)?,
                Tensor::from_vec(dv, v.shape(), dev)?,
            ))
        }
        let grad = grad.contiguous()?;
        let (dq, dk, dv) = match q.dtype() {
            candle_core::DType::F32 => run::<f32>(self, q, k, v, &grad)?,
            candle_core::DType::F64 => run::<f64>(self, q, k, v, &grad)?,
            dt => candle_core::bail!("attention: f32 or f64 only, not {dt:?}"),
        };
        Ok((q.track_op().then_some(dq), k.track_op().then_some(dk), v.track_op().then_some(dv)))
    }
}

/// Attention over q `[B * T, q_heads * head_dim]`, k and v `[B * T, kv_heads * head_dim]` (as the
/// projections produce them, before rotary embedding) with rotary tables `cos`/`sin`
/// (`[B * T, head_dim / 2]`) and the additive mask `bias` (`[B, T, T]`); returns
/// `[B * T, q_heads * head_dim]`, the layout the output projection takes. `None` where the fused
/// kernel does not apply (not on the CPU, or not f32/f64): use the composed ops.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    (cos, sin, bias): (&Tensor, &Tensor, &Tensor),
    heads: Heads,
    scale: f64,
) -> Option<Result<Tensor>> {
    if !q.device().is_cpu() || !matches!(q.dtype(), candle_core::DType::F32 | candle_core::DType::F64) {
        return None;
    }
    Some((|| {
        let op = Attention {
            heads,
            scale,
            cos: cos.to_dtype(q.dtype())?.contiguous()?,
            sin: sin.to_dtype(q.dtype())?.contiguous()?,
            bias: bias.to_dtype(q.dtype())?.contiguous()?,
            probs: Mutex::new(None),
        };
        q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
    })())
}

#[cfg(test)]
#[path = "attention_tests.rs"]
mod tests;
