//! TUI responsiveness on a large database: 100,000 prompts, 300,000 responses.
//!
//! Run with `cargo bench --bench tui`. Measures the first frame (opening the store, reading
//! the first screen's rows, drawing), the time until the whole queue has arrived from its
//! background thread (what a filter pressed at once waits for), and key-to-frame latency
//! (`App::handle_key` + a draw on a 160x48 TestBackend) over 2,000 keys; targets: first
//! frame < 300 ms, p99 < 16 ms. Then refresh (R) and adding a prompt, each timed key-to-frame.

use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use verdict::domain::{ImportRecord, Message, NewPrompt};
use verdict::store::{OpenMode, Store};
use verdict::tui::App;
use verdict::tui::keymap::KeyMap;

const PROMPTS: usize = 100_000;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.db");
    build_database(&path);

    let mut terminal = Terminal::new(TestBackend::new(160, 48)).unwrap();
    let start = Instant::now();
    let store = Store::open(&path, OpenMode::MustExist).unwrap();
    let mut app = App::new(store, "bench", KeyMap::default()).unwrap();
    terminal.draw(|f| verdict::tui::draw::draw(f, &app)).unwrap();
    let first_frame = start.elapsed();
    assert!(app.queue.loading.is_some(), "a queue this long loads in the background");
    while app.queue.loading.is_some() {
        app.poll_job();
        std::thread::sleep(Duration::from_millis(1));
    }
    let whole_queue = start.elapsed();
    assert_eq!(app.queue.items.len(), PROMPTS);

    // Where the time goes: the store reads behind the queue, timed alone.
    let probe = Store::open(&path, OpenMode::MustExist).unwrap();
    let timed = |label: &str, f: &dyn Fn() -> usize| {
        let t = Instant::now();
        let n = f();
        println!("  {label:<22} {:>7.1} ms ({n} rows)", ms(t.elapsed()));
    };
    println!("first frame reads:");
    timed("prompt ids", &|| probe.prompt_ids().unwrap().len());
    timed("first 200 queue items", &|| {
        (1..=200).map(|id| verdict::tui::queue::load_item(&probe, 1, id).unwrap().candidates.len()).sum()
    });
    println!("background reads (the whole queue):");
    timed("queue rows", &|| probe.queue_rows().unwrap().len());
    timed("response ids", &|| probe.response_ids().unwrap().len());
    timed("active judgments", &|| probe.active_judgments().unwrap().len());
    timed("assignments", &|| probe.assignments_of(1).unwrap().len());
    timed("all, with counting", &|| verdict::tui::queue::load(&probe, app.annotator_id).unwrap().len());

    let keys = ['j', 'j', 'k', '\n', '1', '2', 's', 'f', 'f', ']', '[', 'j', 'k', '\x1b', 'j'];
    let mut latencies = Vec::new();
    for i in 0..2_000 {
        let c = keys[i % keys.len()];
        let code = match c {
            '\n' => KeyCode::Enter,
            '\x1b' => KeyCode::Esc,
            c => KeyCode::Char(c),
        };
        let start = Instant::now();
        app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
        terminal.draw(|f| verdict::tui::draw::draw(f, &app)).unwrap();
        latencies.push(start.elapsed());
    }
    // Refresh (R) and adding a prompt: the key-to-frame of each (the refresh's re-read runs
    // on a thread; the new prompt is read alone), and when the refreshed queue is in.
    let key = |app: &mut App, code: KeyCode| app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
    key(&mut app, KeyCode::Esc);
    let (mut refresh_keys, mut refresh_whole, mut add_keys) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..5 {
        let start = Instant::now();
        key(&mut app, KeyCode::Char('R'));
        terminal.draw(|f| verdict::tui::draw::draw(f, &app)).unwrap();
        refresh_keys.push(start.elapsed());
        while app.queue.loading.is_some() {
            app.poll_job();
            std::thread::sleep(Duration::from_millis(1));
        }
        refresh_whole.push(start.elapsed());
        key(&mut app, KeyCode::Char('a'));
        for c in format!("Wie eröffne ich ein Konto, Variante {round}?").chars() {
            key(&mut app, KeyCode::Char(c));
        }
        let start = Instant::now();
        key(&mut app, KeyCode::Enter);
        terminal.draw(|f| verdict::tui::draw::draw(f, &app)).unwrap();
        add_keys.push(start.elapsed());
    }
    assert_eq!(app.queue.items.len(), PROMPTS + 5);
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        ms(v[v.len() / 2])
    };
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!("database: {PROMPTS} prompts, {} responses", PROMPTS * 3);
    println!("first frame      {:>8.1} ms  (target < 300 ms)", ms(first_frame));
    println!("whole queue in   {:>8.1} ms  (keys that need it wait till then)", ms(whole_queue));
    println!("key-to-frame p50 {:>8.2} ms", ms(pct(0.5)));
    println!("key-to-frame p99 {:>8.2} ms  (target < 16 ms)", ms(pct(0.99)));
    println!("key-to-frame max {:>8.2} ms", ms(pct(1.0)));
    println!("R, key-to-frame  {:>8.2} ms  (median of 5)", median(&mut refresh_keys));
    println!("R, queue in      {:>8.1} ms  (median of 5)", median(&mut refresh_whole));
    println!("add prompt, Enter{:>8.2} ms  (median of 5, key-to-frame)", median(&mut add_keys));
}

/// Each prompt gets three candidates: pairs (r1 > r2) and (r1 > r3).
fn build_database(path: &std::path::Path) {
    let mut store = Store::open(path, OpenMode::CreateIfMissing).unwrap();
    store.load_guidelines(&verdict::guidelines::embedded()).unwrap();
    let mut records = Vec::with_capacity(PROMPTS * 2);
    for i in 0..PROMPTS {
        let prompt = NewPrompt {
            external_id: Some(format!("big-{i}")),
            messages: vec![Message::new(
                "user",
                &format!("Question {i}: how do I dispute card payment {i}? 我的卡被吞了"),
            )],
            language: ["en", "zh", "ar", "de"][i % 4].to_string(),
            domain: Some(["banking", "healthcare", "insurance"][i % 3].to_string()),
            tags: vec![],
            split: None,
            source: None,
        };
        let chosen = format!("Open the app, choose payment {i} and tap Dispute. 请在应用中选择该笔付款。");
        for rejected in [format!("You cannot dispute payment {i}."), format!("Call us maybe about {i} 🙂")] {
            records.push(ImportRecord::Pair {
                prompt: prompt.clone(),
                chosen: chosen.clone(),
                rejected,
                reasons: vec![],
                note: None,
            });
        }
    }
    store.import_records(&records).unwrap();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
