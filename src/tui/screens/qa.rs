//! The QA screen: agreement statistics and the per-annotator report, as `verdict qa` prints
//! them. They are computed on their own thread (with its own connection, through
//! `jobs::spawn`) when the screen opens, and again when another connection commits to the
//! store (`Ctx::data_version` moves); the screen shows "computing…" meanwhile. Nothing is
//! computed on the UI thread.

use std::path::{Path, PathBuf};

use ratatui::Frame;
use ratatui::layout::Rect;

use super::{Command, Ctx};
use crate::jobs::{Job, Update, spawn};
use crate::store::{OpenMode, Store};
use crate::tui::keymap::Action;
use crate::tui::widgets::draw_text_pane;

pub struct Qa {
    /// The statistics' text; None until the first computation arrives.
    pub text: Option<String>,
    pub scroll: u16,
    /// The computation on its thread, while it runs.
    work: Option<Job<(), String>>,
    /// The store's data version the text is (being) computed at.
    seen_version: Option<i64>,
}

/// The text of `verdict qa`: agreement, then the annotators, then single-answer ratings (if any).
pub fn statistics(store: &Store) -> anyhow::Result<String> {
    let thumbs = crate::qa::thumbs::text(store)?;
    let thumbs = if thumbs.is_empty() { thumbs } else { format!("\nSINGLE-ANSWER REVIEW\n\n{thumbs}") };
    Ok(format!(
        "AGREEMENT\n\n{}\nANNOTATORS\n\n{}{thumbs}",
        crate::qa::text::agreement(store)?,
        crate::qa::text::annotators(store)?
    ))
}

impl Qa {
    /// Opens the screen and starts computing on a thread, on its own connection to `db`.
    pub fn open(ctx: &Ctx) -> Qa {
        let mut qa = Qa { text: None, scroll: 0, work: None, seen_version: None };
        qa.start(ctx.db, ctx.data_version);
        qa
    }

    fn start(&mut self, db: &Path, version: Option<i64>) {
        self.seen_version = version;
        let path: PathBuf = db.to_path_buf();
        self.work = Some(spawn("qa", move |_, _| statistics(&Store::open(&path, OpenMode::MustExist)?)));
    }

    /// Whether the thread is still computing.
    pub fn computing(&self) -> bool {
        self.work.is_some()
    }

    /// Takes the text in when its thread sends it; starts again when another connection
    /// committed since (`App` asks the store's data version at most twice a second). True
    /// when the text changed.
    pub fn poll(&mut self, ctx: &Ctx) -> bool {
        if let Some(work) = &mut self.work {
            let Some(Update::Finished(result)) = work.try_next() else { return false };
            self.work = None;
            self.text = Some(result.unwrap_or_else(|e| format!("error: the statistics could not be computed: {e:#}")));
            return true;
        }
        if ctx.data_version != self.seen_version {
            self.start(ctx.db, ctx.data_version);
        }
        false
    }

    pub fn update(&mut self, action: Action) -> Vec<Command> {
        match action {
            Action::Down => self.scroll = self.scroll.saturating_add(1),
            Action::Up => self.scroll = self.scroll.saturating_sub(1),
            Action::PageDown => self.scroll = self.scroll.saturating_add(10),
            Action::PageUp => self.scroll = self.scroll.saturating_sub(10),
            Action::Quality | Action::Back => return vec![Command::Close],
            _ => {}
        }
        Vec::new()
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect) {
        let (title, text) = match &self.text {
            Some(text) if self.computing() => {
                (" Quality · recomputing… · j/k scroll · Q or Esc closes ", text.as_str())
            }
            Some(text) => (" Quality · j/k scroll · Q or Esc closes ", text.as_str()),
            None => (" Quality · Q or Esc closes ", "computing…"),
        };
        draw_text_pane(frame, area, title, text, self.scroll, true);
    }
}

#[cfg(test)]
#[path = "qa_tests.rs"]
mod tests;
