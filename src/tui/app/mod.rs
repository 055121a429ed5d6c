//! The application: the screens (the queue, the compare screen over it, and the stack above
//! them: the runs, a run's curves, the help…), the routing of each key's `Action` to the
//! screen on top, and the one place where what the screens ask for (`Command`s) is carried
//! out, store writes and the reads the screens show included.
//! Nothing here touches the terminal, so tests drive it directly.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// The screens' read-only `Ctx` from `App`'s fields. A macro rather than a method so that it
/// borrows only those fields, beside a screen borrowed mutably from `self.screens`.
macro_rules! screen_ctx {
    ($app:expr) => {
        Ctx {
            keymap: &$app.keymap,
            reasons: &$app.reasons,
            annotator: &$app.annotator,
            annotator_id: $app.annotator_id,
            input: &$app.input,
            marked: $app.marked,
            db: $app.store.path(),
            data_version: $app.data_version,
        }
    };
}

mod background;
mod evaluation;
mod form_plan;
mod labeling;
mod runs;
mod thumbs;
mod training;

pub use training::TrainJob;

use super::field::TextField;
use super::form::TrainForm;
use super::generation::GenerationJob;
use super::input::Input;
use super::keymap::{Action, KeyMap, Mode};
use super::screens::compare::Compare;
use super::screens::curves::CurvesScreen;
use super::screens::help::Help;
use super::screens::qa::Qa;
use super::screens::queue::QueueScreen;
use super::screens::runs::RunsScreen;
use super::screens::{Command, Ctx, Opening, Screen};
use crate::guidelines::Reason;
use crate::store::Store;

/// Work that needs the terminal, handed back to the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Suspend the UI and edit `text` in the user's editor, then call `App::finish_rewrite`.
    EditExternally { response_id: i64, text: String },
}

pub struct App {
    pub store: Store,
    pub annotator: String,
    pub annotator_id: i64,
    pub keymap: KeyMap,
    pub reasons: Vec<Reason>,
    /// The queue: always there, under everything else.
    pub queue: QueueScreen,
    /// The prompt open over the queue.
    pub compare: Option<Compare>,
    pub input: Input,
    /// The screens opened over the others (help, QA, answers, diff, blind), the top one
    /// taking the keys.
    pub screens: Vec<Screen>,
    pub show_guidelines: bool,
    pub guidelines_scroll: u16,
    /// The guidelines panel's text and the domain it is for, read and parsed once per
    /// domain rather than on every frame.
    pub guidelines: Option<(Option<String>, String)>,
    pub message: String,
    pub seconds_today: Vec<f64>,
    pub use_external_editor: bool,
    pub quit: bool,
    pub job: Option<GenerationJob>,
    /// The model for generation: `--model`/VERDICT_MODEL, else the default (fetched on first use).
    pub model: Option<std::path::PathBuf>,
    /// The run training on this process's own thread; it outlives the runs screens.
    pub training: Option<TrainJob>,
    /// A model marked (`m` on the runs) to diff against another run's: (run, model).
    pub marked: Option<(i64, i64)>,
    /// The store's data version (`Store::data_version`), asked at most twice a second: it
    /// changes when another connection commits, and the screens that show what others write
    /// read again then.
    pub data_version: Option<i64>,
    version_asked: std::time::Instant,
    /// The runs screens' re-read on a thread.
    runs_reload: runs::RunsReload,
    form_plan: form_plan::FormPlanJob,
    /// Where generation and training run (`--device auto`'s pick), for the status line.
    pub device: String,
    /// Work for the runner asked for by a key that waited for the queue.
    pub pending_effect: Option<Effect>,
}

impl App {
    pub fn new(store: Store, annotator: &str, keymap: KeyMap) -> anyhow::Result<App> {
        App::open(store, annotator, keymap, super::loading::FIRST_PAGE)
    }

    /// `new`, reading at most about `first_page` rows before the first frame and the rest of
    /// a longer queue in the background.
    pub fn open(store: Store, annotator: &str, keymap: KeyMap, first_page: usize) -> anyhow::Result<App> {
        let annotator_id = store.annotator_id(annotator, "annotator")?;
        let cursor = store.cursor(annotator_id)?;
        let (items, loading) = super::loading::open(&store, annotator_id, cursor, first_page)?;
        let reasons = store.reason_taxonomy()?;
        let seconds_today = store.seconds_today(annotator_id)?;
        let data_version = store.data_version().ok();
        let mut app = App {
            store,
            annotator: annotator.to_string(),
            annotator_id,
            keymap,
            reasons,
            queue: QueueScreen::new(items, loading),
            compare: None,
            input: Input::None,
            screens: Vec::new(),
            show_guidelines: false,
            guidelines_scroll: 0,
            guidelines: None,
            message: String::new(),
            seconds_today,
            use_external_editor: std::env::var_os("VISUAL").or_else(|| std::env::var_os("EDITOR")).is_some(),
            quit: false,
            job: None,
            model: std::env::var_os("VERDICT_MODEL").map(Into::into),
            training: None,
            marked: None,
            data_version,
            version_asked: std::time::Instant::now(),
            runs_reload: Default::default(),
            form_plan: Default::default(),
            device: crate::jobs::generate::auto_device_label(),
            pending_effect: None,
        };
        // Back where the annotator was: a restart or a crash costs nothing.
        if let Some(position) = cursor.and_then(|prompt_id| app.queue.position_of(prompt_id)) {
            app.queue.selected = position;
            app.open_selected()?;
        }
        Ok(app)
    }

    /// The key map section the footer shows: the top screen's (the one below the help or
    /// QA), else the compare screen's or the queue's.
    pub fn mode(&self) -> Mode {
        if let Some(mode) = self.screens.iter().rev().find_map(Screen::footer_mode) {
            return mode;
        }
        if self.compare.is_some() { Mode::Compare } else { Mode::Queue }
    }

    /// The key map section the next key is looked up in: the text being typed, else the top
    /// screen's (Line while one of its fields takes text), else the screen's own.
    pub fn key_mode(&self) -> Mode {
        match &self.input {
            Input::None => {}
            Input::Rewrite { .. } => return Mode::Editor,
            Input::Search(_) | Input::Note(_) | Input::AddPrompt(_) => return Mode::Line,
        }
        match self.screens.last() {
            Some(top) if top.typing() => Mode::Line,
            Some(top) => top.mode(),
            None => self.mode(),
        }
    }

    /// What every screen may read.
    pub fn ctx(&self) -> Ctx<'_> {
        screen_ctx!(self)
    }

    /// Handles one key press; errors become a message on the status line.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Effect> {
        let effect = match self.handle_key_inner(key) {
            Ok(effect) => effect,
            Err(error) => {
                tracing::error!("{error:#}");
                self.message = format!("error: {error:#}");
                None
            }
        };
        self.sync_guidelines();
        effect
    }

    fn handle_key_inner(&mut self, key: KeyEvent) -> anyhow::Result<Option<Effect>> {
        // The terminal's interrupt: always quits, whatever the key map says.
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return Ok(None);
        }
        if self.wait_for_queue(key) {
            return Ok(None);
        }
        let mode = self.key_mode();
        let action = self.keymap.action(mode, &key);
        if matches!(mode, Mode::Line | Mode::Editor) {
            match self.screens.last_mut() {
                Some(Screen::Form(form)) if self.input == Input::None => form.type_key(action, key),
                _ => self.type_key(action, key)?,
            }
            return Ok(None);
        }
        if let Some(action) = action {
            return self.handle(action);
        }
        if let Some(top) = self.screens.last_mut() {
            let ctx = screen_ctx!(self);
            top.unbound(key, &ctx);
            // Any key the help does not bind closes it.
            let commands = top.update(None, &screen_ctx!(self));
            return self.apply(commands);
        }
        // Unbound letters in the compare screen toggle the guideline's reason tags.
        if let (Mode::Compare, KeyCode::Char(c), Some(compare)) = (mode, key.code, &mut self.compare) {
            compare.toggle_reason(c, &self.reasons);
        }
        Ok(None)
    }

    /// Applies one action: help and quit anywhere; the guidelines panel takes the moves while
    /// it is open; every other action goes to the screen on top.
    pub fn handle(&mut self, action: Action) -> anyhow::Result<Option<Effect>> {
        self.message.clear();
        match action {
            Action::Quit => {
                self.quit = true;
                return Ok(None);
            }
            Action::Help => {
                self.screens.push(Screen::Help(Help::default()));
                return Ok(None);
            }
            // The panel stays open from screen to screen, so every screen it shows on closes it.
            Action::Guidelines => {
                self.show_guidelines = !self.show_guidelines;
                self.guidelines_scroll = 0;
                return Ok(None);
            }
            _ => {}
        }
        if let Some(top) = self.screens.last_mut() {
            let commands = top.update(Some(action), &screen_ctx!(self));
            return self.apply(commands);
        }
        let moves = matches!(action, Action::Up | Action::Down | Action::PageUp | Action::PageDown);
        let commands = match action {
            _ if moves && self.show_guidelines => {
                let delta = match action {
                    Action::Up => -1,
                    Action::Down => 1,
                    Action::PageUp => -10,
                    _ => 10,
                };
                self.guidelines_scroll = (self.guidelines_scroll as i32 + delta).clamp(0, u16::MAX as i32) as u16;
                Vec::new()
            }
            _ => match &mut self.compare {
                Some(compare) => compare.update(action),
                None => self.queue.update(action),
            },
        };
        self.apply(commands)
    }

    /// Carries out what a screen asked for: the one place where the screens' store writes
    /// happen.
    fn apply(&mut self, commands: Vec<Command>) -> anyhow::Result<Option<Effect>> {
        let mut effect = None;
        for command in commands {
            match command {
                Command::Close => self.close_top()?,
                Command::EvalVote(vote) => {
                    // Committed before the next pair shows.
                    self.store.record_eval_vote(&vote)?;
                    self.refresh_top()?;
                }
                Command::Refresh => self.refresh_top()?,
                Command::Open(opening) => self.open_screen(opening)?,
                Command::Type(input) => self.input = input,
                Command::Judge(verdict) => self.judge(verdict)?,
                Command::Undo => self.undo()?,
                Command::Rewrite { response_id, side, text } => {
                    if self.use_external_editor {
                        effect = Some(Effect::EditExternally { response_id, text });
                    } else {
                        let field = TextField::new(text.clone());
                        self.input =
                            Input::Rewrite { response_id, side, text: field, original: text, discard_armed: false };
                    }
                }
                Command::Advance { direction, only_open } => self.advance(direction, only_open)?,
                Command::Generate { all } => self.start_generation(all),
                Command::Cancel => match &self.job {
                    Some(job) => {
                        job.work.cancel();
                        self.message = "stopping after the current token; finished candidates are kept".into();
                    }
                    None => self.queue.set_search(""),
                },
                Command::RefreshQueue => {
                    // Other annotators' work and imports from another process: at 100,000
                    // prompts a re-read takes most of a second, so it runs on a thread like the
                    // first load and the rows on screen stay until it arrives.
                    let mut load = super::loading::QueueLoad::start(self.store.path().to_path_buf(), self.annotator_id);
                    load.refresh = true;
                    self.queue.loading = Some(load);
                    self.message = "refreshing…".into();
                }
                Command::Message(text) => self.message = text,
                Command::Train(config) => {
                    if self.training.is_some() {
                        self.message = "a run is already training in this window: stop it first (s)".into()
                    } else {
                        // Back to the runs list, where the new run shows.
                        self.close_top()?;
                        self.start_training(*config, None);
                    }
                }
                Command::Thumb(thumb) => self.rate(thumb)?,
                Command::UndoThumb => self.undo_thumb()?,
                Command::StopRun(run) => self.stop_run(&run)?,
                Command::ResumeRun(run) => self.resume_run(&run)?,
                Command::Mark(marked) => self.marked = marked,
            }
        }
        Ok(effect)
    }

    /// Takes the top screen away: one of the stack, else the prompt open over the queue.
    fn close_top(&mut self) -> anyhow::Result<()> {
        let Some(screen) = self.screens.pop() else {
            self.compare = None;
            return Ok(());
        };
        screen.closed();
        // Votes made on the screen change the runs list's win rates; a run's curves closed
        // leave the list, which reads its runs again.
        self.read_runs_now()?;
        let runs_left = self.screens.iter().any(|s| matches!(s, Screen::Runs(_) | Screen::Curves(_)));
        if matches!(screen, Screen::Runs(_)) && !runs_left && self.training.is_some() {
            // The thread of a run started here keeps going; the runs list shows it.
            self.message = "a run started here is still training: it stops when verdict quits; T shows it".into();
        }
        Ok(())
    }

    fn open_screen(&mut self, opening: Opening) -> anyhow::Result<()> {
        match opening {
            // One candidate has no pair to compare: it is reviewed on its own.
            Opening::Compare if self.selected_has_one_candidate()? => self.open_thumbs()?,
            Opening::Compare => self.open_selected()?,
            Opening::Thumbs => self.open_thumbs()?,
            // Computed on a thread; the screen shows "computing…" till then.
            Opening::Qa => self.screens.push(Screen::Qa(Qa::open(&screen_ctx!(self)))),
            Opening::Runs => {
                self.screens.push(Screen::Runs(Box::new(RunsScreen::new(Vec::new(), Default::default()))));
                self.read_runs_now()?;
            }
            Opening::Curves(run_id) => {
                let curves = CurvesScreen { run_id, run: None, curves: Default::default() };
                self.screens.push(Screen::Curves(Box::new(curves)));
                self.read_runs_now()?;
            }
            Opening::Form => {
                self.screens.push(Screen::Form(Box::new(TrainForm::new(&self.store, self.model.clone())?)));
                self.poll_form_plan();
            }
            Opening::Samples(run_id) => {
                let view = evaluation::open_samples(&self.store, run_id)?;
                if view.prompts.is_empty() {
                    self.message =
                        "this run has no sample answers yet: they come with each evaluation (eval every > 0)".into();
                } else {
                    self.screens.push(Screen::Samples(view));
                }
            }
            Opening::Diff { run_id, models } => {
                let view = match models {
                    Some((old, new)) => evaluation::open_between(&self.store, old, new)?,
                    None => evaluation::open_diff(&self.store, run_id)?,
                };
                self.screens.push(Screen::Diff(Box::new(view)));
            }
            Opening::Blind(run_id) => {
                let view = evaluation::open_blind(&self.store, run_id, &self.annotator, self.annotator_id)?;
                self.screens.push(Screen::Blind(Box::new(view)));
            }
            Opening::Arena => {
                let view = evaluation::open_arena(&self.store, &self.annotator, self.annotator_id)?;
                self.screens.push(Screen::Blind(Box::new(view)));
            }
        }
        Ok(())
    }

    /// Reads again what the top screen shows, after a command changed the store or asked
    /// for it (a vote, a skip, F5 on the runs).
    fn refresh_top(&mut self) -> anyhow::Result<()> {
        match self.screens.last_mut() {
            Some(Screen::Runs(_) | Screen::Curves(_)) => self.read_runs_now(),
            Some(Screen::Blind(blind)) => evaluation::refresh_blind(&self.store, blind, &self.annotator),
            Some(Screen::Thumbs(view)) => {
                view.mine = thumbs::mine(&self.store, self.annotator_id, view.prompt_id)?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Reads and parses the guidelines for the selected prompt's domain when the panel is
    /// open and shows another domain's (or none yet): once per change, never per frame.
    fn sync_guidelines(&mut self) {
        if !self.show_guidelines {
            return;
        }
        let domain = self.queue.selected_item().and_then(|i| i.row.domain.clone());
        if self.guidelines.as_ref().is_some_and(|(d, _)| *d == domain) {
            return;
        }
        let text = self
            .store
            .guideline_text(domain.as_deref())
            .ok()
            .flatten()
            .map(|(_, content)| {
                let body = crate::guidelines::parse("g.md", &content).map(|g| g.body().to_string()).unwrap_or(content);
                super::text::markdown_for_reading(&body)
            })
            .unwrap_or_else(|| "No guidelines loaded: run `verdict init`.".into());
        self.guidelines = Some((domain, text));
    }
}
