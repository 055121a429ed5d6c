//! The queue's generation job: candidates for some prompts made on their own thread
//! (`jobs::generate` through `jobs::spawn`), and its progress as the status line shows it.

use std::path::PathBuf;

use crate::jobs::generate::{GenerateEvent, GenerateJob, GenerateSummary};
use crate::jobs::{Job, Update, spawn};

/// A generation running on its own thread.
pub struct GenerationJob {
    pub work: Job<GenerateEvent, GenerateSummary>,
    pub prompts: usize,
    pub done: usize,
    pub tokens_per_sec: f64,
    pub stored: usize,
}

/// What the thread reported since the last tick.
#[derive(Default)]
pub struct Progress {
    /// Anything at all arrived.
    pub any: bool,
    /// The model is loaded and the prompts are chosen ("loading the model…" is over).
    pub started: bool,
    /// Prompts whose candidates were stored, to re-read.
    pub prompts: Vec<i64>,
    /// The job ended: the status line's message.
    pub finished: Option<String>,
}

impl GenerationJob {
    /// Generates until every prompt in `prompt_ids` has `candidates` answers, with `model`
    /// (`--model`/VERDICT_MODEL), else the default one (fetched on first use).
    pub fn start(db: PathBuf, model: Option<PathBuf>, prompt_ids: Vec<i64>, candidates: usize) -> GenerationJob {
        let work = spawn("generate", move |cancel, events| {
            let job = GenerateJob::for_prompts(db, model.as_deref(), prompt_ids, candidates)?;
            crate::jobs::generate::run(&job, cancel, events)
        });
        GenerationJob { work, prompts: 0, done: 0, tokens_per_sec: 0.0, stored: 0 }
    }

    /// Takes in what the thread reported.
    pub fn drain(&mut self) -> Progress {
        let mut progress = Progress::default();
        while let Some(update) = self.work.try_next() {
            progress.any = true;
            match update {
                Update::Event(GenerateEvent::Started { prompts, .. }) => {
                    self.prompts = prompts;
                    progress.started = true;
                }
                Update::Event(GenerateEvent::Progress { tokens_per_sec, .. }) => self.tokens_per_sec = tokens_per_sec,
                Update::Event(GenerateEvent::PromptDone { prompt_id, stored, .. }) => {
                    self.done += 1;
                    self.stored += stored;
                    progress.prompts.push(prompt_id);
                }
                Update::Event(GenerateEvent::PromptFailed { prompt_id, error }) => {
                    tracing::warn!(prompt_id, "{error}");
                    self.done += 1;
                }
                Update::Finished(result) => {
                    progress.finished = Some(match result {
                        // Prompts cut off mid-answer keep their finished candidates.
                        Ok(s) if s.cancelled => {
                            format!("stopped: {} new candidates kept; generate again to go on", s.stored)
                        }
                        Ok(s) => format!("generated {}", s.headline()),
                        Err(e) => format!("error: {e:#}"),
                    })
                }
            }
        }
        progress
    }

    /// The status line's progress: a bar, prompts done, decode speed.
    pub fn status(&self) -> String {
        let width = 10;
        let filled = (self.done * width).checked_div(self.prompts).unwrap_or(0).min(width);
        format!(
            " generating [{}{}] {}/{} · {:.1} tok/s · Esc stops ",
            "█".repeat(filled),
            "░".repeat(width - filled),
            self.done,
            self.prompts,
            self.tokens_per_sec
        )
    }
}
