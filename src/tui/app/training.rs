//! The training run on this process's own thread, as `App` keeps it: started from the new-run
//! form (`Command::Train`) or by resuming a run (`Command::ResumeRun`), stopped with
//! `Command::StopRun` (or, for a run another process trains, through its run folder), and its
//! events taken in every tick for the status line. It outlives the runs screens: closing them
//! leaves it training, and T shows it again.

use std::time::Instant;

use super::App;
use crate::domain::RunStatus;
use crate::jobs::train::{self, TrainConfig, TrainEvent};
use crate::jobs::{Job, Update, spawn};
use crate::store::RunRow;
use crate::tui::screens::{Opening, Screen};

/// A training run on this process's own thread.
pub struct TrainJob {
    pub run_id: Option<i64>,
    pub work: Job<TrainEvent, train::TrainSummary>,
    pub started: Instant,
    pub phase: String,
}

impl App {
    /// Some while a run trains on this process's thread.
    pub fn training(&self) -> Option<&TrainJob> {
        self.training.as_ref()
    }

    /// Starts a run on this process's own thread (`resume`: continues that run).
    pub(super) fn start_training(&mut self, config: TrainConfig, resume: Option<i64>) {
        let db = self.store.path().to_path_buf();
        let work = spawn("train", move |cancel, events| train::run(&db, &config, resume, false, cancel, events));
        self.training =
            Some(TrainJob { run_id: resume, work, started: Instant::now(), phase: "loading the model".into() });
        self.message = "training started on its own thread; Enter on the run shows its curves".into();
    }

    /// Asks a running run to checkpoint and stop: the one on this process's thread through its
    /// cancel flag, one another process trains through its run folder.
    pub(super) fn stop_run(&mut self, run: &RunRow) -> anyhow::Result<()> {
        if run.status != RunStatus::Running {
            self.message = format!("run {} is {}, not running", run.id, run.status);
            return Ok(());
        }
        match &self.training {
            Some(job) if job.run_id == Some(run.id) => job.work.cancel(),
            // Another process trains it: ask through its run folder.
            _ => {
                train::request_stop(&run.config)?;
            }
        }
        self.message = format!("run {} stops after its current step and writes a checkpoint", run.id);
        Ok(())
    }

    /// Continues a stopped, failed or crashed run on this process's thread and shows its curves.
    pub(super) fn resume_run(&mut self, run: &RunRow) -> anyhow::Result<()> {
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
            return Ok(());
        }
        if self.training.is_some() {
            self.message = "a run is already training in this window".into();
            return Ok(());
        }
        let config: TrainConfig = crate::store::json::parse(&run.config, "runs", run.id, "config")?;
        self.start_training(config, Some(run.id));
        // From the list, its curves open; on its curves, they stay.
        match self.screens.last() {
            Some(Screen::Curves(c)) if c.run_id == run.id => self.refresh_top(),
            _ => self.open_screen(Opening::Curves(run.id)),
        }
    }

    /// Takes in the training thread's events (its phase for the status line) and its end.
    /// Returns whether anything came (the runs screens then read the store again).
    pub(super) fn poll_training(&mut self) -> bool {
        let Some(job) = &mut self.training else { return false };
        let (mut changed, mut finished) = (false, None);
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
                    job.phase = format!("sample answers stored at step {step}");
                }
                Update::Event(TrainEvent::Step { step, .. }) => {
                    job.phase = format!("step {step}");
                }
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
            self.training = None;
        }
        changed
    }
}
