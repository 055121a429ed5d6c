//! The loops of the CPU forward pass (`model::llama`) on plain f32 rows: RMSNorm, rotary
//! embedding, attention of one query head over the KV cache, SwiGLU. Each is one pass over its
//! data compiled for AVX-512, AVX2 and baseline x86-64 and picked at run time (`simd_fn!`),
//! where candle spent one allocated tensor and one pass per elementary op.

use super::simd::{exp_f32, simd_fn};

/// Partial sums of the reductions: independent lanes, so the loops vectorize.
const LANES: usize = 16;

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

simd_fn! {
    /// Each row of `x` (rows of `w.len()` values) divided by its root mean square, times `w`.
    pub fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let n = w.len();
        for (row, o) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let inv = 1.0 / (dot(row, row) / n as f32 + eps).sqrt();
            for ((o, &v), &g) in o.iter_mut().zip(row).zip(w) {
                *o = v * inv * g;
            }
        }
    }
}

/// Rotates every head of `row` (heads of `head_dim` values) by the angles whose cosines and
/// sines are `cos`, `sin` (`head_dim / 2` each): the pairs (2i, 2i+1) when `interleaved` (GGUF
/// llama's permuted q/k), else (i, i + head_dim/2) (Hugging Face layout).
pub fn rope_row(row: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], interleaved: bool) {
    let half = head_dim / 2;
    for head in row.chunks_exact_mut(head_dim) {
        if interleaved {
            for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * cos[i] - b * sin[i];
                pair[1] = a * sin[i] + b * cos[i];
            }
        } else {
            let (x1, x2) = head.split_at_mut(half);
            for i in 0..half {
                let (a, b) = (x1[i], x2[i]);
                x1[i] = a * cos[i] - b * sin[i];
                x2[i] = a * sin[i] + b * cos[i];
            }
        }
    }
}

simd_fn! {
    /// One query head `q` against the first `n` cached positions: position t's key and value
    /// for this head start at `t * stride` in `k` and `v`. Softmax of the scaled scores (in
    /// `scores`, room for `n`), soft-capped first as Gemma 2 does (`tanh(s / cap) * cap`) when
    /// `cap` is given, then their weighted sum of values into `out`.
    pub fn attend(q: &[f32], k: &[f32], v: &[f32], stride: usize, n: usize, scale: f32, cap: Option<f32>, scores: &mut [f32], out: &mut [f32]) {
        let hd = q.len();
        let scores = &mut scores[..n];
        let mut max = f32::NEG_INFINITY;
        for (t, s) in scores.iter_mut().enumerate() {
            let scaled = dot(q, &k[t * stride..t * stride + hd]) * scale;
            *s = match cap {
                Some(cap) => (scaled / cap).tanh() * cap,
                None => scaled,
            };
            max = max.max(*s);
        }
        for s in scores.iter_mut() {
            *s = exp_f32(*s - max);
        }
        let inv = 1.0 / sum(scores);
        // The weighted sum 64 dimensions at a time into a fixed-size array, which stays in
        // registers over the positions: summed into `out` itself, every position stored each
        // output and loaded it back for the next (a chain through memory, 10% of a long decode).
        // Each output is the same sum in the same order either way.
        const CHUNK: usize = 64;
        for c in (0..hd).step_by(CHUNK) {
            let width = CHUNK.min(hd - c);
            if width == CHUNK {
                let mut acc = [0f32; CHUNK];
                for (t, &p) in scores.iter().enumerate() {
                    let p = p * inv;
                    let row = &v[t * stride + c..t * stride + c + CHUNK];
                    for (a, &x) in acc.iter_mut().zip(row) {
                        *a += p * x;
                    }
                }
                out[c..c + CHUNK].copy_from_slice(&acc);
            } else {
                let out = &mut out[c..];
                out.fill(0.0);
                for (t, &p) in scores.iter().enumerate() {
                    let p = p * inv;
                    for (o, &x) in out.iter_mut().zip(&v[t * stride + c..t * stride + hd]) {
                        *o += p * x;
                    }
                }
            }
        }
    }
}

/// `gate[i] = gelu_tanh(gate[i]) * up[i]`: Gemma's MLP (GELU with the tanh approximation), in place.
pub fn gelu_tanh_glu(gate: &mut [f32], up: &[f32]) {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = 0.5 * x * (1.0 + (C * (x + 0.044715 * x * x * x)).tanh()) * u;
    }
}

/// The sum in `LANES` partial sums (a plain `sum()` of floats runs one lane).
#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for x in chunks {
        for j in 0..LANES {
            acc[j] += x[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

simd_fn! {
    /// `gate[i] = silu(gate[i]) * up[i]`: the SwiGLU of Llama's MLP, in place.
    pub fn swiglu(gate: &mut [f32], up: &[f32]) {
        for (g, &u) in gate.iter_mut().zip(up) {
            *g = *g / (1.0 + exp_f32(-*g)) * u;
        }
    }
}

simd_fn! {
    /// `x += y`, element-wise.
    pub fn add_in_place(x: &mut [f32], y: &[f32]) {
        for (a, &b) in x.iter_mut().zip(y) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn attention_of_one_head_equals_the_plain_softmax_sum() {
        // Head widths of whole 64-value chunks (64, 128), with a short last chunk (80, 96, 200),
        // and narrower than one (32): every path of the weighted sum.
        for hd in [64, 128, 80, 96, 200, 32] {
            let (kv, n) = (3, 37);
            let stride = kv * hd;
            let (q, k, v) = (random(hd, 1), random(n * stride, 2), random(n * stride, 3));
            for head in 0..kv {
                let mut got = vec![f32::NAN; hd];
                attend(&q, &k[head * hd..], &v[head * hd..], stride, n, 0.125, None, &mut vec![0.0; n], &mut got);
                let s: Vec<f64> = (0..n)
                    .map(|t| (0..hd).map(|j| q[j] as f64 * k[t * stride + head * hd + j] as f64).sum::<f64>() * 0.125)
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for j in 0..hd {
                    let want: f64 = (0..n).map(|t| e[t] / total * v[t * stride + head * hd + j] as f64).sum();
                    assert!((got[j] as f64 - want).abs() < 1e-5, "hd {hd}, head {head}, dim {j}: {} vs {want}", got[j]);
                }
            }
        }
    }

    #[test]
    fn rms_norm_and_swiglu_equal_their_formulas() {
        let (x, w) = (random(2 * 40, 4), random(40, 5));
        let mut out = vec![0f32; 80];
        rms_norm_rows(&x, &w, 1e-5, &mut out);
        for r in 0..2 {
            let row = &x[r * 40..(r + 1) * 40];
            let rms = (row.iter().map(|v| v * v).sum::<f32>() / 40.0 + 1e-5).sqrt();
            for j in 0..40 {
                assert!((out[r * 40 + j] - row[j] / rms * w[j]).abs() < 1e-5);
            }
        }
        let (mut g, u) = (random(50, 6).iter().map(|v| v * 20.0).collect::<Vec<_>>(), random(50, 7));
        let want: Vec<f32> = g.iter().zip(&u).map(|(&a, &b)| a / (1.0 + (-a).exp()) * b).collect();
        swiglu(&mut g, &u);
        for (a, b) in g.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn rotary_pairs_follow_the_layout() {
        let (cos, sin) = ([0.0f32, 1.0], [1.0f32, 0.0]);
        // Interleaved: pair (0,1) turns by 90 degrees, pair (2,3) stays.
        let mut a = [1.0, 2.0, 3.0, 4.0];
        rope_row(&mut a, 4, &cos, &sin, true);
        assert_eq!(a, [-2.0, 1.0, 3.0, 4.0]);
        // Halves: pair (0,2) turns, pair (1,3) stays.
        let mut b = [1.0, 2.0, 3.0, 4.0];
        rope_row(&mut b, 4, &cos, &sin, false);
        assert_eq!(b, [-3.0, 2.0, 1.0, 4.0]);
    }
}
