//! What the fused CPU kernels (`attention.rs`, `swiglu.rs`) are written over: the two float
//! types (`Real`), borrowing a tensor's CPU data as a slice, strided matrix products on raw
//! data (the `gemm` crate candle's own CPU matmul uses), and `simd_fn!`, which compiles a loop
//! for AVX-512 and for AVX2+FMA as well and picks the best the CPU has (the crate is built for
//! baseline x86-64, so without it the element-wise loops would use 4-wide SSE2).

use candle_core::{CpuStorage, Result, Storage, Tensor};

/// f32 or f64: what the fused kernels compute in.
pub trait Real:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
    + std::ops::Neg<Output = Self>
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// `e^x`; for f32 a polynomial that vectorizes (relative error below 2e-7), for f64 std's.
    fn exp(self) -> Self;
    fn max(self, other: Self) -> Self;
    /// The storage variant holding a `Vec<Self>`.
    fn storage(v: Vec<Self>) -> CpuStorage;
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    /// The vector inside `s`, if it holds this type.
    fn into_vec(s: CpuStorage) -> Option<Vec<Self>>;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn exp(self) -> Self {
        exp_f32(self)
    }
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        if self > other { self } else { other }
    }
    fn storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(v)
    }
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn into_vec(s: CpuStorage) -> Option<Vec<Self>> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn exp(self) -> Self {
        f64::exp(self)
    }
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        if self > other { self } else { other }
    }
    fn storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F64(v)
    }
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn into_vec(s: CpuStorage) -> Option<Vec<Self>> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
}

/// `e^x` in f32 without a libm call, so loops over it vectorize: `x = n ln2 + r` with
/// `|r| <= ln2/2`, `e^r` by Cephes' degree-6 polynomial, `2^n` written into the exponent bits.
/// Inputs below -87.3 give exactly 0, as if flushed to zero: masked attention scores (-1e9) and
/// the vocabulary's most unlikely tokens. (They gave 1.25e-38 before, which the softmax's
/// normalization and the products after it turned into subnormals: on Intel cores a microcode
/// assist per operand in every matrix product that read them, see `model::denormals`.)
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.3);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    let y = e * f32::from_bits(((n as i32 + 127) as u32) << 23);
    // A select, so the loops around it still vectorize. (NaN compares false and stays NaN.)
    if x < -87.3 { 0.0 } else { y }
}

/// Lanes of the reductions below: independent partial sums, so the loops vectorize (a float
/// sum in one accumulator cannot be reordered by the compiler).
const LANES: usize = 8;

/// `sum(a[i] * b[i])`, summed in `LANES` partial sums.
#[inline(always)]
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut total = T::ZERO;
    for (x, y) in ra.iter().zip(rb) {
        total += *x * *y;
    }
    acc.iter().fold(total, |t, &a| t + a)
}

/// `sum(a)`, in `LANES` partial sums.
#[inline(always)]
pub fn sum<T: Real>(a: &[T]) -> T {
    let mut acc = [T::ZERO; LANES];
    let chunks = a.chunks_exact(LANES);
    let rest = chunks.remainder();
    for x in chunks {
        for l in 0..LANES {
            acc[l] += x[l];
        }
    }
    acc.iter().fold(rest.iter().fold(T::ZERO, |t, &x| t + x), |t, &a| t + a)
}

/// `max(a)` (negative infinity when empty), in `LANES` partial maxima.
#[inline(always)]
pub fn max<T: Real>(a: &[T]) -> T {
    let mut acc = [T::NEG_INFINITY; LANES];
    let chunks = a.chunks_exact(LANES);
    let rest = chunks.remainder();
    for x in chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(x[l]);
        }
    }
    acc.iter().fold(rest.iter().fold(T::NEG_INFINITY, |m, &x| m.max(x)), |m, &a| m.max(a))
}

/// The contiguous CPU data of `t` as a slice of `T`.
pub fn with_slice<T: Real, R>(t: &Tensor, what: &str, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: expected a contiguous tensor")))?;
    match &*storage {
        Storage::Cpu(s) => match T::slice(s) {
            Some(v) => Ok(f(&v[start..end])),
            None => candle_core::bail!("{what}: expected {}", std::any::type_name::<T>()),
        },
        _ => candle_core::bail!("{what}: expected a CPU tensor"),
    }
}

/// A strided matrix on raw data: element (i, j) is at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
pub struct Mat<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

impl<T> Mat<T> {
    pub fn rows(ptr: *const T, rs: usize) -> Self {
        Self { ptr, rs: rs as isize, cs: 1 }
    }
    pub fn t(self) -> Self {
        Self { ptr: self.ptr, rs: self.cs, cs: self.rs }
    }
}

/// `dst (m x n, rows `dst_rs` apart) = [dst +] scale * lhs (m x k) rhs (k x n)`, on one thread.
///
/// # Safety
/// Every element the shapes and strides address must be inside live allocations; `dst` must not
/// overlap `lhs` or `rhs`, nor be accessed by another thread meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<T>,
    rhs: Mat<T>,
    scale: T,
) {
    // SAFETY: the caller's contract.
    unsafe { matmul_with((m, n, k), dst, dst_rs, accumulate, lhs, rhs, scale, gemm::Parallelism::None) }
}

/// `matmul` on candle's CPU thread count (for the large products: weight gradients).
///
/// # Safety
/// As `matmul`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_threaded<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<T>,
    rhs: Mat<T>,
    scale: T,
) {
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the caller's contract.
    unsafe { matmul_with((m, n, k), dst, dst_rs, accumulate, lhs, rhs, scale, parallelism) }
}

/// The one call into `gemm` behind `matmul` and `matmul_threaded`.
///
/// # Safety
/// As `matmul`.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_with<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<T>,
    rhs: Mat<T>,
    scale: T,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract; gemm reads dst only when `accumulate`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            T::ONE,
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// A raw pointer that may cross to the worker threads of `for_each_unit`; each unit writes a
/// disjoint part of what it points to.
#[derive(Clone, Copy)]
pub struct Shared<T>(pub *mut T);
// SAFETY: only used for disjoint writes by units of `for_each_unit`, joined before it returns.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The pointer, `offset` elements in. (A method, so closures capture the `Shared`, not the
    /// raw pointer inside it.)
    ///
    /// # Safety
    /// `offset` must stay inside the allocation.
    pub unsafe fn at(&self, offset: usize) -> *mut T {
        unsafe { self.0.add(offset) }
    }
}

/// Runs `f(unit)` for `0..units` on candle's CPU thread count (scoped threads taking units in
/// turn; inline with one thread).
pub fn for_each_unit(units: usize, f: impl Fn(usize) + Sync) {
    let threads = candle_core::utils::get_num_threads().clamp(1, units.max(1));
    if threads == 1 {
        (0..units).for_each(f);
        return;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    // The workers compute in the caller's denormal mode (`model::denormals`).
    let flush = crate::model::denormals::this_thread_flushes();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                crate::model::denormals::set_this_thread(flush);
                loop {
                    let u = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if u >= units {
                        break;
                    }
                    f(u);
                }
            });
        }
    });
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
/// Generic functions take one type parameter `T: Real`.
macro_rules! simd_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident<T: Real>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        $vis fn $name<T: $crate::train::real::Real>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512<T: $crate::train::real::Real>($($arg: $ty),*) $(-> $ret)? $body
                #[target_feature(enable = "avx2,fma")]
                fn avx2<T: $crate::train::real::Real>($($arg: $ty),*) $(-> $ret)? $body
                match $crate::train::real::simd_level() {
                    // SAFETY: the CPU has the features these were compiled for.
                    $crate::train::real::Simd::Avx512 => return unsafe { avx512::<T>($($arg),*) },
                    $crate::train::real::Simd::Avx2 => return unsafe { avx2::<T>($($arg),*) },
                    $crate::train::real::Simd::Baseline => {}
                }
            }
            $body
        }
    };
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? $body
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? $body
                match $crate::train::real::simd_level() {
                    // SAFETY: the CPU has the features these were compiled for.
                    $crate::train::real::Simd::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::train::real::Simd::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::train::real::Simd::Baseline => {}
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
        // Below f32's normal range the result is 0, never a subnormal.
        assert_eq!(exp_f32(-1e9), 0.0);
        assert_eq!(exp_f32(-87.31), 0.0);
        assert!(exp_f32(-87.29).is_normal());
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn strided_matmul_matches_a_plain_loop() {
        // A (2x3) stored transposed, B (3x2) as rows 4 apart.
        let a_t = [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0];
        let b = [1.0f64, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 5.0, 6.0];
        let mut c = [1.0f64; 4];
        unsafe {
            matmul((2, 2, 3), c.as_mut_ptr(), 2, true, Mat::rows(a_t.as_ptr(), 2).t(), Mat::rows(b.as_ptr(), 4), 2.0)
        };
        // A B = [[22, 28], [49, 64]]; c = 1 + 2 A B
        assert_eq!(c, [45.0, 57.0, 99.0, 129.0]);
    }
}
