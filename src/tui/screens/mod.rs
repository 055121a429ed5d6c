//! The screens: each owns its state, turns an `Action` into changes of that state and
//! `Command`s for `App` to carry out (store writes, jobs, opening and closing screens), and
//! draws only its own state and the read-only `Ctx`. The queue is always there, the compare
//! screen over it while a prompt is open; the others (the runs list and a run's curves
//! included) go on a stack above them.

pub mod blind;
pub mod compare;
pub mod curves;
pub mod diff;
pub mod help;
pub mod qa;
pub mod queue;
pub mod runs;
pub mod samples;
pub mod thumbs;

use std::collections::BTreeSet;
use std::path::Path;

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use super::form::TrainForm;
use super::input::Input;
use super::keymap::{Action, KeyMap, Mode};
use super::text::truncate;
use crate::guidelines::Reason;
use crate::jobs::train::TrainConfig;
use crate::store::{NewEvalVote, NewThumb, RunRow, Verdict};

/// What every screen may read while it updates or draws.
pub struct Ctx<'a> {
    pub keymap: &'a KeyMap,
    pub reasons: &'a [Reason],
    pub annotator: &'a str,
    pub annotator_id: i64,
    /// The text being typed, where a screen shows it in place (a note).
    pub input: &'a Input,
    /// A model marked (`m` on the runs) to diff against another run's: (run, model).
    pub marked: Option<(i64, i64)>,
    /// The database file, for a screen's worker to open its own connection to.
    pub db: &'a Path,
    /// The store's data version as `App` last asked it (at most twice a second): it moves
    /// when another connection commits.
    pub data_version: Option<i64>,
}

/// What a screen's `poll` found.
#[derive(Debug, Default)]
pub struct Polled {
    /// Something on screen changed: draw again.
    pub changed: bool,
    /// For the status line (a worker ended).
    pub message: Option<String>,
    /// The screen's worker stored something: `App` reads what the screen shows again.
    pub reread: bool,
}

/// The reason chips (chosen ones highlighted) and the note under them, in a pane titled
/// `title`: the compare screen and the single-answer screen label with the same tags.
pub fn draw_reasons(frame: &mut Frame, area: Rect, title: &str, ctx: &Ctx, chosen: &BTreeSet<String>, note: &str) {
    let mut chips: Vec<Span> = vec![Span::raw(" ")];
    for reason in ctx.reasons {
        let style = if chosen.contains(&reason.key) {
            Style::default().bg(Color::Yellow).fg(Color::Black)
        } else {
            Style::default().fg(Color::DarkGray)
        };
        chips.push(Span::styled(format!("[{}] {}", reason.shortcut, reason.label), style));
        chips.push(Span::raw(" "));
    }
    let note = match ctx.input {
        Input::Note(text) => format!(" note: {}", text.with_marker("▏")),
        _ if note.is_empty() => " note: (n to write one)".to_string(),
        _ => format!(" note: {note}"),
    };
    let block = Block::default().borders(Borders::TOP).title(title.to_string());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    frame.render_widget(
        Paragraph::new(vec![Line::from(chips), Line::raw(truncate(&note, inner.width as usize))])
            .wrap(Wrap { trim: true }),
        inner,
    );
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
    /// Open a screen (reading what it shows from the store).
    Open(Opening),
    /// Start typing: a search, a note, a new prompt.
    Type(Input),
    /// Record the annotator's verdict on the pair on screen, then show the next pair.
    Judge(Verdict),
    /// Withdraw the annotator's last verdict and go back to it.
    Undo,
    /// Edit an answer (in $VISUAL/$EDITOR, else the built-in editor) into a human rewrite.
    Rewrite { response_id: i64, side: &'static str, text: String },
    /// Move to another prompt; `only_open` skips those with nothing left for me.
    Advance { direction: i64, only_open: bool },
    /// Generate two more candidates for the selected prompt, or two for every shown one.
    Generate { all: bool },
    /// Stop the generation, or with none running clear the search.
    Cancel,
    /// Read the whole queue again on a thread.
    RefreshQueue,
    /// Show this on the status line.
    Message(String),
    /// Start a training run with this config on its own thread (the new-run form's S).
    Train(Box<TrainConfig>),
    /// Store a single-answer rating, then show the next answer.
    Thumb(NewThumb),
    /// Take back the annotator's last single-answer rating.
    UndoThumb,
    /// Stop a running run (this window's thread, or another process's through its folder).
    StopRun(Box<RunRow>),
    /// Continue a stopped, failed or crashed run on this window's thread and show its curves.
    ResumeRun(Box<RunRow>),
    /// Mark a run's model to diff another run's against (None: clear the mark).
    Mark(Option<(i64, i64)>),
}

/// A screen a command opens.
#[derive(Debug)]
pub enum Opening {
    /// The selected prompt, in the compare screen.
    Compare,
    Qa,
    Runs,
    /// A run's live curves, over the runs list.
    Curves(i64),
    /// The new-run form, over the runs list.
    Form,
    /// A run's answers at each evaluation.
    Samples(i64),
    /// A run's base against its tuned model, or two models marked on the runs list.
    Diff {
        run_id: i64,
        models: Option<(i64, i64)>,
    },
    /// Blind evaluation of a run's tuned model against its base.
    Blind(i64),
    /// Every model with answers against every other.
    Arena,
    /// The selected prompt's answers one at a time (single-answer review).
    Thumbs,
}

/// A screen on the stack.
pub enum Screen {
    Help(help::Help),
    Qa(qa::Qa),
    Samples(samples::SamplesView),
    Diff(Box<diff::DiffView>),
    Blind(Box<blind::BlindView>),
    Form(Box<TrainForm>),
    Thumbs(Box<thumbs::ThumbsView>),
    Runs(Box<runs::RunsScreen>),
    Curves(Box<curves::CurvesScreen>),
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
            Screen::Form(_) => Mode::Form,
            Screen::Thumbs(_) => Mode::Thumbs,
            Screen::Runs(_) => Mode::Runs,
            Screen::Curves(_) => Mode::Run,
        }
    }

    /// True while the screen takes typed text (a form field): the key map's Line section
    /// then decides, and the keys it does not bind type.
    pub fn typing(&self) -> bool {
        matches!(self, Screen::Form(form) if form.typing())
    }

    /// The key map section the footer lists while this screen is on top; None where the
    /// footer keeps showing the screen below (help, QA).
    pub fn footer_mode(&self) -> Option<Mode> {
        match self {
            Screen::Help(_) | Screen::Qa(_) => None,
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
            Screen::Form(form) => form.update(action),
            Screen::Thumbs(thumbs) => thumbs.update(action, ctx.annotator_id),
            Screen::Runs(runs) => runs.update(action, ctx),
            Screen::Curves(curves) => curves.update(action, ctx),
        }
    }

    /// A key the screen's section does not bind (a reason tag's shortcut, for instance).
    pub fn unbound(&mut self, key: KeyEvent, ctx: &Ctx) {
        if let Screen::Thumbs(thumbs) = self {
            thumbs.unbound(key, ctx);
        }
    }

    /// Takes in what the screen's worker reported. The screen reads nothing from the store:
    /// `Polled::reread` asks `App` to.
    pub fn poll(&mut self, ctx: &Ctx) -> Polled {
        match self {
            Screen::Diff(diff) => diff.poll(),
            Screen::Blind(blind) => blind.poll(),
            Screen::Qa(qa) => Polled { changed: qa.poll(ctx), ..Polled::default() },
            _ => Polled::default(),
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
            Screen::Form(form) => form.draw(frame, area),
            Screen::Thumbs(thumbs) => thumbs.draw(frame, area, ctx),
            Screen::Runs(runs) => runs.draw(frame, area),
            Screen::Curves(curves) => curves.draw(frame, area),
        }
    }
}
