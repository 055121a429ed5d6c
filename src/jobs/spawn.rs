//! The one way long work leaves the calling thread: `spawn` runs a job's
//! `run(&cancel, &mut events)` on its own named thread and hands back a [`Job`] holding the
//! thread's join handle, a channel of the job's typed events and its cancel flag. The CLI
//! blocks on it ([`Job::wait`], feeding a progress bar); the TUI polls it every tick
//! ([`Job::try_next`]). Both see the same events, in the order the job sent them.
//!
//! ```no_run
//! use verdict::jobs::spawn::{spawn, Update};
//! let mut job = spawn("count", |cancel, events| {
//!     for i in 0..3 {
//!         if cancel.load(std::sync::atomic::Ordering::Relaxed) {
//!             break;
//!         }
//!         events(i);
//!     }
//!     Ok("done")
//! });
//! // A UI polls: `while let Some(update) = job.try_next() { … }`; a CLI blocks:
//! let result = job.wait(|i| println!("event {i}"));
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::thread::JoinHandle;

/// A job's thread gets the main thread's stack size (8 MiB), not the 2 MiB of a spawned one,
/// so work moved off the main thread does not find less stack there.
const STACK_BYTES: usize = 8 << 20;

/// Work running on its own thread. Dropping it does not stop the work: call [`Job::cancel`]
/// first (the job stops at its next safe point; nothing waits for it).
pub struct Job<E, T> {
    cancel: Arc<AtomicBool>,
    events: Receiver<E>,
    /// `None` once the result was handed out.
    handle: Option<JoinHandle<anyhow::Result<T>>>,
}

/// What [`Job::try_next`] found: an event, or the end with the job's result (every event the
/// job sent comes before it).
#[derive(Debug)]
pub enum Update<E, T> {
    Event(E),
    Finished(anyhow::Result<T>),
}

/// Runs `work` on a new thread named `name`. `work` gets the job's cancel flag (check it at
/// safe points) and a sink for its events.
pub fn spawn<E, T, F>(name: &str, work: F) -> Job<E, T>
where
    E: Send + 'static,
    T: Send + 'static,
    F: FnOnce(&AtomicBool, &mut dyn FnMut(E)) -> anyhow::Result<T> + Send + 'static,
{
    let (sender, events) = channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            // A receiver that is gone (the UI closed) is no reason to stop the work.
            work(&flag, &mut |event| {
                let _ = sender.send(event);
            })
        })
        .expect("the OS starts a thread");
    Job { cancel, events, handle: Some(handle) }
}

impl<E, T> Job<E, T> {
    /// Asks the job to stop at its next safe point.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Whether `cancel` was called (or the shared flag set).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// The cancel flag itself, for a signal handler (Ctrl-C) that must set it from elsewhere.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Whether the thread has ended and its result was handed out.
    pub fn is_done(&self) -> bool {
        self.handle.is_none()
    }

    /// Without blocking: the next event, else the result once the thread has ended, else
    /// `None` (still working, or the result was already handed out).
    pub fn try_next(&mut self) -> Option<Update<E, T>> {
        match self.events.try_recv() {
            Ok(event) => return Some(Update::Event(event)),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
        }
        if !self.handle.as_ref()?.is_finished() {
            return None;
        }
        // The thread has ended: everything it sent is in the channel by now.
        if let Ok(event) = self.events.try_recv() {
            return Some(Update::Event(event));
        }
        Some(Update::Finished(self.join()))
    }

    /// Blocks until the job ends, passing each event to `on_event` as it comes; the job's
    /// result (a panic on its thread becomes an error).
    pub fn wait(mut self, mut on_event: impl FnMut(E)) -> anyhow::Result<T> {
        // The sender lives in the thread's closure: the iteration ends when the thread does.
        for event in self.events.iter() {
            on_event(event);
        }
        self.join()
    }

    fn join(&mut self) -> anyhow::Result<T> {
        let handle = self.handle.take().ok_or_else(|| anyhow::anyhow!("the job's result was already taken"))?;
        let name = handle.thread().name().unwrap_or("job").to_string();
        handle.join().unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(anyhow::anyhow!("the {name} thread stopped with a bug (panic: {why}); please report it"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn poll_to_end<E, T>(job: &mut Job<E, T>) -> (Vec<E>, anyhow::Result<T>) {
        let started = Instant::now();
        let mut events = Vec::new();
        loop {
            match job.try_next() {
                Some(Update::Event(e)) => events.push(e),
                Some(Update::Finished(result)) => return (events, result),
                None => {
                    assert!(started.elapsed() < Duration::from_secs(10), "the job never finished");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    #[test]
    fn polling_sees_every_event_in_order_then_the_result_once() {
        let mut job = spawn("test-count", |_, events| {
            for i in 0..100 {
                events(i);
            }
            Ok(7)
        });
        let (events, result) = poll_to_end(&mut job);
        assert_eq!(events, (0..100).collect::<Vec<_>>());
        assert_eq!(result.unwrap(), 7);
        assert!(job.is_done());
        assert!(job.try_next().is_none(), "the result is handed out once");
    }

    #[test]
    fn waiting_feeds_every_event_and_returns_the_result() {
        let job = spawn("test-wait", |_, events| {
            events("a");
            events("b");
            Ok(3)
        });
        let mut seen = Vec::new();
        assert_eq!(job.wait(|e| seen.push(e)).unwrap(), 3);
        assert_eq!(seen, ["a", "b"]);
    }

    #[test]
    fn cancel_reaches_the_work_and_errors_and_panics_come_back_as_errors() {
        let job = spawn("test-cancel", |cancel, events: &mut dyn FnMut(u32)| {
            let started = Instant::now();
            while !cancel.load(Ordering::Relaxed) {
                anyhow::ensure!(started.elapsed() < Duration::from_secs(10), "never cancelled");
                std::thread::sleep(Duration::from_millis(1));
            }
            events(1);
            Ok("stopped")
        });
        assert!(!job.is_cancelled());
        job.cancel();
        assert!(job.is_cancelled() && job.cancel_flag().load(Ordering::SeqCst));
        assert_eq!(job.wait(|_| {}).unwrap(), "stopped");

        let failing: Job<(), ()> = spawn("test-error", |_, _| anyhow::bail!("no pairs"));
        assert_eq!(failing.wait(|_| {}).unwrap_err().to_string(), "no pairs");

        let mut panicking: Job<(), ()> = spawn("test-panic", |_, _| panic!("index out of range"));
        let (_, result) = poll_to_end(&mut panicking);
        let error = result.unwrap_err().to_string();
        assert!(error.contains("test-panic") && error.contains("index out of range"), "{error}");
    }
}
