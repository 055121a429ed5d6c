//! Progress of a long CLI command (train, generate, eval answers): indicatif's bar when stderr is
//! a terminal, plain lines otherwise.
//!
//! Why not indicatif alone: with stderr redirected (`verdict train 2>train.log`, a CI job, a
//! pipe) indicatif hides its bar, and a hidden bar's `println` is a no-op — the run's lines, the
//! eval lines and every failed prompt's error were lost. Plain mode prints those lines as they
//! come, and the progress itself as `"<unit> pos/len: message"` at most every two seconds (and
//! always the last one), so a log shows where a run was without thousands of lines.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often plain mode prints a progress line while the position moves.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

pub struct Progress {
    mode: Mode,
}

enum Mode {
    Bar(ProgressBar),
    Plain(Mutex<Plain>),
}

/// Plain mode's state: where the work is and what was last printed.
struct Plain {
    unit: &'static str,
    position: u64,
    length: u64,
    message: String,
    last_print: Option<Instant>,
    /// Whether the position or message changed since the last progress line.
    unprinted: bool,
}

impl Progress {
    /// A bar drawn with indicatif's `template` on a terminal; `unit` names what is counted in
    /// plain mode ("step", "prompt", "answer").
    pub fn new(unit: &'static str, template: &str) -> Progress {
        Progress::with_terminal(unit, template, std::io::stderr().is_terminal())
    }

    fn with_terminal(unit: &'static str, template: &str, terminal: bool) -> Progress {
        let mode = if terminal {
            let bar = ProgressBar::new(0);
            bar.set_style(ProgressStyle::with_template(template).expect("template").progress_chars("=> "));
            Mode::Bar(bar)
        } else {
            Mode::Plain(Mutex::new(Plain {
                unit,
                position: 0,
                length: 0,
                message: String::new(),
                last_print: None,
                unprinted: false,
            }))
        };
        Progress { mode }
    }

    /// A line above the bar (or on its own in plain mode): always shown.
    pub fn println(&self, line: impl AsRef<str>) {
        match &self.mode {
            Mode::Bar(bar) => bar.println(line.as_ref()),
            Mode::Plain(_) => eprintln!("{}", line.as_ref()),
        }
    }

    /// Runs `f` (which prints on its own) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.mode {
            Mode::Bar(bar) => bar.suspend(f),
            Mode::Plain(_) => f(),
        }
    }

    pub fn set_length(&self, length: u64) {
        match &self.mode {
            Mode::Bar(bar) => bar.set_length(length),
            Mode::Plain(plain) => plain.lock().unwrap().length = length,
        }
    }

    pub fn inc(&self, delta: u64) {
        match &self.mode {
            Mode::Bar(bar) => bar.inc(delta),
            Mode::Plain(plain) => self.plain_moved(plain, |p| p.position += delta),
        }
    }

    pub fn set_message(&self, message: String) {
        match &self.mode {
            Mode::Bar(bar) => bar.set_message(message),
            Mode::Plain(plain) => self.plain_moved(plain, |p| p.message = message),
        }
    }

    /// Moves to `position` with `message` in one update, so a plain line never pairs a step
    /// with the previous step's numbers.
    pub fn set(&self, position: u64, message: String) {
        match &self.mode {
            Mode::Bar(bar) => {
                bar.set_message(message);
                bar.set_position(position);
            }
            Mode::Plain(plain) => self.plain_moved(plain, |p| {
                p.position = position;
                p.message = message;
            }),
        }
    }

    /// Clears the bar; in plain mode prints the last progress line unless it already was.
    pub fn finish(&self) {
        match &self.mode {
            Mode::Bar(bar) => bar.finish_and_clear(),
            Mode::Plain(plain) => {
                let mut p = plain.lock().unwrap();
                if p.unprinted {
                    eprintln!("{}", p.line());
                    p.unprinted = false;
                }
            }
        }
    }

    fn plain_moved(&self, plain: &Mutex<Plain>, change: impl FnOnce(&mut Plain)) {
        let mut p = plain.lock().unwrap();
        change(&mut p);
        p.unprinted = true;
        if p.last_print.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
            eprintln!("{}", p.line());
            p.last_print = Some(Instant::now());
            p.unprinted = false;
        }
    }
}

impl Plain {
    fn line(&self) -> String {
        let counts = match self.length {
            0 => format!("{} {}", self.unit, self.position),
            n => format!("{} {}/{n}", self.unit, self.position),
        };
        match self.message.is_empty() {
            true => counts,
            false => format!("{counts}: {}", self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_line(progress: &Progress) -> (String, bool) {
        match &progress.mode {
            Mode::Plain(p) => {
                let p = p.lock().unwrap();
                (p.line(), p.unprinted)
            }
            Mode::Bar(_) => panic!("not plain"),
        }
    }

    #[test]
    fn plain_mode_prints_the_first_move_at_once_and_keeps_later_ones_for_the_next_line() {
        let progress = Progress::with_terminal("step", "{pos}", false);
        progress.set_length(34);
        progress.set(1, "loss 0.6932".into());
        // The first move prints at once: nothing is waiting to be printed.
        assert_eq!(plain_line(&progress), ("step 1/34: loss 0.6932".to_string(), false));
        progress.set(2, "loss 0.6931".into());
        // Within two seconds of that line the next ones wait; `finish` prints the last.
        assert_eq!(plain_line(&progress), ("step 2/34: loss 0.6931".to_string(), true));
        progress.finish();
        assert!(!plain_line(&progress).1);
    }

    #[test]
    fn a_count_without_a_length_shows_the_position_alone() {
        let progress = Progress::with_terminal("answer", "{pos}", false);
        progress.inc(3);
        assert_eq!(plain_line(&progress).0, "answer 3");
    }
}
