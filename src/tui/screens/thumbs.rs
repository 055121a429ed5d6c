//! Single-answer review: a prompt's answers one at a time, each rated good (`+`) or bad
//! (`-`) with the same reason tags and note as a pairwise judgment, and undo. Opened from the
//! queue for a prompt with one candidate (Enter) or by choice (`o`). The ratings are stored
//! by `App` (`Command::Thumb`, `Command::UndoThumb`), append-only like judgments.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use crossterm::event::KeyCode;
use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};

use super::{Command, Ctx};
use crate::domain::Message;
use crate::store::{ActiveThumb, NewThumb, ResponseRow, Thumb};
use crate::tui::field::TextField;
use crate::tui::input::Input;
use crate::tui::keymap::Action;
use crate::tui::widgets::draw_text_pane;

#[derive(Debug)]
pub struct ThumbsView {
    pub prompt_id: i64,
    /// The prompt's external id, else its row id: what its title shows.
    pub name: String,
    pub messages: Vec<Message>,
    pub answers: Vec<ResponseRow>,
    /// Index into `answers` of the one shown.
    pub index: usize,
    /// My active rating of each answer of the prompt, by response id.
    pub mine: HashMap<i64, ActiveThumb>,
    pub reasons: BTreeSet<String>,
    pub note: String,
    pub scroll: u16,
    pub shown_at: Instant,
    pub guideline_id: Option<i64>,
}

impl ThumbsView {
    /// The prompt's answers with my ratings of them (`mine`), starting at the first answer I
    /// have not rated. `App` reads what it shows (`app::thumbs`).
    pub fn new(
        prompt_id: i64,
        name: String,
        messages: Vec<Message>,
        answers: Vec<ResponseRow>,
        mine: HashMap<i64, ActiveThumb>,
        guideline_id: Option<i64>,
    ) -> ThumbsView {
        let mut view = ThumbsView {
            prompt_id,
            name,
            messages,
            answers,
            index: 0,
            mine,
            reasons: BTreeSet::new(),
            note: String::new(),
            scroll: 0,
            shown_at: Instant::now(),
            guideline_id,
        };
        view.index = view.answers.iter().position(|a| !view.mine.contains_key(&a.id)).unwrap_or(0);
        view.show_answer();
        view
    }

    /// After a rating or an undo was stored, with my ratings as read again: show the next
    /// unrated answer after a rating (`rated`), the answer taken back after an undo, with its
    /// tags and note.
    pub fn stored(&mut self, mine: HashMap<i64, ActiveThumb>, rated: Option<i64>, undone: Option<&ActiveThumb>) {
        self.mine = mine;
        if let Some(undone) = undone {
            if let Some(i) = self.answers.iter().position(|a| a.id == undone.response_id) {
                self.index = i;
            }
            self.show_answer();
            self.reasons = undone.reasons.iter().cloned().collect();
            self.note = undone.note.clone().unwrap_or_default();
        } else if rated.is_some() {
            let next = (self.index + 1..self.answers.len()).find(|&i| !self.mine.contains_key(&self.answers[i].id));
            if let Some(next) = next {
                self.index = next;
            }
            self.show_answer();
        }
    }

    /// The answer on screen.
    pub fn current(&self) -> Option<&ResponseRow> {
        self.answers.get(self.index)
    }

    /// Shows the answer at `index` with my rating's tags and note, if I rated it.
    fn show_answer(&mut self) {
        let mine = self.current().and_then(|a| self.mine.get(&a.id));
        self.reasons = mine.map(|t| t.reasons.iter().cloned().collect()).unwrap_or_default();
        self.note = mine.and_then(|t| t.note.clone()).unwrap_or_default();
        self.scroll = 0;
        self.shown_at = Instant::now();
    }

    fn rate(&self, rating: Thumb, annotator_id: i64) -> Vec<Command> {
        let Some(answer) = self.current() else { return Vec::new() };
        vec![Command::Thumb(NewThumb {
            response_id: answer.id,
            annotator_id,
            rating,
            reasons: self.reasons.iter().cloned().collect(),
            note: Some(self.note.trim().to_string()).filter(|n| !n.is_empty()),
            seconds: Some(self.shown_at.elapsed().as_secs_f64()),
            guideline_id: self.guideline_id,
        })]
    }

    pub fn update(&mut self, action: Action, annotator_id: i64) -> Vec<Command> {
        match action {
            Action::Good => return self.rate(Thumb::Good, annotator_id),
            Action::Bad => return self.rate(Thumb::Bad, annotator_id),
            Action::Undo => return vec![Command::UndoThumb],
            // Typed in `App`'s line; a kept note comes back into `note`.
            Action::Note => return vec![Command::Type(Input::Note(TextField::new(self.note.clone())))],
            Action::Next if self.index + 1 < self.answers.len() => {
                self.index += 1;
                self.show_answer();
            }
            Action::Previous if self.index > 0 => {
                self.index -= 1;
                self.show_answer();
            }
            Action::Down => self.scroll = self.scroll.saturating_add(1),
            Action::Up => self.scroll = self.scroll.saturating_sub(1),
            Action::PageDown => self.scroll = self.scroll.saturating_add(10),
            Action::PageUp => self.scroll = self.scroll.saturating_sub(10),
            Action::Back => return vec![Command::Close],
            _ => {}
        }
        Vec::new()
    }

    /// A key no action is bound to: a reason tag's shortcut toggles the tag.
    pub fn unbound(&mut self, key: KeyEvent, ctx: &Ctx) {
        if let KeyCode::Char(c) = key.code
            && let Some(reason) = ctx.reasons.iter().find(|r| r.shortcut.starts_with(c))
            && !self.reasons.remove(&reason.key)
        {
            self.reasons.insert(reason.key.clone());
        }
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect, ctx: &Ctx) {
        let [prompt_area, answer_area, tags_area] =
            Layout::vertical([Constraint::Percentage(30), Constraint::Min(3), Constraint::Length(4)]).areas(area);
        let prompt: String =
            self.messages.iter().map(|m| format!("{}: {}", m.role, m.content)).collect::<Vec<_>>().join("\n\n");
        draw_text_pane(frame, prompt_area, &format!(" Prompt {} ", self.name), &prompt, 0, false);
        let Some(answer) = self.current() else {
            draw_text_pane(
                frame,
                answer_area,
                " No answers ",
                "This prompt has no answers yet: g in the queue generates some.",
                0,
                false,
            );
            return;
        };
        let rated = match self.mine.get(&answer.id) {
            Some(t) => format!("you rated it {}", t.rating.as_str()),
            None => "not rated yet".into(),
        };
        let title =
            format!(" Answer {}/{} · #{} · {} · + good · - bad ", self.index + 1, self.answers.len(), answer.id, rated);
        draw_text_pane(frame, answer_area, &title, &answer.content, self.scroll, true);

        super::draw_reasons(
            frame,
            tags_area,
            " reasons (for a bad answer, or what makes it good) ",
            ctx,
            &self.reasons,
            &self.note,
        );
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::KeyCode;

    use super::*;
    use crate::tui::app::App;
    use crate::tui::testing::{app, key, press, screen};

    fn view(app: &App) -> &ThumbsView {
        match app.screens.last() {
            Some(super::super::Screen::Thumbs(view)) => view,
            _ => panic!("the single-answer review is open"),
        }
    }

    /// `o` on the first banking prompt (two answers) opens its answers one at a time.
    fn open(app: &mut App) -> (i64, Vec<i64>) {
        app.queue.selected = app
            .queue
            .visible
            .iter()
            .position(|&i| app.queue.items[i].row.external_id.as_deref() == Some("pair-bank-en-01"))
            .unwrap();
        press(app, "o");
        let v = view(app);
        (v.prompt_id, v.answers.iter().map(|a| a.id).collect())
    }

    #[test]
    fn plus_and_minus_store_ratings_with_tags_and_note_and_undo_takes_the_last_back() {
        let mut app = app();
        let (prompt, answers) = open(&mut app);
        assert_eq!(answers.len(), 2);
        press(&mut app, "fx");
        press(&mut app, "x"); // toggled off again
        press(&mut app, "n");
        press(&mut app, "cites the rule");
        key(&mut app, KeyCode::Enter);
        press(&mut app, "+");
        let mine = app.store.my_thumbs(app.annotator_id, prompt).unwrap();
        assert_eq!(mine.len(), 1);
        assert_eq!(
            (mine[0].response_id, mine[0].rating, mine[0].reasons.clone(), mine[0].note.as_deref()),
            (answers[0], Thumb::Good, vec!["factual_error".to_string()], Some("cites the rule"))
        );
        assert_eq!(view(&app).index, 1, "the next unrated answer shows");
        assert!(view(&app).reasons.is_empty() && view(&app).note.is_empty(), "tags and note start afresh");

        press(&mut app, "-");
        let ratings: Vec<(i64, Thumb)> =
            app.store.my_thumbs(app.annotator_id, prompt).unwrap().iter().map(|t| (t.response_id, t.rating)).collect();
        assert_eq!(ratings, [(answers[0], Thumb::Good), (answers[1], Thumb::Bad)]);
        assert_eq!(app.seconds_today.len(), 2, "ratings count in today's work");
        assert!(screen(&app, 100, 30).contains("today 2 labeled · median 0s each"), "{}", screen(&app, 100, 30));
        let item = app.queue.items.iter().find(|i| i.row.prompt_id == prompt).unwrap();
        assert_eq!((item.my_ratings, item.all_ratings), (2, 2), "the queue's counts are read again");

        press(&mut app, "u");
        assert_eq!(app.seconds_today.len(), 1, "the undone rating no longer counts");
        assert_eq!(app.store.my_thumbs(app.annotator_id, prompt).unwrap().len(), 1);
        assert_eq!(view(&app).index, 1, "undo returns to the answer taken back");
        assert!(app.message.contains("undone"), "{}", app.message);
        key(&mut app, KeyCode::Esc);
        assert!(app.screens.is_empty(), "Esc goes back to the queue");
    }

    #[test]
    fn snapshot_single_answer_review() {
        let mut app = app();
        open(&mut app);
        press(&mut app, "f+");
        press(&mut app, "[");
        insta::assert_snapshot!("thumbs_rated_100x30", screen(&app, 100, 30));
        // The keys come from the key map, so the help lists them in their own section.
        use crate::tui::keymap::Mode;
        assert!(Mode::ALL.iter().any(|(m, _)| *m == Mode::Thumbs));
        let keys: Vec<(&str, Action)> = app.keymap.bindings(Mode::Thumbs).map(|(k, a, _)| (k, a)).collect();
        assert!(keys.contains(&("+", Action::Good)) && keys.contains(&("-", Action::Bad)), "{keys:?}");
    }
}
