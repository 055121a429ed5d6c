//! The QA screen: the statistics computed on a thread, shown, and computed again when the
//! store changes.

use std::time::{Duration, Instant};

use crossterm::event::KeyCode;

use crate::tui::app::App;
use crate::tui::screens::Screen;
use crate::tui::testing::*;

/// The QA screen on top, once its thread has sent the text.
fn qa_text(app: &mut App) -> String {
    let started = Instant::now();
    loop {
        app.poll_job();
        let Some(Screen::Qa(qa)) = app.screens.last() else { panic!("QA screen open") };
        if let (false, Some(text)) = (qa.computing(), &qa.text) {
            return text.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the statistics never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn computing(app: &App) -> bool {
    let Some(Screen::Qa(qa)) = app.screens.last() else { panic!("QA screen open") };
    qa.computing()
}

#[test]
fn the_qa_screen_shows_agreement_and_annotators() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = file_app(&seeded_file(dir.path(), "qa.db"), "amira");
    open(&mut app, "pair-bank-en-01");
    press(&mut app, "1");
    key(&mut app, KeyCode::Esc);
    press(&mut app, "Q");
    let text = qa_text(&mut app);
    assert!(text.contains("Krippendorff") && text.contains("amira"), "{text}");
    insta::assert_snapshot!("qa_80x24", screen(&app, 80, 24));
    press(&mut app, "Q");
    assert!(app.screens.is_empty());
}

#[test]
fn qa_statistics_are_computed_off_the_ui_thread_and_again_when_the_store_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = seeded_file(dir.path(), "qa.db");
    let mut app = file_app(&path, "amira");
    press(&mut app, "Q");
    // The key returns before the statistics exist: the screen says so.
    assert!(computing(&app));
    assert!(screen(&app, 80, 24).contains("computing…"));
    let text = qa_text(&mut app);
    assert!(text.contains("Krippendorff") && !text.contains("jonas"), "{text}");
    // Drawing computes nothing, and with the store unchanged nothing starts again.
    for _ in 0..20 {
        screen(&app, 80, 24);
    }
    std::thread::sleep(Duration::from_millis(600));
    assert!(!app.poll_job());
    assert!(!computing(&app));
    // Another annotator's verdict, from another connection, moves the store's data version.
    let mut jonas = file_app(&path, "jonas");
    open(&mut jonas, "pair-bank-en-01");
    press(&mut jonas, "1");
    std::thread::sleep(Duration::from_millis(600));
    app.poll_job();
    assert!(computing(&app), "the store changed: computed again");
    assert!(screen(&app, 80, 24).contains("recomputing…"), "the old text stays meanwhile");
    let text = qa_text(&mut app);
    assert!(text.contains("jonas"), "{text}");
}
