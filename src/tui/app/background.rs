//! The background work as `App` takes it in every tick: the queue arriving from its thread
//! (and the keys that waited for it), the generation, the training run, the runs screens'
//! re-read, the new-run form's plan and the screens' workers; and the store's data version,
//! asked twice a second.

use std::collections::VecDeque;
use std::time::Instant;

use crossterm::event::{KeyCode, KeyEvent};

use super::App;
use crate::tui::input::Input;
use crate::tui::loading::QueueLoad;
use crate::tui::queue;
use crate::tui::screens::Ctx;

/// The status line while a generation loads its model; cleared when the first prompt starts.
pub(super) const LOADING_MODEL: &str = "loading the model…";

impl App {
    /// Takes in what the threads reported; called every tick. Returns whether anything
    /// changed (so the screen is redrawn).
    pub fn poll_job(&mut self) -> bool {
        if self.version_asked.elapsed() > std::time::Duration::from_millis(500) {
            // One pragma: whether another connection committed since.
            self.version_asked = Instant::now();
            self.data_version = self.store.data_version().ok();
        }
        let mut changed = self.poll_queue_load();
        let trained = self.poll_training();
        changed |= trained;
        changed |= self.poll_runs(trained);
        changed |= self.poll_form_plan();
        let ctx = screen_ctx!(self);
        for screen in &mut self.screens {
            let polled = screen.poll(&ctx);
            changed |= polled.changed;
            if let Some(message) = polled.message {
                self.message = message;
            }
            // What the screen's worker stored, read here for it.
            if polled.reread
                && let Err(e) = super::evaluation::reread(&self.store, screen, &self.annotator, self.annotator_id)
            {
                self.message = format!("error: {e:#}");
            }
        }
        let changed = self.poll_generation() || changed;
        if changed {
            self.sync_guidelines();
        }
        changed
    }

    /// Asks the run training on this process's thread to checkpoint and stop, and waits for
    /// it at most `limit`.
    pub fn stop_training(&mut self, limit: std::time::Duration) {
        let started = Instant::now();
        if let Some(job) = self.training() {
            job.work.cancel();
        }
        while self.training().is_some() && started.elapsed() < limit {
            self.poll_job();
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Re-reads the prompts the generation stored candidates for.
    pub(super) fn poll_generation(&mut self) -> bool {
        let Some(job) = &mut self.job else { return false };
        let progress = job.drain();
        if progress.started && self.message == LOADING_MODEL {
            self.message.clear();
        }
        for prompt_id in progress.prompts {
            if let Some(index) = self.queue.items.iter().position(|i| i.row.prompt_id == prompt_id) {
                if let Err(e) = queue::reload_item(&self.store, self.annotator_id, &mut self.queue.items[index]) {
                    tracing::error!("{e:#}");
                }
                self.queue.mark_touched(index);
            }
            if self.compare.as_ref().is_some_and(|c| c.prompt_id == prompt_id && c.pair.is_none()) {
                let _ = self.reload_current();
            }
        }
        if let Some(message) = progress.finished {
            self.message = message;
            self.job = None;
        }
        progress.any
    }

    /// Whether `key` has to wait for the whole queue; if so it is kept for later. Keys keep
    /// their order: once one waits, the ones after it wait too.
    pub(super) fn wait_for_queue(&mut self, key: KeyEvent) -> bool {
        let Some(load) = &self.queue.loading else { return false };
        let waits = !load.waiting.is_empty()
            || match &self.input {
                Input::Search(_) => true,
                // Adding a prompt re-reads the queue.
                Input::AddPrompt(_) => key.code == KeyCode::Enter,
                Input::Note(_) | Input::Rewrite { .. } => false,
                Input::None if !self.screens.is_empty() => false,
                Input::None => {
                    self.keymap.action(self.mode(), &key).is_some_and(crate::tui::loading::needs_whole_queue)
                }
            };
        if waits && let Some(load) = &mut self.queue.loading {
            load.waiting.push_back(key);
        }
        waits
    }

    /// Takes the whole queue in once its thread has sent it, then plays the keys that waited
    /// for it. Returns whether anything changed.
    pub(super) fn poll_queue_load(&mut self) -> bool {
        let Some(waiting) = self.queue_arrived() else { return false };
        for key in waiting {
            // An external editor asked for by a key that waited opens once they have all run.
            if let Some(effect) = self.handle_key(key) {
                self.pending_effect = Some(effect);
            }
        }
        true
    }

    /// Takes the whole queue in once its thread has sent it, re-reading the prompts this
    /// process changed meanwhile; returns the keys that waited for it, to be played now.
    fn queue_arrived(&mut self) -> Option<VecDeque<KeyEvent>> {
        let q = &mut self.queue;
        let arrived = q.loading.as_mut().and_then(QueueLoad::arrived)?;
        let load = q.loading.take().expect("checked above");
        let selected = q.selected_item().map(|i| i.row.prompt_id);
        match arrived {
            Ok(items) => q.items = items,
            Err(error) => {
                tracing::warn!("reading the queue in the background failed ({error}); reading it here");
                match queue::load(&self.store, self.annotator_id) {
                    Ok(items) => q.items = items,
                    Err(e) => {
                        // The placeholders stay; keys that waited are dropped rather than run on them.
                        self.message = format!("error: could not read the queue ({e}); R tries again");
                        return Some(VecDeque::new());
                    }
                }
            }
        }
        for prompt_id in &load.touched {
            if let Some(item) = q.items.iter_mut().find(|i| i.row.prompt_id == *prompt_id)
                && let Err(e) = queue::reload_item(&self.store, self.annotator_id, item)
            {
                tracing::error!("{e:#}");
            }
        }
        q.visible.clear();
        q.apply_filter();
        if let Some(prompt_id) = selected {
            q.select(prompt_id);
        }
        if load.refresh {
            self.message = format!("refreshed: {} prompts", q.items.len());
        }
        Some(load.waiting)
    }

    /// Reads a placeholder's row and counts before it is opened.
    pub(super) fn ensure_loaded(&mut self, index: usize) -> anyhow::Result<()> {
        if self.queue.items[index].status == queue::Status::Loading {
            let prompt_id = self.queue.items[index].row.prompt_id;
            self.queue.items[index] = queue::load_item(&self.store, self.annotator_id, prompt_id)?;
            self.queue.mark_touched(index);
        }
        Ok(())
    }
}
