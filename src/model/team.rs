//! A small team of helper threads for decoding: `run(parts, f)` calls `f(0)` on the caller and
//! `f(1..parts)` on helpers that spin between calls, then returns when every part is done.
//!
//! Why not rayon: decoding one token is ~200 matrix-vector products of a few hundred
//! microseconds each. Rayon's idle workers go to sleep within microseconds, and waking one costs
//! about what the second core brings to such a product (measured: 2 threads decoded no faster
//! than 1, docs/performance.md). The helpers here spin for `SPIN` after each part, so the next
//! product of the same token finds them awake (llama.cpp's threads do the same), and then park,
//! so an idle program does not hold a core. A `run` that finds the team busy (another thread
//! decoding) or is called from a part runs every part on the caller.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a helper waits awake for the next part before parking.
const SPIN: Duration = Duration::from_micros(200);

/// A part's work, with its lifetime erased: `run` does not return before every helper is done
/// with it.
type Job = *const (dyn Fn(usize) + Sync);

struct Slot {
    /// Bumped by `run` for each part it hands this helper.
    posted: AtomicU64,
    /// The last `posted` value whose part this helper finished.
    done: AtomicU64,
    /// Set by the helper (after a panic in its part) until `run` reports it.
    panicked: AtomicBool,
    parked: AtomicBool,
    job: Mutex<(usize, Option<SendJob>)>,
    thread: OnceLock<std::thread::Thread>,
}

#[derive(Clone, Copy)]
struct SendJob(Job);
// SAFETY: the pointee is `Sync`, and `run` keeps it alive until every helper is done with it.
unsafe impl Send for SendJob {}

struct Team {
    slots: Vec<Arc<Slot>>,
    /// Held by the `run` in progress.
    busy: Mutex<()>,
}

thread_local! {
    /// Whether this thread is running a part (a nested `run` then runs serially).
    static IN_PART: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn team() -> &'static Team {
    static TEAM: OnceLock<Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let helpers = candle_core::utils::get_num_threads().saturating_sub(1);
        let slots = (0..helpers)
            .map(|i| {
                let slot = Arc::new(Slot {
                    posted: AtomicU64::new(0),
                    done: AtomicU64::new(0),
                    panicked: AtomicBool::new(false),
                    parked: AtomicBool::new(false),
                    job: Mutex::new((0, None)),
                    thread: OnceLock::new(),
                });
                let mine = slot.clone();
                let handle = std::thread::Builder::new()
                    .name(format!("verdict-decode-{}", i + 1))
                    .spawn(move || helper(&mine))
                    .expect("a decode helper thread");
                let _ = slot.thread.set(handle.thread().clone());
                slot
            })
            .collect();
        Team { slots, busy: Mutex::new(()) }
    })
}

/// Parts `run` can spread over: the caller plus the helpers.
pub fn width() -> usize {
    team().slots.len() + 1
}

fn helper(slot: &Slot) {
    super::denormals::apply();
    let mut seen = 0u64;
    loop {
        // Spin for the next part, then park until `run` unparks this thread.
        let since = Instant::now();
        let mut spins = 0u32;
        while slot.posted.load(Ordering::Acquire) == seen {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % 256 == 0 && since.elapsed() > SPIN {
                slot.parked.store(true, Ordering::SeqCst);
                if slot.posted.load(Ordering::SeqCst) == seen {
                    std::thread::park();
                }
                slot.parked.store(false, Ordering::SeqCst);
            }
        }
        seen = slot.posted.load(Ordering::Acquire);
        let (part, job) = *slot.job.lock().expect("a decode helper's job");
        if let Some(SendJob(job)) = job {
            IN_PART.with(|p| p.set(true));
            // SAFETY: `run` keeps the closure alive until `done` says this part finished.
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*job)(part) })).is_ok();
            IN_PART.with(|p| p.set(false));
            if !ok {
                slot.panicked.store(true, Ordering::Release);
            }
        }
        slot.done.store(seen, Ordering::Release);
    }
}

/// Waits for the helpers given parts, even when the caller's own part panics.
struct WaitForHelpers<'a> {
    slots: &'a [Arc<Slot>],
    posted: Vec<u64>,
}

impl Drop for WaitForHelpers<'_> {
    fn drop(&mut self) {
        for (slot, &want) in self.slots.iter().zip(&self.posted) {
            let mut spins = 0u32;
            while slot.done.load(Ordering::Acquire) != want {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins % 4096 == 0 {
                    std::thread::yield_now();
                }
            }
        }
    }
}

/// Calls `f(part)` for every part in `0..parts`, part 0 on this thread and the others on the
/// team's helpers (serially here when there are none, the team is busy, or this is a part).
/// Parts beyond `width()` are not run: split the work into at most `width()` parts.
pub fn run(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    let serial = || (0..parts).for_each(f);
    if parts <= 1 || IN_PART.with(|p| p.get()) {
        return serial();
    }
    let team = team();
    let Ok(_busy) = team.busy.try_lock() else { return serial() };
    let helpers = &team.slots[..(parts - 1).min(team.slots.len())];
    // SAFETY (of the erased lifetime): `wait` below does not let this function return, nor
    // unwind past it, before every helper has finished its part.
    let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
    let mut wait = WaitForHelpers { slots: helpers, posted: Vec::with_capacity(helpers.len()) };
    for (i, slot) in helpers.iter().enumerate() {
        *slot.job.lock().expect("a decode helper's job") = (i + 1, Some(SendJob(job)));
        let posted = slot.posted.fetch_add(1, Ordering::SeqCst) + 1;
        wait.posted.push(posted);
        if slot.parked.load(Ordering::SeqCst)
            && let Some(t) = slot.thread.get()
        {
            t.unpark();
        }
    }
    IN_PART.with(|p| p.set(true));
    let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)));
    IN_PART.with(|p| p.set(false));
    // Parts the team has no helper for run here.
    for part in helpers.len() + 1..parts {
        f(part);
    }
    drop(wait);
    for slot in helpers {
        *slot.job.lock().expect("a decode helper's job") = (0, None);
    }
    if let Err(panic) = mine {
        std::panic::resume_unwind(panic);
    }
    if helpers.iter().any(|s| s.panicked.swap(false, Ordering::AcqRel)) {
        panic!("a decode helper thread panicked");
    }
}

/// A product `[m, rows]` (activation rows `m`, weight rows `rows`) split over the team by weight
/// rows: each part takes a stretch of whole groups of four rows, and `stretch(first, n, out)`
/// fills `out[i * n + r]` with output `(i, first + r)` for `r < n`, `i < m`. The stretch a row
/// lands in does not change its sum, so the split is free to follow the team's width.
pub fn split_rows(rows: usize, m: usize, stretch: &(dyn Fn(usize, usize, &mut [f32]) + Sync)) -> Vec<f32> {
    let mut y = vec![0f32; m * rows];
    let parts = width().min(rows / (4 * 16)).max(1);
    let size = rows.div_ceil(parts).next_multiple_of(4);
    if m == 1 {
        // One row: each part writes its stretch of `y` in place.
        let outs: Vec<Mutex<&mut [f32]>> = y.chunks_mut(size).map(Mutex::new).collect();
        run(outs.len(), &|t| {
            let mut out = outs[t].lock().expect("an output stretch");
            stretch(t * size, out.len(), &mut out);
        });
        return y;
    }
    let parts = rows.div_ceil(size);
    let outs: Vec<Mutex<Vec<f32>>> = (0..parts).map(|_| Mutex::new(Vec::new())).collect();
    run(parts, &|t| {
        let n = size.min(rows - t * size);
        let mut out = vec![0f32; m * n];
        stretch(t * size, n, &mut out);
        *outs[t].lock().expect("an output stretch") = out;
    });
    for (t, part) in outs.into_iter().enumerate() {
        let part = part.into_inner().expect("an output stretch");
        let (first, n) = (t * size, part.len() / m);
        for i in 0..m {
            y[i * rows + first..i * rows + first + n].copy_from_slice(&part[i * n..(i + 1) * n]);
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_part_runs_once_whatever_the_width() {
        for parts in [0, 1, 2, 3, 7] {
            let seen: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..50 {
                run(parts, &|p| {
                    seen[p].fetch_add(1, Ordering::Relaxed);
                });
            }
            assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 50), "{parts} parts");
        }
    }

    #[test]
    fn parts_write_their_own_slices_and_a_nested_run_is_serial() {
        let mut out = vec![0u32; 1000];
        let chunks: Vec<Mutex<&mut [u32]>> = out.chunks_mut(250).map(Mutex::new).collect();
        run(chunks.len(), &|p| {
            let mut chunk = chunks[p].lock().unwrap();
            run(2, &|q| assert!(q < 2));
            chunk.iter_mut().for_each(|v| *v = p as u32 + 1);
        });
        drop(chunks);
        assert!(out.chunks(250).enumerate().all(|(p, c)| c.iter().all(|&v| v == p as u32 + 1)));
    }

    #[test]
    fn a_panicking_part_panics_the_caller_after_the_others_finish() {
        // Whether part 1 runs on a helper or (the team busy with another test) after part 0.
        let finished = AtomicUsize::new(0);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(2, &|p| {
                if p == 1 {
                    panic!("part 1");
                }
                std::thread::sleep(Duration::from_millis(20));
                finished.fetch_add(1, Ordering::SeqCst);
            })
        }));
        assert!(r.is_err());
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }
}
