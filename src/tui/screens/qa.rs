//! The QA screen: agreement statistics and the per-annotator report, as `verdict qa` prints
//! them. The text is computed once, when the screen opens (`App` reads the store), never
//! while drawing.

use ratatui::Frame;
use ratatui::layout::Rect;

use super::Command;
use crate::tui::keymap::Action;
use crate::tui::widgets::draw_text_pane;

#[derive(Debug)]
pub struct Qa {
    pub text: String,
    pub scroll: u16,
}

impl Qa {
    pub fn new(text: String) -> Qa {
        Qa { text, scroll: 0 }
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
        draw_text_pane(frame, area, " Quality · j/k scroll · Q or Esc closes ", &self.text, self.scroll, true);
    }
}
