//! The compare screen: one prompt and the pair of its answers the annotator judges next, the
//! reason tags and the note. Scrolling, focus and tags change only this state; a verdict, an
//! undo, a rewrite or moving to another prompt is a `Command`, which `App` carries out (the
//! store writes are there) before it opens the next pair.

use std::collections::BTreeSet;
use std::time::Instant;

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};

use super::{Command, Ctx};
use crate::domain::Message;
use crate::guidelines::Reason;
use crate::store::{QueueRow, ResponseRow, Verdict};
use crate::tui::field::TextField;
use crate::tui::input::Input;
use crate::tui::keymap::Action;
use crate::tui::text::width;
use crate::tui::widgets::{SIDE_BY_SIDE_MIN_WIDTH, draw_text_pane};

/// Which pane keys scroll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Prompt,
    Left,
    Right,
}

/// The pair on screen.
#[derive(Debug, Clone)]
pub struct Compare {
    pub prompt_id: i64,
    /// The prompt's queue row: its id, language, domain and split for the title.
    pub row: QueueRow,
    pub messages: Vec<Message>,
    pub responses: Vec<ResponseRow>,
    /// (left, right) response ids, or None when this prompt has nothing left to judge.
    pub pair: Option<(i64, i64)>,
    pub reasons: BTreeSet<String>,
    pub note: String,
    pub focus: Pane,
    /// Scroll offsets of the prompt, left and right panes, in lines.
    pub scroll: [u16; 3],
    pub shown_at: Instant,
}

impl Compare {
    pub fn response(&self, id: i64) -> Option<&ResponseRow> {
        self.responses.iter().find(|r| r.id == id)
    }

    pub fn update(&mut self, action: Action) -> Vec<Command> {
        let verdict = match action {
            Action::LeftBetter => Verdict::Left,
            Action::RightBetter => Verdict::Right,
            Action::Tie => Verdict::Tie,
            Action::BothBad => Verdict::BothBad,
            Action::Up => return self.scroll_by(-1),
            Action::Down => return self.scroll_by(1),
            Action::PageUp => return self.scroll_by(-10),
            Action::PageDown => return self.scroll_by(10),
            Action::Focus => {
                self.focus = match self.focus {
                    Pane::Prompt => Pane::Left,
                    Pane::Left => Pane::Right,
                    Pane::Right => Pane::Prompt,
                };
                return Vec::new();
            }
            Action::Back => return vec![Command::Close],
            Action::Note => return vec![Command::Type(Input::Note(TextField::new(self.note.clone())))],
            Action::Rewrite => return self.rewrite(),
            Action::Undo => return vec![Command::Undo],
            Action::Skip => return vec![Command::Advance { direction: 1, only_open: true }],
            Action::NextPair => return vec![Command::Advance { direction: 1, only_open: false }],
            Action::PreviousPair => return vec![Command::Advance { direction: -1, only_open: false }],
            Action::Generate => return vec![Command::Generate { all: false }],
            _ => return Vec::new(),
        };
        match self.pair {
            Some(_) => vec![Command::Judge(verdict)],
            None => vec![Command::Message("nothing left to judge here: ] for the next prompt".into())],
        }
    }

    /// An unbound letter toggles the guideline's reason tag whose shortcut starts with it.
    pub fn toggle_reason(&mut self, c: char, reasons: &[Reason]) {
        if let Some(reason) = reasons.iter().find(|r| r.shortcut.starts_with(c))
            && !self.reasons.remove(&reason.key)
        {
            self.reasons.insert(reason.key.clone());
        }
    }

    fn scroll_by(&mut self, delta: i32) -> Vec<Command> {
        let pane = self.focus as usize;
        self.scroll[pane] = (self.scroll[pane] as i32 + delta).clamp(0, u16::MAX as i32) as u16;
        Vec::new()
    }

    /// The focused answer of the pair (the left one while the prompt has the focus).
    fn rewrite(&self) -> Vec<Command> {
        let Some((left, right)) = self.pair else { return Vec::new() };
        let (id, side) = if self.focus == Pane::Right { (right, "right") } else { (left, "left") };
        let text = self.response(id).map(|r| r.content.clone()).unwrap_or_default();
        vec![Command::Rewrite { response_id: id, side, text }]
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect, ctx: &Ctx) {
        let c = self;
        let badge = format!(" {} · {} · {} ", c.row.language, c.row.domain.as_deref().unwrap_or("-"), c.row.split);
        let id = c.row.external_id.clone().unwrap_or_else(|| format!("#{}", c.prompt_id));
        // The chips wrap, so the tag area grows with them: border + chip lines + note.
        let chips_width: usize = ctx.reasons.iter().map(|r| width(&r.shortcut) + width(&r.label) + 4).sum();
        let chip_lines = chips_width.div_ceil(area.width.max(1) as usize).max(1) as u16;
        let [prompt_area, answers, tags] =
            Layout::vertical([Constraint::Percentage(25), Constraint::Min(4), Constraint::Length(2 + chip_lines)])
                .areas(area);
        let prompt_text: Vec<String> = c.messages.iter().map(|m| format!("{}: {}", m.role, m.content)).collect();
        draw_text_pane(
            frame,
            prompt_area,
            &format!(" Prompt {id} ·{badge}"),
            &prompt_text.join("\n"),
            c.scroll[0],
            c.focus == Pane::Prompt,
        );
        match c.pair {
            Some((left, right)) => {
                let direction =
                    if area.width >= SIDE_BY_SIDE_MIN_WIDTH { Direction::Horizontal } else { Direction::Vertical };
                let [l, r] = Layout::default()
                    .direction(direction)
                    .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
                    .areas(answers);
                for (pane, id, rect, label, scroll) in
                    [(Pane::Left, left, l, "Left · 1", c.scroll[1]), (Pane::Right, right, r, "Right · 2", c.scroll[2])]
                {
                    let response = c.response(id);
                    let origin = match response {
                        Some(r) if r.origin == "human" => " · rewrite",
                        Some(r) if r.cut_off => " · cut off at the token limit",
                        _ => "",
                    };
                    let text = response.map(|r| r.content.as_str()).unwrap_or("(missing)");
                    draw_text_pane(frame, rect, &format!(" {label}{origin} "), text, scroll, c.focus == pane);
                }
            }
            None => {
                let (title, message) = match c.responses.len() {
                    0 => (" No answers yet ", "This prompt has no answers yet: g generates two with the local model.".to_string()),
                    1 => (" One answer ", "This prompt has one answer: g generates two more to compare it with (in the queue, o reviews it alone: good or bad).".to_string()),
                    _ => (" Done ", "You have judged every pair of this prompt. ] next prompt · u undo · Esc queue".to_string()),
                };
                draw_text_pane(frame, answers, title, &message, 0, false);
            }
        }
        self.draw_tags(frame, tags, ctx);
    }

    fn draw_tags(&self, frame: &mut Frame, area: Rect, ctx: &Ctx) {
        super::draw_reasons(frame, area, " reasons (for the losing answer) ", ctx, &self.reasons, &self.note);
    }
}

#[cfg(test)]
#[path = "compare_tests.rs"]
mod tests;
