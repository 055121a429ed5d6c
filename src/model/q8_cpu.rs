//! Q8_0 and Q4_1 weights times f32 activations on x86-64 CPUs with AVX2 (AVX-512 VNNI where
//! present, chosen at run time), for generation.
//!
//! candle 0.11's CPU kernel for a quantized matrix product takes one weight row at a time
//! with one accumulator (so every block waits for the previous block's multiply-add),
//! converts the f16 scales in software at every block, and reads each weight row again for
//! every activation row of a prefill; its Q4_1 kernel has no AVX2 version at all, which is why
//! verdict used to re-quantize Q4_1 files to Q8_0 at load (twice the bytes to read per token).
//! This one keeps the weight scales as f32 (converted once, at load), takes four weight rows
//! at a time, stored interleaved (the four rows' quants of a block side by side, then their
//! four scales: one sequential stream, where four rows stored apart are four streams and their
//! scales two more), sums each block's four integer dot products into one 128-bit vector and
//! scales it with one multiply-add, runs each chunk of weight rows over all activation rows
//! while it is in cache, and reads Q4_1's values as stored (half the bytes of Q8_0).
//!
//! The integer part is exactly candle's: activations are quantized the way candle quantizes
//! them (per 32 values, `d = max|x| / 127`, `q = round(x / d)`, `d` kept as f16), and each
//! block's dot product is an exact integer sum, so results differ from candle's only in the
//! order the per-block floats are added (tested).

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Result, Tensor};

use super::simd::{int_of_whole, simd_fn};

const BLOCK: usize = 32;
/// Weight rows one task takes: 64 rows of the widest SmolLM2 matrix (1,536 columns) are 96 kB,
/// which stay in L2 while every activation row of a prefill passes over them.
const ROWS_PER_TASK: usize = 64;
/// Activation rows up to which a product runs on the decode team (`team.rs`) rather than
/// rayon: a decoding step's, one stream or the candidates of a few prompts together
/// (`model::DEFAULT_BATCH_ROWS` and more). Rayon's workers sleep between products and each
/// wake-up costs more than a decode step's product takes.
pub(crate) const DECODE_ROWS: usize = 16;

/// A quantized weight matrix `[rows, cols]` laid out for `matmul`.
#[derive(Debug)]
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    weights: Weights,
}

///
/// Rows go four at a time (a group; the last is filled up with rows of zeros), block by block:
/// for group `g` and block `b`, the four rows' quants of block `b` one after another, and the
/// four rows' scales (and minimums) at `(g * blocks + b) * 4`.
#[derive(Debug)]
enum Weights {
    /// Per block of 32: a scale, 32 signed bytes; `w = d * q`.
    Q8_0 { scales: Vec<f32>, quants: Vec<i8> },
    /// Per block of 32: a scale, a minimum, 16 bytes of nibbles (values 0-15 in the low
    /// nibbles, 16-31 in the high ones, as GGUF stores them); `w = d * q + m`.
    Q4_1 { scales: Vec<f32>, mins: Vec<f32>, nibbles: Vec<u8> },
}

/// Rows in a group.
const GROUP: usize = 4;

/// Whether this CPU runs the kernel (AVX2 and FMA, checked at run time: the crate targets
/// baseline x86-64), unless `VERDICT_CANDLE_Q8=1` asks for candle's kernel (to compare them).
pub fn supported() -> bool {
    if std::env::var_os("VERDICT_CANDLE_Q8").is_some_and(|v| v == "1") {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Q8Matrix {
    /// The matrix of a Q8_0 or Q4_1 `QTensor` on the CPU, when this CPU runs the kernel;
    /// `None` otherwise (the caller keeps candle's path).
    pub fn from_qtensor(t: &QTensor) -> Result<Option<Q8Matrix>> {
        let block_bytes = match t.dtype() {
            GgmlDType::Q8_0 => 2 + BLOCK,
            GgmlDType::Q4_1 => 4 + BLOCK / 2,
            _ => return Ok(None),
        };
        if !matches!(t.device(), Device::Cpu) || !supported() {
            return Ok(None);
        }
        let (rows, cols) = t.shape().dims2()?;
        if cols % BLOCK != 0 {
            return Ok(None);
        }
        let data = t.data()?;
        let blocks = rows * cols / BLOCK;
        if data.len() != blocks * block_bytes {
            return Ok(None);
        }
        let f16_at = |b: &[u8], at: usize| half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
        let per_row = cols / BLOCK;
        let groups = rows.div_ceil(GROUP);
        let zero_block = vec![0u8; block_bytes];
        // The blocks in stored order: group by group, block by block, the group's four rows.
        let interleaved =
            (0..groups).flat_map(|g| (0..per_row).flat_map(move |b| (0..GROUP).map(move |k| (g * GROUP + k, b))));
        let block_at = |(row, b): (usize, usize)| match row < rows {
            true => &data[(row * per_row + b) * block_bytes..(row * per_row + b + 1) * block_bytes],
            false => &zero_block[..],
        };
        let stored = groups * GROUP * per_row;
        let weights = if t.dtype() == GgmlDType::Q8_0 {
            let mut scales = Vec::with_capacity(stored);
            let mut quants = Vec::with_capacity(stored * BLOCK);
            for block in interleaved.map(block_at) {
                scales.push(f16_at(block, 0));
                quants.extend(block[2..].iter().map(|&b| b as i8));
            }
            Weights::Q8_0 { scales, quants }
        } else {
            let (mut scales, mut mins) = (Vec::with_capacity(stored), Vec::with_capacity(stored));
            let mut nibbles = Vec::with_capacity(stored * BLOCK / 2);
            for block in interleaved.map(block_at) {
                scales.push(f16_at(block, 0));
                mins.push(f16_at(block, 2));
                nibbles.extend_from_slice(&block[4..]);
            }
            Weights::Q4_1 { scales, mins, nibbles }
        };
        Ok(Some(Q8Matrix { rows, cols, weights }))
    }

    /// `x @ selfᵀ` for `x` of shape `[..., cols]` (f32, on the CPU): `[..., rows]`.
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let last = dims.pop().unwrap_or(0);
        if last != self.cols {
            candle_core::bail!("q8 matmul: input has {last} columns, the weights {}", self.cols);
        }
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let y = self.matmul_rows(&QuantizedRows::new(&xs, self.cols));
        dims.push(self.rows);
        Tensor::from_vec(y, dims, &Device::Cpu)
    }

    /// Rows in (columns of the weights).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `x @ selfᵀ` for activation rows quantized once (q, k and v share theirs): `[m, rows]`.
    pub fn matmul_rows(&self, x: &QuantizedRows) -> Vec<f32> {
        assert_eq!(x.cols, self.cols, "q8 matmul: activation and weight widths differ");
        self.products(&x.q, &x.d, &x.sum, x.m)
    }

    /// `y[i, j] = sum over blocks of xd * wd * (xq · wq)`, in tasks of `ROWS_PER_TASK` weight
    /// rows on rayon's pool (the one candle's matrix products use).
    fn products(&self, xq: &[i8], xd: &[f32], xsum: &[f32], m: usize) -> Vec<f32> {
        use rayon::prelude::*;
        let parallel = candle_core::utils::get_num_threads() > 1 && self.rows > ROWS_PER_TASK && m * self.rows >= 1024;
        if m <= DECODE_ROWS {
            // Decoding (one stream, or candidates as one batch): one stretch of the weight rows
            // per thread of the decode team, which stays awake between the products of a token
            // (`team.rs`). Stretches are whole groups of four rows, so every output is the same
            // sum however the rows are split.
            return super::team::split_rows(self.rows, m, &|first, n, out| {
                self.rows_times_x(first, n, xq, xd, xsum, m, out)
            });
        }
        let mut y = vec![0f32; m * self.rows];
        let task = |t: usize| -> Vec<f32> {
            let first = t * ROWS_PER_TASK;
            let n = ROWS_PER_TASK.min(self.rows - first);
            let mut out = vec![0f32; m * n];
            self.rows_times_x(first, n, xq, xd, xsum, m, &mut out);
            out
        };
        let tasks = self.rows.div_ceil(ROWS_PER_TASK);
        let parts: Vec<Vec<f32>> =
            if parallel { (0..tasks).into_par_iter().map(task).collect() } else { (0..tasks).map(task).collect() };
        for (t, part) in parts.iter().enumerate() {
            let first = t * ROWS_PER_TASK;
            let n = part.len() / m;
            for i in 0..m {
                y[i * self.rows + first..i * self.rows + first + n].copy_from_slice(&part[i * n..(i + 1) * n]);
            }
        }
        y
    }

    /// Weight rows `first..first + n` times every activation row; `out[i * n + r]`. `first` is
    /// a multiple of four: each group of four weight rows goes over up to four activation rows
    /// at a time, so a batch of decoding candidates reads (and unpacks) each weight block once
    /// for all of them. A row's sums run in the same order however many rows go with it:
    /// batched results equal single ones.
    #[allow(clippy::too_many_arguments)]
    fn rows_times_x(&self, first: usize, n: usize, xq: &[i8], xd: &[f32], xsum: &[f32], m: usize, out: &mut [f32]) {
        debug_assert_eq!(first % GROUP, 0);
        let (cols, blocks) = (self.cols, self.cols / BLOCK);
        let level = level();
        let mut r = 0;
        while r < n {
            let g = (first + r) / GROUP;
            let take = (n - r).min(GROUP);
            let mut i = 0;
            while i < m {
                let rows = (m - i).min(4);
                let x = |j: usize| {
                    let a = i + j.min(rows - 1);
                    (&xq[a * cols..(a + 1) * cols], &xd[a * blocks..(a + 1) * blocks])
                };
                let sums = |j: usize| {
                    let a = i + j.min(rows - 1);
                    if xsum.is_empty() { xsum } else { &xsum[a * blocks..(a + 1) * blocks] }
                };
                let (at, span) = (g * blocks * GROUP, blocks * GROUP);
                let results: [[f32; 4]; 4] = match &self.weights {
                    Weights::Q8_0 { scales, quants } => {
                        let w = Q8Group {
                            quants: &quants[at * BLOCK..(at + span) * BLOCK],
                            scales: &scales[at..at + span],
                        };
                        match rows {
                            1 => pad(dot_q8::<1>(level, w, [x(0)])),
                            2 => pad(dot_q8::<2>(level, w, [x(0), x(1)])),
                            3 => pad(dot_q8::<3>(level, w, [x(0), x(1), x(2)])),
                            _ => dot_q8::<4>(level, w, [x(0), x(1), x(2), x(3)]),
                        }
                    }
                    Weights::Q4_1 { scales, mins, nibbles } => {
                        let w = Q4Group {
                            nibbles: &nibbles[at * BLOCK / 2..(at + span) * BLOCK / 2],
                            scales: &scales[at..at + span],
                            mins: &mins[at..at + span],
                        };
                        match rows {
                            1 => pad(dot_q4_1::<1>(level, w, [x(0)], [sums(0)])),
                            2 => pad(dot_q4_1::<2>(level, w, [x(0), x(1)], [sums(0), sums(1)])),
                            3 => pad(dot_q4_1::<3>(level, w, [x(0), x(1), x(2)], [sums(0), sums(1), sums(2)])),
                            _ => {
                                dot_q4_1::<4>(level, w, [x(0), x(1), x(2), x(3)], [sums(0), sums(1), sums(2), sums(3)])
                            }
                        }
                    }
                };
                for (j, four) in results.iter().take(rows).enumerate() {
                    out[(i + j) * n + r..(i + j) * n + r + take].copy_from_slice(&four[..take]);
                }
                i += rows;
            }
            r += take;
        }
    }
}

/// `R` results in the first `R` of four places.
fn pad<const R: usize>(r: [[f32; 4]; R]) -> [[f32; 4]; 4] {
    let mut out = [[0f32; 4]; 4];
    out[..R].copy_from_slice(&r);
    out
}

/// Which instructions the kernels use, chosen once at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// AVX2 + FMA: `vpmaddubsw` then `vpmaddwd` per block.
    Avx2,
    /// AVX-512 VNNI (+ VL): one `vpdpbusd` per block, on the same 256-bit lanes, so its
    /// integer sums and float results are exactly AVX2's.
    Vnni,
}

/// The level the kernels run at: VNNI where the CPU has it and `VERDICT_SIMD` does not cap
/// verdict's kernels below AVX-512.
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if super::simd::simd_level() == super::simd::Simd::Avx512 && std::is_x86_feature_detected!("avx512vnni") {
                return Level::Vnni;
            }
        }
        Level::Avx2
    })
}

/// Activation rows quantized for `Q8Matrix::matmul_rows`.
#[derive(Debug, Clone)]
pub struct QuantizedRows {
    q: Vec<i8>,
    d: Vec<f32>,
    /// Per block, the sum of its values as quantized (Q4_1's minimum term), rounded through f16
    /// as candle's and llama.cpp's Q8_1 blocks store it.
    sum: Vec<f32>,
    m: usize,
    cols: usize,
}

impl QuantizedRows {
    /// `xs` holds rows of `cols` values (a multiple of 32).
    pub fn new(xs: &[f32], cols: usize) -> QuantizedRows {
        let (q, d) = quantize_rows(xs, cols);
        let sum = q
            .chunks_exact(BLOCK)
            .zip(&d)
            .map(|(q, &d)| {
                let sum = half::f16::from_f32(q.iter().map(|&v| v as i32).sum::<i32>() as f32);
                (sum * half::f16::from_f32(d)).to_f32()
            })
            .collect();
        QuantizedRows { q, d, sum, m: xs.len() / cols, cols }
    }
}

/// Quantizes rows of `cols` values the way candle's `BlockQ8_0::from_float` does; the scales
/// come back as f32 values of their f16 form.
pub fn quantize_rows(xs: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>) {
    debug_assert_eq!(xs.len() % cols, 0);
    let mut q = vec![0i8; xs.len()];
    let mut d = vec![0f32; xs.len() / BLOCK];
    quantize_blocks(xs, &mut q, &mut d);
    (q, d)
}

simd_fn! {
    /// Per block of 32: `d = max|x| / 127`, `q = round(x / d)` (half away from zero).
    fn quantize_blocks(xs: &[f32], q: &mut [i8], d: &mut [f32]) {
        for ((block, out), d) in xs.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK)).zip(d.iter_mut()) {
            let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inverse = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            for (o, &v) in out.iter_mut().zip(block) {
                *o = round_to_i8(v * inverse);
            }
            *d = half::f16::from_f32(scale).to_f32();
        }
    }
}

/// `x.round() as i8` for `|x| <= 127` (and a little more, from the division's rounding). With
/// SSE4.1 `round` is a few vector instructions (compiled for the baseline it is a libm call each,
/// which was 13% of the decoding thread's time), and `int_of_whole` stands for the cast.
#[inline(always)]
fn round_to_i8(x: f32) -> i8 {
    int_of_whole(x.round()) as i8
}

type Row<'a> = (&'a [i8], &'a [f32]);

/// One group of four Q8_0 weight rows, interleaved (`Weights`): per block, 4 x 32 quants and
/// 4 scales.
#[derive(Clone, Copy)]
struct Q8Group<'a> {
    quants: &'a [i8],
    scales: &'a [f32],
}

/// One group of four Q4_1 weight rows, interleaved (`Weights`): per block, 4 x 16 bytes of
/// nibbles, 4 scales and 4 minimums.
#[derive(Clone, Copy)]
struct Q4Group<'a> {
    nibbles: &'a [u8],
    scales: &'a [f32],
    mins: &'a [f32],
}

/// A group of four Q8_0 weight rows dotted with each of `R` activation rows: `[x row][weight row]`.
fn dot_q8<const R: usize>(level: Level, w: Q8Group, x: [Row; R]) -> [[f32; 4]; R] {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: a `Q8Matrix` exists only where `supported()` found AVX2 and FMA, and `level()`
        // is `Vnni` only where the CPU has AVX-512 VNNI and VL; the group holds 4 * `x[0].0.len()`
        // quants and 4 * `x[0].1.len()` scales, every activation row `x[0]`'s lengths (the
        // caller slices them so).
        unsafe {
            match level {
                Level::Vnni => avx2::q8_vnni(w, x),
                Level::Avx2 => avx2::q8_avx2(w, x),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = level;
        x.map(|x| [0, 1, 2, 3].map(|k| scalar_dot_q8(w, k, x)))
    }
}

/// A group of four Q4_1 weight rows dotted with each of `R` activation rows; `xsum[i][b]` = block b of
/// activation row i summed.
fn dot_q4_1<const R: usize>(level: Level, w: Q4Group, x: [Row; R], xsum: [&[f32]; R]) -> [[f32; 4]; R] {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: as for `dot_q8`; the group holds 4 * `x[0].0.len() / 2` nibble bytes and
        // 4 * `x[0].1.len()` scales and minimums.
        unsafe {
            match level {
                Level::Vnni => avx2::q4_1_vnni(w, x, xsum),
                Level::Avx2 => avx2::q4_1_avx2(w, x, xsum),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = level;
        let mut out = [[0f32; 4]; R];
        for i in 0..R {
            out[i] = [0, 1, 2, 3].map(|k| scalar_dot_q4_1(w, k, x[i], xsum[i]));
        }
        out
    }
}

/// The plain version of the product of row `k` of a Q8_0 group, for checking the kernel.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn scalar_dot_q8(w: Q8Group, k: usize, x: Row) -> f32 {
    let mut sum = 0f32;
    for b in 0..x.1.len() {
        let at = (b * GROUP + k) * BLOCK;
        let ints: i32 = w.quants[at..at + BLOCK]
            .iter()
            .zip(&x.0[b * BLOCK..(b + 1) * BLOCK])
            .map(|(&a, &c)| a as i32 * c as i32)
            .sum();
        sum += w.scales[b * GROUP + k] * x.1[b] * ints as f32;
    }
    sum
}

/// The plain version of the product of row `k` of a Q4_1 group, for checking the kernel.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn scalar_dot_q4_1(w: Q4Group, k: usize, x: Row, xsum: &[f32]) -> f32 {
    let mut sum = 0f32;
    for b in 0..x.1.len() {
        let at = (b * GROUP + k) * BLOCK / 2;
        let bytes = &w.nibbles[at..at + BLOCK / 2];
        let xs = &x.0[b * BLOCK..(b + 1) * BLOCK];
        let ints: i32 = bytes
            .iter()
            .enumerate()
            .map(|(j, &v)| (v & 0x0F) as i32 * xs[j] as i32 + (v >> 4) as i32 * xs[j + BLOCK / 2] as i32)
            .sum();
        sum += w.scales[b * GROUP + k] * x.1[b] * ints as f32 + w.mins[b * GROUP + k] * xsum[b];
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(test)]
mod tests;
