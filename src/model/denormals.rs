//! Flush-to-zero and denormals-are-zero (x86-64 MXCSR FTZ|DAZ) for every thread that computes.
//!
//! Subnormal floats (|x| < 1.18e-38 in f32) cost a microcode assist per operand or result on
//! Intel cores: measured in issue 14, gemm fell from ~50 to 0.3 GFLOPS with a quarter of one
//! operand subnormal, and a training step from 6 s to 21–33 s. Training produces them (see
//! docs/training.md, "Denormals"), so verdict flushes them to zero by default: results below
//! the smallest normal become 0 (FTZ) and subnormal inputs read as 0 (DAZ). `--no-flush-denormals`
//! keeps IEEE subnormals.
//!
//! MXCSR is per thread. The choice is applied to the thread that parses the command line (before
//! any pool starts: Linux copies a thread's MXCSR into the threads it creates, so candle's pools
//! and the job threads inherit it), and explicitly to every worker of rayon's global pool (its
//! start handler, see `model::configure_threads`) and to the thread that loads a model; the train
//! module's scoped threads take their caller's mode. So the setting holds also where threads do
//! not inherit it (Windows). Elsewhere than x86-64 nothing is
//! changed: ARM cores handle subnormals at full speed.

use std::sync::atomic::{AtomicBool, Ordering};

/// MXCSR bit 15: results that would be subnormal become zero.
#[cfg(target_arch = "x86_64")]
const FTZ: u32 = 1 << 15;
/// MXCSR bit 6: subnormal inputs are read as zero.
#[cfg(target_arch = "x86_64")]
const DAZ: u32 = 1 << 6;

/// The process-wide choice; on unless the user asked for IEEE subnormals.
static FLUSH: AtomicBool = AtomicBool::new(true);

/// Sets the process-wide choice and applies it to the calling thread. Call it before any compute
/// pool starts (the CLI does, from `--no-flush-denormals`).
pub fn set_flush(on: bool) {
    FLUSH.store(on, Ordering::Relaxed);
    apply();
}

/// Whether denormals are to be flushed (the process-wide choice, not this thread's state).
pub fn flush_requested() -> bool {
    FLUSH.load(Ordering::Relaxed)
}

/// Puts the calling thread in the process-wide mode. Cheap (one MXCSR read and write): call it
/// at the start of every thread that computes.
pub fn apply() {
    set_this_thread(flush_requested());
}

/// Whether this CPU has the mode at all (x86-64; elsewhere the functions here do nothing).
pub fn supported() -> bool {
    cfg!(target_arch = "x86_64")
}

/// Turns FTZ|DAZ on or off for the calling thread only.
pub fn set_this_thread(on: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let csr = read_mxcsr();
        let want = if on { csr | FTZ | DAZ } else { csr & !(FTZ | DAZ) };
        if want != csr {
            write_mxcsr(want);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = on;
}

/// Whether the calling thread flushes denormals now (both FTZ and DAZ set).
pub fn this_thread_flushes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        read_mxcsr() & (FTZ | DAZ) == FTZ | DAZ
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// "on", "off", or "n/a" where the CPU has no such mode: for run headers and bench output.
pub fn state_label() -> &'static str {
    match (supported(), this_thread_flushes()) {
        (false, _) => "n/a",
        (true, true) => "on",
        (true, false) => "off",
    }
}

#[cfg(target_arch = "x86_64")]
fn read_mxcsr() -> u32 {
    let mut csr: u32 = 0;
    // SAFETY: stmxcsr writes 4 bytes to the address given, a live local; SSE is baseline x86-64.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags)) };
    csr
}

#[cfg(target_arch = "x86_64")]
fn write_mxcsr(csr: u32) {
    // SAFETY: ldmxcsr reads 4 bytes from a live local. Only the FTZ and DAZ bits differ from the
    // value read (the rounding mode and exception masks are kept), so no exception gets unmasked.
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly, preserves_flags)) };
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use std::hint::black_box;

    /// Restores the thread's mode when a test ends, also on panic.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            set_this_thread(self.0);
        }
    }

    #[test]
    fn a_subnormal_result_is_zero_only_when_flushing() {
        let _restore = Restore(this_thread_flushes());
        let (a, b) = (black_box(1e-30f32), black_box(1e-10f32));
        set_this_thread(false);
        let ieee = black_box(a) * black_box(b);
        assert!(ieee.is_subnormal(), "1e-30 * 1e-10 = {ieee:e} without flushing");
        set_this_thread(true);
        assert!(this_thread_flushes());
        assert_eq!(black_box(a) * black_box(b), 0.0, "FTZ: the subnormal result is flushed");
        // DAZ: a subnormal input reads as zero, so adding it to a tiny normal changes nothing.
        let tiny = black_box(f32::MIN_POSITIVE);
        let sub = black_box(f32::from_bits(1 << 20));
        assert_eq!(black_box(sub) * black_box(1e30f32), 0.0, "DAZ: a subnormal input is zero");
        assert_eq!(tiny + sub, tiny);
        set_this_thread(false);
        assert!(!this_thread_flushes());
        assert!(black_box(sub) * black_box(1e30f32) > 1e-9);
    }

    #[test]
    fn a_candle_op_flushes_on_this_thread() {
        let _restore = Restore(this_thread_flushes());
        set_this_thread(false);
        let x = candle_core::Tensor::new(&[1e-30f32, 2e-30, 1.0, -3e-31][..], &candle_core::Device::Cpu).unwrap();
        let y = (x * 1e-10).unwrap();
        set_this_thread(true);
        // DAZ reads y's subnormals as zero; FTZ would flush what 2 * 1e-40 gives.
        let flushed: Vec<f32> = (y.clone() * 2.0).unwrap().to_vec1().unwrap();
        assert_eq!(flushed, [0.0, 0.0, 2e-10, 0.0]);
        set_this_thread(false);
        let kept: Vec<f32> = (y * 2.0).unwrap().to_vec1().unwrap();
        assert!(kept[0].is_subnormal() && kept[1].is_subnormal() && kept[3].is_subnormal(), "{kept:?}");
    }

    #[test]
    fn threads_started_from_a_flushing_thread_flush() {
        let _restore = Restore(this_thread_flushes());
        for on in [true, false] {
            set_this_thread(on);
            let child = std::thread::spawn(this_thread_flushes).join().unwrap();
            assert_eq!(child, on, "a new thread copies its creator's MXCSR");
        }
    }

    #[test]
    fn pool_workers_apply_the_process_choice() {
        // The start handler `configure_threads` gives rayon's global pool, on a pool of our own
        // started from a thread that does not flush.
        let _restore = Restore(this_thread_flushes());
        set_this_thread(false);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).start_handler(|_| apply()).build().unwrap();
        let in_pool = pool.broadcast(|_| this_thread_flushes());
        assert_eq!(in_pool, vec![flush_requested(); 2]);
    }
}
