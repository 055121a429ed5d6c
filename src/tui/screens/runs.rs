//! The runs list (T from the queue): every training run, trained in this window or in another
//! process, with its status, steps, loss, evaluation accuracy and latest blind win rate. Keys
//! move, open a run's curves, start, stop and resume runs and open the screens that compare a
//! run's models, all as `Command`s. What it shows is read for it by `App`: when it opens,
//! after a command, and on a thread when another connection commits to the store.

use std::collections::HashMap;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use super::{Command, Ctx, Opening};
use crate::domain::RunStatus;
use crate::store::RunRow;
use crate::tui::keymap::Action;
use crate::tui::text::{pad, truncate};
use crate::tui::widgets::block;

/// The latest stored blind win rate of each run's tuned model over its base: (rate, low, high).
pub type WinRates = HashMap<i64, (f64, f64, f64)>;

pub struct RunsScreen {
    pub runs: Vec<RunRow>,
    pub selected: usize,
    pub win_rates: WinRates,
}

impl RunsScreen {
    pub fn new(runs: Vec<RunRow>, win_rates: WinRates) -> RunsScreen {
        RunsScreen { runs, selected: 0, win_rates }
    }

    /// Takes in the runs as read again; the selection stays on the list.
    pub fn show(&mut self, runs: Vec<RunRow>, win_rates: WinRates) {
        self.runs = runs;
        self.win_rates = win_rates;
        self.selected = self.selected.min(self.runs.len().saturating_sub(1));
    }

    pub fn update(&mut self, action: Action, ctx: &Ctx) -> Vec<Command> {
        match action {
            Action::Back => vec![Command::Close],
            Action::Down => {
                self.selected = (self.selected + 1).min(self.runs.len().saturating_sub(1));
                Vec::new()
            }
            Action::Up => {
                self.selected = self.selected.saturating_sub(1);
                Vec::new()
            }
            Action::Open => match self.runs.get(self.selected) {
                Some(run) => vec![Command::Open(Opening::Curves(run.id))],
                None => Vec::new(),
            },
            Action::Refresh => vec![Command::Refresh],
            Action::NewRun => vec![Command::Open(Opening::Form)],
            Action::Arena => vec![Command::Open(Opening::Arena)],
            other => match self.runs.get(self.selected) {
                Some(run) => run_action(run, other, ctx),
                None => Vec::new(),
            },
        }
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect) {
        draw_runs(frame, self, area)
    }
}

/// The keys that act on one run, the same on the list and on the run's curves: stop, resume,
/// its answers, marking its model, the diff and the blind evaluation.
pub fn run_action(run: &RunRow, action: Action, ctx: &Ctx) -> Vec<Command> {
    match action {
        Action::StopRun => vec![Command::StopRun(Box::new(run.clone()))],
        Action::ResumeRun => vec![Command::ResumeRun(Box::new(run.clone()))],
        Action::Samples => vec![Command::Open(Opening::Samples(run.id))],
        Action::Mark => {
            // The run's tuned model, or its base while it has none.
            let model = run.output_model_id.or(run.base_model_id);
            let message = match model {
                Some(m) => format!("model {m} (run {}) marked: d on another run diffs against it", run.id),
                None => format!("run {} has no model to mark", run.id),
            };
            vec![Command::Mark(model.map(|m| (run.id, m))), Command::Message(message)]
        }
        Action::Diff => {
            let against = run.output_model_id.or(run.base_model_id);
            let models = match (ctx.marked, against) {
                (Some((marked_run, old)), Some(new)) if marked_run != run.id && old != new => Some((old, new)),
                _ => None,
            };
            vec![
                Command::Mark(None),
                Command::Message("answers missing for either model are being generated (same seed for both)".into()),
                Command::Open(Opening::Diff { run_id: run.id, models }),
            ]
        }
        Action::BlindEval => vec![Command::Open(Opening::Blind(run.id))],
        _ => Vec::new(),
    }
}

/// A number with `digits` decimals, or a dash.
pub fn number(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "–".into())
}

fn draw_runs(frame: &mut Frame, screen: &RunsScreen, area: Rect) {
    let inner = (area.width as usize).saturating_sub(2);
    // Fixed columns first; the base model's name takes what is left, and the pairs and
    // training-set columns show only when there is room for them.
    let wide = inner >= 110;
    let fixed = 4 + 9 + 10 + 9 + 7 + 6 + 17 + if wide { 18 } else { 0 } + 8;
    let model_width = inner.saturating_sub(fixed).clamp(8, 36);
    let row = |cells: [&str; 10]| -> String {
        let [id, status, method, model, pairs, set, steps, loss, acc, win] = cells;
        let pairs = if wide { format!("{} {} ", pad(pairs, 8), pad(set, 8)) } else { String::new() };
        format!(
            "{} {} {} {} {pairs}{} {} {} {win}",
            pad(id, 4),
            pad(status, 8),
            pad(method, 9),
            pad(&truncate(model, model_width), model_width),
            pad(steps, 8),
            pad(loss, 6),
            pad(acc, 5),
        )
    };
    let mut lines = vec![Line::styled(
        truncate(
            &row([
                "run",
                "status",
                "method",
                "base model",
                "pairs",
                "set",
                "steps",
                "loss",
                "eval acc",
                "win rate (95% CI)",
            ]),
            inner,
        ),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    for (i, run) in screen.runs.iter().enumerate() {
        let method = match serde_json::from_str::<serde_json::Value>(&run.config) {
            Ok(c) if c["lora_rank"].is_number() => format!("{}+lora", run.method),
            _ => run.method.clone(),
        };
        let win = screen
            .win_rates
            .get(&run.id)
            .map(|(w, lo, hi)| format!("{:.0}% ({:.0}-{:.0})", w * 100.0, lo * 100.0, hi * 100.0))
            .unwrap_or_else(|| "–".into());
        let pairs = match (run.train_pairs, run.test_pairs) {
            (Some(a), Some(b)) => format!("{a}/{b}"),
            _ => "–".into(),
        };
        let steps = format!(
            "{}/{}",
            run.last_step.unwrap_or(0),
            run.total_steps.map(|t| t.to_string()).unwrap_or_else(|| "?".into())
        );
        let line = row([
            &run.id.to_string(),
            run.status.as_str(),
            &method,
            run.base_model.as_deref().unwrap_or("–"),
            &pairs,
            run.set_hash.as_deref().map(|h| &h[..h.len().min(8)]).unwrap_or("–"),
            &steps,
            &number(run.last_loss, 4),
            &number(run.eval_accuracy, 2),
            &win,
        ]);
        let mut style = Style::default().fg(status_color(run.status));
        if i == screen.selected {
            style = style.bg(Color::DarkGray).add_modifier(Modifier::BOLD);
        }
        lines.push(Line::styled(truncate(&line, inner), style));
        if let Some(error) = &run.error {
            lines.push(Line::styled(truncate(&format!("     {error}"), inner), Style::default().fg(Color::Red)));
        }
    }
    if screen.runs.is_empty() {
        lines.push(Line::raw(""));
        lines.push(Line::raw("No training runs yet. n opens the form for one; `verdict train` in another"));
        lines.push(Line::raw("terminal works too, and its run shows up here with live curves."));
    }
    let title = format!(" Runs · {} · Enter curves · n new run · esc queue ", screen.runs.len());
    frame.render_widget(Paragraph::new(lines).block(block(&title)), area);
}

/// A run's status in the list and its header: running green, failed red, stopped yellow.
pub fn status_color(status: RunStatus) -> Color {
    match status {
        RunStatus::Running => Color::Green,
        RunStatus::Failed => Color::Red,
        RunStatus::Stopped => Color::Yellow,
        RunStatus::Finished => Color::Reset,
    }
}

#[cfg(test)]
#[path = "runs_tests.rs"]
mod tests;
