//! Tests of a queue that opens before all of it is read: the first rows at once, keys that
//! wait for the rest in order, and a restart on a loading queue.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;
use crate::store::Store;
use crate::tui::app::App;
use crate::tui::keymap::KeyMap;
use crate::tui::testing::*;

#[test]
fn a_large_queue_draws_its_first_rows_and_reads_the_rest_on_a_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = loading_app(dir.path());
    assert!(app.queue.loading.is_some());
    assert_eq!(app.queue.items.len(), 105, "every prompt is there at once, as a placeholder");
    let placeholders = app.queue.items.iter().filter(|i| i.status == crate::tui::queue::Status::Loading).count();
    assert_eq!(placeholders, 102);
    insta::assert_snapshot!("queue_loading_100x12", screen(&app, 100, 12));
    wait_for_queue(&mut app);
    let store = Store::open(&dir.path().join("queue.db"), crate::store::OpenMode::MustExist).unwrap();
    let whole = App::open(store, "amira", KeyMap::default(), 1000).unwrap();
    assert!(whole.queue.loading.is_none());
    assert_eq!(queue_facts(&app), queue_facts(&whole));
    assert!(!screen(&app, 100, 12).contains("loading"));
}

#[test]
fn a_filter_pressed_while_loading_waits_and_then_applies_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = loading_app(dir.path());
    press(&mut app, "S");
    press(&mut app, "j");
    assert_eq!(app.queue.visible.len(), 105, "not applied to placeholders");
    assert_eq!(app.queue.selected, 0, "the move waits behind the filter");
    assert!(screen(&app, 140, 12).contains("2 keys wait for it"));
    wait_for_queue(&mut app);
    let expected = app.queue.items.iter().filter(|i| i.status == crate::tui::queue::Status::Open).count();
    assert_eq!(app.queue.filter.status, crate::tui::queue::StatusFilter::Unlabeled);
    assert_eq!(app.queue.visible.len(), expected);
    assert!(expected < 105);
    assert_eq!(app.queue.selected, 1);
}

#[test]
fn a_verdict_pressed_while_loading_is_recorded_once_the_queue_is_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = loading_app(dir.path());
    let first =
        app.queue.visible.iter().position(|&i| app.queue.items[i].status == crate::tui::queue::Status::Open).unwrap();
    app.queue.selected = first;
    key(&mut app, KeyCode::Enter);
    let prompt_id = app.compare.as_ref().unwrap().prompt_id;
    assert!(app.compare.as_ref().unwrap().pair.is_some(), "opening does not wait");
    press(&mut app, "1");
    assert!(app.store.my_judgments(app.annotator_id, prompt_id).unwrap().is_empty());
    wait_for_queue(&mut app);
    assert_eq!(app.store.my_judgments(app.annotator_id, prompt_id).unwrap().len(), 1);
    let item = app.queue.items.iter().find(|i| i.row.prompt_id == prompt_id).unwrap();
    assert_eq!(item.mine.len(), 1);
    assert_eq!(app.seconds_today.len(), 1, "today's count includes it");
}

#[test]
fn a_prompt_beyond_the_first_rows_is_read_when_opened_and_kept_when_the_queue_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = loading_app(dir.path());
    let whole = crate::tui::queue::load(&app.store, app.annotator_id).unwrap();
    let target = (3..whole.len()).find(|&p| whole[p].status == crate::tui::queue::Status::Open).unwrap();
    press(&mut app, &"j".repeat(target));
    assert_eq!(app.queue.selected, target, "moving does not wait");
    let index = app.queue.visible[target];
    assert_eq!(app.queue.items[index].status, crate::tui::queue::Status::Loading);
    key(&mut app, KeyCode::Enter);
    assert_ne!(app.queue.items[index].status, crate::tui::queue::Status::Loading);
    let prompt_id = app.queue.items[index].row.prompt_id;
    assert_eq!(app.compare.as_ref().unwrap().prompt_id, prompt_id);
    // A rewrite does not wait; the thread has long finished, so its copy of this prompt is
    // older than the rewrite and is read again on arrival.
    std::thread::sleep(std::time::Duration::from_millis(300));
    press(&mut app, "e");
    press(&mut app, " (edited)");
    app.handle_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL));
    let candidates = app.queue.items[index].candidates.clone();
    wait_for_queue(&mut app);
    let item = &app.queue.items[app.queue.visible[app.queue.selected]];
    assert_eq!(item.row.prompt_id, prompt_id, "still on the prompt that was open");
    assert_eq!(item.candidates, candidates, "the rewrite is among the candidates");
    assert_eq!(item.mine.len(), 1, "and its judgment counts");
}

#[test]
fn restart_on_a_loading_queue_returns_to_the_same_prompt_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = loading_app(dir.path());
    wait_for_queue(&mut app);
    app.queue.selected = 50;
    key(&mut app, KeyCode::Enter);
    let prompt_id = app.compare.as_ref().unwrap().prompt_id;
    drop(app);
    let mut again = loading_app(dir.path());
    assert!(again.queue.loading.is_some());
    assert_eq!(again.compare.as_ref().map(|c| c.prompt_id), Some(prompt_id));
    assert_eq!(again.queue.selected, 50);
    key(&mut again, KeyCode::Esc);
    assert!(screen(&again, 100, 12).contains("51/105"));
    wait_for_queue(&mut again);
    assert_eq!(again.queue.selected, 50);
    assert_eq!(again.queue.selected_item().unwrap().row.prompt_id, prompt_id);
}

#[test]
fn the_first_screen_covers_the_top_and_the_cursor() {
    assert_eq!(first_screen(10, 3, None), BTreeSet::from([0, 1, 2]));
    assert_eq!(first_screen(10, 4, Some(6)), BTreeSet::from([0, 1, 2, 3, 4, 5, 6, 7]));
    assert_eq!(first_screen(10, 4, Some(9)), BTreeSet::from([0, 1, 2, 3, 7, 8, 9]));
    assert_eq!(first_screen(2, 4, Some(1)), BTreeSet::from([0, 1]));
}
