//! What each action does, in words: the help overlay's lines and the footer's fallbacks,
//! generated from the key map (`keymap`) rather than written per screen.

use super::keymap::Action::{self, *};
use super::keymap::Mode;

/// What `action` does on the screen `mode`, where that differs from `describe`.
pub fn describe_in(mode: Mode, action: Action) -> &'static str {
    match (mode, action) {
        (Mode::Runs, Open) => "open the run: curves, answers, evaluation",
        (Mode::Queue, Open) => "open the prompt",
        (_, Open) => "open",
        (Mode::Compare | Mode::Thumbs | Mode::Runs | Mode::Qa, Back) => "back to the queue",
        (Mode::Run | Mode::Form | Mode::Samples | Mode::Diff | Mode::Blind | Mode::Arena, Back) => "back to the runs",
        _ => describe(action),
    }
}

/// The first line of an action's doc comment, for help.
pub fn describe(action: Action) -> &'static str {
    match action {
        Quit => "quit",
        Help => "help: every key",
        Guidelines => "reviewer guidelines",
        Up => "up",
        Down => "down",
        PageUp => "page up",
        PageDown => "page down",
        Open => "open the prompt",
        Back => "back / cancel",
        Search => "search",
        FilterLanguage => "filter: language",
        FilterDomain => "filter: domain",
        FilterStatus => "filter: status",
        AddPrompt => "add a prompt",
        LeftBetter => "left is better",
        RightBetter => "right is better",
        Tie => "tie",
        BothBad => "both bad",
        Note => "note",
        Rewrite => "rewrite the focused answer",
        Undo => "undo my last judgment",
        Skip => "skip",
        NextPair => "next prompt",
        PreviousPair => "previous prompt",
        Focus => "focus: prompt / left / right",
        Refresh => "refresh from the database",
        Generate => "generate 2 more candidates for this prompt",
        GenerateAll => "generate candidates for the filtered prompts with fewer than 2",
        Cancel => "stop generating (finished candidates are kept)",
        Quality => "QA: agreement and annotator report",
        Review => "training and review: runs, curves, answers, blind evaluation",
        NewRun => "new training run",
        StartRun => "start the run",
        StopRun => "stop the run (checkpoint first; works for runs in other terminals)",
        ResumeRun => "resume the run from its last checkpoint",
        Samples => "answers generated at each evaluation, step by step",
        Diff => "base vs tuned answers, word differences marked (or vs the marked run's model)",
        Mark => "mark this run's model; d on another run then diffs the two",
        BlindEval => "blind evaluation: base vs tuned, win rate with 95% CI",
        Arena => "arena: every model with answers, ranked (Bradley-Terry)",
        Edit => "edit the field / cycle the choice",
        Previous => "previous (step, choice, prompt)",
        Next => "next (step, choice, prompt)",
        Confirm => "keep what was typed",
        DeleteBack => "delete the character before the cursor",
        DeleteForward => "delete the character under the cursor",
        DeleteWordBack => "delete the word before the cursor",
        CursorLeft => "cursor left",
        CursorRight => "cursor right",
        CursorUp => "cursor up a line",
        CursorDown => "cursor down a line",
        WordLeft => "cursor to the previous word",
        WordRight => "cursor to the next word",
        LineStart => "cursor to the start of the line",
        LineEnd => "cursor to the end of the line",
        First => "first prompt",
        Last => "last prompt",
        NewLine => "a new line",
        SingleReview => "review the answers one at a time: good or bad",
        Good => "this answer is good",
        Bad => "this answer is bad",
    }
}
