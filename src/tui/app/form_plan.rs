//! The new-run form's plan, made off the UI thread: whenever the form's options change (its
//! `plan_request` key), a thread with its own store connection compiles the training set for the
//! chosen method (`qa::compile`) and makes the memory plan (`jobs::train::memory::plan_text`,
//! which reads the model's config); a result for options the form no longer has is dropped, and
//! the next one starts when the one in flight ends.

use std::path::Path;

use anyhow::Context;

use super::App;
use crate::jobs::train::TrainConfig;
use crate::jobs::{Job, Update, spawn};
use crate::qa::compile::{Method, compile_store};
use crate::store::{OpenMode, Store};
use crate::tui::form::{Plan, TrainForm, count_lines};
use crate::tui::screens::Screen;

/// The plan being made and the key it is made for.
#[derive(Default)]
pub struct FormPlanJob {
    work: Option<Job<(), (String, Plan)>>,
}

/// The compiled set's counts for `config`'s method.
fn counts(store: &Store, config: &TrainConfig) -> Result<Vec<String>, String> {
    let compiled = Method::parse(&config.method)
        .with_context(|| format!("no method {}", config.method))
        .and_then(|method| Ok(compile_store(store, method)?));
    compiled.map(|c| count_lines(&c)).map_err(|e| format!("{e:#}"))
}

/// The whole plan for `config`, read from `store`.
pub fn make(store: &Store, config: &TrainConfig) -> Plan {
    let memory = crate::jobs::train::memory::plan_text(config, &|_| {}).map_err(|e| format!("{e:#}"));
    Plan { counts: counts(store, config), memory: Some(memory) }
}

fn form(screens: &mut [Screen]) -> Option<&mut TrainForm> {
    screens.iter_mut().rev().find_map(|s| match s {
        Screen::Form(form) => Some(form.as_mut()),
        _ => None,
    })
}

impl App {
    /// Takes in a plan that arrived (when it is still for the form's options) and starts one
    /// when the options changed since. Whether the form has something new to show.
    pub(super) fn poll_form_plan(&mut self) -> bool {
        let mut arrived = false;
        if let Some(Update::Finished(result)) = self.form_plan.work.as_mut().and_then(|w| w.try_next()) {
            self.form_plan.work = None;
            match result {
                Ok((key, plan)) => {
                    if let Some(form) = form(&mut self.screens)
                        && form.plan_request().is_some_and(|(k, _)| k == key)
                    {
                        form.planned = Some((key, plan));
                        arrived = true;
                    }
                }
                Err(e) => tracing::error!("planning the run: {e:#}"),
            }
        }
        if self.form_plan.work.is_some() {
            return arrived;
        }
        let path = self.store.path().to_path_buf();
        let Some(form) = form(&mut self.screens) else { return arrived };
        let Some((key, config)) = form.plan_request() else { return arrived };
        if form.planned.as_ref().is_some_and(|(k, _)| *k == key) {
            return arrived;
        }
        if path == Path::new(":memory:") {
            // No second connection reaches an in-memory store (tests): the counts are read
            // here, and no plan (it reads the model and asks the machine's free memory).
            form.planned = Some((key, Plan { counts: counts(&self.store, &config), memory: None }));
            return true;
        }
        self.form_plan.work = Some(spawn("form-plan", move |_, _| {
            let store = Store::open(&path, OpenMode::MustExist)?;
            Ok((key, make(&store, &config)))
        }));
        arrived
    }
}

#[cfg(test)]
mod tests {
    use crate::tui::app::App;
    use crate::tui::keymap::{KeyMap, Mode};
    use crate::tui::screens::Screen;
    use crate::tui::testing::{key, press, screen, seeded_file};
    use crossterm::event::KeyCode;

    fn form(app: &mut App) -> &mut crate::tui::form::TrainForm {
        match app.screens.last_mut() {
            Some(Screen::Form(form)) => form,
            _ => panic!("the form is not open"),
        }
    }

    /// Ticks until the form shows a plan for its options as they stand.
    fn wait_for_plan(app: &mut App) {
        let started = std::time::Instant::now();
        while form(app).current_plan().is_none() {
            assert!(started.elapsed() < std::time::Duration::from_secs(30), "the plan never arrived");
            app.poll_job();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn the_form_plans_on_a_thread_and_plans_again_when_the_method_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (gguf, _) = crate::model::testing::write_tiny_models(&dir.path().join("models")).unwrap();
        let path = seeded_file(dir.path(), "form.db");
        let store = crate::store::Store::open(&path, crate::store::OpenMode::MustExist).unwrap();
        let mut app = App::new(store, "amira", KeyMap::default()).unwrap();
        app.use_external_editor = false;
        app.model = Some(gguf.clone());
        press(&mut app, "Tn");
        assert_eq!(app.mode(), Mode::Form);
        assert_eq!(form(&mut app).fields.iter().find(|f| f.key == "model").unwrap().text(), gguf.display().to_string());
        // Nothing is read on this thread: the panel waits for the plan.
        assert!(form(&mut app).current_plan().is_none(), "planned on the UI thread");
        assert!(screen(&app, 80, 24).contains("planning…"), "{}", screen(&app, 80, 24));
        wait_for_plan(&mut app);
        let dpo = screen(&app, 120, 40);
        assert!(dpo.contains("dpo: 42 (train + test)"), "{dpo}");
        assert!(dpo.contains("peak"), "the memory plan's peak: {dpo}");
        let plan = form(&mut app).current_plan().unwrap().clone();
        assert!(
            plan.memory.as_ref().is_some_and(|m| m.as_ref().is_ok_and(|t| t.contains("predicted peak"))),
            "{plan:?}"
        );
        // Method is the first field: switching it to kto plans the KTO set.
        key(&mut app, KeyCode::Right);
        assert_eq!(form(&mut app).fields[0].text(), "kto");
        assert!(screen(&app, 120, 40).contains("planning…"), "the dpo plan is not shown for kto");
        wait_for_plan(&mut app);
        let kto = screen(&app, 120, 40);
        assert!(kto.contains("kto: "), "{kto}");
        assert!(!kto.contains("dpo: 42"), "{kto}");
        assert_ne!(form(&mut app).current_plan().unwrap().counts, plan.counts);
        // It still fits at 80x24.
        let small = screen(&app, 80, 24);
        assert!(small.contains("kto: "), "{small}");
    }

    #[test]
    fn a_plan_that_does_not_fit_refuses_the_run() {
        let mut app = crate::tui::testing::app();
        press(&mut app, "Tn");
        let memory = "model\nmemory plan: 1M parameters\n  predicted peak 9,999 MiB\n  available now 10 MiB: does \
                      not fit; fits with --lora-rank 16\n";
        let f = form(&mut app);
        let (key, _) = f.plan_request().unwrap();
        f.planned = Some((key, crate::tui::form::Plan { counts: Ok(vec![]), memory: Some(Ok(memory.into())) }));
        assert!(screen(&app, 80, 24).contains("available 10 MiB: does not"), "{}", screen(&app, 80, 24));
        press(&mut app, "S");
        assert!(app.message.contains("would not fit in memory"), "{}", app.message);
        assert!(app.message.contains("fits with --lora-rank 16"), "{}", app.message);
        assert!(app.training().is_none(), "nothing started");
    }
}
