//! Blind judging: a run's tuned model against its base (win rate with a Wilson interval),
//! or every model with answers against every other (the arena, ranked by Bradley-Terry).
//! Each pair shows in a random order the annotator never learns; votes go to the store
//! through `App`, which also reads the pairs left and the results for it (`app::evaluation`).

use std::time::Instant;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Wrap};

use super::{Command, Polled};
use crate::domain::{Outcome, sha256_hex};
use crate::qa::winrate::WinRateReport;
use crate::store::NewEvalVote;
use crate::tui::judge::{AnswerPair, Worker, drain, worker_line};
use crate::tui::keymap::Action;
use crate::tui::widgets::{answer_panes, block};

/// Blind judging: each pair of answers shown in a random order the annotator never learns.
pub struct BlindView {
    /// The run whose tuned model (A) is judged against its base (B); None in the arena.
    pub run_id: Option<i64>,
    pub models: Vec<(i64, String)>,
    /// The pairs still to judge: (prompt, model A, model B).
    pub todo: Vec<(i64, i64, i64)>,
    pub current: Option<BlindPair>,
    pub judged: usize,
    pub identical: usize,
    pub report: Option<WinRateReport>,
    /// The arena's ranking text (several models).
    pub ranking: Option<String>,
    pub worker: Option<Worker>,
    pub scroll: u16,
    /// The prompts judged, in order.
    pub prompts: Vec<i64>,
}

/// The pair on screen, and which model is on the left (recorded with the vote).
#[derive(Debug, Clone, PartialEq)]
pub struct BlindPair {
    pub pair: AnswerPair,
    pub a_on_left: bool,
    pub shown_at: Instant,
}

impl BlindPair {
    /// (left text, right text).
    pub fn sides(&self) -> (&str, &str) {
        let a = self.pair.a.as_ref().map(|x| x.2.as_str()).unwrap_or("");
        let b = self.pair.b.as_ref().map(|x| x.2.as_str()).unwrap_or("");
        if self.a_on_left { (a, b) } else { (b, a) }
    }
}

/// Which side model A is shown on: random per (annotator, prompt, models), stable.
pub fn a_on_left(annotator: &str, prompt_id: i64, a: i64, b: i64) -> bool {
    let key = sha256_hex(&["blind", annotator, &prompt_id.to_string(), &a.min(b).to_string(), &a.max(b).to_string()]);
    key.as_bytes()[0].is_multiple_of(2)
}

impl BlindView {
    /// Blind judging of `models` over `prompts` (a run's tuned model first, then its base;
    /// the arena's models in id order), while `worker` makes missing answers. `App` fills in
    /// what is left to judge and the results (`app::evaluation`).
    pub fn new(
        run_id: Option<i64>,
        models: Vec<(i64, String)>,
        prompts: Vec<i64>,
        worker: Option<Worker>,
    ) -> BlindView {
        BlindView {
            run_id,
            models,
            todo: Vec::new(),
            current: None,
            judged: 0,
            identical: 0,
            report: None,
            ranking: None,
            worker,
            scroll: 0,
            prompts,
        }
    }

    /// Takes in the worker's progress: `reread` when it stored answers, a message when it ends.
    pub fn poll(&mut self) -> Polled {
        let Some(worker) = &mut self.worker else { return Polled::default() };
        let (changed, finished, _) = drain(worker);
        let message = finished.map(|result| {
            self.worker = None;
            match result {
                Ok(()) => "all answers are ready".to_string(),
                Err(e) => format!("error: {e}"),
            }
        });
        Polled { changed: changed || message.is_some(), message, reread: changed }
    }

    /// Skips the pair on screen for now (it comes back at the end).
    pub fn skip(&mut self) -> Vec<Command> {
        if !self.todo.is_empty() {
            let first = self.todo.remove(0);
            self.todo.push(first);
        }
        vec![Command::Refresh]
    }

    /// A vote for the side on the left (`Outcome::A`), the right (`B`), a tie or both bad,
    /// translated to the models' order: `App` commits it before the next pair shows.
    pub fn vote(&mut self, annotator_id: i64, side: Outcome) -> Vec<Command> {
        let Some(current) = &self.current else { return Vec::new() };
        let (Some(a), Some(b)) = (&current.pair.a, &current.pair.b) else { return Vec::new() };
        let outcome = match (side, current.a_on_left) {
            (Outcome::A, true) | (Outcome::B, false) => Outcome::A,
            (Outcome::A, false) | (Outcome::B, true) => Outcome::B,
            (other, _) => other,
        };
        let vote = NewEvalVote {
            annotator_id,
            prompt_id: current.pair.prompt_id,
            model_a: a.0,
            model_b: b.0,
            response_a: a.1,
            response_b: b.1,
            a_on_left: current.a_on_left,
            outcome,
            seconds: Some(current.shown_at.elapsed().as_secs_f64()),
        };
        self.judged += 1;
        let (prompt, model_a, model_b) = (current.pair.prompt_id, a.0, b.0);
        self.todo.retain(|&(p, x, y)| !(p == prompt && x == model_a && y == model_b));
        vec![Command::EvalVote(vote)]
    }

    pub fn update(&mut self, action: Action, annotator_id: i64) -> Vec<Command> {
        match action {
            Action::LeftBetter => return self.vote(annotator_id, Outcome::A),
            Action::RightBetter => return self.vote(annotator_id, Outcome::B),
            Action::Tie => return self.vote(annotator_id, Outcome::Tie),
            Action::BothBad => return self.vote(annotator_id, Outcome::BothBad),
            Action::Skip => return self.skip(),
            Action::Down => self.scroll = self.scroll.saturating_add(1),
            Action::Up => self.scroll = self.scroll.saturating_sub(1),
            Action::Back => return vec![Command::Close],
            _ => {}
        }
        Vec::new()
    }

    pub fn stop_worker(&self) {
        if let Some(w) = &self.worker {
            w.stop();
        }
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect) {
        let blind = self;
        let results_height = if blind.run_id.is_some() { 7 } else { (blind.models.len() as u16 + 3).min(12) };
        let [results, top, body] =
            Layout::vertical([Constraint::Length(results_height), Constraint::Percentage(25), Constraint::Min(6)])
                .areas(area);
        let mut lines: Vec<Line> = Vec::new();
        match (&blind.report, &blind.ranking) {
            (Some(report), _) => {
                let o = &report.overall;
                lines.push(Line::raw(match (o.rate, o.interval) {
                    (Some(rate), Some(ci)) => format!(
                        " tuned vs base: win rate {:.1}% (95% CI {:.1}-{:.1}%) · {} wins, {} losses, {} ties, {} both bad (a tie or both bad counts ½)",
                        rate * 100.0,
                        ci.low * 100.0,
                        ci.high * 100.0,
                        o.wins,
                        o.losses,
                        o.ties,
                        o.both_bad
                    ),
                    _ => " no blind judgments yet: the win rate appears with the first".into(),
                }));
                let by_language: Vec<String> = report
                    .by_language
                    .iter()
                    .filter_map(|(l, w)| w.rate.map(|r| format!("{l} {:.0}% (n={})", r * 100.0, w.n)))
                    .collect();
                if !by_language.is_empty() {
                    lines.push(Line::raw(format!(" by language: {}", by_language.join(" · "))));
                }
            }
            (None, Some(ranking)) => lines.extend(ranking.lines().map(|l| Line::raw(format!(" {l}")))),
            _ => {}
        }
        lines.push(Line::styled(
            format!(
                " {} judged this session · {} left{}{}",
                blind.judged,
                blind.todo.len(),
                if blind.identical > 0 {
                    format!(" · {} identical answers not shown", blind.identical)
                } else {
                    String::new()
                },
                worker_line(blind.worker.as_ref())
            ),
            Style::default().fg(Color::DarkGray),
        ));
        let title = if blind.run_id.is_some() { " Blind evaluation " } else { " Arena · Bradley-Terry, 95% CI " };
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block(title)), results);
        let Some(current) = &blind.current else {
            let text = if blind.worker.is_some() {
                " waiting for answers…"
            } else {
                " nothing left to judge: every pair of answers has your vote"
            };
            frame.render_widget(Paragraph::new(text).block(block(" Pair ")), top);
            return;
        };
        let prompt_title = format!(" Prompt [{}] · which answer is better? ", current.pair.language);
        frame.render_widget(
            Paragraph::new(current.pair.prompt.clone()).wrap(Wrap { trim: false }).block(block(&prompt_title)),
            top,
        );
        let (left_text, right_text) = current.sides();
        let (left, right) = answer_panes(body);
        for (pane, title, text) in [(left, " 1 · Left ", left_text), (right, " 2 · Right ", right_text)] {
            frame.render_widget(
                Paragraph::new(text.to_string())
                    .wrap(Wrap { trim: false })
                    .scroll((blind.scroll, 0))
                    .block(block(title)),
                pane,
            );
        }
    }
}

#[cfg(test)]
#[path = "blind_tests.rs"]
mod tests;
