//! The answers a run generated at each evaluation, prompt by prompt and step by step, each
//! with its changes since the evaluation before. `App` reads them (`app::evaluation`).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::Command;
use crate::tui::keymap::Action;
use crate::tui::widgets::{ACCENT, block};
use crate::tui::worddiff::word_diff;

/// An answer at one evaluation step: (step, text).
pub type StepAnswer = (i64, String);

/// One prompt's answers during a run: (prompt id, prompt text, its answers by step).
pub type PromptAnswers = (i64, String, Vec<StepAnswer>);

/// A run's answers to its fixed prompts, by prompt and evaluation step.
#[derive(Debug, Clone)]
pub struct SamplesView {
    pub run_id: i64,
    /// (prompt id, prompt text, [(step, answer)]) in prompt order.
    pub prompts: Vec<PromptAnswers>,
    pub prompt: usize,
    pub step: usize,
    /// The title and lines of the answer shown, its changes since the evaluation before
    /// marked: computed when the prompt or step changes, not per frame.
    shown: (String, Vec<Line<'static>>),
}

impl SamplesView {
    /// `prompts`: (prompt id, prompt text, [(step, answer)]) in prompt order; the latest
    /// step of the first prompt shows.
    pub fn new(run_id: i64, prompts: Vec<PromptAnswers>) -> SamplesView {
        let step = prompts.first().map(|p| p.2.len().saturating_sub(1)).unwrap_or(0);
        let mut view = SamplesView { run_id, prompts, prompt: 0, step, shown: Default::default() };
        view.show();
        view
    }

    /// The answer shown and the one before it (the previous evaluation) for the diff.
    pub fn current(&self) -> Option<(&str, &[StepAnswer], usize)> {
        let (_, text, steps) = self.prompts.get(self.prompt)?;
        Some((text.as_str(), steps.as_slice(), self.step.min(steps.len().saturating_sub(1))))
    }

    pub fn update(&mut self, action: Action) -> Vec<Command> {
        match action {
            Action::Next => {
                let steps = self.prompts.get(self.prompt).map(|p| p.2.len()).unwrap_or(0);
                self.step = (self.step + 1).min(steps.saturating_sub(1));
            }
            Action::Previous => self.step = self.step.saturating_sub(1),
            Action::Down => self.prompt = (self.prompt + 1).min(self.prompts.len().saturating_sub(1)),
            Action::Up => self.prompt = self.prompt.saturating_sub(1),
            Action::Back => return vec![Command::Close],
            _ => {}
        }
        self.show();
        Vec::new()
    }

    /// Computes the title and marked lines of the answer now shown.
    fn show(&mut self) {
        let Some((_, steps, index)) = self.current() else { return };
        let (step, answer) = &steps[index];
        self.shown = match index.checked_sub(1).map(|i| &steps[i]) {
            Some((before, old)) => {
                (format!(" Answer at step {step} · changes since step {before} "), word_diff(old, answer))
            }
            None => (
                format!(" Answer at step {step} (before training) "),
                answer.lines().map(|l| Line::raw(l.to_string())).collect(),
            ),
        };
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect) {
        let samples = self;
        let Some((prompt, steps, index)) = samples.current() else {
            frame.render_widget(Paragraph::new(" no samples").block(block(" Answers during training ")), area);
            return;
        };
        let [top, bar, body] =
            Layout::vertical([Constraint::Percentage(25), Constraint::Length(3), Constraint::Min(3)]).areas(area);
        let title = format!(" Prompt {}/{} · j/k prompt ", samples.prompt + 1, samples.prompts.len());
        frame.render_widget(Paragraph::new(prompt.to_string()).wrap(Wrap { trim: false }).block(block(&title)), top);
        let mut spans = vec![Span::raw(" step ")];
        for (i, (step, _)) in steps.iter().enumerate() {
            let style = if i == index {
                Style::default().fg(Color::Black).bg(ACCENT).add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            spans.push(Span::styled(format!(" {step} "), style));
        }
        frame.render_widget(Paragraph::new(Line::from(spans)).block(block(" Evaluations · ←/→ ")), bar);
        let (title, lines) = (&samples.shown.0, samples.shown.1.clone());
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block(title)), body);
    }
}
