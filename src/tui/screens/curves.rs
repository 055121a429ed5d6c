//! A run's live curves (Enter on the runs list): loss, reward margin and accuracy, train and
//! eval, with its step, speed and ETA. The same keys as the list act on its run. The curves
//! are read for it by `App` when it opens and, on a thread, whenever the store changes, so a
//! run trained in another terminal moves here too.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};

use super::runs::{number, run_action, status_color};
use super::{Command, Ctx};
use crate::domain::RunStatus;
use crate::store::RunRow;
use crate::tui::keymap::Action;
use crate::tui::widgets::block;

/// The curves of one run, as the live view draws them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    pub loss: Vec<(f64, f64)>,
    pub eval_loss: Vec<(f64, f64)>,
    pub margins: Vec<(f64, f64)>,
    pub eval_margins: Vec<(f64, f64)>,
    pub accuracy: Vec<(f64, f64)>,
    pub eval_accuracy: Vec<(f64, f64)>,
    pub chosen: Vec<(f64, f64)>,
    pub rejected: Vec<(f64, f64)>,
    /// KTO's KL estimate and ORPO's NLL term, train and eval (empty for other methods).
    pub kl: Vec<(f64, f64)>,
    pub eval_kl: Vec<(f64, f64)>,
    pub nll: Vec<(f64, f64)>,
    pub eval_nll: Vec<(f64, f64)>,
    /// Tokens per second of each step: what SFT's lower panel shows, having no margins.
    pub speed: Vec<(f64, f64)>,
    /// Latest values: tokens/s, model TFLOP/s and FLOPs utilisation (`train::flops`), epoch,
    /// median seconds per step over the last ten.
    pub tokens_per_second: Option<f64>,
    pub tflops: Option<f64>,
    pub mfu: Option<f64>,
    pub epoch: Option<f64>,
    pub seconds_per_step: Option<f64>,
}

impl Curves {
    /// The last step with metrics.
    pub fn step(&self) -> usize {
        self.loss.last().map(|p| p.0 as usize).unwrap_or(0)
    }
}

pub struct CurvesScreen {
    pub run_id: i64,
    /// The run's row; None if it is no longer in the store.
    pub run: Option<RunRow>,
    pub curves: Curves,
}

impl CurvesScreen {
    pub fn update(&mut self, action: Action, ctx: &Ctx) -> Vec<Command> {
        match (action, &self.run) {
            (Action::Back, _) => vec![Command::Close],
            (other, Some(run)) => run_action(run, other, ctx),
            (_, None) => Vec::new(),
        }
    }

    /// Seconds until the run finishes, from the median step time (None before two steps).
    pub fn eta(run: &RunRow, curves: &Curves) -> Option<f64> {
        let total = run.total_steps? as f64;
        let per_step = curves.seconds_per_step?;
        Some((total - curves.step() as f64).max(0.0) * per_step)
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect) {
        match &self.run {
            Some(run) => draw_run(frame, run, &self.curves, area),
            None => frame.render_widget(
                Paragraph::new(format!(" run {} is no longer in the store", self.run_id)).block(block(" Run ")),
                area,
            ),
        }
    }
}

/// A chart's line: its name, its (step, value) points and its colour.
type Series<'a> = (&'a str, &'a Vec<(f64, f64)>, Color);

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, s % 3600 / 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}

fn draw_run(frame: &mut Frame, run: &RunRow, curves: &Curves, area: Rect) {
    let step = curves.step();
    let total = run.total_steps.map(|t| t.to_string()).unwrap_or_else(|| "?".into());
    let eta = match (run.status, CurvesScreen::eta(run, curves)) {
        (RunStatus::Running, Some(s)) => duration(s),
        (RunStatus::Running, None) => "–".into(),
        _ => "done".into(),
    };
    let status_color = status_color(run.status);
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!(" {} ", run.status), Style::default().fg(Color::Black).bg(status_color)),
            Span::raw(format!(
                "  step {step}/{total} · ETA {eta} · {} s/step · {} tok/s · MFU {}",
                number(curves.seconds_per_step, 2),
                number(curves.tokens_per_second, 0),
                curves.mfu.map(|m| format!("{:.1}%", 100.0 * m)).unwrap_or_else(|| "–".into()),
            )),
        ]),
        Line::raw(format!(
            " epoch {} · pairs {} train / {} test · {} truncated · base {} · loss {} · eval loss {} · eval acc {} · {} model TFLOP/s",
            number(curves.epoch, 2),
            run.train_pairs.unwrap_or(0),
            run.test_pairs.unwrap_or(0),
            run.truncated.unwrap_or(0),
            run.base_model.as_deref().unwrap_or("–"),
            number(curves.loss.last().map(|p| p.1), 4),
            number(curves.eval_loss.last().map(|p| p.1), 4),
            number(curves.eval_accuracy.last().map(|p| p.1), 2),
            number(curves.tflops, 3),
        )),
    ];
    if let Some(error) = &run.error {
        lines.push(Line::styled(format!(" {error}"), Style::default().fg(Color::Red)));
    }
    let [header, top, bottom] =
        Layout::vertical([Constraint::Length(lines.len() as u16 + 2), Constraint::Percentage(55), Constraint::Min(5)])
            .areas(area);
    let title = format!(" Run {} · {} ", run.id, run.name);
    frame.render_widget(Paragraph::new(lines).block(block(&title)), header);
    draw_chart(
        frame,
        top,
        " Loss ",
        &[("train", &curves.loss, Color::Cyan), ("eval", &curves.eval_loss, Color::Magenta)],
        None,
    );
    let panels = lower_panels(curves);
    let areas = Layout::horizontal(vec![Constraint::Ratio(1, panels.len() as u32); panels.len()]).split(bottom);
    for (panel, area) in panels.iter().zip(areas.iter()) {
        draw_chart(frame, *area, panel.title, &panel.series, panel.fixed_y);
    }
}

/// A chart under the loss.
struct Panel<'a> {
    title: &'static str,
    series: Vec<Series<'a>>,
    fixed_y: Option<(f64, f64)>,
}

/// The charts under the loss: what the run's method logs — DPO's margin and accuracy, KTO's
/// KL estimate, ORPO's NLL term beside them — and, for a method with none of those (SFT), the
/// speed in tokens per second.
fn lower_panels(curves: &Curves) -> Vec<Panel<'_>> {
    let pair = |train, eval| vec![("train", train, Color::Cyan), ("eval", eval, Color::Magenta)];
    let candidates = [
        Panel {
            title: " Reward margin (chosen − rejected) ",
            series: pair(&curves.margins, &curves.eval_margins),
            fixed_y: None,
        },
        Panel {
            title: " Accuracy (margin > 0) ",
            series: pair(&curves.accuracy, &curves.eval_accuracy),
            fixed_y: Some((0.0, 1.0)),
        },
        Panel { title: " KL (policy ‖ reference) ", series: pair(&curves.kl, &curves.eval_kl), fixed_y: None },
        Panel { title: " NLL of the chosen ", series: pair(&curves.nll, &curves.eval_nll), fixed_y: None },
    ];
    let mut panels: Vec<Panel> =
        candidates.into_iter().filter(|p| p.series.iter().any(|(_, points, _)| !points.is_empty())).collect();
    if panels.is_empty() {
        panels.push(Panel {
            title: " Speed (tokens/s) ",
            series: vec![("train", &curves.speed, Color::Cyan)],
            fixed_y: None,
        });
    }
    panels
}

/// Bounds that hold every point, padded so a flat line is not drawn on the frame.
fn bounds(points: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) =
        points.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return None;
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    Some((lo - pad, hi + pad))
}

fn axis_labels(lo: f64, hi: f64, integer: bool) -> Vec<Span<'static>> {
    let fmt = |v: f64| if integer { format!("{}", v.round() as i64) } else { format!("{v:.3}") };
    vec![Span::raw(fmt(lo)), Span::raw(fmt((lo + hi) / 2.0)), Span::raw(fmt(hi))]
}

fn draw_chart(frame: &mut Frame, area: Rect, title: &str, series: &[Series], fixed_y: Option<(f64, f64)>) {
    let shown: Vec<_> = series.iter().filter(|(_, points, _)| !points.is_empty()).collect();
    if shown.is_empty() {
        frame.render_widget(Paragraph::new(" no steps yet").block(block(title)), area);
        return;
    }
    let all = || shown.iter().flat_map(|(_, points, _)| points.iter());
    let (x0, x1) = bounds(all().map(|p| p.0)).unwrap_or((0.0, 1.0));
    let (x0, x1) = (x0.max(0.0).floor(), x1.ceil().max(x0 + 1.0));
    let (y0, y1) = fixed_y.or_else(|| bounds(all().map(|p| p.1))).unwrap_or((0.0, 1.0));
    let datasets = shown
        .iter()
        .map(|(name, points, color)| {
            Dataset::default()
                .name(name.to_string())
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(*color))
                .data(points)
        })
        .collect();
    let chart = Chart::new(datasets)
        .block(block(title))
        .hidden_legend_constraints((Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)))
        .x_axis(Axis::default().title("step").bounds([x0, x1]).labels(axis_labels(x0, x1, true)))
        .y_axis(Axis::default().bounds([y0, y1]).labels(axis_labels(y0, y1, false)));
    frame.render_widget(chart, area);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn titles(curves: &Curves) -> Vec<&'static str> {
        lower_panels(curves).iter().map(|p| p.title.trim()).collect()
    }

    #[test]
    fn the_lower_charts_follow_what_the_method_logs() {
        let points = vec![(1.0, 0.5), (2.0, 0.4)];
        let dpo = Curves { margins: points.clone(), accuracy: points.clone(), ..Default::default() };
        assert_eq!(titles(&dpo), ["Reward margin (chosen − rejected)", "Accuracy (margin > 0)"]);
        let kto = Curves { margins: points.clone(), kl: points.clone(), ..Default::default() };
        assert_eq!(titles(&kto), ["Reward margin (chosen − rejected)", "KL (policy ‖ reference)"]);
        // ORPO: its NLL term beside the odds ratio's margin and accuracy; eval alone counts too.
        let orpo = Curves {
            margins: points.clone(),
            accuracy: points.clone(),
            eval_nll: points.clone(),
            ..Default::default()
        };
        assert_eq!(titles(&orpo).len(), 3);
        assert_eq!(titles(&orpo)[2], "NLL of the chosen");
        let sft = Curves { loss: points.clone(), speed: points, ..Default::default() };
        assert_eq!(titles(&sft), ["Speed (tokens/s)"]);
    }
}
