//! Frozen base weights kept lean for a LoRA run: a projection's weight stored once in bf16, or
//! quantized as the GGUF stored it (Q8_0, Q4_0, Q4_1, Q4_K, ...: a QLoRA-style run), with no
//! gradient or optimizer state. On the CPU it is multiplied a tile of rows at a time: each tile
//! (about 16 MB of f32) is dequantized into one scratch buffer and multiplied into the output
//! columns it covers, in the forward and again in the backward (`dx = g W`), so an f32 copy of
//! the whole weight never exists; the graph keeps only the stored bytes. Activations, norms,
//! embeddings and the adapters stay f32. On a GPU a bf16 base is a plain bf16 tensor (the compute
//! dtype there); a quantized base trains on the CPU only.

use std::str::FromStr;
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::k_quants::{self as kq, GgmlType};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use super::linear::linear;
use super::real::{Mat, matmul_threaded, with_slice};

/// How a LoRA run keeps its frozen base's projections (`--base-dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseDtype {
    /// f32 when the plan fits in memory, else bf16 (quantized never by choice of `auto`).
    #[default]
    Auto,
    F32,
    Bf16,
    /// As the GGUF stores them (a GGUF base only).
    Quantized,
}

impl FromStr for BaseDtype {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "f32" | "fp32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "quantized" | "q" => Ok(Self::Quantized),
            other => Err(format!("unknown base dtype `{other}`: use auto, f32, bf16 or quantized")),
        }
    }
}

impl std::fmt::Display for BaseDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Quantized => "quantized",
        })
    }
}

/// Rows of a weight `[out, in]` as GGUF blocks: HF row `r` is stored row `rows[r]` (llama.cpp
/// permutes llama's q/k rows; the map undoes it without touching the bytes).
pub struct QuantRows {
    pub dtype: GgmlDType,
    /// The stored bytes, in 8-byte words so the blocks inside are aligned.
    words: Vec<u64>,
    len: usize,
    row_bytes: usize,
    rows: Vec<u32>,
    cols: usize,
}

impl std::fmt::Debug for QuantRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuantRows({:?}, {}x{})", self.dtype, self.rows.len(), self.cols)
    }
}

impl QuantRows {
    /// `bytes` as the GGUF stores a `[out, in]` weight of `dtype`, rows in stored order.
    pub fn new(dtype: GgmlDType, bytes: &[u8], out: usize, cols: usize) -> Result<Self> {
        if !cols.is_multiple_of(dtype.block_size()) {
            candle_core::bail!("a row of {cols} is not whole {dtype:?} blocks");
        }
        let row_bytes = cols / dtype.block_size() * dtype.type_size();
        if bytes.len() != row_bytes * out {
            candle_core::bail!("{dtype:?} weight of {out}x{cols}: {} bytes, expected {}", bytes.len(), row_bytes * out);
        }
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `words` holds at least `bytes.len()` bytes; u8 has no alignment.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr().cast::<u8>(), bytes.len()) };
        Ok(Self { dtype, words, len: bytes.len(), row_bytes, rows: (0..out as u32).collect(), cols })
    }

    /// The same bytes with HF row `r` read from stored row `order[r]`.
    pub fn reorder(mut self, order: &[usize]) -> Self {
        self.rows = order.iter().map(|&r| self.rows[r]).collect();
        self
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the words hold at least `len` bytes; reading them as u8 is sound.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    /// Dequantizes HF row `r`'s values from column `c0` into `out` (`c0` and `out.len()` whole
    /// blocks, or the row's end).
    fn row_part(&self, r: usize, c0: usize, out: &mut [f32]) -> Result<()> {
        let (block, size) = (self.dtype.block_size(), self.dtype.type_size());
        if !c0.is_multiple_of(block) || c0 + out.len() > self.cols || !out.len().is_multiple_of(block) {
            candle_core::bail!("{} values from column {c0} are not whole {:?} blocks of a row", out.len(), self.dtype);
        }
        let at = self.rows[r] as usize * self.row_bytes + c0 / block * size;
        let bytes = &self.bytes()[at..at + out.len() / block * size];
        fn run<B: GgmlType>(bytes: &[u8], out: &mut [f32]) {
            let n = bytes.len() / std::mem::size_of::<B>();
            // SAFETY: the row starts at a multiple of the block size inside 8-byte aligned words
            // (blocks are at most 8-byte aligned and their size divides `row_bytes`), and holds
            // `n` whole blocks of plain old data.
            let blocks = unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), n) };
            B::to_float(blocks, out);
        }
        match self.dtype {
            GgmlDType::F32 => run::<f32>(bytes, out),
            GgmlDType::F16 => run::<f16>(bytes, out),
            GgmlDType::BF16 => run::<bf16>(bytes, out),
            GgmlDType::Q4_0 => run::<kq::BlockQ4_0>(bytes, out),
            GgmlDType::Q4_1 => run::<kq::BlockQ4_1>(bytes, out),
            GgmlDType::Q5_0 => run::<kq::BlockQ5_0>(bytes, out),
            GgmlDType::Q5_1 => run::<kq::BlockQ5_1>(bytes, out),
            GgmlDType::Q8_0 => run::<kq::BlockQ8_0>(bytes, out),
            GgmlDType::Q2K => run::<kq::BlockQ2K>(bytes, out),
            GgmlDType::Q3K => run::<kq::BlockQ3K>(bytes, out),
            GgmlDType::Q4K => run::<kq::BlockQ4K>(bytes, out),
            GgmlDType::Q5K => run::<kq::BlockQ5K>(bytes, out),
            GgmlDType::Q6K => run::<kq::BlockQ6K>(bytes, out),
            other => candle_core::bail!("a frozen base in {other:?} is not supported: use --base-dtype bf16"),
        }
        Ok(())
    }
}

/// A projection's weight `[out, in]`.
#[derive(Debug, Clone)]
pub enum ProjWeight {
    /// A tensor candle multiplies: trainable, or frozen in the compute dtype.
    Dense(Tensor),
    /// Frozen bf16 on the CPU beside f32 activations, multiplied tile by tile.
    Half(Arc<HalfRows>),
    /// Frozen as a GGUF stored it, multiplied tile by tile on the CPU.
    Quant(Arc<QuantRows>),
}

/// A bf16 weight's values, row-major `[out, cols]`.
#[derive(Debug)]
pub struct HalfRows {
    data: Vec<bf16>,
    cols: usize,
}

impl ProjWeight {
    /// `t` kept frozen in bf16: tiles on the CPU, a bf16 tensor elsewhere.
    pub fn half(t: &Tensor) -> Result<Self> {
        if !t.device().is_cpu() {
            return Ok(Self::Dense(t.to_dtype(DType::BF16)?.detach()));
        }
        let (_, cols) = t.dims2()?;
        let data = t.to_dtype(DType::BF16)?.flatten_all()?.to_vec1::<bf16>()?;
        Ok(Self::Half(Arc::new(HalfRows { data, cols })))
    }

    pub fn dims2(&self) -> Result<(usize, usize)> {
        match self {
            Self::Dense(t) => t.dims2(),
            Self::Half(h) => Ok((h.data.len() / h.cols.max(1), h.cols)),
            Self::Quant(q) => Ok((q.rows.len(), q.cols)),
        }
    }

    /// The dtype it is stored in (quantized reads as the f32 it is multiplied in).
    pub fn dtype(&self) -> DType {
        match self {
            Self::Dense(t) => t.dtype(),
            Self::Half(_) => DType::BF16,
            Self::Quant(_) => DType::F32,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Self::Half(h) => h.data.len() * 2,
            Self::Quant(q) => q.words.len() * 8,
        }
    }

    /// The whole weight as a detached tensor on `device` (f32 for a lean one): for merging an
    /// adapter into it and for export, never in a training step.
    pub fn tensor(&self, device: &Device) -> Result<Tensor> {
        let (n, k) = self.dims2()?;
        match self {
            Self::Dense(t) => Ok(t.detach()),
            _ => {
                let mut out = vec![0f32; n * k];
                self.row_tile(0, n, &mut out)?;
                Tensor::from_vec(out, (n, k), device)
            }
        }
    }

    /// Dequantizes rows `r0..r1` into `out` (`(r1 - r0) * cols` values), rows in parallel.
    fn row_tile(&self, r0: usize, r1: usize, out: &mut [f32]) -> Result<()> {
        match self {
            Self::Dense(_) => candle_core::bail!("a dense weight has no tiles"),
            Self::Half(h) => {
                let src = &h.data[r0 * h.cols..r1 * h.cols];
                out.par_chunks_mut(1 << 14).zip(src.par_chunks(1 << 14)).for_each(|(o, s)| widen_bf16(s, o));
                Ok(())
            }
            Self::Quant(q) => out.par_chunks_mut(q.cols).enumerate().try_for_each(|(i, o)| q.row_part(r0 + i, 0, o)),
        }
    }

    /// Dequantizes columns `c0..c1` of every row into `out` (`rows * (c1 - c0)` values, row
    /// after row), rows in parallel. `c0` is a whole number of `col_unit`s.
    fn col_tile(&self, c0: usize, c1: usize, out: &mut [f32]) -> Result<()> {
        let width = c1 - c0;
        // Rows in groups of about 16K values, so a narrow tile is not one task per row.
        let group = ((1 << 14) / width.max(1)).max(1);
        match self {
            Self::Dense(_) => candle_core::bail!("a dense weight has no tiles"),
            Self::Half(h) => {
                out.par_chunks_mut(width * group).enumerate().for_each(|(g, o)| {
                    for (i, o) in o.chunks_mut(width).enumerate() {
                        let r = g * group + i;
                        widen_bf16(&h.data[r * h.cols + c0..r * h.cols + c1], o);
                    }
                });
                Ok(())
            }
            Self::Quant(q) => out.par_chunks_mut(width * group).enumerate().try_for_each(|(g, o)| {
                o.chunks_mut(width).enumerate().try_for_each(|(i, o)| q.row_part(g * group + i, c0, o))
            }),
        }
    }

    /// The columns a column tile starts and ends on: a quantized weight's block, else 64.
    fn col_unit(&self) -> usize {
        match self {
            Self::Quant(q) => q.dtype.block_size(),
            _ => 64,
        }
    }

    /// `x [.., in] @ W^T`. A lean weight goes tile by tile on the CPU in f32; a dense one (and a
    /// bf16 one off the CPU) through `linear`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(w) => linear(x, &w.to_dtype(x.dtype())?),
            lean => {
                if !x.device().is_cpu() || x.dtype() != DType::F32 {
                    candle_core::bail!(
                        "a bf16 or quantized frozen base computes in f32 on the CPU (got {:?} on {:?}): \
                         use --base-dtype f32",
                        x.dtype(),
                        x.device().location()
                    );
                }
                let dims = x.dims().to_vec();
                let k = *dims.last().expect("linear input has a feature dimension");
                let y = x.reshape(((), k))?.contiguous()?.apply_op1(Tiled { w: lean.clone(), transposed: false })?;
                let mut out = dims;
                *out.last_mut().expect("non-empty") = self.dims2()?.0;
                y.reshape(out)
            }
        }
    }
}

/// Values per tile: 4M (16 MB of f32). Smaller tiles cost time where the weight is wide: every
/// tile's product packs the whole input again, and 1.5B's down projection (8,960 columns) took
/// 14 tiles of 117 rows at 1M, 1.24x the f32 product's time (forward and input gradient, 450
/// tokens, `cargo bench --bench frozen`), against 1.06-1.13x in 4 tiles at 4M. The unit tests
/// use 1M so that their small weights still span several tiles.
const TILE_VALUES: usize = if cfg!(test) { 1 << 20 } else { 1 << 22 };

/// Rows per tile for a weight of `rows x cols`: about `TILE_VALUES` values at most, the rows
/// shared evenly between the tiles (4,864 rows of 896 in 2 tiles of 2,432, not 4,681 and a
/// short 183 that keeps gemm's kernels on a thin edge).
fn tile_rows(rows: usize, cols: usize) -> usize {
    let most = (TILE_VALUES / cols.max(1)).max(8);
    let tiles = rows.div_ceil(most).max(1);
    rows.div_ceil(tiles).next_multiple_of(8)
}

/// `out[i] = src[i]` widened from bf16 to f32 (exact: the bf16 bits are the f32's high half).
fn widen_bf16(src: &[bf16], out: &mut [f32]) {
    for (o, s) in out.iter_mut().zip(src) {
        *o = f32::from_bits(u32::from(s.to_bits()) << 16);
    }
}

/// Which way a lean weight `[n, k]` is cut into tiles, and the rows or columns of each.
///
/// A product over tiles repeats, for every tile, the work on the operand the tiles do not cut.
/// Cut by rows, the forward `x Wᵀ` packs the whole input (`m x k`) again for every tile and the
/// input gradient `g W` adds every tile into the whole of `gx` (`m x k`); cut by columns, the
/// forward adds every tile into the whole output (`m x n`) and the input gradient packs the
/// whole `g` (`m x n`) again. So a weight wider than tall (`k > n`: a down projection) is cut
/// by columns, any other by rows. Llama-3.2-3B's down projection (3,072 x 8,192, 450 tokens,
/// forward and input gradient, `cargo bench --bench frozen`, Zen 4): cut by rows into 6 tiles
/// of 512 it took 1.47x the f32 product's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Rows(usize),
    Cols(usize),
}

fn cut(n: usize, k: usize, col_unit: usize) -> Cut {
    let rows = tile_rows(n, k);
    if k <= n || rows >= n {
        return Cut::Rows(rows);
    }
    let most = (TILE_VALUES / n.max(1)).max(col_unit) / col_unit * col_unit;
    let tiles = k.div_ceil(most).max(1);
    Cut::Cols(k.div_ceil(tiles).next_multiple_of(col_unit))
}

thread_local! {
    /// The tile buffer of this thread's products, kept between them: allocating 16 MB for every
    /// product cost a page fault per 4 KB and a memset, about 4% of a bf16-base LoRA step.
    static TILE: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `x W^T` (or, `transposed`, `g W`) with `W` dequantized a tile of rows at a time.
struct Tiled {
    w: ProjWeight,
    transposed: bool,
}

impl ProjWeight {
    /// `y [m, n] = x [m, k] Wᵀ`: a lean weight a tile of its rows at a time, a dense f32 one on
    /// the CPU in one product.
    pub(super) fn mul_xwt(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
        let (n, k) = self.dims2()?;
        check_lengths((x.len(), m * k), (y.len(), m * n), m, (n, k))?;
        self.each_tile(|tile, t| match tile {
            // y[:, r0..r0+nb] = x [m, k] @ tile^T [k, nb]
            // SAFETY: the lengths were checked above; the tile is nb x k and y's columns
            // r0..r0+nb lie inside its rows of n.
            Tile::Rows(r0, nb) => unsafe {
                let wt = Mat::rows(t.as_ptr(), k).t();
                matmul_threaded((m, nb, k), y.as_mut_ptr().add(r0), n, false, Mat::rows(x.as_ptr(), k), wt, 1.0);
            },
            // y [m, n] (+)= x[:, c0..c0+kc] [m, kc] @ tile^T [kc, n]
            // SAFETY: the lengths were checked above; the tile is n x kc and x's columns
            // c0..c0+kc lie inside its rows of k.
            Tile::Cols(c0, kc) => unsafe {
                let xs = Mat { ptr: x.as_ptr().add(c0), rs: k as isize, cs: 1 };
                let wt = Mat::rows(t.as_ptr(), kc).t();
                matmul_threaded((m, n, kc), y.as_mut_ptr(), n, c0 > 0, xs, wt, 1.0);
            },
        })
    }

    /// `gx [m, k] = g [m, n] W` (overwriting `gx`), tile by tile as `mul_xwt`.
    pub(super) fn mul_gw(&self, g: &[f32], m: usize, gx: &mut [f32]) -> Result<()> {
        let (n, k) = self.dims2()?;
        check_lengths((g.len(), m * n), (gx.len(), m * k), m, (n, k))?;
        self.each_tile(|tile, t| match tile {
            // gx [m, k] (+)= g[:, r0..r0+nb] [m, nb] @ tile [nb, k]
            // SAFETY: the lengths were checked above; g's columns r0..r0+nb lie inside its rows.
            Tile::Rows(r0, nb) => unsafe {
                let gm = Mat { ptr: g.as_ptr().add(r0), rs: n as isize, cs: 1 };
                matmul_threaded((m, k, nb), gx.as_mut_ptr(), k, r0 > 0, gm, Mat::rows(t.as_ptr(), k), 1.0);
            },
            // gx[:, c0..c0+kc] = g [m, n] @ tile [n, kc]
            // SAFETY: the lengths were checked above; gx's columns c0..c0+kc lie inside its rows.
            Tile::Cols(c0, kc) => unsafe {
                let gm = Mat::rows(g.as_ptr(), n);
                matmul_threaded((m, kc, n), gx.as_mut_ptr().add(c0), k, false, gm, Mat::rows(t.as_ptr(), kc), 1.0);
            },
        })
    }

    /// Calls `f(tile, values)` for each tile (`cut` says which way), dequantized into one buffer
    /// (a dense f32 weight is one tile of all its rows, read in place).
    fn each_tile(&self, mut f: impl FnMut(Tile, &[f32])) -> Result<()> {
        let (n, k) = self.dims2()?;
        if let Self::Dense(w) = self {
            return with_slice::<f32, _>(w, "frozen weight", |w| f(Tile::Rows(0, n), w));
        }
        // Tiles of `step` rows (of `k` values) or columns (of `n` rows each).
        let how = cut(n, k, self.col_unit());
        let (step, end, across) = match how {
            Cut::Rows(step) => (step, n, k),
            Cut::Cols(step) => (step, k, n),
        };
        let mut tile = TILE.take();
        if tile.len() < step.min(end) * across {
            tile = vec![0f32; step.min(end) * across];
        }
        let mut each = |tile: &mut [f32]| -> Result<()> {
            for first in (0..end).step_by(step) {
                let count = (first + step).min(end) - first;
                let t = &mut tile[..count * across];
                let part = match how {
                    Cut::Rows(_) => {
                        self.row_tile(first, first + count, t)?;
                        Tile::Rows(first, count)
                    }
                    Cut::Cols(_) => {
                        self.col_tile(first, first + count, t)?;
                        Tile::Cols(first, count)
                    }
                };
                f(part, t);
            }
            Ok(())
        };
        let done = each(&mut tile);
        TILE.set(tile);
        done
    }
}

/// One tile of a weight `[n, k]`: rows `(first, count)` of all `k` columns, or columns
/// `(first, count)` of all `n` rows (stored row after row, `count` values each).
#[derive(Debug, Clone, Copy)]
enum Tile {
    Rows(usize, usize),
    Cols(usize, usize),
}

/// The operands of a product with an `[n, k]` weight over `m` rows have the lengths it needs:
/// `(input, expected)` and `(output, expected)`.
fn check_lengths(input: (usize, usize), output: (usize, usize), m: usize, (n, k): (usize, usize)) -> Result<()> {
    if input.0 != input.1 || output.0 != output.1 {
        candle_core::bail!(
            "tiled linear: input of {} values and output of {} for {m} rows of a {n}x{k} weight (need {} and {})",
            input.0,
            output.0,
            input.1,
            output.1
        );
    }
    Ok(())
}

impl CustomOp1 for Tiled {
    fn name(&self) -> &'static str {
        "verdict-frozen-tiled"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = s else { candle_core::bail!("tiled linear: f32 input only") };
        let Some((a, b)) = l.contiguous_offsets() else { candle_core::bail!("tiled linear: contiguous input only") };
        let x = &data[a..b];
        let (m, width) = l.shape().dims2()?;
        let (n, k) = self.w.dims2()?;
        let (inner, out_cols) = if self.transposed { (n, k) } else { (k, n) };
        if width != inner {
            candle_core::bail!("tiled linear: input has {width} features, weight expects {inner}");
        }
        let mut y = vec![0f32; m * out_cols];
        match self.transposed {
            true => self.w.mul_gw(x, m, &mut y)?,
            false => self.w.mul_xwt(x, m, &mut y)?,
        }
        Ok((CpuStorage::F32(y), Shape::from((m, out_cols))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        if self.transposed {
            candle_core::bail!("tiled linear: no second derivative");
        }
        if !x.track_op() {
            return Ok(None);
        }
        let gx = g.contiguous()?.apply_op1_no_bwd(&Tiled { w: self.w.clone(), transposed: true })?;
        Ok(Some(gx))
    }
}

#[cfg(test)]
#[path = "frozen_tests.rs"]
mod tests;
