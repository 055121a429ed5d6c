//! Self-attention as one graph node on the CPU (f32/f64): rotary embedding of q and k, the
//! grouped-query scores, the additive mask, softmax and the weighted sum of values in one
//! forward, and one backward that returns dq, dk and dv.
//!
//! Composed from candle ops (`model.rs`, what a GPU runs) attention is about a dozen graph
//! nodes per layer, half of them `[heads, T, T]` tensors that the graph keeps until the end of
//! the backward, plus transposes of q, k, v and the output to and from a heads-first layout.
//! Here q, k, v and the output stay in the `[B * T, heads * head_dim]` layout the projections
//! produce (each head is a strided matrix the products read in place), and the element-wise
//! passes are loops over rows. Heads run on candle's CPU threads, one matrix product each at a
//! time.
//!
//! Nothing but q, k and v is kept for the backward: it recomputes each block's softmax with
//! the same product and the same loop as the forward, so the probabilities, and the gradients,
//! are the same bits as if they had been kept. Kept, the softmax was `B x heads x T x T` values
//! a layer, all of them alive from the end of the forward until the backward reached the layer:
//! that is where a LoRA step peaks (135M at length 512: 1,646 -> 1,125 MiB), while a full
//! fine-tuning step peaks at the end of the backward, when the weight gradients are all there
//! (2,723 -> 2,679 MiB). The price is one more product of the five in the backward.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::real::{Mat, Real, Shared, dot, for_each_unit, matmul, max, par_parts, simd_fn, sum, with_slice};

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
}

/// Query rows per block: a block's scores only go up to its last row's position (the mask is
/// causal, so later keys are hidden from every row in it), which skips most of the hidden half
/// of the scores and of both products with them.
const BLOCK: usize = 64;

simd_fn! {
    /// `out` = whole rows of `x` with HF (non-interleaved) rotary embedding applied to every
    /// head, `cos`/`sin` holding those rows' halves; `sign` -1 rotates back (the transpose, i.e.
    /// the gradient).
    fn rope_rows<T: Real>(x: &[T], cos: &[T], sin: &[T], head_dim: usize, sign: T, out: &mut [T]) {
        let half = head_dim / 2;
        let width = x.len() / (cos.len() / half);
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
    }
}

/// Rows per part when rotary or the kv-head sum runs over the pool.
const ROWS_PER_PART: usize = 32;

/// `x` with rotary applied to every row (`rope_rows`), the rows shared over the thread pool.
fn rope<T: Real>(x: &[T], cos: &[T], sin: &[T], head_dim: usize, sign: T) -> Vec<T> {
    let half = head_dim / 2;
    let width = x.len() / (cos.len() / half);
    let mut out = vec![T::ZERO; x.len()];
    par_parts(&mut out, ROWS_PER_PART * width, |at, o| {
        let (r0, r1) = (at / width, (at + o.len()) / width);
        rope_rows(&x[at..at + o.len()], &cos[r0 * half..r1 * half], &sin[r0 * half..r1 * half], head_dim, sign, o)
    });
    out
}

/// Sums the per-query-head gradients `[B, q_heads, T, head_dim]` of each kv head into the
/// `[B * T, kv_heads * head_dim]` layout, rows over the thread pool (each element summed over
/// its heads in order, so the result does not depend on the thread count).
fn sum_kv_heads<T: Real>(per_head: &[T], heads: Heads) -> Vec<T> {
    let kw = heads.kv_heads * heads.head_dim;
    let mut out = vec![T::ZERO; per_head.len() / heads.rep()];
    par_parts(&mut out, ROWS_PER_PART * kw, |at, o| sum_kv_rows(per_head, at / kw, o, heads));
    out
}

simd_fn! {
    /// `sum_kv_heads` for the output rows from `first_row` on that `out` holds.
    fn sum_kv_rows<T: Real>(per_head: &[T], first_row: usize, out: &mut [T], heads: Heads) {
        let Heads { seq, q_heads, kv_heads, head_dim: hd, .. } = heads;
        let rep = q_heads / kv_heads;
        for (i, row) in out.chunks_mut(kv_heads * hd).enumerate() {
            let (b, t) = ((first_row + i) / seq, (first_row + i) % seq);
            for (g, dst) in row.chunks_mut(hd).enumerate() {
                for h in g * rep..(g + 1) * rep {
                    let src = &per_head[((b * q_heads + h) * seq + t) * hd..][..hd];
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d = *d + s;
                    }
                }
            }
        }
    }
}

simd_fn! {
    /// In place on the first `width` entries of each row (`stride` apart): `+ mask`, then
    /// softmax. Separate passes, each of which vectorizes.
    fn softmax_rows<T: Real>(p: &mut [T], mask: &[T], stride: usize, width: usize) {
        for (row, m) in p.chunks_mut(stride).zip(mask.chunks(stride)) {
            let row = &mut row[..width];
            for (r, &b) in row.iter_mut().zip(m) {
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
    }
}

simd_fn! {
    /// In place on the first `width` entries of each row: `dp <- scale * p * (dp - sum(dp * p))`,
    /// the softmax backward with the score scale.
    fn softmax_grad_rows<T: Real>(dp: &mut [T], p: &[T], stride: usize, width: usize, scale: T) {
        for (d, q) in dp.chunks_mut(stride).zip(p.chunks(stride)) {
            let (d, q) = (&mut d[..width], &q[..width]);
            let s = dot(d, q);
            for (x, &y) in d.iter_mut().zip(q) {
                *x = scale * y * (*x - s);
            }
        }
    }
}

/// The row blocks of one sequence: `(first row, rows, keys it may see)`.
fn blocks(seq: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..seq).step_by(BLOCK).map(move |i0| {
        let i1 = (i0 + BLOCK).min(seq);
        (i0, i1 - i0, i1)
    })
}

impl Attention {
    fn roped<T: Real>(&self, q: &[T], k: &[T], sign: T) -> Result<(Vec<T>, Vec<T>)> {
        let hd = self.heads.head_dim;
        with_slice::<T, _>(&self.cos, "rope cos", |cos| {
            with_slice::<T, _>(&self.sin, "rope sin", |sin| (rope(q, cos, sin, hd, sign), rope(k, cos, sin, hd, sign)))
        })?
    }

    /// The softmax of query head `h` of sequence `b` for the rows `i0..i0 + rows` over their
    /// first `keys` keys, into `p` (`rows` rows `seq` apart; entries past `keys` are left as
    /// they were). `qr`/`kr` are q and k after rotary embedding. The forward and the backward
    /// both get their probabilities here, so they are the same bits.
    fn block_probs<T: Real>(
        &self,
        (qr, kr, mask): (&[T], &[T], &[T]),
        (b, h): (usize, usize),
        (i0, rows, keys): (usize, usize, usize),
        p: &mut [T],
    ) {
        let Heads { seq, q_heads, kv_heads, head_dim: hd, .. } = self.heads;
        let (qw, kw) = (q_heads * hd, kv_heads * hd);
        let g = h / self.heads.rep();
        let qh = Mat::rows(qr[(b * seq + i0) * qw + h * hd..].as_ptr(), qw);
        let kg = Mat::rows(kr[b * seq * kw + g * hd..].as_ptr(), kw);
        let p = &mut p[..rows * seq];
        // SAFETY: `p` holds `rows` rows of `seq >= keys` values; qh and kg are in bounds of q, k.
        unsafe { matmul((rows, keys, hd), p.as_mut_ptr(), seq, false, qh, kg.t(), T::from_f64(self.scale)) };
        softmax_rows(p, &mask[(b * seq + i0) * seq..(b * seq + i0 + rows) * seq], seq, keys);
    }

    /// Forward on slices: returns the output `[B * T, q_heads * head_dim]`.
    fn forward<T: Real>(&self, q: &[T], k: &[T], v: &[T]) -> Result<Vec<T>> {
        let Heads { batch, seq, q_heads, kv_heads, head_dim: hd } = self.heads;
        let (qw, kw, rep) = (q_heads * hd, kv_heads * hd, self.heads.rep());
        let (qr, kr) = self.roped(q, k, T::ONE)?;
        let mut out = vec![T::ZERO; batch * seq * qw];
        let o_all = Shared(out.as_mut_ptr());
        with_slice::<T, _>(&self.bias, "attention mask", |bias| {
            for_each_unit(batch * q_heads, |unit| {
                let (b, h) = (unit / q_heads, unit % q_heads);
                let vg = Mat::rows(v[b * seq * kw + h / rep * hd..].as_ptr(), kw);
                let mut p = vec![T::ZERO; BLOCK.min(seq) * seq];
                for (i0, rows, keys) in blocks(seq) {
                    self.block_probs((&qr, &kr, bias), (b, h), (i0, rows, keys), &mut p);
                    // SAFETY: unit (b, h) alone writes its head's output columns.
                    let o = unsafe { o_all.at((b * seq + i0) * qw + h * hd) };
                    unsafe { matmul((rows, hd, keys), o, qw, false, Mat::rows(p.as_ptr(), seq), vg, T::ONE) };
                }
            })
        })?;
        Ok(out)
    }

    /// Backward on slices: dq, dk, dv for the output gradient `dy`.
    fn backward<T: Real>(&self, q: &[T], k: &[T], v: &[T], dy: &[T]) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let Heads { batch, seq, q_heads, kv_heads, head_dim: hd } = self.heads;
        let (qw, kw, rep) = (q_heads * hd, kv_heads * hd, self.heads.rep());
        let (qr, kr) = self.roped(q, k, T::ONE)?;
        let mut dqr = vec![T::ZERO; q.len()];
        // Per query head; the heads sharing a kv head are summed below.
        let mut dk_heads = vec![T::ZERO; batch * q_heads * seq * hd];
        let mut dv_heads = vec![T::ZERO; batch * q_heads * seq * hd];
        let (dq_all, dk_all, dv_all) =
            (Shared(dqr.as_mut_ptr()), Shared(dk_heads.as_mut_ptr()), Shared(dv_heads.as_mut_ptr()));
        let scale = T::from_f64(self.scale);
        with_slice::<T, _>(&self.bias, "attention mask", |bias| {
            for_each_unit(batch * q_heads, |unit| {
                let (b, h) = (unit / q_heads, unit % q_heads);
                let g = h / rep;
                let kg = Mat::rows(kr[b * seq * kw + g * hd..].as_ptr(), kw);
                let vg = Mat::rows(v[b * seq * kw + g * hd..].as_ptr(), kw);
                let mut p = vec![T::ZERO; BLOCK.min(seq) * seq];
                let mut ds = vec![T::ZERO; BLOCK.min(seq) * seq];
                for (i0, rows, keys) in blocks(seq) {
                    self.block_probs((&qr, &kr, bias), (b, h), (i0, rows, keys), &mut p);
                    let qh = Mat::rows(qr[(b * seq + i0) * qw + h * hd..].as_ptr(), qw);
                    let dyh = Mat::rows(dy[(b * seq + i0) * qw + h * hd..].as_ptr(), qw);
                    let (pb, dsb) = (&p[..rows * seq], &mut ds[..rows * seq]);
                    // SAFETY: unit (b, h) alone writes its head's dq columns and its dk/dv blocks,
                    // which start zeroed, so every block accumulates into them.
                    unsafe {
                        matmul((rows, keys, hd), dsb.as_mut_ptr(), seq, false, dyh, vg.t(), T::ONE);
                        softmax_grad_rows(dsb, pb, seq, keys, scale);
                        let dsm = Mat::rows(dsb.as_ptr(), seq);
                        let dq = dq_all.at((b * seq + i0) * qw + h * hd);
                        matmul((rows, hd, keys), dq, qw, false, dsm, kg, T::ONE);
                        matmul((keys, hd, rows), dk_all.at(unit * seq * hd), hd, true, dsm.t(), qh, T::ONE);
                        let pm = Mat::rows(pb.as_ptr(), seq);
                        matmul((keys, hd, rows), dv_all.at(unit * seq * hd), hd, true, pm.t(), dyh, T::ONE);
                    }
                }
            })
        })?;
        let (dkr, dv) = (sum_kv_heads(&dk_heads, self.heads), sum_kv_heads(&dv_heads, self.heads));
        let (dq, dk) = self.roped(&dqr, &dkr, -T::ONE)?;
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
            Ok(T::storage(op.forward(q, k, v)?))
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
        };
        q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
    })())
}

#[cfg(test)]
#[path = "attention_tests.rs"]
mod tests;
