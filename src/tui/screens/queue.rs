//! The queue screen: every prompt with its status for the annotator, the filters over them
//! and the selection. Moving and filtering change only this state; opening a prompt,
//! generating, typing and the other screens are `Command`s that `App` carries out. The rows
//! may still be arriving from a thread (`loading`), placeholders meanwhile.

use std::collections::BTreeSet;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph};

use super::{Command, Opening};
use crate::tui::field::TextField;
use crate::tui::input::Input;
use crate::tui::keymap::Action;
use crate::tui::loading::QueueLoad;
use crate::tui::queue::{Filter, Item, Status};
use crate::tui::text::{pad, truncate, width};
use crate::tui::widgets::ACCENT;

pub struct QueueScreen {
    pub items: Vec<Item>,
    /// Indices into `items` that pass the filter.
    pub visible: Vec<usize>,
    /// Index into `visible`.
    pub selected: usize,
    pub filter: Filter,
    /// The whole queue, while a thread still reads it (`items` holds placeholders till then).
    pub loading: Option<QueueLoad>,
}

impl QueueScreen {
    pub fn new(items: Vec<Item>, loading: Option<QueueLoad>) -> QueueScreen {
        let mut queue = QueueScreen { items, visible: Vec::new(), selected: 0, filter: Filter::default(), loading };
        queue.apply_filter();
        queue
    }

    pub fn update(&mut self, action: Action) -> Vec<Command> {
        match action {
            Action::Up => self.move_by(-1),
            Action::Down => self.move_by(1),
            Action::PageUp => self.move_by(-10),
            Action::PageDown => self.move_by(10),
            Action::First => self.move_by(i32::MIN),
            Action::Last => self.move_by(i32::MAX),
            Action::Open => return vec![Command::Open(Opening::Compare)],
            Action::SingleReview => return vec![Command::Open(Opening::Thumbs)],
            Action::Search => return vec![Command::Type(Input::Search(TextField::new(self.filter.search.clone())))],
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
            Action::AddPrompt => return vec![Command::Type(Input::AddPrompt(TextField::default()))],
            Action::Generate => return vec![Command::Generate { all: false }],
            Action::GenerateAll => return vec![Command::Generate { all: true }],
            Action::Cancel => return vec![Command::Cancel],
            Action::Quality => return vec![Command::Open(Opening::Qa)],
            Action::Review => return vec![Command::Open(Opening::Runs)],
            Action::Refresh => return vec![Command::RefreshQueue],
            _ => {}
        }
        Vec::new()
    }

    pub fn move_by(&mut self, delta: i32) {
        let last = self.visible.len().saturating_sub(1) as i64;
        self.selected = (self.selected as i64 + delta as i64).clamp(0, last) as usize;
    }

    /// Recomputes the visible rows, keeping the selected prompt if it is still shown.
    pub fn apply_filter(&mut self) {
        let current = self.visible.get(self.selected).copied();
        self.visible = (0..self.items.len()).filter(|&i| self.filter.admits(&self.items[i])).collect();
        self.selected = current.and_then(|c| self.visible.iter().position(|&i| i == c)).unwrap_or(0);
    }

    /// The search narrows the queue with every key typed.
    pub fn set_search(&mut self, search: &str) {
        self.filter.search = search.to_string();
        self.apply_filter();
    }

    pub fn selected_item(&self) -> Option<&Item> {
        self.visible.get(self.selected).map(|&i| &self.items[i])
    }

    /// The position in `visible` of a prompt, if it is shown.
    pub fn position_of(&self, prompt_id: i64) -> Option<usize> {
        self.visible.iter().position(|&i| self.items[i].row.prompt_id == prompt_id)
    }

    /// Selects a prompt if it is shown.
    pub fn select(&mut self, prompt_id: i64) {
        if let Some(position) = self.position_of(prompt_id) {
            self.selected = position;
        }
    }

    /// Where the next (or previous) prompt is: a skip or a finished prompt looks for the next
    /// one that still has a pair for me. None at the end of the queue.
    pub fn step(&self, direction: i64, only_open: bool) -> Option<usize> {
        let count = self.visible.len() as i64;
        if count == 0 {
            return None;
        }
        let open = |p: i64| self.items[self.visible[p as usize]].status == Status::Open;
        let mut position = self.selected as i64;
        for _ in 0..count {
            position += direction;
            if position < 0 || position >= count {
                return None;
            }
            if direction < 0 || !only_open || open(position) {
                break;
            }
        }
        if direction > 0 && !open(position) && !only_open {
            // After a verdict, prefer a prompt that still needs me.
            if let Some(p) = (position..count).find(|&p| open(p)) {
                position = p;
            }
        }
        Some(position as usize)
    }

    /// Notes that `items[index]` was re-read while the whole queue is still on its way.
    pub fn mark_touched(&mut self, index: usize) {
        if let Some(load) = &mut self.loading {
            load.touched.insert(self.items[index].row.prompt_id);
        }
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect) {
        let f = &self.filter;
        let title = format!(
            " Queue · {} of {} · language: {} · domain: {} · status: {}{}{} ",
            self.visible.len(),
            self.items.len(),
            f.language.as_deref().unwrap_or("all"),
            f.domain.as_deref().unwrap_or("all"),
            f.status.label(),
            if f.search.is_empty() { String::new() } else { format!(" · search: {}", f.search) },
            if self.loading.is_some() { " · loading…" } else { "" },
        );
        let block =
            Block::default().borders(Borders::ALL).title(truncate(&title, area.width.saturating_sub(2) as usize));
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let rows = inner.height as usize;
        if rows == 0 {
            return;
        }
        let header = Line::styled(
            pad(" st lang  domain      split  cand  me/all  prompt", inner.width as usize),
            Style::default().add_modifier(Modifier::BOLD),
        );
        let body_rows = rows.saturating_sub(1);
        let first = self.selected.saturating_sub(body_rows.saturating_sub(1));
        let mut lines = vec![header];
        for (offset, &index) in self.visible.iter().enumerate().skip(first).take(body_rows) {
            let item = &self.items[index];
            let style =
                if offset == self.selected { Style::default().bg(ACCENT).fg(Color::Black) } else { Style::default() };
            let mark = match (item.disputed, item.status) {
                (true, _) => "!",
                (_, Status::Done) => "✓",
                (_, Status::Open) => "•",
                (_, Status::NeedsCandidates) => "∅",
                (_, Status::Loading) => {
                    lines.push(Line::styled(pad(" …  loading", inner.width as usize), style));
                    continue;
                }
            };
            let fixed = format!(
                " {mark}  {} {} {} {:>4}  {:>6}  ",
                pad(&item.row.language, 5),
                pad(item.row.domain.as_deref().unwrap_or("-"), 11),
                pad(&item.row.split, 5),
                item.candidates.len(),
                format!("{}/{}", item.mine.len() + item.my_ratings, item.all_judgments + item.all_ratings),
            );
            let room = (inner.width as usize).saturating_sub(width(&fixed));
            let preview = item.row.preview.replace('\n', " ");
            let text = format!("{fixed}{}", pad(&preview, room));
            lines.push(Line::styled(text, style));
        }
        if self.visible.is_empty() {
            lines.push(Line::raw(" nothing matches: L, D, S change the filters, / searches, Esc clears the search"));
        }
        frame.render_widget(Paragraph::new(lines), inner);
    }
}

/// None → first → second → ... → last → None.
fn cycle(all: &BTreeSet<String>, current: Option<String>) -> Option<String> {
    match current {
        None => all.iter().next().cloned(),
        Some(c) => all.range(c.clone()..).nth(1).cloned(),
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
