//! The key map as data: one table of defaults (which also generates the help overlay and
//! the footer), overridable from `keys.toml` in the user's config directory.
//!
//! ```toml
//! [compare]
//! "x" = "left_better"
//! [queue]
//! "o" = "open"
//! ```

use std::collections::HashMap;
use std::path::Path;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde::{Deserialize, Serialize};

pub use super::key_help::{describe, describe_in};

/// Everything a key can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Leave verdict.
    Quit,
    /// Show or hide every key.
    Help,
    /// Show or hide the reviewer guidelines for the prompt's domain.
    Guidelines,
    /// Move up (queue) or scroll up (compare).
    Up,
    /// Move down (queue) or scroll down (compare).
    Down,
    /// A page up.
    PageUp,
    /// A page down.
    PageDown,
    /// Open the selected prompt.
    Open,
    /// Back to the queue; cancel what is being typed.
    Back,
    /// Search the queue.
    Search,
    /// Cycle the language filter.
    FilterLanguage,
    /// Cycle the domain filter.
    FilterDomain,
    /// Cycle the status filter (all, unlabeled by me, disputed, done).
    FilterStatus,
    /// Type a new prompt.
    AddPrompt,
    /// The left answer is better.
    LeftBetter,
    /// The right answer is better.
    RightBetter,
    /// Both are equally good.
    Tie,
    /// Neither could be sent.
    BothBad,
    /// Write a note for this judgment.
    Note,
    /// Rewrite the focused answer in your editor.
    Rewrite,
    /// Withdraw your last judgment and go back to it.
    Undo,
    /// Skip this pair for now.
    Skip,
    /// The next prompt.
    NextPair,
    /// The previous prompt.
    PreviousPair,
    /// Move the focus between the prompt and the answers.
    Focus,
    /// Re-read the database: other annotators' judgments, new candidates.
    Refresh,
    /// Generate two more candidates for this prompt with the local model.
    Generate,
    /// Generate candidates for every prompt in the current filter that has fewer than two.
    GenerateAll,
    /// Stop the running generation, keeping the finished candidates.
    Cancel,
    /// Show or hide the QA screen: agreement and per-annotator report.
    Quality,
    /// Training and review: runs, live curves, answers, diffs, blind evaluation.
    Review,
    /// A new training run (the form).
    NewRun,
    /// Start the run the form describes.
    StartRun,
    /// Stop the run at its next step, with a checkpoint.
    StopRun,
    /// Resume the run from its last checkpoint.
    ResumeRun,
    /// The answers the run generated at each evaluation.
    Samples,
    /// Base and tuned answers side by side, word differences marked.
    Diff,
    /// Mark this run's model to diff another run's against it.
    Mark,
    /// Blind evaluation of base against tuned.
    BlindEval,
    /// Every model ranked by blind judgments (Bradley-Terry).
    Arena,
    /// Edit the field.
    Edit,
    /// Previous step, choice or model.
    Previous,
    /// Next step, choice or model.
    Next,
    /// Keep what was typed (a search, a note, a new prompt, a field, a rewrite).
    Confirm,
    /// Delete the character before the cursor.
    DeleteBack,
    /// Delete the character under the cursor.
    DeleteForward,
    /// Delete the word before the cursor.
    DeleteWordBack,
    /// Move the cursor one character left.
    CursorLeft,
    /// Move the cursor one character right.
    CursorRight,
    /// Move the cursor a line up (in the editor).
    CursorUp,
    /// Move the cursor a line down (in the editor).
    CursorDown,
    /// Move the cursor to the start of the word before it.
    WordLeft,
    /// Move the cursor to the end of the word after it.
    WordRight,
    /// Move the cursor to the start of its line.
    LineStart,
    /// Move the cursor to the end of its line.
    LineEnd,
    /// The first prompt of the list.
    First,
    /// The last prompt of the list.
    Last,
    /// Start a new line in the rewrite editor.
    NewLine,
    /// Review the selected prompt's answers one at a time (good / bad).
    SingleReview,
    /// This answer is good.
    Good,
    /// This answer is bad.
    Bad,
}

/// The screens with their own keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Queue,
    Compare,
    Runs,
    Run,
    Form,
    Samples,
    Diff,
    Blind,
    Arena,
    /// The help overlay.
    Help,
    /// The QA screen.
    Qa,
    /// Typing one line: a search, a note, a new prompt, a form field. Keys it does not
    /// bind type their character.
    Line,
    /// The built-in rewrite editor; keys it does not bind type their character.
    Editor,
    /// Single-answer review: one answer at a time, good or bad.
    Thumbs,
}

impl Mode {
    /// Every mode with its title, in the order the help lists them.
    pub const ALL: [(Mode, &'static str); 14] = [
        (Mode::Queue, "Queue"),
        (Mode::Compare, "Compare"),
        (Mode::Runs, "Runs (T from the queue)"),
        (Mode::Run, "A run: live curves"),
        (Mode::Form, "New run"),
        (Mode::Samples, "Answers during training"),
        (Mode::Diff, "Diff: base vs tuned"),
        (Mode::Blind, "Blind evaluation"),
        (Mode::Arena, "Arena"),
        (Mode::Help, "Help (any key it does not list closes it)"),
        (Mode::Qa, "Quality (Q from the queue)"),
        (Mode::Line, "Typing a search, note, prompt or field (other keys type)"),
        (Mode::Editor, "The built-in rewrite editor (other keys type)"),
        (Mode::Thumbs, "Single-answer review (o from the queue)"),
    ];
}

use Action::*;

/// (mode, key, action, shown in the footer).
pub const DEFAULTS: &[(Mode, &str, Action, bool)] = &[
    (Mode::Queue, "enter", Open, true),
    (Mode::Queue, "down", Down, false),
    (Mode::Queue, "j", Down, false),
    (Mode::Queue, "up", Up, false),
    (Mode::Queue, "k", Up, false),
    (Mode::Queue, "pagedown", PageDown, false),
    (Mode::Queue, "pageup", PageUp, false),
    (Mode::Queue, "home", First, false),
    (Mode::Queue, "end", Last, false),
    (Mode::Queue, "/", Search, true),
    (Mode::Queue, "L", FilterLanguage, true),
    (Mode::Queue, "D", FilterDomain, true),
    (Mode::Queue, "S", FilterStatus, true),
    (Mode::Queue, "a", AddPrompt, true),
    (Mode::Queue, "g", Generate, true),
    (Mode::Queue, "G", GenerateAll, true),
    (Mode::Queue, "esc", Cancel, false),
    (Mode::Queue, "o", SingleReview, false),
    (Mode::Queue, "Q", Quality, true),
    (Mode::Queue, "R", Refresh, true),
    (Mode::Queue, "f5", Refresh, false),
    (Mode::Queue, "T", Review, true),
    (Mode::Queue, "r", Guidelines, false),
    (Mode::Queue, "?", Help, true),
    (Mode::Queue, "q", Quit, true),
    (Mode::Compare, "1", LeftBetter, true),
    (Mode::Compare, "left", LeftBetter, false),
    (Mode::Compare, "2", RightBetter, true),
    (Mode::Compare, "right", RightBetter, false),
    (Mode::Compare, "t", Tie, true),
    (Mode::Compare, "b", BothBad, true),
    (Mode::Compare, "n", Note, true),
    (Mode::Compare, "e", Rewrite, true),
    (Mode::Compare, "u", Undo, true),
    (Mode::Compare, "s", Skip, true),
    (Mode::Compare, "]", NextPair, false),
    (Mode::Compare, "[", PreviousPair, false),
    (Mode::Compare, "j", Down, false),
    (Mode::Compare, "down", Down, false),
    (Mode::Compare, "k", Up, false),
    (Mode::Compare, "up", Up, false),
    (Mode::Compare, "pagedown", PageDown, false),
    (Mode::Compare, "pageup", PageUp, false),
    (Mode::Compare, "tab", Focus, false),
    (Mode::Compare, "r", Guidelines, true),
    (Mode::Compare, "g", Generate, false),
    (Mode::Compare, "esc", Back, true),
    (Mode::Compare, "?", Help, true),
    (Mode::Compare, "q", Quit, false),
    (Mode::Thumbs, "+", Good, true),
    (Mode::Thumbs, "=", Good, false),
    (Mode::Thumbs, "-", Bad, true),
    (Mode::Thumbs, "n", Note, true),
    (Mode::Thumbs, "u", Undo, true),
    (Mode::Thumbs, "]", Next, true),
    (Mode::Thumbs, "right", Next, false),
    (Mode::Thumbs, "[", Previous, true),
    (Mode::Thumbs, "left", Previous, false),
    (Mode::Thumbs, "j", Down, false),
    (Mode::Thumbs, "down", Down, false),
    (Mode::Thumbs, "k", Up, false),
    (Mode::Thumbs, "up", Up, false),
    (Mode::Thumbs, "pagedown", PageDown, false),
    (Mode::Thumbs, "pageup", PageUp, false),
    (Mode::Thumbs, "esc", Back, true),
    (Mode::Thumbs, "r", Guidelines, false),
    (Mode::Thumbs, "?", Help, true),
    (Mode::Thumbs, "q", Quit, false),
    (Mode::Runs, "enter", Open, true),
    (Mode::Runs, "j", Down, false),
    (Mode::Runs, "down", Down, false),
    (Mode::Runs, "k", Up, false),
    (Mode::Runs, "up", Up, false),
    (Mode::Runs, "n", NewRun, true),
    (Mode::Runs, "s", StopRun, true),
    (Mode::Runs, "r", ResumeRun, true),
    (Mode::Runs, "a", Samples, true),
    (Mode::Runs, "d", Diff, true),
    (Mode::Runs, "m", Mark, true),
    (Mode::Runs, "e", BlindEval, true),
    (Mode::Runs, "A", Arena, true),
    (Mode::Runs, "f5", Refresh, false),
    (Mode::Runs, "esc", Back, true),
    (Mode::Runs, "?", Help, true),
    (Mode::Runs, "q", Quit, false),
    (Mode::Run, "s", StopRun, true),
    (Mode::Run, "r", ResumeRun, true),
    (Mode::Run, "a", Samples, true),
    (Mode::Run, "d", Diff, true),
    (Mode::Run, "e", BlindEval, true),
    (Mode::Run, "esc", Back, true),
    (Mode::Run, "?", Help, true),
    (Mode::Run, "q", Quit, false),
    (Mode::Form, "j", Down, false),
    (Mode::Form, "down", Down, false),
    (Mode::Form, "k", Up, false),
    (Mode::Form, "up", Up, false),
    (Mode::Form, "enter", Edit, true),
    (Mode::Form, "left", Previous, true),
    (Mode::Form, "h", Previous, false),
    (Mode::Form, "right", Next, true),
    (Mode::Form, "l", Next, false),
    (Mode::Form, "S", StartRun, true),
    (Mode::Form, "esc", Back, true),
    (Mode::Form, "?", Help, true),
    (Mode::Samples, "left", Previous, true),
    (Mode::Samples, "h", Previous, false),
    (Mode::Samples, "right", Next, true),
    (Mode::Samples, "l", Next, false),
    (Mode::Samples, "j", Down, true),
    (Mode::Samples, "down", Down, false),
    (Mode::Samples, "k", Up, true),
    (Mode::Samples, "up", Up, false),
    (Mode::Samples, "esc", Back, true),
    (Mode::Samples, "?", Help, true),
    (Mode::Diff, "right", Next, true),
    (Mode::Diff, "l", Next, false),
    (Mode::Diff, "left", Previous, true),
    (Mode::Diff, "h", Previous, false),
    (Mode::Diff, "j", Down, false),
    (Mode::Diff, "k", Up, false),
    (Mode::Diff, "esc", Back, true),
    (Mode::Diff, "?", Help, true),
    (Mode::Blind, "1", LeftBetter, true),
    (Mode::Blind, "2", RightBetter, true),
    (Mode::Blind, "t", Tie, true),
    (Mode::Blind, "b", BothBad, true),
    (Mode::Blind, "s", Skip, true),
    (Mode::Blind, "j", Down, false),
    (Mode::Blind, "k", Up, false),
    (Mode::Blind, "esc", Back, true),
    (Mode::Blind, "?", Help, true),
    (Mode::Arena, "1", LeftBetter, true),
    (Mode::Arena, "2", RightBetter, true),
    (Mode::Arena, "t", Tie, true),
    (Mode::Arena, "b", BothBad, true),
    (Mode::Arena, "s", Skip, true),
    (Mode::Arena, "esc", Back, true),
    (Mode::Arena, "?", Help, true),
    (Mode::Help, "j", Down, false),
    (Mode::Help, "down", Down, false),
    (Mode::Help, "k", Up, false),
    (Mode::Help, "up", Up, false),
    (Mode::Help, "esc", Back, true),
    (Mode::Qa, "j", Down, false),
    (Mode::Qa, "down", Down, false),
    (Mode::Qa, "k", Up, false),
    (Mode::Qa, "up", Up, false),
    (Mode::Qa, "pagedown", PageDown, false),
    (Mode::Qa, "pageup", PageUp, false),
    (Mode::Qa, "Q", Quality, true),
    (Mode::Qa, "esc", Back, true),
    (Mode::Qa, "q", Back, false),
    (Mode::Line, "enter", Confirm, true),
    (Mode::Line, "esc", Back, true),
    (Mode::Line, "backspace", DeleteBack, false),
    (Mode::Line, "left", CursorLeft, false),
    (Mode::Line, "right", CursorRight, false),
    (Mode::Line, "ctrl-left", WordLeft, false),
    (Mode::Line, "ctrl-right", WordRight, false),
    (Mode::Line, "home", LineStart, false),
    (Mode::Line, "end", LineEnd, false),
    (Mode::Line, "ctrl-a", LineStart, false),
    (Mode::Line, "ctrl-e", LineEnd, false),
    (Mode::Line, "delete", DeleteForward, false),
    (Mode::Line, "ctrl-w", DeleteWordBack, false),
    (Mode::Editor, "ctrl-s", Confirm, true),
    (Mode::Editor, "enter", NewLine, false),
    (Mode::Editor, "backspace", DeleteBack, false),
    (Mode::Editor, "left", CursorLeft, false),
    (Mode::Editor, "right", CursorRight, false),
    (Mode::Editor, "up", CursorUp, false),
    (Mode::Editor, "down", CursorDown, false),
    (Mode::Editor, "ctrl-left", WordLeft, false),
    (Mode::Editor, "ctrl-right", WordRight, false),
    (Mode::Editor, "home", LineStart, false),
    (Mode::Editor, "end", LineEnd, false),
    (Mode::Editor, "ctrl-a", LineStart, false),
    (Mode::Editor, "ctrl-e", LineEnd, false),
    (Mode::Editor, "delete", DeleteForward, false),
    (Mode::Editor, "ctrl-w", DeleteWordBack, false),
    (Mode::Editor, "esc", Back, true),
];

/// A resolved key map.
#[derive(Debug, Clone)]
pub struct KeyMap {
    bindings: Vec<(Mode, String, Action, bool)>,
    lookup: HashMap<(Mode, String), Action>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyMapError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

impl Default for KeyMap {
    fn default() -> KeyMap {
        KeyMap::from_bindings(DEFAULTS.iter().map(|(m, k, a, f)| (*m, k.to_string(), *a, *f)).collect())
    }
}

impl KeyMap {
    fn from_bindings(bindings: Vec<(Mode, String, Action, bool)>) -> KeyMap {
        let lookup = bindings.iter().map(|(m, k, a, _)| ((*m, k.clone()), *a)).collect();
        KeyMap { bindings, lookup }
    }

    /// The defaults with the user's `keys.toml` (if any) applied on top: a key the user
    /// binds replaces the default binding of that key.
    pub fn load(path: &Path) -> Result<KeyMap, KeyMapError> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(KeyMap::default());
        };
        let invalid = |message: String| KeyMapError::Invalid { file: path.display().to_string(), message };
        let user: HashMap<Mode, HashMap<String, Action>> =
            toml::from_str(&text).map_err(|e| invalid(format!("{e} (see `verdict --help` for the format)")))?;
        let mut bindings: Vec<(Mode, String, Action, bool)> =
            DEFAULTS.iter().map(|(m, k, a, f)| (*m, k.to_string(), *a, *f)).collect();
        for (mode, keys) in user {
            for (key, action) in keys {
                if parse_key(&key).is_none() {
                    return Err(invalid(format!("unknown key \"{key}\"")));
                }
                bindings.retain(|(m, k, _, _)| !(*m == mode && *k == key));
                bindings.push((mode, key, action, true));
            }
        }
        Ok(KeyMap::from_bindings(bindings))
    }

    /// The action bound to `key` in `mode`.
    pub fn action(&self, mode: Mode, key: &KeyEvent) -> Option<Action> {
        self.lookup.get(&(mode, key_name(key)?)).copied()
    }

    /// (key, action) pairs of a mode, in table order, for help and footers.
    pub fn bindings(&self, mode: Mode) -> impl Iterator<Item = (&str, Action, bool)> {
        self.bindings.iter().filter(move |(m, _, _, _)| *m == mode).map(|(_, k, a, f)| (k.as_str(), *a, *f))
    }
}

/// A key's name in the key map: `a`, `A`, `1`, `enter`, `ctrl-s`...
pub fn key_name(key: &KeyEvent) -> Option<String> {
    let base = match key.code {
        KeyCode::Char(c) => c.to_string(),
        KeyCode::Enter => "enter".into(),
        KeyCode::Esc => "esc".into(),
        KeyCode::Tab => "tab".into(),
        KeyCode::BackTab => "backtab".into(),
        KeyCode::Left => "left".into(),
        KeyCode::Right => "right".into(),
        KeyCode::Up => "up".into(),
        KeyCode::Down => "down".into(),
        KeyCode::PageUp => "pageup".into(),
        KeyCode::PageDown => "pagedown".into(),
        KeyCode::Home => "home".into(),
        KeyCode::End => "end".into(),
        KeyCode::Backspace => "backspace".into(),
        KeyCode::Delete => "delete".into(),
        KeyCode::F(n) => format!("f{n}"),
        _ => return None,
    };
    Some(if key.modifiers.contains(KeyModifiers::CONTROL) { format!("ctrl-{base}") } else { base })
}

/// The character a key types where typing is going on (Line, Editor): a plain or shifted
/// character; None for anything with Ctrl and for keys that are not characters.
pub fn typed_char(key: &KeyEvent) -> Option<char> {
    match key.code {
        KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => Some(c),
        _ => None,
    }
}

/// The inverse of `key_name`, to validate user files.
pub fn parse_key(name: &str) -> Option<KeyEvent> {
    let (modifiers, base) = match name.strip_prefix("ctrl-") {
        Some(rest) => (KeyModifiers::CONTROL, rest),
        None => (KeyModifiers::NONE, name),
    };
    let code = match base {
        "enter" => KeyCode::Enter,
        "esc" => KeyCode::Esc,
        "tab" => KeyCode::Tab,
        "backtab" => KeyCode::BackTab,
        "left" => KeyCode::Left,
        "right" => KeyCode::Right,
        "up" => KeyCode::Up,
        "down" => KeyCode::Down,
        "pageup" => KeyCode::PageUp,
        "pagedown" => KeyCode::PageDown,
        "home" => KeyCode::Home,
        "end" => KeyCode::End,
        "backspace" => KeyCode::Backspace,
        "delete" => KeyCode::Delete,
        f if f.len() > 1 && f.starts_with('f') => KeyCode::F(f[1..].parse().ok()?),
        c if c.chars().count() == 1 => KeyCode::Char(c.chars().next()?),
        _ => return None,
    };
    Some(KeyEvent::new(code, modifiers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_key_parses_and_round_trips() {
        for (_, key, _, _) in DEFAULTS {
            let event = parse_key(key).unwrap_or_else(|| panic!("{key}"));
            assert_eq!(key_name(&event).as_deref(), Some(*key));
        }
    }

    #[test]
    fn user_file_rebinds_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, "[compare]\n\"x\" = \"left_better\"\n\"1\" = \"tie\"\n").unwrap();
        let map = KeyMap::load(&path).unwrap();
        let key = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
        assert_eq!(map.action(Mode::Compare, &key('x')), Some(LeftBetter));
        assert_eq!(map.action(Mode::Compare, &key('1')), Some(Tie));
        assert_eq!(map.action(Mode::Compare, &key('2')), Some(RightBetter));
        std::fs::write(&path, "[compare]\n\"x\" = \"fly\"\n").unwrap();
        assert!(KeyMap::load(&path).unwrap_err().to_string().contains("keys.toml"));
    }
}
