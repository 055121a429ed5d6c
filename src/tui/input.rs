//! Text being typed — a search, a note, a new prompt, a rewrite in the built-in editor — and
//! what each key does to it. The key map's Line or Editor section says which keys keep
//! (Enter; Ctrl-S in the multi-line editor), drop (Esc), move the cursor or delete; the keys it
//! does not bind type their character at the cursor. `App` carries out what a kept text is for.

use crossterm::event::KeyEvent;

use super::field::{Edit, TextField};
use super::keymap::{self, Action};

/// Text being typed, and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    None,
    Search(TextField),
    Note(TextField),
    AddPrompt(TextField),
    /// The built-in editor, used for rewrites when neither $VISUAL nor $EDITOR is set.
    Rewrite {
        response_id: i64,
        /// Which answer it is, for the editor's title ("left", "right").
        side: &'static str,
        text: TextField,
        /// The answer as it was, to tell whether Esc would throw changes away.
        original: String,
        /// Esc was pressed once with changes: a second Esc drops them.
        discard_armed: bool,
    },
}

/// What a key did to the text being typed.
#[derive(Debug, PartialEq, Eq)]
pub enum Typed {
    /// Still typing.
    Editing,
    /// The editor has changes and Esc was pressed once: the next Esc drops them.
    ConfirmDiscard,
    /// Esc: typing ended, the text is dropped.
    Dropped(Input),
    /// Enter (Ctrl-S in the editor): typing ended, the text is kept.
    Kept(Input),
}

/// One key on a field being typed (Enter and Esc are the caller's): a new line, a cursor
/// movement or deletion the key map binds, or the character the key types.
pub fn edit_field(field: &mut TextField, action: Option<Action>, key: &KeyEvent) {
    match action {
        Some(Action::NewLine) => field.insert('\n'),
        Some(action) => {
            if let Some(edit) = edit_of(action) {
                field.apply(edit);
            }
        }
        None => {
            if let Some(c) = keymap::typed_char(key) {
                field.insert(c);
            }
        }
    }
}

/// The cursor movement or deletion a key map action stands for while typing.
fn edit_of(action: Action) -> Option<Edit> {
    Some(match action {
        Action::DeleteBack => Edit::DeleteBack,
        Action::DeleteForward => Edit::DeleteForward,
        Action::DeleteWordBack => Edit::DeleteWordBack,
        Action::CursorLeft => Edit::Left,
        Action::CursorRight => Edit::Right,
        Action::WordLeft => Edit::WordLeft,
        Action::WordRight => Edit::WordRight,
        Action::LineStart => Edit::LineStart,
        Action::LineEnd => Edit::LineEnd,
        Action::CursorUp => Edit::Up,
        Action::CursorDown => Edit::Down,
        _ => return None,
    })
}

impl Input {
    /// The text being typed, if any.
    pub fn field(&self) -> Option<&TextField> {
        match self {
            Input::None => None,
            Input::Search(t) | Input::Note(t) | Input::AddPrompt(t) | Input::Rewrite { text: t, .. } => Some(t),
        }
    }

    fn field_mut(&mut self) -> Option<&mut TextField> {
        match self {
            Input::None => None,
            Input::Search(t) | Input::Note(t) | Input::AddPrompt(t) | Input::Rewrite { text: t, .. } => Some(t),
        }
    }

    /// One key while typing; `action` is what the key map's Line or Editor section binds it to.
    pub fn type_key(&mut self, action: Option<Action>, key: KeyEvent) -> Typed {
        let back = action == Some(Action::Back);
        if let Input::Rewrite { text, original, discard_armed, .. } = self {
            let changed = text.text().trim_end() != original.trim_end();
            if back && changed && !*discard_armed {
                *discard_armed = true;
                return Typed::ConfirmDiscard;
            }
            *discard_armed = false;
        }
        match action {
            Some(Action::Back) if *self != Input::None => Typed::Dropped(std::mem::replace(self, Input::None)),
            Some(Action::Confirm) if *self != Input::None => Typed::Kept(std::mem::replace(self, Input::None)),
            _ => {
                if let Some(field) = self.field_mut() {
                    edit_field(field, action, &key);
                }
                Typed::Editing
            }
        }
    }
}
