//! The application state and its one place of change, `App::handle`. Drawing reads
//! this state; nothing here touches the terminal, so tests drive it directly.

use std::collections::BTreeSet;
use std::time::Instant;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::keymap::{self, Action, KeyMap, Mode};
use super::loading;
use super::queue::{self, Filter, Item, Status};
use super::screens::help::Help;
use super::screens::qa::Qa;
use super::screens::{Command, Ctx, Screen};
use crate::domain::{Message, NewPrompt};
use crate::guidelines::Reason;
use crate::jobs::generate::{GenerateEvent, GenerateSummary};
use crate::jobs::{Job, Update, spawn};
use crate::store::{NewJudgment, ResponseRow, Store, Verdict};

/// Which pane of the compare screen keys scroll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Prompt,
    Left,
    Right,
}

/// Text being typed, and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    None,
    Search(String),
    Note(String),
    AddPrompt(String),
    /// The built-in editor, used for rewrites when neither $VISUAL nor $EDITOR is set.
    Rewrite {
        response_id: i64,
        text: String,
    },
}

/// Work that needs the terminal, handed back to the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Suspend the UI and edit `text` in the user's editor, then call `App::finish_rewrite`.
    EditExternally { response_id: i64, text: String },
}

/// A generation running on its own thread.
pub struct GenerationJob {
    pub work: Job<GenerateEvent, GenerateSummary>,
    pub prompts: usize,
    pub done: usize,
    pub tokens_per_sec: f64,
    pub stored: usize,
}

/// The pair on screen.
#[derive(Debug, Clone)]
pub struct Compare {
    pub prompt_id: i64,
    pub messages: Vec<Message>,
    pub responses: Vec<ResponseRow>,
    /// (left, right) response ids, or None when this prompt has nothing left to judge.
    pub pair: Option<(i64, i64)>,
    pub reasons: BTreeSet<String>,
    pub note: String,
    pub focus: Pane,
    /// Scroll offsets of the prompt, left and right panes, in lines.
    pub scroll: [u16; 3],
    pub shown_at: Instant,
}

impl Compare {
    pub fn response(&self, id: i64) -> Option<&ResponseRow> {
        self.responses.iter().find(|r| r.id == id)
    }
}

pub struct App {
    pub store: Store,
    pub annotator: String,
    pub annotator_id: i64,
    pub keymap: KeyMap,
    pub reasons: Vec<Reason>,
    pub items: Vec<Item>,
    /// Indices into `items` that pass the filter.
    pub visible: Vec<usize>,
    /// Index into `visible`.
    pub selected: usize,
    pub filter: Filter,
    pub compare: Option<Compare>,
    pub input: Input,
    /// The screens opened over the queue (help, QA), the top one taking the keys.
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
    /// The training and review screens while they are open.
    pub review: Option<super::review::Review>,
    /// The review state kept while its run trains and the user labels in the queue.
    pub parked: Option<super::review::Review>,
    /// Where generation and training run (`--device auto`'s pick), for the status line.
    pub device: String,
    /// The whole queue, while a thread still reads it (`items` holds placeholders till then).
    pub loading: Option<super::loading::QueueLoad>,
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
        let mut app = App {
            store,
            annotator: annotator.to_string(),
            annotator_id,
            keymap,
            reasons,
            items,
            visible: Vec::new(),
            selected: 0,
            filter: Filter::default(),
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
            review: None,
            parked: None,
            device: crate::model::DeviceChoice::Auto
                .device()
                .map(|d| crate::model::device_label(&d))
                .unwrap_or_else(|_| "cpu".into()),
            loading,
            pending_effect: None,
        };
        app.apply_filter();
        // Back where the annotator was: a restart or a crash costs nothing.
        if let Some(prompt_id) = cursor {
            if let Some(pos) = app.visible.iter().position(|&i| app.items[i].row.prompt_id == prompt_id) {
                app.selected = pos;
                app.open_selected()?;
            }
        }
        Ok(app)
    }

    pub fn mode(&self) -> Mode {
        if let Some(mode) = self.screens.iter().rev().find_map(Screen::footer_mode) {
            return mode;
        }
        if let Some(review) = &self.review {
            return review.mode();
        }
        if self.compare.is_some() { Mode::Compare } else { Mode::Queue }
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

    /// Reads and parses the guidelines for the selected prompt's domain when the panel is
    /// open and shows another domain's (or none yet): once per change, never per frame.
    fn sync_guidelines(&mut self) {
        if !self.show_guidelines {
            return;
        }
        let domain = self.selected_item().and_then(|i| i.row.domain.clone());
        if self.guidelines.as_ref().is_some_and(|(d, _)| *d == domain) {
            return;
        }
        let text = self
            .store
            .guideline_text(domain.as_deref())
            .ok()
            .flatten()
            .map(|(_, content)| {
                crate::guidelines::parse("g.md", &content).map(|g| g.body().to_string()).unwrap_or(content)
            })
            .unwrap_or_else(|| "No guidelines loaded: run `verdict init`.".into());
        self.guidelines = Some((domain, text));
    }

    /// The key map section the next key is looked up in: the text being typed, else the
    /// top screen, else the review screens' form field being typed, else the screen's own.
    pub fn key_mode(&self) -> Mode {
        match &self.input {
            Input::None => {}
            Input::Rewrite { .. } => return Mode::Editor,
            Input::Search(_) | Input::Note(_) | Input::AddPrompt(_) => return Mode::Line,
        }
        if let Some(top) = self.screens.last() {
            return top.mode();
        }
        if self.review.as_ref().is_some_and(|r| r.typing()) {
            return Mode::Line;
        }
        self.mode()
    }

    /// What every screen may read.
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            keymap: &self.keymap,
            reasons: &self.reasons,
            annotator: &self.annotator,
            annotator_id: self.annotator_id,
        }
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
            if let (Input::None, Some(top)) = (&self.input, self.screens.last_mut()) {
                top.type_key(action, key);
                return Ok(None);
            }
            match &mut self.review {
                Some(review) if self.input == Input::None => review.type_key(action, key),
                _ => self.type_key(action, key)?,
            }
            return Ok(None);
        }
        if let Some(top) = self.screens.last_mut() {
            if let Some(action @ (Action::Help | Action::Quit)) = action {
                return self.handle(action);
            }
            self.message.clear();
            let ctx = Ctx {
                keymap: &self.keymap,
                reasons: &self.reasons,
                annotator: &self.annotator,
                annotator_id: self.annotator_id,
            };
            if action.is_none() {
                top.unbound(key, &ctx);
            }
            let commands = top.update(action, &ctx);
            self.apply(commands)?;
            return Ok(None);
        }
        if let Some(action) = action {
            return self.handle(action);
        }
        // Unbound letters in the compare screen toggle the guideline's reason tags.
        if let (Mode::Compare, KeyCode::Char(c)) = (mode, key.code)
            && let Some(reason) = self.reasons.iter().find(|r| r.shortcut.starts_with(c))
        {
            let key = reason.key.clone();
            if let Some(compare) = &mut self.compare
                && !compare.reasons.remove(&key)
            {
                compare.reasons.insert(key);
            }
        }
        Ok(None)
    }

    /// Carries out what a screen asked for: the one place where the screens' store writes
    /// happen.
    fn apply(&mut self, commands: Vec<Command>) -> anyhow::Result<()> {
        for command in commands {
            match command {
                Command::Close => {
                    if let Some(screen) = self.screens.pop() {
                        screen.closed();
                    }
                    // Votes made on the screen change the runs list's win rates.
                    if let Some(review) = &mut self.review {
                        review.refresh(&self.store)?;
                    }
                }
                Command::EvalVote(vote) => {
                    // Committed before the next pair shows.
                    self.store.record_eval_vote(&vote)?;
                    self.refresh_top()?;
                }
                Command::Refresh => self.refresh_top()?,
                Command::Thumb(thumb) => {
                    // Committed before the next answer shows.
                    self.store.record_thumb(&thumb)?;
                    self.message = format!("answer {} rated {}", thumb.response_id, thumb.rating.as_str());
                    if let Some(Screen::Thumbs(view)) = self.screens.last_mut() {
                        view.stored(&self.store, self.annotator_id, Some(thumb.response_id), None)?;
                    }
                }
                Command::UndoThumb => match self.store.undo_last_thumb(self.annotator_id)? {
                    None => self.message = "no rating to undo".into(),
                    Some(undo) => {
                        self.message = match &undo.restored {
                            Some(t) => format!("undone: the answer is {} again", t.rating.as_str()),
                            None => "undone: rate this answer again".into(),
                        };
                        if let Some(Screen::Thumbs(view)) = self.screens.last_mut() {
                            view.stored(&self.store, self.annotator_id, None, Some(&undo.withdrawn))?;
                        }
                    }
                },
            }
        }
        Ok(())
    }

    fn refresh_top(&mut self) -> anyhow::Result<()> {
        let ctx = Ctx {
            keymap: &self.keymap,
            reasons: &self.reasons,
            annotator: &self.annotator,
            annotator_id: self.annotator_id,
        };
        match self.screens.last_mut() {
            Some(top) => top.refresh(&self.store, &ctx),
            None => Ok(()),
        }
    }

    /// Applies one action.
    pub fn handle(&mut self, action: Action) -> anyhow::Result<Option<Effect>> {
        self.message.clear();
        if let Some(review) = &mut self.review {
            if !matches!(action, Action::Help | Action::Quit) {
                let stay = review.handle(action, &mut self.store);
                self.message = std::mem::take(&mut review.message);
                if let Some(screen) = review.opened.take() {
                    self.screens.push(screen);
                }
                if !stay? {
                    // The thread of a run started here keeps going; the runs list shows it.
                    if review.job.is_none() {
                        self.review = None;
                    } else {
                        self.message = "a run started here is still training: it stops when verdict quits; \
                                        T shows it"
                            .into();
                        self.parked = self.review.take();
                    }
                }
                return Ok(None);
            }
        }
        match action {
            Action::Quit => self.quit = true,
            Action::Help => self.screens.push(Screen::Help(Help::default())),
            Action::Guidelines => {
                self.show_guidelines = !self.show_guidelines;
                self.guidelines_scroll = 0;
            }
            Action::Up => self.move_by(-1),
            Action::Down => self.move_by(1),
            Action::PageUp => self.move_by(-10),
            Action::PageDown => self.move_by(10),
            Action::Open => {
                if let Some(&index) = self.visible.get(self.selected) {
                    self.ensure_loaded(index)?;
                }
                // One candidate has no pair to compare: it is reviewed on its own.
                if self.selected_item().is_some_and(|i| i.candidates.len() == 1) {
                    self.open_thumbs()?
                } else {
                    self.open_selected()?
                }
            }
            Action::SingleReview => self.open_thumbs()?,
            Action::Back => self.compare = None,
            Action::Search => self.input = Input::Search(self.filter.search.clone()),
            Action::FilterLanguage => {
                let all: BTreeSet<String> = self.items.iter().map(|i| i.row.language.clone()).collect();
                self.filter.language = cycle(&all, self.filter.language.take());
                self.apply_filter();
            }
            Action::FilterDomain => {
                let all: BTreeSet<String> = self.items.iter().filter_map(|i| i.row.domain.clone()).collect();
                self.filter.domain = cycle(&all, self.filter.domain.take());
                self.apply_filter();
            }
            Action::FilterStatus => {
                self.filter.status = self.filter.status.next();
                self.apply_filter();
            }
            Action::AddPrompt => self.input = Input::AddPrompt(String::new()),
            Action::LeftBetter => self.judge(Verdict::Left)?,
            Action::RightBetter => self.judge(Verdict::Right)?,
            Action::Tie => self.judge(Verdict::Tie)?,
            Action::BothBad => self.judge(Verdict::BothBad)?,
            Action::Note => {
                if let Some(c) = &self.compare {
                    self.input = Input::Note(c.note.clone());
                }
            }
            Action::Rewrite => return self.start_rewrite(),
            Action::Undo => self.undo()?,
            Action::Skip | Action::NextPair => self.advance(1, action == Action::Skip)?,
            Action::PreviousPair => self.advance(-1, false)?,
            Action::Generate => {
                let Some(item) = self.selected_item() else { return Ok(None) };
                let ids = vec![item.row.prompt_id];
                let target = item.candidates.len() + 2;
                self.start_generation(ids, target)?;
            }
            Action::GenerateAll => {
                let ids: Vec<i64> = self.visible.iter().map(|&i| self.items[i].row.prompt_id).collect();
                self.start_generation(ids, 2)?;
            }
            Action::Cancel => match &self.job {
                Some(job) => {
                    job.work.cancel();
                    self.message = "stopping after the current token; finished candidates are kept".into();
                }
                None => {
                    self.filter.search.clear();
                    self.apply_filter();
                }
            },
            Action::Quality => {
                // Computed once, as the screen opens; drawing only shows the text.
                let mut text = format!(
                    "AGREEMENT\n\n{}\nANNOTATORS\n\n{}",
                    crate::qa::text::agreement(&self.store)?,
                    crate::qa::text::annotators(&self.store)?
                );
                let thumbs = crate::qa::thumbs::text(&self.store)?;
                if !thumbs.is_empty() {
                    text.push_str(&format!("\nSINGLE-ANSWER REVIEW\n\n{thumbs}"));
                }
                self.screens.push(Screen::Qa(Qa::new(text)));
            }
            Action::Review => {
                self.review = match self.parked.take() {
                    Some(review) => Some(review),
                    None => Some(super::review::Review::open(
                        &self.store,
                        self.model.clone(),
                        &self.annotator,
                        self.annotator_id,
                    )?),
                };
            }
            Action::Refresh => {
                // Other annotators' work and imports from another process: at 100,000 prompts
                // a re-read takes most of a second, so it runs on a thread like the first load
                // and the rows on screen stay until it arrives.
                // (A store the thread cannot open, like an in-memory one, is read here when
                // the thread reports that.)
                let mut load = super::loading::QueueLoad::start(self.store.path().to_path_buf(), self.annotator_id);
                load.refresh = true;
                self.loading = Some(load);
                self.message = "refreshing…".into();
            }
            Action::Focus => {
                if let Some(c) = &mut self.compare {
                    c.focus = match c.focus {
                        Pane::Prompt => Pane::Left,
                        Pane::Left => Pane::Right,
                        Pane::Right => Pane::Prompt,
                    };
                }
            }
            // The review screens' own actions are handled by `Review` above.
            Action::NewRun
            | Action::StartRun
            | Action::StopRun
            | Action::ResumeRun
            | Action::Samples
            | Action::Diff
            | Action::Mark
            | Action::BlindEval
            | Action::Arena
            | Action::Edit
            | Action::Previous
            | Action::Next => {}
            // The typing keys are handled by `type_key`.
            Action::Confirm | Action::DeleteBack | Action::NewLine | Action::Good | Action::Bad => {}
        }
        Ok(None)
    }

    fn move_by(&mut self, delta: i32) {
        if self.show_guidelines {
            self.guidelines_scroll = shift(self.guidelines_scroll, delta);
            return;
        }
        match &mut self.compare {
            Some(c) => {
                let pane = c.focus as usize;
                c.scroll[pane] = shift(c.scroll[pane], delta);
            }
            None => {
                let last = self.visible.len().saturating_sub(1) as i64;
                self.selected = (self.selected as i64 + delta as i64).clamp(0, last) as usize;
            }
        }
    }

    /// Recomputes the visible rows, keeping the selected prompt if it is still shown.
    pub fn apply_filter(&mut self) {
        let current = self.visible.get(self.selected).copied();
        self.visible = (0..self.items.len()).filter(|&i| self.filter.admits(&self.items[i])).collect();
        self.selected = current.and_then(|c| self.visible.iter().position(|&i| i == c)).unwrap_or(0);
    }

    pub fn selected_item(&self) -> Option<&Item> {
        self.visible.get(self.selected).map(|&i| &self.items[i])
    }

    fn open_selected(&mut self) -> anyhow::Result<()> {
        let Some(&index) = self.visible.get(self.selected) else {
            return Ok(());
        };
        self.ensure_loaded(index)?;
        let item = &self.items[index];
        let prompt_id = item.row.prompt_id;
        let pair = item.next_pair().map(|(a, b)| self.left_right(a, b));
        self.compare = Some(Compare {
            prompt_id,
            messages: self.store.prompt_messages(prompt_id)?,
            responses: self.store.responses_of(prompt_id)?,
            pair,
            reasons: BTreeSet::new(),
            note: String::new(),
            focus: Pane::Left,
            scroll: [0; 3],
            shown_at: Instant::now(),
        });
        self.store.set_cursor(self.annotator_id, prompt_id)?;
        Ok(())
    }

    /// The single-answer review of the selected prompt.
    fn open_thumbs(&mut self) -> anyhow::Result<()> {
        let Some(&index) = self.visible.get(self.selected) else { return Ok(()) };
        self.ensure_loaded(index)?;
        let prompt_id = self.items[index].row.prompt_id;
        let view = super::screens::thumbs::ThumbsView::open(&self.store, prompt_id, self.annotator_id)?;
        self.screens.push(Screen::Thumbs(Box::new(view)));
        self.store.set_cursor(self.annotator_id, prompt_id)?;
        Ok(())
    }

    /// Which of a pair is shown left: random per (pair, annotator), stable across visits.
    pub fn left_right(&self, a: i64, b: i64) -> (i64, i64) {
        let (low, high) = (a.min(b), a.max(b));
        let key = crate::domain::sha256_hex(&["sides", &self.annotator, &low.to_string(), &high.to_string()]);
        if key.as_bytes()[0] % 2 == 0 { (low, high) } else { (high, low) }
    }

    fn judge(&mut self, verdict: Verdict) -> anyhow::Result<()> {
        let Some(compare) = &self.compare else {
            return Ok(());
        };
        let Some((left, right)) = compare.pair else {
            self.message = "nothing left to judge here: ] for the next prompt".into();
            return Ok(());
        };
        let domain = self.selected_item().and_then(|i| i.row.domain.clone());
        let guideline_id = self.store.guideline_text(domain.as_deref())?.map(|(id, _)| id);
        let seconds = compare.shown_at.elapsed().as_secs_f64();
        let judgment = NewJudgment {
            prompt_id: compare.prompt_id,
            left,
            right,
            annotator_id: self.annotator_id,
            verdict,
            reasons: compare.reasons.iter().cloned().collect(),
            note: Some(compare.note.trim().to_string()).filter(|n| !n.is_empty()),
            seconds: Some(seconds),
            guideline_id,
        };
        // Committed before the screen moves on: a crash after this line loses nothing.
        self.store.record_judgment(&judgment)?;
        self.seconds_today.push(seconds);
        self.reload_current()?;
        let done = self.compare.as_ref().is_some_and(|c| c.pair.is_none());
        if done {
            self.advance(1, false)?;
        }
        Ok(())
    }

    /// Re-reads the selected prompt and shows its next pair.
    fn reload_current(&mut self) -> anyhow::Result<()> {
        if let Some(&index) = self.visible.get(self.selected) {
            queue::reload_item(&self.store, self.annotator_id, &mut self.items[index])?;
            self.mark_touched(index);
        }
        let focus = self.compare.as_ref().map(|c| c.focus);
        self.open_selected()?;
        if let (Some(c), Some(focus)) = (&mut self.compare, focus) {
            c.focus = focus;
        }
        Ok(())
    }

    /// Moves to the next (or previous) prompt in the queue; a skip or a finished prompt
    /// looks for the next one that still has a pair for me.
    fn advance(&mut self, direction: i64, only_open: bool) -> anyhow::Result<()> {
        let count = self.visible.len() as i64;
        let mut position = self.selected as i64;
        for _ in 0..count {
            position += direction;
            if position < 0 || position >= count {
                self.message = "end of the queue".into();
                return Ok(());
            }
            let item = &self.items[self.visible[position as usize]];
            if direction < 0 || !only_open || item.status == queue::Status::Open {
                break;
            }
        }
        let next_open = self.items[self.visible[position as usize]].status == queue::Status::Open;
        if direction > 0 && !next_open && !only_open {
            // After a verdict, prefer a prompt that still needs me.
            if let Some(p) = (position as usize..self.visible.len())
                .find(|&p| self.items[self.visible[p]].status == queue::Status::Open)
            {
                position = p as i64;
            }
        }
        self.selected = position as usize;
        self.open_selected()
    }

    fn undo(&mut self) -> anyhow::Result<()> {
        let Some(undo) = self.store.undo_last_judgment(self.annotator_id)? else {
            self.message = "nothing to undo".into();
            return Ok(());
        };
        let undone = undo.withdrawn;
        if let Some(pos) = self.visible.iter().position(|&i| self.items[i].row.prompt_id == undone.prompt_id) {
            self.selected = pos;
        }
        self.seconds_today.pop();
        self.reload_current()?;
        if let Some(c) = &mut self.compare {
            c.reasons = undone.reasons.into_iter().collect();
            c.note = undone.note.unwrap_or_default();
        }
        self.message = match undo.restored {
            Some(_) => "undone: the pair has your earlier verdict again".into(),
            None => "undone: judge this pair again".into(),
        };
        Ok(())
    }

    fn start_rewrite(&mut self) -> anyhow::Result<Option<Effect>> {
        let Some(c) = &self.compare else {
            return Ok(None);
        };
        let Some((left, right)) = c.pair else {
            return Ok(None);
        };
        let id = if c.focus == Pane::Right { right } else { left };
        let text = c.response(id).map(|r| r.content.clone()).unwrap_or_default();
        if self.use_external_editor {
            return Ok(Some(Effect::EditExternally { response_id: id, text }));
        }
        self.input = Input::Rewrite { response_id: id, text };
        Ok(None)
    }

    /// Stores an edited answer as a human rewrite preferred over the one it replaces.
    pub fn finish_rewrite(&mut self, response_id: i64, text: &str) -> anyhow::Result<()> {
        let original = self.compare.as_ref().and_then(|c| c.response(response_id)).map(|r| r.content.clone());
        let text = text.trim_end();
        if text.trim().is_empty() || Some(text) == original.as_deref().map(str::trim_end) {
            self.message = "rewrite unchanged: nothing saved".into();
            return Ok(());
        }
        let rewrite = self.store.add_rewrite(response_id, text, &self.annotator)?;
        let Some(c) = &self.compare else {
            return Ok(());
        };
        let judgment = NewJudgment {
            prompt_id: c.prompt_id,
            left: rewrite,
            right: response_id,
            annotator_id: self.annotator_id,
            verdict: Verdict::Left,
            reasons: c.reasons.iter().cloned().collect(),
            note: Some(c.note.trim().to_string()).filter(|n| !n.is_empty()),
            seconds: Some(c.shown_at.elapsed().as_secs_f64()),
            guideline_id: None,
        };
        self.store.record_judgment(&judgment)?;
        self.reload_current()?;
        self.message = "rewrite saved, preferred over the original".into();
        Ok(())
    }

    /// A key while text is being typed: the key map's Line or Editor section says which keys
    /// keep (Enter; Ctrl-S in the multi-line rewrite editor), drop (Esc) or delete; the keys
    /// it does not bind type their character.
    fn type_key(&mut self, action: Option<Action>, key: KeyEvent) -> anyhow::Result<()> {
        let is_search = matches!(self.input, Input::Search(_));
        let text = match &mut self.input {
            Input::None => return Ok(()),
            Input::Search(t) | Input::Note(t) | Input::AddPrompt(t) | Input::Rewrite { text: t, .. } => t,
        };
        let finished = match action {
            Some(Action::Back) => {
                self.input = Input::None;
                if is_search {
                    self.filter.search.clear();
                    self.apply_filter();
                }
                return Ok(());
            }
            Some(Action::Confirm) => true,
            Some(Action::NewLine) => {
                text.push('\n');
                false
            }
            Some(Action::DeleteBack) => {
                text.pop();
                false
            }
            Some(_) => false,
            None => {
                if let Some(c) = keymap::typed_char(&key) {
                    text.push(c);
                }
                false
            }
        };
        if let Input::Search(t) = &self.input {
            // Incremental: the queue narrows with every key.
            self.filter.search = t.clone();
            self.apply_filter();
        }
        if !finished {
            return Ok(());
        }
        match std::mem::replace(&mut self.input, Input::None) {
            Input::None | Input::Search(_) => {}
            Input::Note(text) => {
                if let Some(c) = &mut self.compare {
                    c.note = text;
                }
            }
            Input::AddPrompt(text) => self.add_prompt(&text)?,
            Input::Rewrite { response_id, text } => self.finish_rewrite(response_id, &text)?,
        }
        Ok(())
    }

    fn add_prompt(&mut self, text: &str) -> anyhow::Result<()> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        let prompt = NewPrompt {
            external_id: None,
            messages: vec![Message::new("user", text)],
            language: crate::data::language::detect(text),
            domain: self.filter.domain.clone(),
            tags: Vec::new(),
            split: None,
            source: Some(format!("tui:{}", self.annotator)),
        };
        let (prompt_id, new) = self.store.add_prompt(&prompt)?;
        if new {
            // Read just the new prompt rather than the whole queue again. Its place in queue
            // order is the end: nobody can have been assigned it yet, and unassigned prompts
            // follow in id order, where a new row's id is the largest.
            self.items.push(queue::load_item(&self.store, self.annotator_id, prompt_id)?);
            self.visible.clear();
            self.apply_filter();
        }
        if let Some(pos) = self.visible.iter().position(|&i| self.items[i].row.prompt_id == prompt_id) {
            self.selected = pos;
        }
        self.message = format!(
            "{} prompt ({}): it needs candidates before it can be judged",
            if new { "added" } else { "already had this" },
            prompt.language
        );
        Ok(())
    }

    /// Starts generating on a background thread so that every prompt in `prompt_ids`
    /// ends up with `candidates` answers.
    fn start_generation(&mut self, prompt_ids: Vec<i64>, candidates: usize) -> anyhow::Result<()> {
        if self.job.is_some() {
            self.message = "a generation is already running (Esc in the queue stops it)".into();
            return Ok(());
        }
        let db = self.store.path().to_path_buf();
        let model = self.model.clone();
        let work = spawn("generate", move |cancel, events| {
            let model = crate::model::resolve_with(model.as_deref(), None, &|m| tracing::info!("{m}"))?;
            let job = crate::jobs::generate::GenerateJob {
                db,
                model,
                load: crate::model::LoadOptions::default(),
                params: crate::model::GenerateParams { candidates, ..Default::default() },
                filter: crate::store::TargetFilter { prompt_ids, below: candidates, ..Default::default() },
            };
            crate::jobs::generate::run(&job, cancel, events)
        });
        self.job = Some(GenerationJob { work, prompts: 0, done: 0, tokens_per_sec: 0.0, stored: 0 });
        self.message = "loading the model…".into();
        Ok(())
    }

    /// Takes in what the generation thread reported; called every tick. Returns whether
    /// anything changed (so the screen is redrawn).
    pub fn poll_job(&mut self) -> bool {
        let mut changed = self.poll_queue_load();
        if let Some(review) = &mut self.review {
            changed |= review.poll(&self.store);
            if !review.message.is_empty() {
                self.message = std::mem::take(&mut review.message);
            }
        }
        if let Some(review) = &mut self.parked {
            changed |= review.poll(&self.store);
            if !review.message.is_empty() {
                self.message = std::mem::take(&mut review.message);
            }
        }
        let ctx = Ctx {
            keymap: &self.keymap,
            reasons: &self.reasons,
            annotator: &self.annotator,
            annotator_id: self.annotator_id,
        };
        for screen in &mut self.screens {
            match screen.poll(&self.store, &ctx) {
                Ok(Some(message)) => {
                    self.message = message;
                    changed = true;
                }
                Ok(None) => {}
                Err(e) => self.message = format!("error: {e:#}"),
            }
        }
        if self.parked.as_ref().is_some_and(|r| r.job.is_none()) {
            self.parked = None;
        }
        let changed = self.poll_generation() || changed;
        if changed {
            self.sync_guidelines();
        }
        changed
    }

    /// Asks the run training on this process's thread to checkpoint and stop, and waits for
    /// it at most `limit`.
    pub fn stop_training(&mut self, limit: std::time::Duration) {
        let started = Instant::now();
        if let Some(job) = self.training() {
            job.work.cancel();
        }
        while self.training().is_some() && started.elapsed() < limit {
            self.poll_job();
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Some while a run trains on this process's thread.
    pub fn training(&self) -> Option<&super::review::TrainJob> {
        self.review.as_ref().or(self.parked.as_ref()).and_then(|r| r.job.as_ref())
    }

    fn poll_generation(&mut self) -> bool {
        let Some(job) = &mut self.job else { return false };
        let mut changed = Vec::new();
        let mut finished = None;
        let mut any = false;
        while let Some(update) = job.work.try_next() {
            any = true;
            match update {
                Update::Event(GenerateEvent::Started { prompts, .. }) => job.prompts = prompts,
                Update::Event(GenerateEvent::Progress { decode_tokens_per_sec, .. }) => {
                    job.tokens_per_sec = decode_tokens_per_sec
                }
                Update::Event(GenerateEvent::PromptDone { prompt_id, stored, .. }) => {
                    job.done += 1;
                    job.stored += stored;
                    changed.push(prompt_id);
                }
                Update::Event(GenerateEvent::PromptFailed { prompt_id, error }) => {
                    tracing::warn!(prompt_id, "{error}");
                    job.done += 1;
                }
                Update::Finished(result) => finished = Some(result.map_err(|e| format!("{e:#}"))),
            }
        }
        for prompt_id in changed {
            if let Some(index) = self.items.iter().position(|i| i.row.prompt_id == prompt_id) {
                if let Err(e) = queue::reload_item(&self.store, self.annotator_id, &mut self.items[index]) {
                    tracing::error!("{e:#}");
                }
                self.mark_touched(index);
            }
            if self.compare.as_ref().is_some_and(|c| c.prompt_id == prompt_id && c.pair.is_none()) {
                let _ = self.reload_current();
            }
        }
        if let Some(result) = finished {
            self.message = match result {
                Ok(s) => format!(
                    "generated {} new candidates for {} prompts{}",
                    s.stored,
                    s.prompts,
                    if s.cancelled { " (stopped)" } else { "" }
                ),
                Err(e) => format!("error: {e}"),
            };
            self.job = None;
        }
        any
    }

    /// Median seconds per judgment today.
    pub fn median_seconds(&self) -> Option<f64> {
        let mut s = self.seconds_today.clone();
        if s.is_empty() {
            return None;
        }
        s.sort_by(|a, b| a.total_cmp(b));
        Some(s[s.len() / 2])
    }
}

/// The queue arriving from its thread (see `loading`).
impl App {
    /// Whether `key` has to wait for the whole queue; if so it is kept for later. Keys keep
    /// their order: once one waits, the ones after it wait too.
    pub(super) fn wait_for_queue(&mut self, key: KeyEvent) -> bool {
        let Some(load) = &self.loading else { return false };
        let waits = !load.waiting.is_empty()
            || match &self.input {
                Input::Search(_) => true,
                // Adding a prompt re-reads the queue.
                Input::AddPrompt(_) => key.code == crossterm::event::KeyCode::Enter,
                Input::Note(_) | Input::Rewrite { .. } => false,
                Input::None if self.review.is_some() || !self.screens.is_empty() => false,
                Input::None => self.keymap.action(self.mode(), &key).is_some_and(loading::needs_whole_queue),
            };
        if waits && let Some(load) = &mut self.loading {
            load.waiting.push_back(key);
        }
        waits
    }

    /// Takes the whole queue in once its thread has sent it, then plays the keys that waited
    /// for it. Returns whether anything changed.
    pub(super) fn poll_queue_load(&mut self) -> bool {
        let Some(arrived) = self.loading.as_mut().and_then(loading::QueueLoad::arrived) else { return false };
        let load = self.loading.take().expect("checked above");
        let selected = self.selected_item().map(|i| i.row.prompt_id);
        match arrived {
            Ok(items) => self.items = items,
            Err(error) => {
                tracing::warn!("reading the queue in the background failed ({error}); reading it here");
                match queue::load(&self.store, self.annotator_id) {
                    Ok(items) => self.items = items,
                    Err(e) => {
                        // The placeholders stay; keys that waited are dropped rather than run on them.
                        self.message = format!("error: could not read the queue ({e}); R tries again");
                        return true;
                    }
                }
            }
        }
        for prompt_id in &load.touched {
            if let Some(item) = self.items.iter_mut().find(|i| i.row.prompt_id == *prompt_id) {
                if let Err(e) = queue::reload_item(&self.store, self.annotator_id, item) {
                    tracing::error!("{e:#}");
                }
            }
        }
        self.visible.clear();
        self.apply_filter();
        if let Some(position) =
            selected.and_then(|id| self.visible.iter().position(|&i| self.items[i].row.prompt_id == id))
        {
            self.selected = position;
        }
        if load.refresh {
            self.message = format!("refreshed: {} prompts", self.items.len());
        }
        for key in load.waiting {
            // An external editor asked for by a key that waited opens once they have all run.
            if let Some(effect) = self.handle_key(key) {
                self.pending_effect = Some(effect);
            }
        }
        true
    }

    /// Reads a placeholder's row and counts before it is opened.
    pub(super) fn ensure_loaded(&mut self, index: usize) -> anyhow::Result<()> {
        if self.items[index].status == Status::Loading {
            self.items[index] = queue::load_item(&self.store, self.annotator_id, self.items[index].row.prompt_id)?;
            self.mark_touched(index);
        }
        Ok(())
    }

    /// Notes that `items[index]` was re-read while the whole queue is still on its way.
    pub(super) fn mark_touched(&mut self, index: usize) {
        if let Some(load) = &mut self.loading {
            load.touched.insert(self.items[index].row.prompt_id);
        }
    }
}

fn shift(value: u16, delta: i32) -> u16 {
    (value as i32 + delta).clamp(0, u16::MAX as i32) as u16
}

/// None → first → second → ... → last → None.
fn cycle(all: &BTreeSet<String>, current: Option<String>) -> Option<String> {
    match current {
        None => all.iter().next().cloned(),
        Some(c) => all.range(c.clone()..).nth(1).cloned(),
    }
}
