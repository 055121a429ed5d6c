//! glibc malloc settings for the length of a training run.
//!
//! A step allocates and frees the same few hundred tensors every time. With glibc's defaults,
//! buffers above the (adaptive) mmap threshold are mapped fresh for each allocation and, like
//! freed memory at the top of the heap beyond the trim threshold, handed back to the kernel on
//! free; the next step faults the pages in again and the kernel zeroes each one (measured: 6-15%
//! of a full fine-tuning step in page faults). During a run, `keep_for_reuse` serves every
//! buffer up to 32 MB (glibc's largest mmap threshold) from the heap and stops trimming it, so
//! freed buffers are reused; the peak resident size does not change. `release` at the end of
//! the run gives the freed memory back (the TUI lives on after a run) and restores trimming.
//! `one_arena`, called by the binary before any thread starts, keeps every thread's allocations
//! in one heap: with glibc's default of an arena per thread (up to 8 per core), the buffers the
//! pools' threads free stay in their own untrimmed arenas, and which thread allocates what
//! varies, so the peak did too (135M full fine-tuning, 2 threads, Zen 4: 2,620-2,799 MiB over
//! four runs; with one arena 2,606-2,617 over nine, the same wall time).
//! Elsewhere (other C libraries, other systems) all three are no-ops.

/// One malloc arena for every thread (see the module documentation). Call it before the first
/// thread starts: a thread that has allocated keeps the arena it has.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; any value is accepted or refused.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Keeps freed buffers in the process for reuse (see the module documentation).
pub fn keep_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; any value is accepted or refused.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Returns freed memory to the system and restores trimming (glibc's default threshold).
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: as above; malloc_trim only releases free memory.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
        libc::malloc_trim(0);
    }
}
