//! The model-comparing screens: the diff of two models' answers and blind evaluation, with
//! the votes they store.

use crossterm::event::KeyCode;

use crate::tui::app::App;
use crate::tui::testing::*;

/// A finished run with base and tuned answers to the first test prompts: different answers
/// except for the third prompt.
fn app_with_answers() -> App {
    let mut app = app();
    let store = &mut app.store;
    let base = store.register_model("sha-base", "SmolLM2 base", "/nowhere/base.gguf", "gguf", "llama", "Q4_1").unwrap();
    let tuned = store.register_model("sha-tuned", "SmolLM2 (run 1)", "/nowhere/run1", "hf", "llama", "F32").unwrap();
    let run = store.create_run("run-1", "dpo", "{}", Some(base)).unwrap();
    store.set_run_output(run, tuned).unwrap();
    store.set_run_status(run, crate::domain::RunStatus::Finished, None).unwrap();
    let prompts = store.evaluation_prompts(Some(crate::tui::judge::REVIEW_PROMPTS)).unwrap();
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
        Some(crate::tui::screens::Screen::Diff(d)) => {
            d.stop_worker();
            d.worker = None
        }
        Some(crate::tui::screens::Screen::Blind(b)) => {
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
    assert_eq!(app.mode(), crate::tui::keymap::Mode::Diff);
    without_worker(&mut app);
    insta::assert_snapshot!("diff_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("diff_160x48", screen(&app, 160, 48));
    key(&mut app, KeyCode::Esc);
    press(&mut app, "e");
    assert_eq!(app.mode(), crate::tui::keymap::Mode::Blind);
    without_worker(&mut app);
    {
        let Some(crate::tui::screens::Screen::Blind(blind)) = app.screens.last() else { panic!("blind") };
        assert_eq!((blind.todo.len(), blind.identical), (3, 1), "identical answers are not judged");
    }
    insta::assert_snapshot!("blind_80x24", screen(&app, 80, 24));
    // Vote for the left answer twice and call the third a tie; what is stored is said from
    // the tuned model's side, whichever side it was shown on.
    let mut expected = Vec::new();
    for k in ["1", "1", "t"] {
        let Some(crate::tui::screens::Screen::Blind(blind)) = app.screens.last() else { panic!("blind") };
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
    store.set_run_status(run2, crate::domain::RunStatus::Finished, None).unwrap();
    press(&mut app, "T");
    press(&mut app, "m"); // run 1's tuned model
    press(&mut app, "j");
    press(&mut app, "d"); // against run 2's
    without_worker(&mut app);
    let Some(crate::tui::screens::Screen::Diff(diff)) = app.screens.last() else { panic!("diff") };
    assert_eq!((diff.run_id, diff.base, diff.tuned), (None, 2, other));
}
