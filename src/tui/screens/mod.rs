//! The screens on the stack above the queue: each owns its state, turns an `Action` into
//! changes of that state and `Command`s for `App` to carry out (store writes, jobs, opening
//! and closing screens), and draws only its own state and the read-only `Ctx`.

pub mod blind;
pub mod diff;
pub mod help;
pub mod qa;
pub mod samples;
pub mod thumbs;

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::Rect;

use super::keymap::{Action, KeyMap, Mode};
use crate::guidelines::Reason;
use crate::store::{NewEvalVote, NewThumb, Store};

/// What every screen may read while it updates or draws.
pub struct Ctx<'a> {
    pub keymap: &'a KeyMap,
    pub reasons: &'a [Reason],
    pub annotator: &'a str,
    pub annotator_id: i64,
}

/// What a screen asks `App` to do.
#[derive(Debug)]
pub enum Command {
    /// Take this screen off the stack.
    Close,
    /// Store a blind vote, then refresh the screen.
    EvalVote(NewEvalVote),
    /// Let the screen re-read what it shows (`Screen::refresh`).
    Refresh,
    /// Store a single-answer rating, then show the next answer.
    Thumb(NewThumb),
    /// Take back the annotator's last single-answer rating.
    UndoThumb,
}

/// A screen on the stack.
pub enum Screen {
    Help(help::Help),
    Qa(qa::Qa),
    Samples(samples::SamplesView),
    Diff(Box<diff::DiffView>),
    Blind(Box<blind::BlindView>),
    Thumbs(Box<thumbs::ThumbsView>),
}

impl Screen {
    /// The key map section that this screen's keys come from.
    pub fn mode(&self) -> Mode {
        match self {
            Screen::Help(_) => Mode::Help,
            Screen::Qa(_) => Mode::Qa,
            Screen::Samples(_) => Mode::Samples,
            Screen::Diff(_) => Mode::Diff,
            Screen::Blind(b) if b.run_id.is_none() => Mode::Arena,
            Screen::Blind(_) => Mode::Blind,
            Screen::Thumbs(t) if t.typing() => Mode::Line,
            Screen::Thumbs(_) => Mode::Thumbs,
        }
    }

    /// The key map section the footer lists while this screen is on top; None where the
    /// footer keeps showing the screen below (help, QA).
    pub fn footer_mode(&self) -> Option<Mode> {
        match self {
            Screen::Help(_) | Screen::Qa(_) => None,
            Screen::Thumbs(_) => Some(Mode::Thumbs),
            other => Some(other.mode()),
        }
    }

    /// Whether it is drawn over what is below (the help) rather than in its place.
    pub fn overlay(&self) -> bool {
        matches!(self, Screen::Help(_))
    }

    /// One action; `None` is a key the screen's section does not bind.
    pub fn update(&mut self, action: Option<Action>, ctx: &Ctx) -> Vec<Command> {
        // Any key the help does not bind closes it.
        if let Screen::Help(help) = self {
            return help.update(action.unwrap_or(Action::Back));
        }
        let Some(action) = action else { return Vec::new() };
        match self {
            Screen::Help(_) => Vec::new(),
            Screen::Qa(qa) => qa.update(action),
            Screen::Samples(samples) => samples.update(action),
            Screen::Diff(diff) => diff.update(action),
            Screen::Blind(blind) => blind.update(action, ctx.annotator_id),
            Screen::Thumbs(thumbs) => thumbs.update(action, ctx.annotator_id),
        }
    }

    /// A key the screen's section does not bind (a reason tag's shortcut, for instance).
    pub fn unbound(&mut self, key: KeyEvent, ctx: &Ctx) {
        if let Screen::Thumbs(thumbs) = self {
            thumbs.unbound(key, ctx);
        }
    }

    /// A key while the screen has text typed into it (its `mode` is `Mode::Line`).
    pub fn type_key(&mut self, action: Option<Action>, key: KeyEvent) {
        if let Screen::Thumbs(thumbs) = self {
            thumbs.type_key(action, key);
        }
    }

    /// Takes in what the screen's worker reported (and re-reads what it stored); a message
    /// for the status line when the worker ends.
    pub fn poll(&mut self, store: &Store, ctx: &Ctx) -> anyhow::Result<Option<String>> {
        match self {
            Screen::Diff(diff) => diff.poll(store),
            Screen::Blind(blind) => blind.poll(store, ctx.annotator, ctx.annotator_id),
            _ => Ok(None),
        }
    }

    /// Re-reads what the screen shows after `App` carried out its command.
    pub fn refresh(&mut self, store: &Store, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Screen::Blind(blind) => blind.refresh(store, ctx.annotator),
            Screen::Thumbs(thumbs) => thumbs.refresh(store, ctx.annotator_id),
            _ => Ok(()),
        }
    }

    /// Taken off the stack: its worker, if any, stops at its next safe point.
    pub fn closed(&self) {
        match self {
            Screen::Diff(diff) => diff.stop_worker(),
            Screen::Blind(blind) => blind.stop_worker(),
            _ => {}
        }
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect, ctx: &Ctx) {
        match self {
            Screen::Help(help) => help.draw(frame, area, ctx),
            Screen::Qa(qa) => qa.draw(frame, area),
            Screen::Samples(samples) => samples.draw(frame, area),
            Screen::Diff(diff) => diff.draw(frame, area),
            Screen::Blind(blind) => blind.draw(frame, area),
            Screen::Thumbs(thumbs) => thumbs.draw(frame, area, ctx),
        }
    }
}
