//! TUI responsiveness while a run trains in the same process: the sample data, the tiny
//! model, a long run started from the new-run form, then 1,000 keys moving between the runs
//! list and the run's live curves (`poll_job` + `App::handle_key` + a 160x48 draw, as the
//! event loop does each key). Target: key-to-frame p99 < 16 ms.
//!
//! Run with `cargo bench --bench tui_training`.

use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use verdict::store::{OpenMode, Store};
use verdict::tui::App;
use verdict::tui::keymap::KeyMap;

fn key(app: &mut App, code: KeyCode) {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, _) = verdict::model::testing::write_tiny_models(&dir.path().join("tiny")).unwrap();
    let path = dir.path().join("v.db");
    let mut store = Store::open(&path, OpenMode::CreateIfMissing).unwrap();
    store.load_guidelines(&verdict::guidelines::embedded()).unwrap();
    store.import_records(&verdict::samples::records()).unwrap();
    drop(store);
    // SAFETY: set before any other thread exists.
    unsafe { std::env::set_var("VERDICT_MODEL", &gguf) };
    std::env::set_current_dir(dir.path()).unwrap();
    let store = Store::open(&path, OpenMode::MustExist).unwrap();
    let mut app = App::new(store, "bench", KeyMap::default()).unwrap();

    // The form: max steps 100000 (6th field), then start.
    typed(&mut app, "Tn");
    typed(&mut app, "jjjjj");
    key(&mut app, KeyCode::Enter);
    typed(&mut app, "100000");
    key(&mut app, KeyCode::Enter);
    typed(&mut app, "S");
    let started = Instant::now();
    while app.store.runs().unwrap().first().and_then(|r| r.last_step).unwrap_or(0) < 3 {
        app.poll_job();
        assert!(started.elapsed() < Duration::from_secs(120), "the run did not start: {}", app.message);
        std::thread::sleep(Duration::from_millis(100));
    }
    key(&mut app, KeyCode::Enter);

    let mut terminal = Terminal::new(TestBackend::new(160, 48)).unwrap();
    let keys = [KeyCode::Esc, KeyCode::Char('j'), KeyCode::Char('k'), KeyCode::Enter];
    let mut latencies = Vec::new();
    let first_step = app.store.runs().unwrap()[0].last_step.unwrap_or(0);
    for i in 0..1_000 {
        let start = Instant::now();
        app.poll_job();
        key(&mut app, keys[i % keys.len()]);
        terminal.draw(|f| verdict::tui::draw::draw(f, &app)).unwrap();
        latencies.push(start.elapsed());
        // A person types a few keys a second; the run keeps the cores busy meanwhile.
        std::thread::sleep(Duration::from_millis(20));
    }
    let last_step = app.store.runs().unwrap()[0].last_step.unwrap_or(0);
    app.stop_training(Duration::from_secs(60));
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("training steps during the measurement: {first_step} -> {last_step}");
    println!("key-to-frame p50 {:>8.2} ms", ms(pct(0.5)));
    println!("key-to-frame p99 {:>8.2} ms  (target < 16 ms)", ms(pct(0.99)));
    println!("key-to-frame max {:>8.2} ms", ms(pct(1.0)));
}
