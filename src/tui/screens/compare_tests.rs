//! The compare screen's tests: verdicts with their reasons and notes, undo, skip, rewrites,
//! the sides, a restart, and snapshots in three scripts.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::domain::Outcome;
use crate::tui::app::{App, Effect};
use crate::tui::input::Input;
use crate::tui::keymap::KeyMap;
use crate::tui::testing::*;

#[test]
fn a_verdict_is_committed_with_its_reasons_and_the_screen_advances() {
    let mut app = app();
    open(&mut app, "pair-bank-en-01");
    let (left, right) = app.compare.as_ref().unwrap().pair.unwrap();
    press(&mut app, "xc");
    press(&mut app, "x"); // toggled off again
    press(&mut app, "1");
    let mine = app.store.my_judgments(app.annotator_id, app.queue.items[app.queue.visible[0]].row.prompt_id).unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].reasons, vec!["noncompliance"]);
    let chosen = if mine[0].outcome == Outcome::A { mine[0].response_a } else { mine[0].response_b };
    assert_eq!(chosen, left);
    assert_ne!(chosen, right);
    assert_eq!(app.queue.selected, 1, "moved on to the next prompt");
    assert_eq!(app.seconds_today.len(), 1);
}

#[test]
fn undo_withdraws_the_last_verdict_and_returns_to_it() {
    let mut app = app();
    open(&mut app, "pair-bank-en-01");
    press(&mut app, "o2");
    assert_eq!(app.queue.selected, 1);
    press(&mut app, "u");
    assert_eq!(app.queue.selected, 0);
    let c = app.compare.as_ref().unwrap();
    assert!(c.pair.is_some(), "the pair is open again");
    assert!(c.reasons.contains("tone"), "the withdrawn reasons come back for editing");
    let prompt_id = c.prompt_id;
    assert!(app.store.my_judgments(app.annotator_id, prompt_id).unwrap().is_empty());
    press(&mut app, "u");
    assert_eq!(app.message, "nothing to undo");
}

#[test]
fn skip_moves_on_without_writing() {
    let mut app = app();
    open(&mut app, "pair-bank-en-01");
    press(&mut app, "s");
    assert_eq!(app.queue.selected, 1);
    assert_eq!(app.store.active_judgments().unwrap().len(), 42, "only the imported ones");
}

#[test]
fn a_note_is_typed_and_saved_with_the_verdict() {
    let mut app = app();
    open(&mut app, "pair-health-ja-01");
    press(&mut app, "n");
    press(&mut app, "緊急性を伝えていない 🚑");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.input, Input::None);
    press(&mut app, "t");
    let judgments = app.store.active_judgments().unwrap();
    assert_eq!(judgments.len(), 43);
    let prompt = app.queue.items.iter().find(|i| i.row.external_id.as_deref() == Some("pair-health-ja-01")).unwrap();
    let mine = app.store.my_judgments(app.annotator_id, prompt.row.prompt_id).unwrap();
    assert_eq!(mine[0].note.as_deref(), Some("緊急性を伝えていない 🚑"));
    assert_eq!(mine[0].outcome, Outcome::Tie);
}

#[test]
fn inline_rewrite_becomes_a_preferred_human_response() {
    let mut app = app();
    open(&mut app, "pair-ins-de-01");
    let effect = press(&mut app, "e");
    assert!(effect.is_none(), "no $EDITOR: the built-in editor opens");
    let Input::Rewrite { response_id, .. } = app.input.clone() else { panic!("editor not open") };
    app.handle_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)); // ignored
    press(&mut app, " Mit freundlichen Grüßen");
    app.handle_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL));
    assert_eq!(app.input, Input::None);
    let c = app.compare.as_ref().unwrap();
    let rewrite = c.responses.iter().find(|r| r.origin == "human").expect("rewrite stored");
    assert_eq!(rewrite.parent_id, Some(response_id));
    assert!(rewrite.content.ends_with("Mit freundlichen Grüßen"));
    let pairs = crate::qa::resolved_pairs(&app.store).unwrap();
    assert!(pairs.iter().any(|p| p.chosen == rewrite.id && p.rejected == response_id));
}

#[test]
fn the_rewrite_editor_edits_at_the_cursor_and_asks_before_dropping_changes() {
    let mut app = app();
    open(&mut app, "pair-ins-de-01");
    press(&mut app, "e");
    let Input::Rewrite { original, .. } = app.input.clone() else { panic!("editor not open") };
    // Home of the first line: Ctrl-Home is not bound, so Up until the top, then Home.
    for _ in 0..original.lines().count() + 40 {
        key(&mut app, KeyCode::Up);
    }
    key(&mut app, KeyCode::Home);
    press(&mut app, "Hallo 👩‍⚕️! ");
    key(&mut app, KeyCode::Left);
    key(&mut app, KeyCode::Left);
    key(&mut app, KeyCode::Backspace); // the whole emoji, not one of its four code points
    key(&mut app, KeyCode::Esc);
    assert!(matches!(app.input, Input::Rewrite { .. }), "one Esc with changes keeps the editor");
    assert!(app.message.contains("Esc again"), "{}", app.message);
    let Some(field) = app.input.field() else { panic!("editor closed") };
    assert_eq!(field.text(), format!("Hallo ! {original}"));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.input, Input::None, "the second Esc drops it");
    assert!(app.compare.as_ref().unwrap().responses.iter().all(|r| r.origin != "human"), "nothing saved");
}

#[test]
fn external_editor_is_requested_as_an_effect() {
    let mut app = app();
    app.use_external_editor = true;
    open(&mut app, "pair-ins-de-01");
    let Some(Effect::EditExternally { text, .. }) = press(&mut app, "e") else { panic!("no effect") };
    assert!(!text.is_empty());
}

#[test]
fn restart_returns_to_the_prompt_the_annotator_was_on() {
    let store = seeded_store();
    let mut app = App::new(store, "amira", KeyMap::default()).unwrap();
    open(&mut app, "pair-bank-zh-02");
    let prompt_id = app.compare.as_ref().unwrap().prompt_id;
    let store = app.store;
    let again = App::new(store, "amira", KeyMap::default()).unwrap();
    assert_eq!(again.compare.as_ref().map(|c| c.prompt_id), Some(prompt_id));
}

#[test]
fn sides_are_shuffled_per_annotator_but_stable() {
    let app = app();
    let flips = (1..200).filter(|&i| app.left_right(i, i + 1000) != (i, i + 1000)).count();
    assert!((60..140).contains(&flips), "{flips} of 199 flipped");
    assert_eq!(app.left_right(5, 9), app.left_right(9, 5));
}

#[test]
fn snapshot_compare_in_three_scripts() {
    for (id, name) in [("pair-bank-zh-01", "chinese"), ("pair-health-ar-01", "arabic"), ("pair-bank-en-01", "emoji")] {
        let mut app = app();
        open(&mut app, id);
        press(&mut app, "f");
        insta::assert_snapshot!(format!("compare_{name}_80x24"), screen(&app, 80, 24));
        insta::assert_snapshot!(format!("compare_{name}_160x48"), screen(&app, 160, 48));
    }
}
