//! The x86-64 AVX2 (and AVX-512 VNNI) dot products behind `Q8Matrix`: chosen at run time by `level()`.

use super::{BLOCK, GROUP, Q4Group, Q8Group, Row};
use std::arch::x86_64::*;

/// Unsigned bytes `u` times signed bytes `s`, each four neighbours summed: 8 i32 lanes.
#[inline(always)]
unsafe fn dot_u8_i8<const VNNI: bool>(u: __m256i, s: __m256i) -> __m256i {
    unsafe {
        if VNNI {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
        } else {
            // No saturation: |u * s| <= 255 * 128 only if u < 128, and here u is a nibble
            // (Q4_1) or |w| <= 127 (Q8_0), so a pair sums to at most 32,512.
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
        }
    }
}

/// Four rows' eight partial sums each -> the four rows' totals, in that order. Unpacks and
/// adds only (`phaddd` is several micro-ops on every x86 core).
#[inline(always)]
unsafe fn totals(p: [__m256i; 4]) -> __m128i {
    unsafe {
        // [a0+a2, b0+b2, a1+a3, b1+b3 | the same of lanes 4-7]
        let ab = _mm256_add_epi32(_mm256_unpacklo_epi32(p[0], p[1]), _mm256_unpackhi_epi32(p[0], p[1]));
        let cd = _mm256_add_epi32(_mm256_unpacklo_epi32(p[2], p[3]), _mm256_unpackhi_epi32(p[2], p[3]));
        // [a0-3, b0-3, c0-3, d0-3 | a4-7, b4-7, c4-7, d4-7]
        let abcd = _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
        _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1))
    }
}

/// Each accumulator's four lanes. (No closures in this module's loops: a closure does not
/// inherit its function's target features, so the intrinsics in it become calls, 2-3x
/// slower measured.)
#[inline(always)]
unsafe fn lanes<const R: usize>(acc: [__m128; R]) -> [[f32; 4]; R] {
    let mut out = [[0f32; 4]; R];
    for i in 0..R {
        unsafe { _mm_storeu_ps(out[i].as_mut_ptr(), acc[i]) };
    }
    out
}

/// 16 bytes of nibbles at `at` -> 32 values: the low nibbles are values 0-15, the high ones 16-31.
#[inline(always)]
unsafe fn unpack(at: *const u8, low: __m256i) -> __m256i {
    unsafe {
        let packed = _mm_loadu_si128(at as *const __m128i);
        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low)
    }
}

/// The 32 signed weights at `at` against the 32 activations `x`: `|w|` times `x` with `w`'s
/// sign moved onto it (the products need one unsigned operand).
#[inline(always)]
unsafe fn signed_dot<const VNNI: bool>(w: __m256i, x: __m256i) -> __m256i {
    unsafe { dot_u8_i8::<VNNI>(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)) }
}

#[inline(always)]
unsafe fn q4_1<const R: usize, const VNNI: bool>(w: Q4Group, x: [Row; R], xsum: [&[f32]; R]) -> [[f32; 4]; R] {
    let blocks = x[0].1.len();
    unsafe {
        let mut acc = [_mm_setzero_ps(); R];
        let low = _mm256_set1_epi8(0x0F);
        for b in 0..blocks {
            let at = w.nibbles.as_ptr().add(b * GROUP * BLOCK / 2);
            let half = BLOCK / 2;
            let q = [
                unpack(at, low),
                unpack(at.add(half), low),
                unpack(at.add(2 * half), low),
                unpack(at.add(3 * half), low),
            ];
            let scales = _mm_loadu_ps(w.scales.as_ptr().add(b * GROUP));
            let mins = _mm_loadu_ps(w.mins.as_ptr().add(b * GROUP));
            for i in 0..R {
                let xb = _mm256_loadu_si256(x[i].0.as_ptr().add(b * BLOCK) as *const __m256i);
                let ints = totals([
                    dot_u8_i8::<VNNI>(q[0], xb),
                    dot_u8_i8::<VNNI>(q[1], xb),
                    dot_u8_i8::<VNNI>(q[2], xb),
                    dot_u8_i8::<VNNI>(q[3], xb),
                ]);
                let d = _mm_mul_ps(scales, _mm_set1_ps(*x[i].1.get_unchecked(b)));
                acc[i] = _mm_fmadd_ps(_mm_cvtepi32_ps(ints), d, acc[i]);
                acc[i] = _mm_fmadd_ps(mins, _mm_set1_ps(*xsum[i].get_unchecked(b)), acc[i]);
            }
        }
        lanes(acc)
    }
}

#[inline(always)]
unsafe fn q8<const R: usize, const VNNI: bool>(w: Q8Group, x: [Row; R]) -> [[f32; 4]; R] {
    let blocks = x[0].1.len();
    unsafe {
        let mut acc = [_mm_setzero_ps(); R];
        for b in 0..blocks {
            let at = w.quants.as_ptr().add(b * GROUP * BLOCK) as *const __m256i;
            let wb = [
                _mm256_loadu_si256(at),
                _mm256_loadu_si256(at.add(1)),
                _mm256_loadu_si256(at.add(2)),
                _mm256_loadu_si256(at.add(3)),
            ];
            let scales = _mm_loadu_ps(w.scales.as_ptr().add(b * GROUP));
            for i in 0..R {
                let xb = _mm256_loadu_si256(x[i].0.as_ptr().add(b * BLOCK) as *const __m256i);
                let ints = totals([
                    signed_dot::<VNNI>(wb[0], xb),
                    signed_dot::<VNNI>(wb[1], xb),
                    signed_dot::<VNNI>(wb[2], xb),
                    signed_dot::<VNNI>(wb[3], xb),
                ]);
                let d = _mm_mul_ps(scales, _mm_set1_ps(*x[i].1.get_unchecked(b)));
                acc[i] = _mm_fmadd_ps(_mm_cvtepi32_ps(ints), d, acc[i]);
            }
        }
        lanes(acc)
    }
}

#[target_feature(enable = "avx2,fma")]
pub unsafe fn q4_1_avx2<const R: usize>(w: Q4Group, x: [Row; R], xsum: [&[f32]; R]) -> [[f32; 4]; R] {
    unsafe { q4_1::<R, false>(w, x, xsum) }
}

#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
pub unsafe fn q4_1_vnni<const R: usize>(w: Q4Group, x: [Row; R], xsum: [&[f32]; R]) -> [[f32; 4]; R] {
    unsafe { q4_1::<R, true>(w, x, xsum) }
}

#[target_feature(enable = "avx2,fma")]
pub unsafe fn q8_avx2<const R: usize>(w: Q8Group, x: [Row; R]) -> [[f32; 4]; R] {
    unsafe { q8::<R, false>(w, x) }
}

#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
pub unsafe fn q8_vnni<const R: usize>(w: Q8Group, x: [Row; R]) -> [[f32; 4]; R] {
    unsafe { q8::<R, true>(w, x) }
}
