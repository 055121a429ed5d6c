//! The help overlay: every key of every screen, generated from the key map, with the
//! reason tags of the guidelines. j/k scroll; any other key closes it.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::widgets::Clear;

use super::{Command, Ctx};
use crate::tui::keymap::{self, Action, Mode};
use crate::tui::text::pad;
use crate::tui::widgets::{centered, draw_text_pane};

#[derive(Debug, Default)]
pub struct Help {
    pub scroll: u16,
}

impl Help {
    /// Down and Up scroll; every other action (and every unbound key) closes.
    pub fn update(&mut self, action: Action) -> Vec<Command> {
        match action {
            Action::Down => self.scroll = self.scroll.saturating_add(1),
            Action::Up => self.scroll = self.scroll.saturating_sub(1),
            _ => return vec![Command::Close],
        }
        Vec::new()
    }

    /// Drawn over the whole frame (`_area` is the screen's own, unused: help covers all).
    pub fn draw(&self, frame: &mut Frame, _area: Rect, ctx: &Ctx) {
        let area = centered(frame.area(), 80, 90);
        frame.render_widget(Clear, area);
        let mut lines: Vec<String> = Vec::new();
        for (mode, title) in Mode::ALL {
            lines.push(title.to_string());
            let mut by_action: Vec<(Action, Vec<&str>)> = Vec::new();
            for (key, action, _) in ctx.keymap.bindings(mode) {
                match by_action.iter_mut().find(|(a, _)| *a == action) {
                    Some((_, keys)) => keys.push(key),
                    None => by_action.push((action, vec![key])),
                }
            }
            for (action, keys) in by_action {
                lines.push(format!("  {}  {}", pad(&keys.join(" "), 16), keymap::describe_in(mode, action)));
            }
            lines.push(String::new());
        }
        lines.push("Reason tags (toggle in Compare; several allowed)".into());
        for r in ctx.reasons {
            lines.push(format!("  {}  {}", pad(&r.shortcut, 16), r.label));
        }
        lines.push(String::new());
        lines.push("Pairs: best-of-N. With more than two candidates the preferred answer stays".into());
        lines.push("and meets the next one, so N answers take N-1 judgments to rank the best.".into());
        lines.push("Sides are shuffled per pair and annotator (and recorded).".into());
        draw_text_pane(frame, area, " Help · j/k scroll · any other key closes ", &lines.join("\n"), self.scroll, true);
    }
}

#[cfg(test)]
#[path = "help_tests.rs"]
mod tests;
