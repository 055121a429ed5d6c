//! Blind judging: a run's tuned model against its base (win rate with a Wilson interval),
//! or every model with answers against every other (the arena, ranked by Bradley-Terry).
//! Each pair shows in a random order the annotator never learns; votes go to the store
//! through `App`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Wrap};

use super::Command;
use crate::domain::{Outcome, sha256_hex};
use crate::jobs::answers::{self, DEFAULT_SEED};
use crate::qa::winrate::WinRateReport;
use crate::store::{NewEvalVote, Store};
use crate::tui::judge::{AnswerPair, REVIEW_PROMPTS, Worker, answer_pairs, drain, worker_line};
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
    prompts: Vec<i64>,
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
fn a_on_left(annotator: &str, prompt_id: i64, a: i64, b: i64) -> bool {
    let key = sha256_hex(&["blind", annotator, &prompt_id.to_string(), &a.min(b).to_string(), &a.max(b).to_string()]);
    key.as_bytes()[0] % 2 == 0
}

impl BlindView {
    /// Blind evaluation of a run: its tuned model (A) against its base (B).
    pub fn for_run(store: &Store, run_id: i64, annotator: &str, annotator_id: i64) -> anyhow::Result<BlindView> {
        let (base, tuned) = answers::run_models(store, run_id)?;
        let prompts = answers::evaluation_prompts(store, Some(REVIEW_PROMPTS))?;
        let names: HashMap<i64, String> = store.models()?.into_iter().map(|m| (m.id, m.name)).collect();
        let mut view = BlindView {
            run_id: Some(run_id),
            models: [tuned, base].iter().map(|id| (*id, names.get(id).cloned().unwrap_or_default())).collect(),
            todo: Vec::new(),
            current: None,
            judged: 0,
            identical: 0,
            report: None,
            ranking: None,
            worker: Some(Worker::start(store.path().to_path_buf(), vec![base, tuned], prompts.clone(), None)),
            scroll: 0,
            prompts,
        };
        view.reload(store, annotator, annotator_id)?;
        Ok(view)
    }

    /// The arena: every model with answers for the review seed, pairwise.
    pub fn arena(store: &Store, annotator: &str, annotator_id: i64) -> anyhow::Result<BlindView> {
        let mut with_answers: BTreeMap<i64, usize> = BTreeMap::new();
        for model in store.models()? {
            let n = store.model_answers(model.id, DEFAULT_SEED)?.len();
            if n > 0 {
                with_answers.insert(model.id, n);
            }
        }
        if with_answers.len() < 2 {
            anyhow::bail!(
                "the arena needs answers from at least two models: open a finished run's diff (d) or blind \
                 evaluation (e), or run `verdict eval answers --models A,B,C`"
            );
        }
        let names: HashMap<i64, String> = store.models()?.into_iter().map(|m| (m.id, m.name)).collect();
        let prompts = answers::evaluation_prompts(store, Some(REVIEW_PROMPTS))?;
        let mut view = BlindView {
            run_id: None,
            models: with_answers.keys().map(|id| (*id, names.get(id).cloned().unwrap_or_default())).collect(),
            todo: Vec::new(),
            current: None,
            judged: 0,
            identical: 0,
            report: None,
            ranking: None,
            worker: None,
            scroll: 0,
            prompts,
        };
        view.reload(store, annotator, annotator_id)?;
        Ok(view)
    }

    /// Rebuilds what is left to judge and the results so far.
    pub fn reload(&mut self, store: &Store, annotator: &str, annotator_id: i64) -> anyhow::Result<()> {
        let ids: Vec<i64> = self.models.iter().map(|m| m.0).collect();
        let mut todo = Vec::new();
        let mut identical = 0;
        for (i, &a) in ids.iter().enumerate() {
            for &b in &ids[i + 1..] {
                let voted = store.voted_prompts(annotator_id, a, b)?;
                for &prompt_id in &self.prompts {
                    let (ra, rb) = (
                        store.model_answer(a, prompt_id, DEFAULT_SEED)?,
                        store.model_answer(b, prompt_id, DEFAULT_SEED)?,
                    );
                    match (ra, rb) {
                        (Some(x), Some(y)) if x == y => identical += 1,
                        (Some(_), Some(_)) if !voted.contains(&prompt_id) => todo.push((prompt_id, a, b)),
                        _ => {}
                    }
                }
            }
        }
        // Interleave the model pairs so an arena session covers every pair early.
        todo.sort_by_key(|(p, a, b)| {
            sha256_hex(&["arena-order", annotator, &p.to_string(), &a.to_string(), &b.to_string()])
        });
        self.todo = todo;
        self.identical = identical;
        self.results(store)?;
        if self.current.is_none() {
            self.next(store, annotator)?;
        }
        Ok(())
    }

    fn next(&mut self, store: &Store, annotator: &str) -> anyhow::Result<()> {
        self.current = None;
        self.scroll = 0;
        if let Some(&(prompt_id, a, b)) = self.todo.first() {
            if let Some(pair) = answer_pairs(store, a, b, &[prompt_id])?.pop() {
                self.current = Some(BlindPair {
                    pair,
                    a_on_left: a_on_left(annotator, prompt_id, a, b),
                    shown_at: Instant::now(),
                });
            }
        }
        Ok(())
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

    /// After a vote or a skip: the results so far and the next pair.
    pub fn refresh(&mut self, store: &Store, annotator: &str) -> anyhow::Result<()> {
        self.results(store)?;
        self.next(store, annotator)
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

    /// The win rate of the tuned model over the base (stored in `evals` after each vote), or
    /// the arena's ranking: both from `report::review`, as `verdict eval report|arena` print.
    fn results(&mut self, store: &Store) -> anyhow::Result<()> {
        use crate::report::review;
        if let Some(run_id) = self.run_id {
            let report = review::run_report(store, run_id)?;
            review::save_run_report(store, &report)?;
            self.report = Some(report.win_rate);
        } else {
            self.ranking = Some(match review::arena(store) {
                Ok(None) => "no judgments yet".into(),
                Ok(Some(arena)) => arena
                    .models
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        format!(
                            "{}. {}: {}  {:.0} [{:.0}, {:.0}]  {} games, {} won",
                            i + 1,
                            m.model_id,
                            m.name,
                            m.fit.rating,
                            m.fit.ci_low,
                            m.fit.ci_high,
                            m.fit.games,
                            m.fit.wins
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                Err(e) => format!("{e:#}"),
            });
        }
        Ok(())
    }

    pub fn poll(&mut self, store: &Store, annotator: &str, annotator_id: i64) -> anyhow::Result<Option<String>> {
        let Some(worker) = &mut self.worker else { return Ok(None) };
        let (changed, finished, _) = drain(worker);
        if changed {
            self.reload(store, annotator, annotator_id)?;
        }
        Ok(finished.map(|result| {
            self.worker = None;
            match result {
                Ok(()) => "all answers are ready".to_string(),
                Err(e) => format!("error: {e}"),
            }
        }))
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
                        " tuned vs base: win rate {:.1}% (95% CI {:.1}-{:.1}%) · {} wins, {} losses, {} ties, {} both bad",
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
