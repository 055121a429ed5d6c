//! The screens on the stack above the queue: each owns its state, turns an `Action` into
//! changes of that state and `Command`s for `App` to carry out (store writes, jobs, opening
//! and closing screens), and draws only its own state and the read-only `Ctx`.

pub mod help;
pub mod qa;

use ratatui::Frame;
use ratatui::layout::Rect;

use super::keymap::{Action, KeyMap, Mode};
use crate::guidelines::Reason;

/// What every screen may read while it updates or draws.
pub struct Ctx<'a> {
    pub keymap: &'a KeyMap,
    pub reasons: &'a [Reason],
}

/// What a screen asks `App` to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Take this screen off the stack.
    Close,
}

/// A screen on the stack.
#[derive(Debug)]
pub enum Screen {
    Help(help::Help),
    Qa(qa::Qa),
}

impl Screen {
    /// The key map section that this screen's keys come from.
    pub fn mode(&self) -> Mode {
        match self {
            Screen::Help(_) => Mode::Help,
            Screen::Qa(_) => Mode::Qa,
        }
    }

    /// Whether it is drawn over what is below (the help) rather than in its place.
    pub fn overlay(&self) -> bool {
        matches!(self, Screen::Help(_))
    }

    /// One action; `None` is a key the screen's section does not bind.
    pub fn update(&mut self, action: Option<Action>) -> Vec<Command> {
        match self {
            // Any key the help does not bind closes it.
            Screen::Help(help) => help.update(action.unwrap_or(Action::Back)),
            Screen::Qa(qa) => action.map(|a| qa.update(a)).unwrap_or_default(),
        }
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect, ctx: &Ctx) {
        match self {
            Screen::Help(help) => help.draw(frame, area, ctx),
            Screen::Qa(qa) => qa.draw(frame, area),
        }
    }
}
