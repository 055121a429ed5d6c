//! Training and review inside the TUI: the runs list, a run's live curves (read from the
//! store, so a run started in another terminal shows too) and the run training on this
//! process's own thread. Keys change this state and return `Command`s: `App` reads the store
//! for it (`refresh`) and opens the new-run form, answers, diff and blind screens on its stack.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::keymap::{Action, Mode};
use super::screens::{Command, Opening};
use crate::domain::RunStatus;
use crate::jobs::train::{self, TrainConfig, TrainEvent};
use crate::jobs::{Job, Update, spawn};
use crate::store::{RunRow, Store};

/// The curves of one run, as the live view draws them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    pub loss: Vec<(f64, f64)>,
    pub eval_loss: Vec<(f64, f64)>,
    pub margins: Vec<(f64, f64)>,
    pub eval_margins: Vec<(f64, f64)>,
    pub accuracy: Vec<(f64, f64)>,
    pub eval_accuracy: Vec<(f64, f64)>,
    pub chosen: Vec<(f64, f64)>,
    pub rejected: Vec<(f64, f64)>,
    /// Latest values: tokens/s, epoch, median seconds per step over the last ten.
    pub tokens_per_second: Option<f64>,
    pub epoch: Option<f64>,
    pub seconds_per_step: Option<f64>,
}

impl Curves {
    pub fn load(store: &Store, run_id: i64) -> anyhow::Result<Curves> {
        let series = |name: &str| -> anyhow::Result<Vec<(f64, f64)>> {
            Ok(store.metric_series(run_id, name)?.into_iter().map(|(s, v)| (s as f64, v)).collect())
        };
        let last = |name: &str| -> anyhow::Result<Option<f64>> { Ok(series(name)?.last().map(|p| p.1)) };
        let mut recent: Vec<f64> = series("step_seconds")?.iter().rev().take(10).map(|p| p.1).collect();
        recent.sort_by(f64::total_cmp);
        Ok(Curves {
            loss: series("loss")?,
            eval_loss: series("eval_loss")?,
            margins: series("rewards/margins")?,
            eval_margins: series("eval_rewards/margins")?,
            accuracy: series("rewards/accuracies")?,
            eval_accuracy: series("eval_rewards/accuracies")?,
            chosen: series("rewards/chosen")?,
            rejected: series("rewards/rejected")?,
            tokens_per_second: last("tokens_per_second")?,
            epoch: last("epoch")?,
            seconds_per_step: recent.get(recent.len() / 2).copied(),
        })
    }

    /// The last step with metrics.
    pub fn step(&self) -> usize {
        self.loss.last().map(|p| p.0 as usize).unwrap_or(0)
    }
}

/// A training run on this process's own thread.
pub struct TrainJob {
    pub run_id: Option<i64>,
    pub work: Job<TrainEvent, train::TrainSummary>,
    pub started: Instant,
    pub phase: String,
}

/// Which review screen is open.
pub enum View {
    Runs,
    Run(i64),
}

pub struct Review {
    pub view: View,
    pub runs: Vec<RunRow>,
    pub selected: usize,
    /// The curves of the run on screen, re-read from the store as steps come in.
    pub curves: Option<(i64, Curves)>,
    pub job: Option<TrainJob>,
    pub message: String,
    pub db: PathBuf,
    pub model: Option<PathBuf>,
    /// The latest stored blind win rate of each run's tuned model over its base: (rate, low, high).
    pub win_rates: std::collections::HashMap<i64, (f64, f64, f64)>,
    /// A model marked (`m`) to diff against another run's model.
    pub marked: Option<(i64, i64)>,
    /// When the store was last asked whether anything changed, and its answer then.
    last_check: Instant,
    seen_version: Option<i64>,
}

impl Review {
    pub fn open(store: &Store, model: Option<PathBuf>) -> anyhow::Result<Review> {
        Ok(Review {
            view: View::Runs,
            runs: store.runs()?,
            selected: 0,
            curves: None,
            job: None,
            message: String::new(),
            db: store.path().to_path_buf(),
            model,
            win_rates: Default::default(),
            marked: None,
            last_check: Instant::now(),
            seen_version: store.data_version().ok(),
        })
    }

    pub fn mode(&self) -> Mode {
        match &self.view {
            View::Runs => Mode::Runs,
            View::Run(_) => Mode::Run,
        }
    }

    fn selected_run(&self) -> Option<&RunRow> {
        match &self.view {
            View::Run(id) => self.runs.iter().find(|r| r.id == *id),
            _ => self.runs.get(self.selected),
        }
    }

    /// Applies an action: moving, the form and the run's own thread change this state; the
    /// screens it opens and the store reads it needs are `Command`s for `App`.
    pub fn update(&mut self, action: Action) -> Vec<Command> {
        self.message.clear();
        match (&mut self.view, action) {
            (View::Runs, Action::Back) => return vec![Command::Close],
            (_, Action::Back) => {
                self.view = View::Runs;
                return vec![Command::Refresh];
            }
            (View::Runs, Action::Down) => self.selected = (self.selected + 1).min(self.runs.len().saturating_sub(1)),
            (View::Runs, Action::Up) => self.selected = self.selected.saturating_sub(1),
            (View::Runs, Action::Open) => {
                if let Some(run) = self.runs.get(self.selected) {
                    self.view = View::Run(run.id);
                    return vec![Command::Refresh];
                }
            }
            (View::Runs, Action::Refresh) => return vec![Command::Refresh],
            (View::Runs, Action::NewRun) => return vec![Command::Open(Opening::Form)],
            (View::Runs | View::Run(_), Action::StopRun) => {
                if let Err(e) = self.stop() {
                    self.message = format!("error: {e:#}");
                }
            }
            (View::Runs | View::Run(_), Action::ResumeRun) => return self.resume(),
            (View::Runs | View::Run(_), Action::Samples) => {
                if let Some(run) = self.selected_run() {
                    return vec![Command::Open(Opening::Samples(run.id))];
                }
            }
            (View::Runs | View::Run(_), Action::Mark) => {
                if let Some(run) = self.selected_run().cloned() {
                    // The run's tuned model, or its base while it has none.
                    let model = run.output_model_id.or(run.base_model_id);
                    self.marked = model.map(|m| (run.id, m));
                    self.message = match model {
                        Some(m) => format!("model {m} (run {}) marked: d on another run diffs against it", run.id),
                        None => format!("run {} has no model to mark", run.id),
                    };
                }
            }
            (View::Runs | View::Run(_), Action::Diff) => {
                if let Some(run) = self.selected_run().cloned() {
                    let against = run.output_model_id.or(run.base_model_id);
                    let models = match (self.marked.take(), against) {
                        (Some((marked_run, old)), Some(new)) if marked_run != run.id && old != new => Some((old, new)),
                        _ => None,
                    };
                    self.message = "answers missing for either model are being generated (same seed for both)".into();
                    return vec![Command::Open(Opening::Diff { run_id: run.id, models })];
                }
            }
            (View::Runs | View::Run(_), Action::BlindEval) => {
                if let Some(run) = self.selected_run() {
                    return vec![Command::Open(Opening::Blind(run.id))];
                }
            }
            (View::Runs, Action::Arena) => return vec![Command::Open(Opening::Arena)],
            _ => {}
        }
        Vec::new()
    }

    /// Starts a run on this process's own thread (`resume`: continues that run).
    pub fn start(&mut self, config: TrainConfig, resume: Option<i64>) {
        let db = self.db.clone();
        let work = spawn("train", move |cancel, events| train::run(&db, &config, resume, false, cancel, events));
        self.job = Some(TrainJob { run_id: resume, work, started: Instant::now(), phase: "loading the model".into() });
        self.message = "training started on its own thread; Enter on the run shows its curves".into();
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        let Some(run) = self.selected_run().cloned() else { return Ok(()) };
        if run.status != RunStatus::Running {
            self.message = format!("run {} is {}, not running", run.id, run.status);
            return Ok(());
        }
        match &self.job {
            Some(job) if job.run_id == Some(run.id) => job.work.cancel(),
            // Another process trains it: ask through its run folder.
            _ => {
                train::request_stop(&run.config)?;
            }
        }
        self.message = format!("run {} stops after its current step and writes a checkpoint", run.id);
        Ok(())
    }

    fn resume(&mut self) -> Vec<Command> {
        let Some(run) = self.selected_run().cloned() else { return Vec::new() };
        // `running` with nobody holding its folder's lock: the process training it crashed.
        let out = serde_json::from_str::<TrainConfig>(&run.config).ok().and_then(|c| c.out);
        let crashed = run.status == RunStatus::Running && out.is_some_and(|dir| !crate::jobs::run_lock::is_held(&dir));
        if !run.status.resumable() && !crashed {
            self.message = match run.status {
                RunStatus::Running => {
                    format!("run {} is being trained by a process (its folder's LOCK is held)", run.id)
                }
                status => format!("run {} is {status}: only a stopped, failed or crashed run resumes", run.id),
            };
            return Vec::new();
        }
        if self.job.is_some() {
            self.message = "a run is already training in this window".into();
            return Vec::new();
        }
        let config: TrainConfig = match crate::store::json::parse(&run.config, "runs", run.id, "config") {
            Ok(config) => config,
            Err(e) => {
                self.message = format!("error: {e:#}");
                return Vec::new();
            }
        };
        self.start(config, Some(run.id));
        self.view = View::Run(run.id);
        vec![Command::Refresh]
    }

    /// Drains the training thread's messages; re-reads the runs and curves when its events
    /// say something was stored, or when another process or thread committed to the store
    /// (asked at most twice a second, a single pragma). True when something changed.
    pub fn poll(&mut self, store: &Store) -> bool {
        let mut changed = false;
        if let Some(job) = &mut self.job {
            let mut finished = None;
            while let Some(update) = job.work.try_next() {
                changed = true;
                match update {
                    Update::Event(TrainEvent::Started { run_id, steps, .. }) => {
                        job.run_id = Some(run_id);
                        job.phase = format!("reference log-probs for run {run_id} ({steps} steps)");
                    }
                    // The default model downloading on first use: shown in the status line.
                    Update::Event(TrainEvent::Preparing(line)) => job.phase = line,
                    Update::Event(TrainEvent::ReferenceDone { .. }) => job.phase = "training".into(),
                    Update::Event(TrainEvent::Samples { step, .. }) => {
                        job.phase = format!("sample answers stored at step {step}")
                    }
                    Update::Event(TrainEvent::Step { step, .. }) => job.phase = format!("step {step}"),
                    Update::Event(_) => {}
                    Update::Finished(result) => finished = Some(result.map_err(|e| format!("{e:#}"))),
                }
            }
            if let Some(result) = finished {
                self.message = match result {
                    Ok(summary) => match summary.output {
                        Some(dir) => format!("run {} finished: model in {}", summary.run_id, dir.display()),
                        None => format!("run {} {} at step {}", summary.run_id, summary.status, summary.steps),
                    },
                    Err(error) => format!("error: the run failed: {error}"),
                };
                self.job = None;
            }
        }
        if !changed && self.last_check.elapsed() > Duration::from_millis(500) {
            self.last_check = Instant::now();
            changed = store.data_version().ok() != self.seen_version;
        }
        if changed && let Err(e) = self.refresh(store) {
            tracing::error!("{e:#}");
        }
        changed
    }

    /// Re-reads the runs, their win rates and the curves on screen.
    pub fn refresh(&mut self, store: &Store) -> anyhow::Result<()> {
        self.seen_version = store.data_version().ok();
        self.runs = store.runs()?;
        self.win_rates.clear();
        // Newest first: the first row seen for a run is its latest.
        for eval in store.evals(None)? {
            if let Some(run_id) = eval.run_id {
                self.win_rates.entry(run_id).or_insert((eval.win_rate, eval.ci_low, eval.ci_high));
            }
        }
        self.selected = self.selected.min(self.runs.len().saturating_sub(1));
        if let View::Run(id) = self.view {
            self.curves = Some((id, Curves::load(store, id)?));
        }
        Ok(())
    }

    /// Seconds until the run finishes, from the median step time (None before two steps).
    pub fn eta(&self, run: &RunRow, curves: &Curves) -> Option<f64> {
        let total = run.total_steps? as f64;
        let per_step = curves.seconds_per_step?;
        Some((total - curves.step() as f64).max(0.0) * per_step)
    }

    /// A run that says `running` but has not written anything for ten minutes was probably
    /// killed: the list says so rather than pretending.
    pub fn looks_abandoned(run: &RunRow, now_iso: &str) -> bool {
        run.status == RunStatus::Running && minutes_between(&run.updated_at, now_iso).is_some_and(|m| m > 10.0)
    }
}

/// Minutes from one `YYYY-MM-DDTHH:MM:SS.fffZ` time to a later one (same or next day only,
/// which is all the staleness check needs).
fn minutes_between(earlier: &str, later: &str) -> Option<f64> {
    let parse = |s: &str| -> Option<(String, f64)> {
        let (date, time) = s.split_once('T')?;
        let time = time.trim_end_matches('Z');
        let mut parts = time.split(':');
        let h: f64 = parts.next()?.parse().ok()?;
        let m: f64 = parts.next()?.parse().ok()?;
        let s: f64 = parts.next()?.parse().ok()?;
        Some((date.to_string(), h * 60.0 + m + s / 60.0))
    };
    let (d1, m1) = parse(earlier)?;
    let (d2, m2) = parse(later)?;
    Some(if d1 == d2 { m2 - m1 } else { m2 + 24.0 * 60.0 - m1 })
}

#[cfg(test)]
#[path = "review_tests.rs"]
mod tests;
