//! The runs, a run's curves and the new-run form: snapshots, the form's checks, and
//! re-reading when the store changes.

use std::path::Path;

use crossterm::event::KeyCode;

use crate::store::Store;
use crate::tui::app::App;
use crate::tui::keymap::KeyMap;
use crate::tui::testing::*;

/// A run with recorded metrics: a loss falling from ln 2, margins and accuracy rising,
/// evaluation every 10 steps, and sample answers at steps 0 and 20. It is live while the
/// returned lock of its folder is held (`jobs::train::settle_crashed`).
fn app_with_recorded_run() -> (App, crate::jobs::run_lock::RunLock) {
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
            ("model_tflops_per_second".to_string(), 0.0123),
            ("mfu".to_string(), 0.0785),
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
    let prompt_id = app.queue.items[app.queue.visible[0]].row.prompt_id;
    app.store.add_run_sample(run, 0, prompt_id, "Please call us. We can maybe help.", "{}").unwrap();
    app.store.add_run_sample(run, 20, prompt_id, "Please block the card in the app first. 🔒", "{}").unwrap();
    let live = crate::jobs::run_lock::RunLock::acquire(Path::new("/tmp/verdict-test-run"), Some(run)).unwrap();
    (app, live)
}

#[test]
fn snapshot_runs_list_and_live_chart() {
    let (mut app, _live) = app_with_recorded_run();
    press(&mut app, "T");
    assert_eq!(app.mode(), crate::tui::keymap::Mode::Runs);
    insta::assert_snapshot!("runs_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("runs_160x48", screen(&app, 160, 48));
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.mode(), crate::tui::keymap::Mode::Run);
    insta::assert_snapshot!("run_chart_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("run_chart_160x48", screen(&app, 160, 48));
    // The answers during training: the step-20 answer with its changes since step 0.
    press(&mut app, "a");
    assert_eq!(app.mode(), crate::tui::keymap::Mode::Samples);
    insta::assert_snapshot!("samples_80x24", screen(&app, 80, 24));
    key(&mut app, KeyCode::Left);
    insta::assert_snapshot!("samples_step0_160x48", screen(&app, 160, 48));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.mode(), crate::tui::keymap::Mode::Run);
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.mode(), crate::tui::keymap::Mode::Queue);
}

#[test]
fn the_run_form_explains_a_bad_value_and_does_not_start() {
    let mut app = app();
    press(&mut app, "Tn");
    assert_eq!(app.mode(), crate::tui::keymap::Mode::Form);
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
    let Some(crate::tui::screens::Screen::Form(form)) = app.screens.last() else { panic!("form") };
    assert_eq!(form.fields[1].text(), "ipo");
    assert!(form.config().is_err());
    // Label smoothing is checked by the run options' table, as the CLI and a run config are.
    let Some(crate::tui::screens::Screen::Form(form)) = app.screens.last_mut() else { panic!("form") };
    let field = form.fields.iter_mut().find(|f| f.key == "label_smoothing").expect("label smoothing field");
    field.value = crate::tui::form::Value::Text("0.5".into());
    let why = form.error("label_smoothing").expect("0.5 is refused");
    assert!(why.contains("must be in [0, 0.5), not 0.5"), "{why}");
}

#[test]
fn the_runs_screen_rereads_on_a_thread_when_the_store_changes_not_on_a_timer() {
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
    assert!(!app.poll_job(), "the change is seen, and the runs are read on a thread, not on this one");
    // It arrives within a few ticks.
    let started = std::time::Instant::now();
    while !app.poll_job() {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the runs were not read again");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let Some(crate::tui::screens::Screen::Runs(list)) = app.screens.last() else { panic!("the runs list") };
    let runs: Vec<i64> = list.runs.iter().map(|r| r.id).collect();
    assert_eq!(runs, vec![run]);
}

#[test]
fn a_crashed_run_is_resumed_from_the_runs_screen() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, _) = crate::model::testing::write_tiny_models(dir.path()).unwrap();
    let out = dir.path().join("run-crashed");
    std::fs::create_dir_all(&out).unwrap();
    let config = crate::jobs::train::TrainConfig {
        model: Some(gguf),
        out: Some(out.clone()),
        max_steps: Some(2),
        ..Default::default()
    };
    let mut app = file_app(&seeded_file(dir.path(), "crash.db"), "amira");
    // The process training it died: the run says `running`, and nobody holds its folder's lock.
    let run = app.store.create_run("run-crashed", "dpo", &serde_json::to_string(&config).unwrap(), None).unwrap();
    app.store.set_run_status(run, crate::domain::RunStatus::Running, None).unwrap();
    {
        // While a process holds the lock the run is not crashed: the list says `running`, and
        // nothing starts.
        let _lock = crate::jobs::run_lock::RunLock::acquire(&out, Some(run)).unwrap();
        press(&mut app, "T");
        press(&mut app, "r");
        assert!(app.training().is_none());
        assert!(app.message.contains("being trained by a process"), "{}", app.message);
        let Some(crate::tui::screens::Screen::Runs(list)) = app.screens.last() else { panic!("the runs list") };
        assert_eq!(list.runs[0].status, crate::domain::RunStatus::Running);
    }
    // Read again with the lock gone, the list says what happened and how to go on.
    key(&mut app, KeyCode::F(5));
    let Some(crate::tui::screens::Screen::Runs(list)) = app.screens.last() else { panic!("the runs list") };
    assert_eq!(list.runs[0].status, crate::domain::RunStatus::Failed);
    let error = list.runs[0].error.clone().unwrap_or_default();
    assert!(error.contains("ended without a word before its first step") && error.contains("--resume"), "{error}");
    press(&mut app, "r");
    assert!(app.training().is_some(), "the resume key starts it again: {}", app.message);
    assert_eq!(app.mode(), crate::tui::keymap::Mode::Run, "its curves show");
    // Closing the curves and the list leaves the run training on its thread; T shows it again.
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Esc);
    assert!(app.screens.is_empty());
    assert!(app.training().is_some(), "the run outlives its screens");
    assert!(app.message.contains("still training") && app.message.contains("T shows it"), "{}", app.message);
    press(&mut app, "T");
    assert_eq!(app.mode(), crate::tui::keymap::Mode::Runs);
    let started = std::time::Instant::now();
    while app.training().is_some() {
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "the run did not finish");
        app.poll_job();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let runs = app.store.runs().unwrap();
    assert_eq!(runs.len(), 1, "a resume is the same run");
    assert_eq!((runs[0].status, runs[0].last_step), (crate::domain::RunStatus::Finished, Some(2)), "{}", app.message);
    // The list on screen follows: read again on a thread once the thread's commits arrive.
    loop {
        app.poll_job();
        let Some(crate::tui::screens::Screen::Runs(list)) = app.screens.last() else { panic!("the runs list") };
        if list.runs.first().is_some_and(|r| r.status == crate::domain::RunStatus::Finished) {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "the list never showed the run finished");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
