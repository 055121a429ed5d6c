//! Exact f32 products for decoding on the CPU: `x @ Wᵀ` for the few activation rows of a decode
//! step against a dense f32 weight `[rows, cols]` (a safetensors model, or a GGUF dequantized to
//! f32 as the evaluation answers run it). Each output is one sum in a fixed order, whatever
//! rows go with it, so sequences decoded as one batch get exactly the logits each gets alone
//! (`Transformer::batch_is_exact`), the guarantee `Model::generate_many` needs to batch prompts.
//! candle's product (gemm) blocks its sums by the number of rows, so a row's result depends on
//! the rows beside it. Prefill keeps candle's product: it is faster over many rows, and a
//! prompt is prefilled alone either way.
//!
//! The kernel takes four weight rows and up to two activation rows at a time, eight f32 lanes
//! wide (AVX2 + FMA): eight accumulators, four weight loads and two activation loads per eight
//! columns, so each weight is read once for two rows and the sums stay in registers.

use candle_core::{CpuStorage, DType, Device, Result, Storage, Tensor};

/// Whether `w` is a weight this kernel multiplies: a contiguous f32 matrix on the CPU.
pub fn applies(w: &Tensor) -> bool {
    w.dtype() == DType::F32 && matches!(w.device(), Device::Cpu) && w.rank() == 2 && w.is_contiguous()
}

/// `x @ wᵀ` for the `m` rows of `x` (`[m, cols]`): `[m, rows]`, split over the decode team.
pub fn matmul_rows(w: &Tensor, x: &[f32], m: usize) -> Result<Vec<f32>> {
    let (rows, cols) = w.dims2()?;
    if x.len() != m * cols {
        candle_core::bail!("dense matmul: {} activation values are not {m} rows of {cols}", x.len());
    }
    let (storage, layout) = w.storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("dense matmul: the weight is not contiguous");
    };
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
        candle_core::bail!("dense matmul: the weight is not f32 on the CPU");
    };
    let w = &data[start..end];
    let fused = fma_available();
    Ok(super::team::split_rows(rows, m, &|first, n, out| rows_times_x(fused, w, cols, first, n, x, m, out)))
}

/// Whether the AVX2 + FMA kernel runs: where the CPU has them, unless `VERDICT_SIMD=baseline`
/// caps verdict's kernels (the process-wide choice, so every product of a run sums alike).
fn fma_available() -> bool {
    super::simd::simd_best() >= super::simd::Simd::Avx2
}

/// Weight rows `first..first + n` times every activation row: `out[i * n + r]`.
#[allow(clippy::too_many_arguments)]
fn rows_times_x(fused: bool, w: &[f32], cols: usize, first: usize, n: usize, x: &[f32], m: usize, out: &mut [f32]) {
    let mut r = 0;
    while r < n {
        let take = (n - r).min(4);
        // A short last group repeats its last row; the extra results are dropped.
        let wrow = |j: usize| {
            let a = first + r + j.min(take - 1);
            &w[a * cols..(a + 1) * cols]
        };
        let ws = [wrow(0), wrow(1), wrow(2), wrow(3)];
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(2);
            let xrow = |j: usize| &x[(i + j) * cols..(i + j + 1) * cols];
            let sums: [[f32; 4]; 2] = match rows {
                1 => [tile::<1>(fused, ws, [xrow(0)])[0], [0.0; 4]],
                _ => tile::<2>(fused, ws, [xrow(0), xrow(1)]),
            };
            for (j, four) in sums.iter().take(rows).enumerate() {
                out[(i + j) * n + r..(i + j) * n + r + take].copy_from_slice(&four[..take]);
            }
            i += rows;
        }
        r += take;
    }
}

/// Four weight rows times `R` activation rows. Every result is the same sum, in the same order,
/// whether it is computed with one activation row or two.
#[inline(always)]
fn tile<const R: usize>(fused: bool, w: [&[f32]; 4], x: [&[f32]; R]) -> [[f32; 4]; R] {
    #[cfg(target_arch = "x86_64")]
    if fused {
        // SAFETY: `fused` is true only where the CPU has AVX2 and FMA.
        return unsafe { avx2::tile::<R>(w, x) };
    }
    let _ = fused;
    std::array::from_fn(|i| std::array::from_fn(|j| w[j].iter().zip(x[i]).fold(0f32, |s, (a, b)| s + a * b)))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// The lanes of `v` summed in a fixed order: halves, then pairs, then the last two.
    #[inline(always)]
    unsafe fn sum_lanes(v: __m256) -> f32 {
        unsafe {
            let four = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
            _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)))
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile<const R: usize>(w: [&[f32]; 4], x: [&[f32]; R]) -> [[f32; 4]; R] {
        let cols = w[0].len();
        let body = cols - cols % 8;
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        let mut k = 0;
        while k < body {
            // SAFETY: k + 8 <= body <= the length of every row.
            unsafe {
                let wv = [
                    _mm256_loadu_ps(w[0].as_ptr().add(k)),
                    _mm256_loadu_ps(w[1].as_ptr().add(k)),
                    _mm256_loadu_ps(w[2].as_ptr().add(k)),
                    _mm256_loadu_ps(w[3].as_ptr().add(k)),
                ];
                for i in 0..R {
                    let xv = _mm256_loadu_ps(x[i].as_ptr().add(k));
                    for j in 0..4 {
                        acc[i][j] = _mm256_fmadd_ps(wv[j], xv, acc[i][j]);
                    }
                }
            }
            k += 8;
        }
        let mut out = [[0f32; 4]; R];
        for i in 0..R {
            for j in 0..4 {
                // SAFETY: AVX2 is enabled on this function.
                let mut s = unsafe { sum_lanes(acc[i][j]) };
                for c in body..cols {
                    s = w[j][c].mul_add(x[i][c], s);
                }
                out[i][j] = s;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values spread over several magnitudes, deterministic.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    #[test]
    fn every_row_of_a_batch_is_bit_identical_to_its_product_alone() {
        // Widths with and without a tail past the last eight columns, row counts that leave a
        // short last group of four, and up to nine activation rows (odd: a last tile of one).
        for (rows, cols) in [(7, 13), (70, 64), (130, 200), (9, 8)] {
            let w = Tensor::from_vec(values(rows * cols, rows as u32), (rows, cols), &Device::Cpu).unwrap();
            assert!(applies(&w));
            let x = values(9 * cols, cols as u32);
            let alone: Vec<Vec<f32>> =
                (0..9).map(|i| matmul_rows(&w, &x[i * cols..(i + 1) * cols], 1).unwrap()).collect();
            for m in 1..=9 {
                let batch = matmul_rows(&w, &x[..m * cols], m).unwrap();
                for i in 0..m {
                    assert_eq!(batch[i * rows..(i + 1) * rows], alone[i][..], "{rows}x{cols}, row {i} of {m}");
                }
            }
            // And they are the product candle computes, to rounding.
            let xt = Tensor::from_vec(x.clone(), (9, cols), &Device::Cpu).unwrap();
            let want: Vec<f32> = xt.matmul(&w.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let got = matmul_rows(&w, &x, 9).unwrap();
            for (g, e) in got.iter().zip(&want) {
                assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()) * cols as f32, "{rows}x{cols}: {g} vs {e}");
            }
        }
    }

    #[test]
    fn a_weight_that_is_not_contiguous_f32_on_the_cpu_is_not_taken() {
        let w = Tensor::from_vec(values(6, 1), (2, 3), &Device::Cpu).unwrap();
        assert!(!applies(&w.t().unwrap()));
        assert!(!applies(&w.to_dtype(DType::BF16).unwrap()));
        assert!(matmul_rows(&w, &[1.0, 2.0], 1).is_err(), "two values are not a row of three");
    }
}
