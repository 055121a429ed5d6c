//! Which SIMD instruction set the CPU runs (detected once, capped by `VERDICT_SIMD`), the
//! `simd_fn!` macro that compiles a loop for AVX-512, AVX2+FMA and the baseline and picks the
//! best at run time, and the vectorizable `exp_f32` those loops call. Below both the inference
//! kernels (`model::cpu_ops`, `model::q8_cpu`) and the training kernels (`train::real` re-exports
//! them), so neither reaches into the other. Imports nothing from the crate.

/// `e^x` in f32 without a libm call, so loops over it vectorize: `x = n ln2 + r` with
/// `|r| <= ln2/2`, `e^r` by Cephes' degree-6 polynomial, `2^n` written into the exponent bits.
/// Inputs below -87.3 give exactly 0, as if flushed to zero: masked attention scores (-1e9) and
/// the vocabulary's most unlikely tokens. (They gave 1.25e-38 before, which the softmax's
/// normalization and the products after it turned into subnormals: on Intel cores a microcode
/// assist per operand in every matrix product that read them, see `model::denormals`.)
/// 1.5 * 2^23: a float in `[2^23, 2^24)` has a unit step, so `whole + WHOLE` holds `whole` in its
/// low mantissa bits.
const WHOLE: f32 = 12_582_912.0;

/// The integer a whole-valued float `whole` (`|whole| < 2^22`) holds, by integer arithmetic on
/// the bits of `whole + 1.5 * 2^23`. `whole as i32` gives the same value, but Rust's saturating
/// float-to-int cast does not vectorize: LLVM converts every lane alone, which made the loops
/// over `exp_f32` 5x slower and the Q8 activation quantization a scalar loop.
#[inline(always)]
pub fn int_of_whole(whole: f32) -> i32 {
    (whole + WHOLE).to_bits().wrapping_sub(WHOLE.to_bits()) as i32
}

#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' coefficients, as published.
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.3, 88.3);
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
    let n = (xc * LOG2E + WHOLE) - WHOLE;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    let y = e * f32::from_bits(((int_of_whole(n) + 127) as u32) << 23);
    // A select, so the loops around it still vectorize. (NaN compares false and stays NaN.)
    if x < -87.3 { 0.0 } else { y }
}

/// The instruction sets `simd_fn!` compiles a kernel for, in rising order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    /// What the crate is built for: x86-64's SSE2 (4 f32 lanes), or another architecture's own.
    Baseline,
    /// AVX2 + FMA, 8 f32 lanes.
    Avx2,
    /// AVX-512 F/BW/DQ/VL (+ AVX2, FMA), 16 f32 lanes.
    Avx512,
}

impl Simd {
    pub fn label(self) -> &'static str {
        match self {
            Simd::Baseline => "baseline",
            Simd::Avx2 => "AVX2",
            Simd::Avx512 => "AVX-512",
        }
    }
}

/// The best set this CPU runs, capped by `VERDICT_SIMD=baseline|avx2` (to compare, or where
/// AVX-512 lowers the clock); checked once.
pub fn simd_best() -> Simd {
    static BEST: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *BEST.get_or_init(|| {
        let cap = match std::env::var("VERDICT_SIMD").as_deref() {
            Ok("baseline") => Simd::Baseline,
            Ok("avx2") => Simd::Avx2,
            _ => Simd::Avx512,
        };
        detect_simd().min(cap)
    })
}

fn detect_simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        use std::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            let avx512 = has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl");
            return if avx512 { Simd::Avx512 } else { Simd::Avx2 };
        }
    }
    Simd::Baseline
}

/// Tests cap the level process-wide to compare the variants (`simd_tests.rs`).
#[cfg(test)]
pub(crate) static SIMD_CAP: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(u8::MAX);

/// Runs `f` with the kernels capped at `cap` (0 baseline, 1 AVX2, `u8::MAX` none), one capped
/// run at a time in the process (the cap is process-wide).
#[cfg(test)]
pub(crate) fn with_simd_cap<R>(cap: u8, f: impl FnOnce() -> R) -> R {
    static CAPPED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = CAPPED.lock().unwrap_or_else(|e| e.into_inner());
    SIMD_CAP.store(cap, std::sync::atomic::Ordering::Relaxed);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    SIMD_CAP.store(u8::MAX, std::sync::atomic::Ordering::Relaxed);
    r.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// The set `simd_fn!` kernels run with now.
#[inline(always)]
pub fn simd_level() -> Simd {
    #[cfg(test)]
    {
        match SIMD_CAP.load(std::sync::atomic::Ordering::Relaxed) {
            0 => Simd::Baseline,
            1 => simd_best().min(Simd::Avx2),
            _ => simd_best(),
        }
    }
    #[cfg(not(test))]
    {
        simd_best()
    }
}

/// Defines a function whose body is compiled three times: with AVX-512 (F, BW, DQ, VL; its loops
/// vectorize 16-wide), with AVX2 and FMA (8-wide), and for the baseline target; each call takes
/// the best the CPU runs (`simd_level`), so one binary runs everywhere. The body is repeated
/// rather than called: a call into separately compiled code would run without the features.
/// Helpers it calls should be `#[inline(always)]`; closures inside it inherit the features.
/// Generic functions take one type parameter with one bound, `T: Real` in train/ (the bound is
/// named at the call, so this file needs none of train's types).
macro_rules! simd_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident<T: $bound:path>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<T: $bound>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512<T: $bound>($($arg: $ty),*) $(-> $ret)? $body
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2,fma")]
                fn avx2<T: $bound>($($arg: $ty),*) $(-> $ret)? $body
                match $crate::model::simd::simd_level() {
                    // SAFETY: the CPU has the features these were compiled for.
                    $crate::model::simd::Simd::Avx512 => return unsafe { avx512::<T>($($arg),*) },
                    $crate::model::simd::Simd::Avx2 => return unsafe { avx2::<T>($($arg),*) },
                    $crate::model::simd::Simd::Baseline => {}
                }
            }
            $body
        }
    };
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? $body
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? $body
                match $crate::model::simd::simd_level() {
                    // SAFETY: the CPU has the features these were compiled for.
                    $crate::model::simd::Simd::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::model::simd::Simd::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::model::simd::Simd::Baseline => {}
                }
            }
            $body
        }
    };
}
pub(crate) use simd_fn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_within_two_ulps_of_std() {
        let mut worst = 0f64;
        for i in -87_000..88_000 {
            let x = i as f32 * 1e-3;
            let want = f64::from(x).exp();
            worst = worst.max(((f64::from(exp_f32(x)) - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        // The exponent taken from the mantissa bits is the one a float-to-int cast gives.
        for i in -90_000..90_000 {
            let x = i as f32 * 1e-3;
            let xc = x.clamp(-87.3, 88.3);
            let n = (xc * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
            let by_cast = f32::from_bits(((n as i32 + 127) as u32) << 23);
            let by_bits = exp_f32(x) / by_cast;
            assert!(x < -87.3 || (0.7..1.42).contains(&by_bits), "x {x}: 2^n {by_cast}, e^x {}", exp_f32(x));
        }
        // Below f32's normal range the result is 0, never a subnormal.
        assert_eq!(exp_f32(-1e9), 0.0);
        assert_eq!(exp_f32(-87.31), 0.0);
        assert!(exp_f32(-87.29).is_normal());
        assert_eq!(exp_f32(0.0), 1.0);
    }
}
