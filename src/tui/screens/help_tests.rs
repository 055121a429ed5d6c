//! The help and the guidelines panel, and the keys of the help, QA and typing from the key map.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::tui::app::App;
use crate::tui::input::Input;
use crate::tui::keymap::KeyMap;
use crate::tui::testing::*;

#[test]
fn snapshot_help_and_guidelines() {
    let mut app = app();
    press(&mut app, "?");
    insta::assert_snapshot!("help_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("help_160x48", screen(&app, 160, 48));
    let mut app = app_with_pair("pair-health-de-01");
    press(&mut app, "r");
    insta::assert_snapshot!("guidelines_160x48", screen(&app, 160, 48));
    insta::assert_snapshot!("guidelines_80x24", screen(&app, 80, 24));
}

#[test]
fn the_help_qa_and_typing_keys_come_from_the_key_map() {
    use crate::tui::screens::Screen;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, "[qa]\n\"x\" = \"back\"\n[line]\n\"ctrl-j\" = \"confirm\"\n[help]\n\"n\" = \"down\"\n")
        .unwrap();
    let mut app = App::new(seeded_store(), "amira", KeyMap::load(&path).unwrap()).unwrap();
    press(&mut app, "Q");
    assert!(matches!(app.screens.last(), Some(Screen::Qa(_))));
    press(&mut app, "x");
    assert!(app.screens.is_empty(), "x closes the QA screen as keys.toml says");
    press(&mut app, "?n");
    let Some(Screen::Help(help)) = app.screens.last() else { panic!("help open") };
    assert_eq!(help.scroll, 1, "n scrolls the help as keys.toml says");
    press(&mut app, "z");
    assert!(app.screens.is_empty(), "a key the help does not bind closes it");
    open(&mut app, "pair-health-ja-01");
    press(&mut app, "n");
    press(&mut app, "ok");
    app.handle_key(KeyEvent::new(KeyCode::Char('j'), KeyModifiers::CONTROL));
    assert_eq!(app.input, Input::None, "ctrl-j keeps the note as keys.toml says");
    assert_eq!(app.compare.as_ref().unwrap().note, "ok");
}
