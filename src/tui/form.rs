//! The new-run form, a screen over the runs list: the options of `verdict train` that
//! `train_config::OPTIONS` marks for the form, with the same labels, help and defaults, each
//! value checked as it is typed (the reason shown beside the field), and the resolved pairs that
//! would go in, by language. Beside them, the plan for the options as they stand: the training
//! set compiled for the chosen method (counts per label kind and language) and the memory plan
//! (peak, whether it fits, what would make it fit), computed on a thread by `App`
//! (`tui::app::form_plan`) whenever an option changes, "planning…" until it arrives. Starting
//! the run is a `Command` (`Train`) that `App` carries out; a plan that does not fit refuses it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::field::TextField;
use super::input::edit_field;
use super::keymap::Action;
use super::screens::Command;
use super::text::{pad, truncate};
use super::widgets::{ACCENT, block};
use crate::domain::Split;
use crate::jobs::train::TrainConfig;
use crate::jobs::train_config::{FORM_LORA_RANK, OPTIONS};
use crate::store::Store;

/// What a field holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Choice { options: Vec<&'static str>, index: usize },
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub key: &'static str,
    pub label: &'static str,
    pub value: Value,
    pub hint: &'static str,
}

impl Field {
    pub fn text(&self) -> String {
        match &self.value {
            Value::Choice { options, index } => options[*index].to_string(),
            Value::Text(t) => t.clone(),
        }
    }
}

pub struct TrainForm {
    pub fields: Vec<Field>,
    pub selected: usize,
    /// The text being typed into the selected field.
    pub editing: Option<TextField>,
    /// Resolved pairs that would go in: language → (train, test).
    pub pairs: BTreeMap<String, (usize, usize)>,
    /// The plan that arrived last and the config key (`plan_request`) it was made for; shown
    /// only while that key is still the form's.
    pub planned: Option<(String, Plan)>,
}

/// What the form's background job computed for one set of options.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The compiled training set as panel lines (total first), or why it could not be compiled.
    pub counts: Result<Vec<String>, String>,
    /// `train::memory::plan_text`, or why there is none; `None`: not planned (a store with no
    /// file, as in tests: no second connection reaches it).
    pub memory: Option<Result<String, String>>,
}

impl Plan {
    /// The plan's "available now" line when the run does not fit in the memory available.
    pub fn does_not_fit(&self) -> Option<String> {
        let text = self.memory.as_ref()?.as_ref().ok()?;
        text.lines().find(|l| l.contains(": does not fit")).map(squeeze)
    }

    /// The panel's lines: the counts, then the memory plan's verdict (peak, fits), then its parts.
    fn lines(&self) -> Vec<Line<'static>> {
        let mut out = Vec::new();
        match &self.counts {
            Ok(counts) => out.extend(counts.iter().map(|l| Line::raw(l.clone()))),
            Err(why) => out.push(Line::styled(format!(" counts: {why}"), Style::default().fg(Color::Red))),
        }
        match &self.memory {
            None => out.push(Line::styled(" memory plan: needs a store file", Style::default().fg(Color::DarkGray))),
            Some(Err(why)) => out.push(Line::styled(format!(" memory plan: {why}"), Style::default().fg(Color::Red))),
            Some(Ok(text)) => {
                let bold = Style::default().add_modifier(Modifier::BOLD);
                let lines: Vec<&str> = text.lines().skip(1).collect();
                // What decides first (they survive a short terminal), the parts after.
                for line in lines.iter().filter(|l| l.contains("predicted peak")) {
                    out.push(Line::styled(format!(" {}", squeeze(line).replace("predicted ", "")), bold));
                }
                for line in lines.iter().filter(|l| l.contains("available now")) {
                    let style = if line.contains("does not fit") {
                        Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
                    } else {
                        Style::default().fg(Color::Green)
                    };
                    out.push(Line::styled(
                        format!(" {}", squeeze(line).replace("available now ", "available ")),
                        style,
                    ));
                }
                for line in lines.iter().filter(|l| l.starts_with("memory:")) {
                    out.push(Line::raw(format!(" {}", squeeze(line))));
                }
                for line in lines.iter().filter(|l| {
                    !(l.contains("predicted peak") || l.contains("available now") || l.starts_with("memory:"))
                }) {
                    out.push(Line::styled(format!(" {}", squeeze(line)), Style::default().fg(Color::DarkGray)));
                }
            }
        }
        out
    }
}

/// A plan line with its runs of spaces (the CLI's columns) made one.
fn squeeze(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The compiled set's counts as the panel shows them: the total, then one line per label kind
/// and language (labels → examples).
pub fn count_lines(compiled: &crate::qa::compile::Compiled) -> Vec<String> {
    let method = format!("{:?}", compiled.method).to_lowercase();
    let mut out = vec![format!(" {method}: {} (train + test)", compiled.examples())];
    for ((kind, language), c) in &compiled.counts {
        let skipped = if c.skipped > 0 { format!(" ({} skipped)", c.skipped) } else { String::new() };
        out.push(format!(" {:<10} {:<5}{:>3} → {}{skipped}", kind.as_str(), language, c.labels, c.examples));
    }
    if compiled.conflicting > 0 {
        out.push(format!(" {} answers both good and bad", compiled.conflicting));
    }
    out
}

fn choice(key: &'static str, label: &'static str, options: Vec<&'static str>, hint: &'static str) -> Field {
    Field { key, label, value: Value::Choice { options, index: 0 }, hint }
}

fn text(key: &'static str, label: &'static str, value: String, hint: &'static str) -> Field {
    Field { key, label, value: Value::Text(value), hint }
}

impl TrainForm {
    pub fn new(store: &Store, model: Option<PathBuf>) -> anyhow::Result<TrainForm> {
        // Every field, label, hint and default from the one table of run options, so the form
        // cannot disagree with `verdict train` or a run config file.
        let defaults = TrainConfig::default();
        let mut fields = Vec::new();
        for o in OPTIONS.iter().filter(|o| o.in_form) {
            if o.key == "lora_rank" {
                // A switch, then the rank it uses: the config's own "no rank" is the switch off.
                fields.push(choice(
                    "lora",
                    "LoRA",
                    vec!["off", "on"],
                    "on: train small adapters, the base stays frozen",
                ));
                fields.push(text(o.key, o.label, FORM_LORA_RANK.to_string(), "used when LoRA is on"));
                continue;
            }
            let value = match o.key {
                "model" => model.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                key => defaults.text(key),
            };
            if o.choices.is_empty() {
                fields.push(text(o.key, o.label, value, o.help));
            } else {
                let index = o.choices.iter().position(|c| *c == value).unwrap_or(0);
                fields.push(Field {
                    key: o.key,
                    label: o.label,
                    value: Value::Choice { options: o.choices.to_vec(), index },
                    hint: o.help,
                });
            }
        }
        let mut pairs: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let prompts: BTreeMap<i64, (String, Split)> =
            store.prompts()?.into_iter().map(|p| (p.id, (p.language, p.split))).collect();
        for pair in crate::qa::resolved_pairs(store)? {
            if let Some((language, split)) = prompts.get(&pair.prompt_id) {
                let entry = pairs.entry(language.clone()).or_default();
                match split {
                    Split::Train => entry.0 += 1,
                    Split::Test => entry.1 += 1,
                }
            }
        }
        Ok(TrainForm { fields, selected: 0, editing: None, pairs, planned: None })
    }

    pub fn move_by(&mut self, delta: i64) {
        self.selected = (self.selected as i64 + delta).clamp(0, self.fields.len() as i64 - 1) as usize;
    }

    /// Next or previous option of a choice field.
    pub fn cycle(&mut self, delta: i64) {
        if let Value::Choice { options, index } = &mut self.fields[self.selected].value {
            *index = (*index as i64 + delta).rem_euclid(options.len() as i64) as usize;
        }
    }

    /// Enter: a choice cycles, a text field starts taking typed text.
    pub fn edit(&mut self) {
        match &self.fields[self.selected].value {
            Value::Choice { .. } => self.cycle(1),
            Value::Text(t) => self.editing = Some(TextField::new(t.clone())),
        }
    }

    /// True while a field takes typed text (the key map's Line section then decides).
    pub fn typing(&self) -> bool {
        self.editing.is_some()
    }

    /// A key while a field is typed: Enter keeps, Esc drops, Backspace deletes, the keys the
    /// Line section does not bind type their character.
    pub fn type_key(&mut self, action: Option<Action>, key: KeyEvent) {
        let Some(buffer) = &mut self.editing else { return };
        match action {
            Some(Action::Confirm) => {
                let typed = self.editing.take().unwrap_or_default();
                self.fields[self.selected].value = Value::Text(typed.text().trim().to_string());
            }
            Some(Action::Back) => self.editing = None,
            _ => edit_field(buffer, action, &key),
        }
    }

    pub fn update(&mut self, action: Action) -> Vec<Command> {
        match action {
            Action::Down => self.move_by(1),
            Action::Up => self.move_by(-1),
            Action::Next => self.cycle(1),
            Action::Previous => self.cycle(-1),
            Action::Edit => self.edit(),
            Action::StartRun => {
                let config = match self.config() {
                    Ok(config) => config,
                    Err(why) => return vec![Command::Message(format!("error: {why}"))],
                };
                // Refused as `verdict train` refuses it on the CPU (a GPU's memory is not asked).
                let gpu = config.device.starts_with("cuda") || config.device == "metal";
                if !gpu && let Some(line) = self.current_plan().and_then(Plan::does_not_fit) {
                    return vec![Command::Message(format!(
                        "error: this run would not fit in memory ({line}): change the options the plan names"
                    ))];
                }
                return vec![Command::Train(Box::new(config))];
            }
            Action::Back => return vec![Command::Close],
            _ => {}
        }
        Vec::new()
    }

    fn get(&self, key: &str) -> String {
        self.fields.iter().find(|f| f.key == key).map(|f| f.text()).unwrap_or_default()
    }

    /// Why a field's value cannot be used, if it cannot: the run options' own table
    /// (`jobs::train_config::RULES`) checks every field that is a run option.
    pub fn error(&self, key: &str) -> Option<String> {
        self.error_with(key, self.get(key))
    }

    /// Why `value` could not be used for the field `key` (the text being typed, as it is typed).
    fn error_with(&self, key: &str, value: String) -> Option<String> {
        match key {
            "lora" | "method" | "loss" => None,
            "lora_rank" if self.get("lora") != "on" => None,
            "model" if !value.is_empty() && !std::path::Path::new(&value).exists() => {
                Some("no such file or folder".into())
            }
            "model" => None,
            _ => {
                let mut config = TrainConfig::default();
                // An empty rank with LoRA on is no rank.
                let value = if key == "lora_rank" && value.is_empty() { "0".into() } else { value };
                match config.set_text(key, &value) {
                    Err(why) => Some(why),
                    Ok(()) => config.option_error(key),
                }
            }
        }
    }

    /// The run config, or the first field that is wrong.
    pub fn config(&self) -> anyhow::Result<TrainConfig> {
        let total: usize = self.pairs.values().map(|p| p.0).sum();
        let config = self.options()?;
        if total == 0 {
            anyhow::bail!("no resolved pairs in the train split: label some pairs first");
        }
        Ok(config)
    }

    /// What the plan is made for: the options as a config and its key (two configs plan alike
    /// when their keys are equal); `None` while a field is wrong.
    pub fn plan_request(&self) -> Option<(String, TrainConfig)> {
        let config = self.options().ok()?;
        Some((format!("{config:?}"), config))
    }

    /// The plan made for the options as they stand, once it arrived.
    pub fn current_plan(&self) -> Option<&Plan> {
        let (key, _) = self.plan_request()?;
        self.planned.as_ref().filter(|(k, _)| *k == key).map(|(_, plan)| plan)
    }

    /// The options as a run config, or the first field that is wrong.
    fn options(&self) -> anyhow::Result<TrainConfig> {
        if let Some(field) = self.fields.iter().find(|f| self.error(f.key).is_some()) {
            anyhow::bail!("{}: {}", field.label, self.error(field.key).unwrap_or_default());
        }
        let mut config = TrainConfig::default();
        for field in &self.fields {
            match field.key {
                "lora" => {}
                "lora_rank" if self.get("lora") != "on" => config.lora_rank = None,
                key => config.set_text(key, &field.text()).map_err(|why| anyhow::anyhow!("{}: {why}", field.label))?,
            }
        }
        config.check()?;
        Ok(config)
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect) {
        let form = self;
        let [left, right] = Layout::horizontal([Constraint::Min(50), Constraint::Length(30)]).areas(area);
        let mut lines = Vec::new();
        for (i, field) in form.fields.iter().enumerate() {
            let selected = i == form.selected;
            let value = match (&field.value, selected, &form.editing) {
                (_, true, Some(typed)) => typed.with_marker_within("▏", 26),
                (Value::Choice { options, index }, _, _) => format!("‹ {} ›", options[*index]),
                (Value::Text(t), _, _) if t.is_empty() => "(default)".into(),
                (Value::Text(t), _, _) => t.clone(),
            };
            let label_style = if selected {
                Style::default().bg(Color::DarkGray).add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            let error = match (selected, &form.editing) {
                (true, Some(typed)) => form.error_with(field.key, typed.text().trim().to_string()),
                _ => form.error(field.key),
            };
            let hint = if error.is_none() { field.hint } else { "" };
            lines.push(Line::from(vec![
                Span::styled(format!(" {} ", pad(field.label, 22)), label_style),
                Span::styled(pad(&truncate(&value, 26), 27), Style::default().fg(ACCENT)),
                Span::styled(hint, Style::default().fg(Color::DarkGray)),
            ]));
            // The reason a value is wrong gets its own line, so it shows on a narrow terminal.
            if let Some(error) = error {
                lines.push(Line::styled(format!("   ✗ {}: {error}", field.label), Style::default().fg(Color::Red)));
            }
        }
        lines.push(Line::raw(""));
        lines.push(Line::raw(" Enter edits a field (Enter keeps, Esc drops) · ←/→ change a choice · S starts"));
        frame.render_widget(Paragraph::new(lines).block(block(" New training run ")), left);

        let mut pairs = vec![Line::styled(
            format!(" {} {} {}", pad("language", 10), pad("train", 6), "test"),
            Style::default().add_modifier(Modifier::BOLD),
        )];
        let (mut train, mut test) = (0, 0);
        for (language, (a, b)) in &form.pairs {
            pairs.push(Line::raw(format!(" {} {} {b}", pad(language, 10), pad(&a.to_string(), 6))));
            train += a;
            test += b;
        }
        pairs.push(Line::styled(
            format!(" {} {} {test}", pad("all", 10), pad(&train.to_string(), 6)),
            Style::default().add_modifier(Modifier::BOLD),
        ));
        if train == 0 {
            pairs.push(Line::styled(" no pairs to train on yet", Style::default().fg(Color::Red)));
        }
        let [pairs_area, plan_area] =
            Layout::vertical([Constraint::Length(pairs.len() as u16 + 2), Constraint::Min(3)]).areas(right);
        frame.render_widget(Paragraph::new(pairs).block(block(" Resolved pairs going in ")), pairs_area);
        let plan = match (self.plan_request(), self.current_plan()) {
            (None, _) => vec![Line::styled(" fix the marked field to plan", Style::default().fg(Color::Red))],
            (Some(_), None) => vec![Line::styled(" planning…", Style::default().fg(Color::DarkGray))],
            (Some(_), Some(plan)) => plan.lines(),
        };
        frame.render_widget(
            Paragraph::new(plan).wrap(Wrap { trim: false }).block(block(" Training set · memory ")),
            plan_area,
        );
    }
}
