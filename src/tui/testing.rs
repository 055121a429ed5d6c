//! What the TUI's tests share: an app on an in-memory store seeded with the sample data (or
//! on a file, for the tests that need a second connection), keys pressed as a user would,
//! and the screen drawn into a plain-text grid for snapshots.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::app::{App, Effect};
use super::draw;
use super::keymap::KeyMap;
use crate::store::Store;

pub fn seeded_store() -> Store {
    let mut store = Store::open_in_memory().unwrap();
    store.load_guidelines(&crate::guidelines::embedded()).unwrap();
    store.import_records(&crate::samples::records()).unwrap();
    store
}

pub fn app() -> App {
    let mut app = App::new(seeded_store(), "amira", KeyMap::default()).unwrap();
    app.use_external_editor = false;
    app
}

pub fn press(app: &mut App, keys: &str) -> Option<Effect> {
    let mut effect = None;
    for c in keys.chars() {
        effect = app.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }
    effect
}

pub fn key(app: &mut App, code: KeyCode) {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
}

pub fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| draw::draw(f, app)).unwrap();
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..height {
        let mut line = String::new();
        let mut skip = 0;
        for x in 0..width {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            let symbol = buffer[(x, y)].symbol();
            skip = crate::tui::text::width(symbol).saturating_sub(1);
            line.push_str(symbol);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Opens the first prompt whose external id is `id`.
pub fn open(app: &mut App, id: &str) {
    let pos =
        app.queue.visible.iter().position(|&i| app.queue.items[i].row.external_id.as_deref() == Some(id)).unwrap();
    app.queue.selected = pos;
    key(app, KeyCode::Enter);
    assert!(app.compare.is_some());
}

pub fn app_with_pair(id: &str) -> App {
    let mut app = app();
    open(&mut app, id);
    app
}

/// The sample data in a file (the background load opens a second connection), opened with
/// a first page of 3 rows so that the rest of its 106 prompts loads on a thread.
pub fn loading_app(dir: &std::path::Path) -> App {
    let path = dir.join("queue.db");
    if !path.exists() {
        let mut store = Store::open(&path, crate::store::OpenMode::CreateIfMissing).unwrap();
        store.load_guidelines(&crate::guidelines::embedded()).unwrap();
        store.import_records(&crate::samples::records()).unwrap();
    }
    let store = Store::open(&path, crate::store::OpenMode::MustExist).unwrap();
    let mut app = App::open(store, "amira", KeyMap::default(), 3).unwrap();
    app.use_external_editor = false;
    app
}

pub fn wait_for_queue(app: &mut App) {
    let started = std::time::Instant::now();
    while app.queue.loading.is_some() {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the queue never arrived");
        app.poll_job();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// What the queue shows of every prompt, to compare two loads.
pub fn queue_facts(app: &App) -> Vec<String> {
    app.queue.items.iter().map(|i| format!("{:?}", i)).collect()
}

/// The sample data in a file at `dir/name` (created once), for tests that need a second
/// connection: a thread's, or another annotator's.
pub fn seeded_file(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    if !path.exists() {
        let mut store = Store::open(&path, crate::store::OpenMode::CreateIfMissing).unwrap();
        store.load_guidelines(&crate::guidelines::embedded()).unwrap();
        store.import_records(&crate::samples::records()).unwrap();
    }
    path
}

/// An app for `annotator` on the store file at `path`.
pub fn file_app(path: &std::path::Path, annotator: &str) -> App {
    let store = Store::open(path, crate::store::OpenMode::MustExist).unwrap();
    let mut app = App::new(store, annotator, KeyMap::default()).unwrap();
    app.use_external_editor = false;
    app
}
