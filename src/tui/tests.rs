//! State tests of the key handling and snapshot tests of every screen, on an in-memory
//! store seeded with the sample data.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::app::{App, Effect, Input};
use super::draw;
use super::keymap::KeyMap;
use crate::domain::Outcome;
use crate::store::Store;

fn seeded_store() -> Store {
    let mut store = Store::open_in_memory().unwrap();
    store.load_guidelines(&crate::guidelines::embedded()).unwrap();
    store.import_records(&crate::samples::records()).unwrap();
    store
}

fn app() -> App {
    let mut app = App::new(seeded_store(), "amira", KeyMap::default()).unwrap();
    app.use_external_editor = false;
    app
}

fn press(app: &mut App, keys: &str) -> Option<Effect> {
    let mut effect = None;
    for c in keys.chars() {
        effect = app.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }
    effect
}

fn key(app: &mut App, code: KeyCode) {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn screen(app: &App, width: u16, height: u16) -> String {
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
            skip = super::text::width(symbol).saturating_sub(1);
            line.push_str(symbol);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Opens the first prompt whose external id is `id`.
fn open(app: &mut App, id: &str) {
    let pos = app.visible.iter().position(|&i| app.items[i].row.external_id.as_deref() == Some(id)).unwrap();
    app.selected = pos;
    key(app, KeyCode::Enter);
    assert!(app.compare.is_some());
}

#[test]
fn a_verdict_is_committed_with_its_reasons_and_the_screen_advances() {
    let mut app = app();
    open(&mut app, "pair-bank-en-01");
    let (left, right) = app.compare.as_ref().unwrap().pair.unwrap();
    press(&mut app, "xc");
    press(&mut app, "x"); // toggled off again
    press(&mut app, "1");
    let mine = app.store.my_judgments(app.annotator_id, app.items[app.visible[0]].row.prompt_id).unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].reasons, vec!["noncompliance"]);
    let chosen = if mine[0].outcome == Outcome::A { mine[0].response_a } else { mine[0].response_b };
    assert_eq!(chosen, left);
    assert_ne!(chosen, right);
    assert_eq!(app.selected, 1, "moved on to the next prompt");
    assert_eq!(app.seconds_today.len(), 1);
}

#[test]
fn undo_withdraws_the_last_verdict_and_returns_to_it() {
    let mut app = app();
    open(&mut app, "pair-bank-en-01");
    press(&mut app, "o2");
    assert_eq!(app.selected, 1);
    press(&mut app, "u");
    assert_eq!(app.selected, 0);
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
    assert_eq!(app.selected, 1);
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
    let prompt = app.items.iter().find(|i| i.row.external_id.as_deref() == Some("pair-health-ja-01")).unwrap();
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
fn external_editor_is_requested_as_an_effect() {
    let mut app = app();
    app.use_external_editor = true;
    open(&mut app, "pair-ins-de-01");
    let Some(Effect::EditExternally { text, .. }) = press(&mut app, "e") else { panic!("no effect") };
    assert!(!text.is_empty());
}

#[test]
fn filters_and_search_narrow_the_queue() {
    let mut app = app();
    assert_eq!(app.visible.len(), 105);
    press(&mut app, "L");
    assert_eq!(app.filter.language.as_deref(), Some("ar"));
    assert_eq!(app.visible.len(), 15);
    press(&mut app, "S");
    assert_eq!(app.visible.len(), 6, "arabic prompts with a pair open for me");
    press(&mut app, "SSSL");
    press(&mut app, "LLLLLL");
    assert_eq!(app.filter.language, None);
    press(&mut app, "/");
    press(&mut app, "SePa-ÜBERWEISUNG");
    assert!(app.visible.len() < 105 && !app.visible.is_empty(), "{}", app.visible.len());
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.visible.len(), 105);
}

#[test]
fn a_typed_prompt_is_added_with_its_language() {
    let mut app = app();
    press(&mut app, "a");
    press(&mut app, "Wie kann ich mein Konto für ein Kind eröffnen und welche Unterlagen brauche ich?");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.items.len(), 106);
    let item = app.selected_item().unwrap();
    assert_eq!(item.row.language, "de");
    assert!(app.message.contains("added"), "{}", app.message);
    let whole = super::queue::load(&app.store, app.annotator_id).unwrap();
    let facts: Vec<String> = whole.iter().map(|i| format!("{:?}", i)).collect();
    assert_eq!(queue_facts(&app), facts, "the one prompt read in sits where a whole re-read puts it");
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
fn snapshot_queue() {
    let app = app();
    insta::assert_snapshot!("queue_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("queue_160x48", screen(&app, 160, 48));
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

fn app_with_pair(id: &str) -> App {
    let mut app = app();
    open(&mut app, id);
    app
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
    assert!(amira.loading.is_some(), "the re-read runs on a thread");
    assert_eq!(amira.visible.len(), 105, "the rows stay on screen meanwhile");
    wait_for_queue(&mut amira);
    assert_eq!(amira.message, "refreshed: 105 prompts");
    let second = amira.items.iter().find(|i| i.row.external_id.as_deref() == Some("pair-bank-en-02")).unwrap();
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
    let index = app.selected;
    assert!(app.items[app.visible[index]].candidates.is_empty());
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
    let item = &app.items[app.visible[index]];
    assert!(!item.candidates.is_empty(), "candidates stored and the queue row refreshed: {}", app.message);
    let models = app.store.models().unwrap();
    assert_eq!(models.len(), 1);
}

#[test]
fn the_qa_screen_shows_agreement_and_annotators() {
    let mut app = app();
    open(&mut app, "pair-bank-en-01");
    press(&mut app, "1");
    key(&mut app, KeyCode::Esc);
    press(&mut app, "Q");
    let Some(super::screens::Screen::Qa(qa)) = app.screens.last() else { panic!("QA screen open") };
    let text = qa.text.clone();
    assert!(text.contains("Krippendorff") && text.contains("amira"), "{text}");
    insta::assert_snapshot!("qa_80x24", screen(&app, 80, 24));
    press(&mut app, "Q");
    assert!(app.screens.is_empty());
}

#[test]
fn assigned_prompts_come_first() {
    let mut store = seeded_store();
    let me = store.annotator_id("amira", "annotator").unwrap();
    store.set_assignments(&[(me, vec![50, 7])]).unwrap();
    let app = App::new(store, "amira", KeyMap::default()).unwrap();
    let first: Vec<i64> = app.visible.iter().take(3).map(|&i| app.items[i].row.prompt_id).collect();
    assert_eq!(first, vec![50, 7, 1]);
}

/// A run with recorded metrics: a loss falling from ln 2, margins and accuracy rising,
/// evaluation every 10 steps, and sample answers at steps 0 and 20.
fn app_with_recorded_run() -> App {
    let mut app = app();
    let config = serde_json::to_string(&crate::jobs::train::TrainConfig {
        out: Some("/tmp/verdict-test-run".into()),
        max_steps: Some(40),
        ..Default::default()
    })
    .unwrap();
    let run = app.store.create_run("run-demo", "dpo", &config, None).unwrap();
    app.store.set_run_plan(run, 40, 36, 6, 1).unwrap();
    let set = crate::store::RunSet { method: "dpo".into(), hash: "3f9a0c1d".repeat(8), counts: "[]".into() };
    app.store.save_run_set(run, &set).unwrap();
    for step in 1..=24i64 {
        let t = step as f64;
        let margin = 0.08 * t;
        let mut metrics = vec![
            ("loss".to_string(), std::f64::consts::LN_2 * (-t / 18.0).exp()),
            ("rewards/margins".to_string(), margin),
            ("rewards/chosen".to_string(), 0.03 * t),
            ("rewards/rejected".to_string(), -0.05 * t),
            ("rewards/accuracies".to_string(), (t / 16.0).min(1.0)),
            ("tokens_per_second".to_string(), 412.0),
            ("epoch".to_string(), t / 36.0),
            ("step_seconds".to_string(), 2.5),
        ];
        if step % 10 == 0 {
            metrics.push(("eval_loss".to_string(), std::f64::consts::LN_2 * (-t / 25.0).exp()));
            metrics.push(("eval_rewards/margins".to_string(), 0.05 * t));
            metrics.push(("eval_rewards/accuracies".to_string(), (t / 25.0).min(1.0)));
        }
        app.store.add_metrics(run, step, &metrics).unwrap();
    }
    let prompt_id = app.items[app.visible[0]].row.prompt_id;
    app.store.add_run_sample(run, 0, prompt_id, "Please call us. We can maybe help.", "{}").unwrap();
    app.store.add_run_sample(run, 20, prompt_id, "Please block the card in the app first. 🔒", "{}").unwrap();
    app
}

#[test]
fn snapshot_runs_list_and_live_chart() {
    let mut app = app_with_recorded_run();
    press(&mut app, "T");
    assert_eq!(app.mode(), super::keymap::Mode::Runs);
    insta::assert_snapshot!("runs_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("runs_160x48", screen(&app, 160, 48));
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.mode(), super::keymap::Mode::Run);
    insta::assert_snapshot!("run_chart_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("run_chart_160x48", screen(&app, 160, 48));
    // The answers during training: the step-20 answer with its changes since step 0.
    press(&mut app, "a");
    assert_eq!(app.mode(), super::keymap::Mode::Samples);
    insta::assert_snapshot!("samples_80x24", screen(&app, 80, 24));
    key(&mut app, KeyCode::Left);
    insta::assert_snapshot!("samples_step0_160x48", screen(&app, 160, 48));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.mode(), super::keymap::Mode::Run);
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.mode(), super::keymap::Mode::Queue);
}

#[test]
fn the_run_form_explains_a_bad_value_and_does_not_start() {
    let mut app = app();
    press(&mut app, "Tn");
    assert_eq!(app.mode(), super::keymap::Mode::Form);
    insta::assert_snapshot!("train_form_160x48", screen(&app, 160, 48));
    // Beta is the third field: type a word into it.
    press(&mut app, "jj");
    key(&mut app, KeyCode::Enter);
    for _ in 0..5 {
        key(&mut app, KeyCode::Backspace);
    }
    press(&mut app, "big");
    key(&mut app, KeyCode::Enter);
    insta::assert_snapshot!("train_form_bad_beta_80x24", screen(&app, 80, 24));
    press(&mut app, "S");
    assert!(app.message.contains("Beta: must be a number > 0, not big"), "{}", app.message);
    assert!(app.training().is_none(), "nothing started");
    // A choice cycles with the arrows; the form builds the config it shows.
    press(&mut app, "k");
    key(&mut app, KeyCode::Right);
    let super::review::View::Form(form) = &app.review.as_ref().unwrap().view else { panic!("form") };
    assert_eq!(form.fields[1].text(), "ipo");
    assert!(form.config().is_err());
    // Label smoothing is checked by the run options' table, as the CLI and a run config are.
    let super::review::View::Form(form) = &mut app.review.as_mut().unwrap().view else { panic!("form") };
    let field = form.fields.iter_mut().find(|f| f.key == "label_smoothing").expect("label smoothing field");
    field.value = super::form::Value::Text("0.5".into());
    let why = form.error("label_smoothing").expect("0.5 is refused");
    assert!(why.contains("must be in [0, 0.5), not 0.5"), "{why}");
}

/// A finished run with base and tuned answers to the first test prompts: different answers
/// except for the third prompt.
fn app_with_answers() -> App {
    let mut app = app();
    let store = &mut app.store;
    let base = store.register_model("sha-base", "SmolLM2 base", "/nowhere/base.gguf", "gguf", "llama", "Q4_1").unwrap();
    let tuned = store.register_model("sha-tuned", "SmolLM2 (run 1)", "/nowhere/run1", "hf", "llama", "F32").unwrap();
    let run = store.create_run("run-1", "dpo", "{}", Some(base)).unwrap();
    store.set_run_output(run, tuned).unwrap();
    store.set_run_status(run, "finished", None).unwrap();
    let prompts = crate::jobs::answers::evaluation_prompts(store, Some(super::judge::REVIEW_PROMPTS)).unwrap();
    for (i, &prompt_id) in prompts.iter().take(4).enumerate() {
        let seed = crate::jobs::answers::DEFAULT_SEED;
        let old = format!("Please contact support. We will maybe look at it {i}.");
        let new = if i == 2 {
            old.clone()
        } else {
            format!("Please block the card in the app first, then call us {i}. 🔒")
        };
        store.add_model_answer(base, prompt_id, seed, &old, "{}").unwrap();
        store.add_model_answer(tuned, prompt_id, seed, &new, "{}").unwrap();
    }
    app
}

/// The open review view's background worker is dropped: the test models have no files, and
/// its progress line would make the snapshot depend on timing.
fn without_worker(app: &mut App) {
    match app.screens.last_mut() {
        Some(super::screens::Screen::Diff(d)) => {
            d.stop_worker();
            d.worker = None
        }
        Some(super::screens::Screen::Blind(b)) => {
            b.stop_worker();
            b.worker = None
        }
        _ => {}
    }
}

#[test]
fn snapshot_diff_and_blind_evaluation() {
    let mut app = app_with_answers();
    press(&mut app, "Td");
    assert_eq!(app.mode(), super::keymap::Mode::Diff);
    without_worker(&mut app);
    insta::assert_snapshot!("diff_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("diff_160x48", screen(&app, 160, 48));
    key(&mut app, KeyCode::Esc);
    press(&mut app, "e");
    assert_eq!(app.mode(), super::keymap::Mode::Blind);
    without_worker(&mut app);
    {
        let Some(super::screens::Screen::Blind(blind)) = app.screens.last() else { panic!("blind") };
        assert_eq!((blind.todo.len(), blind.identical), (3, 1), "identical answers are not judged");
    }
    insta::assert_snapshot!("blind_80x24", screen(&app, 80, 24));
    // Vote for the left answer twice and call the third a tie; what is stored is said from
    // the tuned model's side, whichever side it was shown on.
    let mut expected = Vec::new();
    for k in ["1", "1", "t"] {
        let Some(super::screens::Screen::Blind(blind)) = app.screens.last() else { panic!("blind") };
        let a_left = blind.current.as_ref().unwrap().a_on_left;
        expected.push(match (k, a_left) {
            ("t", _) => "tie",
            (_, true) => "a",
            (_, false) => "b",
        });
        press(&mut app, k);
    }
    let votes = app.store.eval_votes(None).unwrap();
    assert_eq!(votes.iter().map(|v| v.outcome.as_str()).collect::<Vec<_>>(), expected);
    insta::assert_snapshot!("blind_done_160x48", screen(&app, 160, 48));
    let stored = app.store.evals(Some(1)).unwrap();
    assert_eq!(stored.len(), 1, "one summary per run and pair of models, replaced as votes come");
    let wins = expected.iter().filter(|&&o| o == "a").count() as f64;
    assert!((stored[0].win_rate - (wins + 0.5) / 3.0).abs() < 1e-12);
}

#[test]
fn any_two_models_can_be_diffed_by_marking_a_run() {
    let mut app = app_with_answers();
    let store = &mut app.store;
    let base = store.models().unwrap()[0].id;
    let other = store.register_model("sha-other", "other", "/nowhere/other", "hf", "llama", "F32").unwrap();
    let run2 = store.create_run("run-2", "dpo", "{}", Some(base)).unwrap();
    store.set_run_output(run2, other).unwrap();
    store.set_run_status(run2, "finished", None).unwrap();
    press(&mut app, "T");
    press(&mut app, "m"); // run 1's tuned model
    press(&mut app, "j");
    press(&mut app, "d"); // against run 2's
    without_worker(&mut app);
    let Some(super::screens::Screen::Diff(diff)) = app.screens.last() else { panic!("diff") };
    assert_eq!((diff.run_id, diff.base, diff.tuned), (None, 2, other));
}

/// The sample data in a file (the background load opens a second connection), opened with
/// a first page of 3 rows so that the rest of its 106 prompts loads on a thread.
fn loading_app(dir: &std::path::Path) -> App {
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

fn wait_for_queue(app: &mut App) {
    let started = std::time::Instant::now();
    while app.loading.is_some() {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the queue never arrived");
        app.poll_job();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// What the queue shows of every prompt, to compare two loads.
fn queue_facts(app: &App) -> Vec<String> {
    app.items.iter().map(|i| format!("{:?}", i)).collect()
}

#[test]
fn a_large_queue_draws_its_first_rows_and_reads_the_rest_on_a_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = loading_app(dir.path());
    assert!(app.loading.is_some());
    assert_eq!(app.items.len(), 105, "every prompt is there at once, as a placeholder");
    let placeholders = app.items.iter().filter(|i| i.status == super::queue::Status::Loading).count();
    assert_eq!(placeholders, 102);
    insta::assert_snapshot!("queue_loading_100x12", screen(&app, 100, 12));
    wait_for_queue(&mut app);
    let store = Store::open(&dir.path().join("queue.db"), crate::store::OpenMode::MustExist).unwrap();
    let whole = App::open(store, "amira", KeyMap::default(), 1000).unwrap();
    assert!(whole.loading.is_none());
    assert_eq!(queue_facts(&app), queue_facts(&whole));
    assert!(!screen(&app, 100, 12).contains("loading"));
}

#[test]
fn a_filter_pressed_while_loading_waits_and_then_applies_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = loading_app(dir.path());
    press(&mut app, "S");
    press(&mut app, "j");
    assert_eq!(app.visible.len(), 105, "not applied to placeholders");
    assert_eq!(app.selected, 0, "the move waits behind the filter");
    assert!(screen(&app, 140, 12).contains("2 keys wait for it"));
    wait_for_queue(&mut app);
    let expected = app.items.iter().filter(|i| i.status == super::queue::Status::Open).count();
    assert_eq!(app.filter.status, super::queue::StatusFilter::Unlabeled);
    assert_eq!(app.visible.len(), expected);
    assert!(expected < 105);
    assert_eq!(app.selected, 1);
}

#[test]
fn a_verdict_pressed_while_loading_is_recorded_once_the_queue_is_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = loading_app(dir.path());
    let first = app.visible.iter().position(|&i| app.items[i].status == super::queue::Status::Open).unwrap();
    app.selected = first;
    key(&mut app, KeyCode::Enter);
    let prompt_id = app.compare.as_ref().unwrap().prompt_id;
    assert!(app.compare.as_ref().unwrap().pair.is_some(), "opening does not wait");
    press(&mut app, "1");
    assert!(app.store.my_judgments(app.annotator_id, prompt_id).unwrap().is_empty());
    wait_for_queue(&mut app);
    assert_eq!(app.store.my_judgments(app.annotator_id, prompt_id).unwrap().len(), 1);
    let item = app.items.iter().find(|i| i.row.prompt_id == prompt_id).unwrap();
    assert_eq!(item.mine.len(), 1);
    assert_eq!(app.seconds_today.len(), 1, "today's count includes it");
}

#[test]
fn a_prompt_beyond_the_first_rows_is_read_when_opened_and_kept_when_the_queue_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = loading_app(dir.path());
    let whole = super::queue::load(&app.store, app.annotator_id).unwrap();
    let target = (3..whole.len()).find(|&p| whole[p].status == super::queue::Status::Open).unwrap();
    press(&mut app, &"j".repeat(target));
    assert_eq!(app.selected, target, "moving does not wait");
    let index = app.visible[target];
    assert_eq!(app.items[index].status, super::queue::Status::Loading);
    key(&mut app, KeyCode::Enter);
    assert_ne!(app.items[index].status, super::queue::Status::Loading);
    let prompt_id = app.items[index].row.prompt_id;
    assert_eq!(app.compare.as_ref().unwrap().prompt_id, prompt_id);
    // A rewrite does not wait; the thread has long finished, so its copy of this prompt is
    // older than the rewrite and is read again on arrival.
    std::thread::sleep(std::time::Duration::from_millis(300));
    press(&mut app, "e");
    press(&mut app, " (edited)");
    app.handle_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL));
    let candidates = app.items[index].candidates.clone();
    wait_for_queue(&mut app);
    let item = &app.items[app.visible[app.selected]];
    assert_eq!(item.row.prompt_id, prompt_id, "still on the prompt that was open");
    assert_eq!(item.candidates, candidates, "the rewrite is among the candidates");
    assert_eq!(item.mine.len(), 1, "and its judgment counts");
}

#[test]
fn restart_on_a_loading_queue_returns_to_the_same_prompt_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = loading_app(dir.path());
    wait_for_queue(&mut app);
    app.selected = 50;
    key(&mut app, KeyCode::Enter);
    let prompt_id = app.compare.as_ref().unwrap().prompt_id;
    drop(app);
    let mut again = loading_app(dir.path());
    assert!(again.loading.is_some());
    assert_eq!(again.compare.as_ref().map(|c| c.prompt_id), Some(prompt_id));
    assert_eq!(again.selected, 50);
    key(&mut again, KeyCode::Esc);
    assert!(screen(&again, 100, 12).contains("51/105"));
    wait_for_queue(&mut again);
    assert_eq!(again.selected, 50);
    assert_eq!(again.selected_item().unwrap().row.prompt_id, prompt_id);
}

#[test]
fn the_help_qa_and_typing_keys_come_from_the_key_map() {
    use super::screens::Screen;
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

#[test]
fn the_runs_screen_rereads_when_the_store_changes_not_on_a_timer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    {
        let mut store = Store::open(&path, crate::store::OpenMode::CreateIfMissing).unwrap();
        store.load_guidelines(&crate::guidelines::embedded()).unwrap();
        store.import_records(&crate::samples::records()).unwrap();
    }
    let store = Store::open(&path, crate::store::OpenMode::MustExist).unwrap();
    let mut app = App::new(store, "amira", KeyMap::default()).unwrap();
    press(&mut app, "T");
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(!app.poll_job(), "nothing changed: nothing is re-read or redrawn");
    // A run started by another process shows up.
    let other = Store::open(&path, crate::store::OpenMode::MustExist).unwrap();
    let run = other.create_run("run-elsewhere", "dpo", "{}", None).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(app.poll_job());
    let runs: Vec<i64> = app.review.as_ref().unwrap().runs.iter().map(|r| r.id).collect();
    assert_eq!(runs, vec![run]);
}
