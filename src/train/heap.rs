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
//! Elsewhere (other C libraries, other systems) both are no-ops.

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
