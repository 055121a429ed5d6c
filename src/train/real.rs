//! What the fused CPU kernels (`attention.rs`, `swiglu.rs`) are written over: the two float
//! types (`Real`), borrowing a tensor's CPU data as a slice, strided matrix products on raw
//! data (the `gemm` crate candle's own CPU matmul uses), and `simd_fn!`, which compiles a loop
//! for AVX-512 and for AVX2+FMA as well and picks the best the CPU has (the crate is built for
//! baseline x86-64, so without it the element-wise loops would use 4-wide SSE2). The CPU
//! detection, `simd_fn!` and `exp_f32` live in `model::simd`, below the inference kernels too;
//! they are re-exported here for the training kernels.

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};

pub(crate) use crate::model::simd::simd_fn;
pub use crate::model::simd::{Simd, exp_f32, simd_best, simd_level};

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
    Ok(f(cpu_slice(&storage, layout, what)?))
}

/// The contiguous CPU data behind a storage guard (`Tensor::storage_and_layout`) as a slice of
/// `T`: for reading several tensors at once without nesting `with_slice`.
pub fn cpu_slice<'a, T: Real>(storage: &'a Storage, layout: &Layout, what: &str) -> Result<&'a [T]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: expected a contiguous tensor")))?;
    match storage {
        Storage::Cpu(s) => match T::slice(s) {
            Some(v) => Ok(&v[start..end]),
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

/// Runs `f(first, part)` over `out` cut into parts of `part_len` elements (the last may be
/// shorter), `first` being the part's offset in `out`, on rayon's pool (candle's thread count,
/// its workers flushing denormals like the caller: `model::options`); inline with one thread.
/// For the element-wise and row-wise kernels: each element is computed the same way whatever
/// the thread count, so results do not depend on it. Without this they ran on the calling
/// thread alone while the other waited (Intel Xeon, 2 threads: 15% of a LoRA step).
pub fn par_parts<T: Send>(out: &mut [T], part_len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    use rayon::prelude::*;
    let part_len = part_len.max(1);
    if candle_core::utils::get_num_threads() <= 1 || out.len() <= part_len {
        f(0, out);
        return;
    }
    out.par_chunks_mut(part_len).enumerate().for_each(|(i, part)| f(i * part_len, part));
}

/// Elements per part for `par_parts` over element-wise loops: large enough that a part costs
/// far more than handing it to a worker, small enough to balance two to sixteen threads.
pub const ELEMENTWISE_PART: usize = 1 << 15;

/// Runs `f(unit)` for `0..units` on rayon's pool (candle's thread count, its workers flushing
/// denormals like the caller: `model::options`), one unit a task so idle workers take the next;
/// inline with one thread. Not scoped threads of its own: those ran beside the pool's workers,
/// still spinning after the product before, so more threads than cores computed at times.
pub fn for_each_unit(units: usize, f: impl Fn(usize) + Sync) {
    use rayon::prelude::*;
    if candle_core::utils::get_num_threads() <= 1 || units <= 1 {
        (0..units).for_each(f);
        return;
    }
    (0..units).into_par_iter().with_max_len(1).for_each(&f);
}

#[cfg(test)]
mod tests {
    use super::*;

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
