//! Text being typed — a search, a note, a new prompt, a rewrite in the built-in editor — and
//! what each key does to it. The key map's Line or Editor section says which keys keep
//! (Enter; Ctrl-S in the multi-line editor), drop (Esc) or delete; the keys it does not bind
//! type their character. `App` carries out what a kept text is for.

use crossterm::event::KeyEvent;

use super::keymap::{self, Action};

/// Text being typed, and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    None,
    Search(String),
    Note(String),
    AddPrompt(String),
    /// The built-in editor, used for rewrites when neither $VISUAL nor $EDITOR is set.
    Rewrite {
        response_id: i64,
        text: String,
    },
}

/// What a key did to the text being typed.
#[derive(Debug, PartialEq, Eq)]
pub enum Typed {
    /// Still typing.
    Editing,
    /// Esc: typing ended, the text is dropped.
    Dropped(Input),
    /// Enter (Ctrl-S in the editor): typing ended, the text is kept.
    Kept(Input),
}

impl Input {
    /// One key while typing; `action` is what the key map's Line or Editor section binds it to.
    pub fn type_key(&mut self, action: Option<Action>, key: KeyEvent) -> Typed {
        let text = match self {
            Input::None => return Typed::Editing,
            Input::Search(t) | Input::Note(t) | Input::AddPrompt(t) | Input::Rewrite { text: t, .. } => t,
        };
        match action {
            Some(Action::Back) => return Typed::Dropped(std::mem::replace(self, Input::None)),
            Some(Action::Confirm) => return Typed::Kept(std::mem::replace(self, Input::None)),
            Some(Action::NewLine) => text.push('\n'),
            Some(Action::DeleteBack) => {
                text.pop();
            }
            Some(_) => {}
            None => {
                if let Some(c) = keymap::typed_char(&key) {
                    text.push(c);
                }
            }
        }
        Typed::Editing
    }
}
