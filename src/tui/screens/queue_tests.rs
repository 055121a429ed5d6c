//! The queue screen's tests: filters and search, a typed prompt, assignments first, a
//! refresh that shows another annotator's work, generation on a thread, and its snapshot.

use crossterm::event::KeyCode;

use crate::store::Store;
use crate::tui::app::App;
use crate::tui::keymap::KeyMap;
use crate::tui::testing::*;

#[test]
fn filters_and_search_narrow_the_queue() {
    let mut app = app();
    assert_eq!(app.queue.visible.len(), 105);
    press(&mut app, "L");
    assert_eq!(app.queue.filter.language.as_deref(), Some("ar"));
    assert_eq!(app.queue.visible.len(), 15);
    press(&mut app, "S");
    assert_eq!(app.queue.visible.len(), 6, "arabic prompts with a pair open for me");
    press(&mut app, "SSSL");
    press(&mut app, "LLLLLL");
    assert_eq!(app.queue.filter.language, None);
    press(&mut app, "/");
    press(&mut app, "SePa-ÜBERWEISUNG");
    assert!(app.queue.visible.len() < 105 && !app.queue.visible.is_empty(), "{}", app.queue.visible.len());
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.queue.visible.len(), 105);
}

#[test]
fn a_typed_prompt_is_added_with_its_language() {
    let mut app = app();
    press(&mut app, "a");
    press(&mut app, "Wie kann ich mein Konto für ein Kind eröffnen und welche Unterlagen brauche ich?");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.queue.items.len(), 106);
    let item = app.queue.selected_item().unwrap();
    assert_eq!(item.row.language, "de");
    assert!(app.message.contains("added"), "{}", app.message);
    let whole = crate::tui::queue::load(&app.store, app.annotator_id).unwrap();
    let facts: Vec<String> = whole.iter().map(|i| format!("{:?}", i)).collect();
    assert_eq!(queue_facts(&app), facts, "the one prompt read in sits where a whole re-read puts it");
}

#[test]
fn a_rated_single_answer_is_done_in_the_status_the_filter_and_the_counts() {
    use crate::tui::queue::{Status, reload_item};
    let mut app = app();
    let index = app.queue.items.iter().position(|i| i.candidates.is_empty()).expect("a sample prompt without answers");
    let prompt = app.queue.items[index].row.prompt_id;
    let model = app.store.register_model("0f", "m", "m.gguf", "gguf", "llama", "Q4_1").unwrap();
    app.store.add_generated(prompt, "p", "Call the card line to block the card.", model, "{}").unwrap().unwrap();
    reload_item(&app.store, app.annotator_id, &mut app.queue.items[index]).unwrap();
    assert_eq!(app.queue.items[index].status, Status::NeedsCandidates, "one answer, not rated yet");
    let done = |app: &App| app.queue.items.iter().filter(|i| i.status == Status::Done).count();
    let done_before = done(&app);

    app.queue.select(prompt);
    key(&mut app, KeyCode::Enter); // one candidate: the single-answer review
    press(&mut app, "+");
    let item = &app.queue.items[index];
    assert_eq!((item.status, item.my_ratings, item.all_ratings), (Status::Done, 1, 1));
    assert_eq!(done(&app), done_before + 1);
    key(&mut app, KeyCode::Esc);
    press(&mut app, "SSS");
    assert_eq!(app.queue.filter.status, crate::tui::queue::StatusFilter::Done);
    assert!(app.queue.position_of(prompt).is_some(), "the done filter shows it");
    let whole = crate::tui::queue::load(&app.store, app.annotator_id).unwrap();
    assert_eq!(format!("{:?}", whole[index]), format!("{:?}", app.queue.items[index]), "a whole re-read agrees");
    assert!(screen(&app, 160, 48).contains("   1     1/1  "), "{}", screen(&app, 160, 48));

    press(&mut app, "S"); // all again
    assert_eq!(app.queue.filter.status, crate::tui::queue::StatusFilter::All);
    app.queue.select(prompt);
    key(&mut app, KeyCode::Enter);
    press(&mut app, "u");
    assert_eq!(app.queue.items[index].status, Status::NeedsCandidates, "undo takes the rating back");
}

#[test]
fn snapshot_queue() {
    let app = app();
    insta::assert_snapshot!("queue_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("queue_160x48", screen(&app, 160, 48));
}

#[test]
fn two_annotators_on_one_file_see_each_other_after_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("team.db");
    {
        let mut store = Store::open(&path, crate::store::OpenMode::CreateIfMissing).unwrap();
        store.load_guidelines(&crate::guidelines::embedded()).unwrap();
        store.import_records(&crate::samples::records()).unwrap();
    }
    let open_app = |name: &str| {
        let store = Store::open(&path, crate::store::OpenMode::MustExist).unwrap();
        App::new(store, name, KeyMap::default()).unwrap()
    };
    let mut amira = open_app("amira");
    let mut jonas = open_app("jonas");
    open(&mut amira, "pair-bank-en-01");
    open(&mut jonas, "pair-bank-en-02");
    press(&mut amira, "1");
    press(&mut jonas, "2");
    key(&mut amira, KeyCode::Esc);
    press(&mut amira, "R");
    assert!(amira.queue.loading.is_some(), "the re-read runs on a thread");
    assert_eq!(amira.queue.visible.len(), 105, "the rows stay on screen meanwhile");
    wait_for_queue(&mut amira);
    assert_eq!(amira.message, "refreshed: 105 prompts");
    let second = amira.queue.items.iter().find(|i| i.row.external_id.as_deref() == Some("pair-bank-en-02")).unwrap();
    assert_eq!(second.all_judgments, 2, "import + jonas");
    assert_eq!(amira.store.active_judgments().unwrap().len(), 44);
}

#[test]
fn g_generates_on_a_background_thread_and_the_queue_updates() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, _) = crate::model::testing::write_tiny_models(dir.path()).unwrap();
    let path = dir.path().join("gen.db");
    {
        let mut store = Store::open(&path, crate::store::OpenMode::CreateIfMissing).unwrap();
        store.load_guidelines(&crate::guidelines::embedded()).unwrap();
        store.import_records(&crate::samples::records()).unwrap();
    }
    let store = Store::open(&path, crate::store::OpenMode::MustExist).unwrap();
    let mut app = App::new(store, "amira", KeyMap::default()).unwrap();
    app.model = Some(gguf);
    // A short prompt of our own: the tiny model's context is only 256 tokens.
    press(&mut app, "a");
    press(&mut app, "Wie eröffne ich ein Konto?");
    key(&mut app, KeyCode::Enter);
    let index = app.queue.selected;
    assert!(app.queue.items[app.queue.visible[index]].candidates.is_empty());
    press(&mut app, "g");
    assert!(app.job.is_some());
    press(&mut app, "?"); // keys still work while it runs
    press(&mut app, "?");
    let start = std::time::Instant::now();
    while app.job.is_some() {
        app.poll_job();
        assert!(start.elapsed().as_secs() < 120, "generation did not finish");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(app.message.starts_with("generated"), "{}", app.message);
    let item = &app.queue.items[app.queue.visible[index]];
    assert!(!item.candidates.is_empty(), "candidates stored and the queue row refreshed: {}", app.message);
    let models = app.store.models().unwrap();
    assert_eq!(models.len(), 1);
}

#[test]
fn assigned_prompts_come_first() {
    let mut store = seeded_store();
    let me = store.annotator_id("amira", "annotator").unwrap();
    store.set_assignments(&[(me, vec![50, 7])]).unwrap();
    let app = App::new(store, "amira", KeyMap::default()).unwrap();
    let first: Vec<i64> = app.queue.visible.iter().take(3).map(|&i| app.queue.items[i].row.prompt_id).collect();
    assert_eq!(first, vec![50, 7, 1]);
}
