//! The labeling loop's commands, carried out: opening a prompt's next pair, verdicts, undo,
//! rewrites, typed notes and prompts, and starting a generation. The store writes of the
//! queue and compare screens happen here.

use std::time::Instant;

use crossterm::event::KeyEvent;

use super::App;
use crate::domain::{Message, NewPrompt};
use crate::store::{NewJudgment, Verdict};
use crate::tui::generation::GenerationJob;
use crate::tui::input::{Input, Typed};
use crate::tui::keymap::Action;
use crate::tui::queue;
use crate::tui::screens::Screen;
use crate::tui::screens::compare::{Compare, Pane};

impl App {
    /// Opens the selected prompt with its next pair for me.
    pub(super) fn open_selected(&mut self) -> anyhow::Result<()> {
        let Some(&index) = self.queue.visible.get(self.queue.selected) else {
            return Ok(());
        };
        self.ensure_loaded(index)?;
        let item = &self.queue.items[index];
        let prompt_id = item.row.prompt_id;
        let pair = item.next_pair().map(|(a, b)| self.left_right(a, b));
        self.compare = Some(Compare {
            prompt_id,
            row: item.row.clone(),
            messages: self.store.prompt_messages(prompt_id)?,
            responses: self.store.responses_of(prompt_id)?,
            pair,
            reasons: Default::default(),
            note: String::new(),
            focus: Pane::Left,
            scroll: [0; 3],
            shown_at: Instant::now(),
        });
        self.store.set_cursor(self.annotator_id, prompt_id)?;
        Ok(())
    }

    /// Which of a pair is shown left: random per (pair, annotator), stable across visits.
    pub fn left_right(&self, a: i64, b: i64) -> (i64, i64) {
        let (low, high) = (a.min(b), a.max(b));
        let key = crate::domain::sha256_hex(&["sides", &self.annotator, &low.to_string(), &high.to_string()]);
        if key.as_bytes()[0].is_multiple_of(2) { (low, high) } else { (high, low) }
    }

    pub(super) fn judge(&mut self, verdict: Verdict) -> anyhow::Result<()> {
        let Some(compare) = &self.compare else {
            return Ok(());
        };
        let Some((left, right)) = compare.pair else {
            return Ok(());
        };
        let guideline_id = self.store.guideline_text(compare.row.domain.as_deref())?.map(|(id, _)| id);
        let seconds = compare.shown_at.elapsed().as_secs_f64();
        let judgment = NewJudgment {
            prompt_id: compare.prompt_id,
            left,
            right,
            annotator_id: self.annotator_id,
            verdict,
            reasons: compare.reasons.iter().cloned().collect(),
            note: Some(compare.note.trim().to_string()).filter(|n| !n.is_empty()),
            seconds: Some(seconds),
            guideline_id,
        };
        // Committed before the screen moves on: a crash after this line loses nothing.
        self.store.record_judgment(&judgment)?;
        self.seconds_today = self.store.seconds_today(self.annotator_id)?;
        self.reload_current()?;
        if self.compare.as_ref().is_some_and(|c| c.pair.is_none()) {
            self.advance(1, false)?;
        }
        Ok(())
    }

    /// Re-reads the selected prompt and shows its next pair.
    pub(super) fn reload_current(&mut self) -> anyhow::Result<()> {
        if let Some(&index) = self.queue.visible.get(self.queue.selected) {
            queue::reload_item(&self.store, self.annotator_id, &mut self.queue.items[index])?;
            self.queue.mark_touched(index);
        }
        let focus = self.compare.as_ref().map(|c| c.focus);
        self.open_selected()?;
        if let (Some(c), Some(focus)) = (&mut self.compare, focus) {
            c.focus = focus;
        }
        Ok(())
    }

    /// Moves to the next (or previous) prompt in the queue and opens it.
    pub(super) fn advance(&mut self, direction: i64, only_open: bool) -> anyhow::Result<()> {
        match self.queue.step(direction, only_open) {
            Some(position) => {
                self.queue.selected = position;
                self.open_selected()
            }
            None => {
                self.message = "end of the queue".into();
                Ok(())
            }
        }
    }

    pub(super) fn undo(&mut self) -> anyhow::Result<()> {
        let Some(undo) = self.store.undo_last_judgment(self.annotator_id)? else {
            self.message = "nothing to undo".into();
            return Ok(());
        };
        let undone = undo.withdrawn;
        self.queue.select(undone.prompt_id);
        self.seconds_today = self.store.seconds_today(self.annotator_id)?;
        self.reload_current()?;
        if let Some(c) = &mut self.compare {
            c.reasons = undone.reasons.into_iter().collect();
            c.note = undone.note.unwrap_or_default();
        }
        self.message = match undo.restored {
            Some(_) => "undone: the pair has your earlier verdict again".into(),
            None => "undone: judge this pair again".into(),
        };
        Ok(())
    }

    /// Stores an edited answer as a human rewrite preferred over the one it replaces.
    pub fn finish_rewrite(&mut self, response_id: i64, text: &str) -> anyhow::Result<()> {
        let original = self.compare.as_ref().and_then(|c| c.response(response_id)).map(|r| r.content.clone());
        let text = text.trim_end();
        if text.trim().is_empty() || Some(text) == original.as_deref().map(str::trim_end) {
            self.message = "rewrite unchanged: nothing saved".into();
            return Ok(());
        }
        let rewrite = self.store.add_rewrite(response_id, text, &self.annotator)?;
        let Some(c) = &self.compare else {
            return Ok(());
        };
        let judgment = NewJudgment {
            prompt_id: c.prompt_id,
            left: rewrite,
            right: response_id,
            annotator_id: self.annotator_id,
            verdict: Verdict::Left,
            reasons: c.reasons.iter().cloned().collect(),
            note: Some(c.note.trim().to_string()).filter(|n| !n.is_empty()),
            seconds: Some(c.shown_at.elapsed().as_secs_f64()),
            guideline_id: None,
        };
        self.store.record_judgment(&judgment)?;
        self.seconds_today = self.store.seconds_today(self.annotator_id)?;
        self.reload_current()?;
        self.message = "rewrite saved, preferred over the original".into();
        Ok(())
    }

    /// A key while text is being typed; a kept text is carried out here.
    pub(super) fn type_key(&mut self, action: Option<Action>, key: KeyEvent) -> anyhow::Result<()> {
        match self.input.type_key(action, key) {
            Typed::Editing => {}
            Typed::ConfirmDiscard => {
                self.message = "the rewrite has changes: Esc again throws them away, Ctrl-S saves them".into()
            }
            Typed::Dropped(Input::Rewrite { .. }) => self.message = "rewrite cancelled: nothing saved".into(),
            Typed::Dropped(Input::Search(_)) => self.queue.set_search(""),
            Typed::Dropped(_) | Typed::Kept(Input::None | Input::Search(_)) => {}
            Typed::Kept(Input::Note(text)) => {
                let text = text.into_text();
                if let Some(Screen::Thumbs(view)) = self.screens.last_mut() {
                    view.note = text;
                } else if let Some(c) = &mut self.compare {
                    c.note = text;
                }
            }
            Typed::Kept(Input::AddPrompt(text)) => self.add_prompt(text.text())?,
            Typed::Kept(Input::Rewrite { response_id, text, .. }) => self.finish_rewrite(response_id, text.text())?,
        }
        if let Input::Search(text) = &self.input {
            // Incremental: the queue narrows with every key.
            let text = text.text().to_string();
            self.queue.set_search(&text);
        }
        Ok(())
    }

    pub(super) fn add_prompt(&mut self, text: &str) -> anyhow::Result<()> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        let prompt = NewPrompt {
            external_id: None,
            messages: vec![Message::new("user", text)],
            language: crate::data::language::detect(text),
            domain: self.queue.filter.domain.clone(),
            tags: Vec::new(),
            split: None,
            source: Some(format!("tui:{}", self.annotator)),
        };
        let (prompt_id, new) = self.store.add_prompt(&prompt)?;
        if new {
            // Read just the new prompt rather than the whole queue again. Its place in queue
            // order is the end: nobody can have been assigned it yet, and unassigned prompts
            // follow in id order, where a new row's id is the largest.
            self.queue.items.push(queue::load_item(&self.store, self.annotator_id, prompt_id)?);
            self.queue.visible.clear();
            self.queue.apply_filter();
        }
        self.queue.select(prompt_id);
        self.message = format!(
            "{} prompt ({}): it needs candidates before it can be judged",
            if new { "added" } else { "already had this" },
            prompt.language
        );
        Ok(())
    }

    /// Starts generating on a background thread: two more candidates for the selected
    /// prompt, or two for every prompt shown.
    pub(super) fn start_generation(&mut self, all: bool) {
        if self.job.is_some() {
            self.message = "a generation is already running (Esc in the queue stops it)".into();
            return;
        }
        let q = &self.queue;
        let (ids, target) = if all {
            (q.visible.iter().map(|&i| q.items[i].row.prompt_id).collect(), 2)
        } else {
            let Some(item) = q.selected_item() else { return };
            (vec![item.row.prompt_id], item.candidates.len() + 2)
        };
        self.job = Some(GenerationJob::start(self.store.path().to_path_buf(), self.model.clone(), ids, target));
        self.message = super::background::LOADING_MODEL.into();
    }
}
