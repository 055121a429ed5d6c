//! Drawing the training and review screens; like `draw`, plain functions of the state.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};

use super::review::{Curves, Review, View};
use super::text::{pad, truncate};
use crate::domain::RunStatus;
use crate::store::RunRow;

use super::widgets::block;

pub fn draw(frame: &mut Frame, review: &Review, area: Rect) {
    match &review.view {
        View::Runs => draw_runs(frame, review, area),
        View::Run(id) => match review.runs.iter().find(|r| r.id == *id) {
            Some(run) => {
                let empty = Curves::default();
                let curves = review.curves.as_ref().filter(|(c, _)| c == id).map(|(_, c)| c).unwrap_or(&empty);
                draw_run(frame, review, run, curves, area)
            }
            None => draw_runs(frame, review, area),
        },
    }
}

fn number(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "–".into())
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, s % 3600 / 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}

fn draw_runs(frame: &mut Frame, review: &Review, area: Rect) {
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
    for (i, run) in review.runs.iter().enumerate() {
        let method = match serde_json::from_str::<serde_json::Value>(&run.config) {
            Ok(c) if c["lora_rank"].is_number() => format!("{}+lora", run.method),
            _ => run.method.clone(),
        };
        let win = review
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
        if i == review.selected {
            style = style.bg(Color::DarkGray).add_modifier(Modifier::BOLD);
        }
        lines.push(Line::styled(truncate(&line, inner), style));
        if let Some(error) = &run.error {
            lines.push(Line::styled(truncate(&format!("     {error}"), inner), Style::default().fg(Color::Red)));
        }
    }
    if review.runs.is_empty() {
        lines.push(Line::raw(""));
        lines.push(Line::raw("No training runs yet. n opens the form for one; `verdict train` in another"));
        lines.push(Line::raw("terminal works too, and its run shows up here with live curves."));
    }
    let title = format!(" Runs · {} · Enter curves · n new run · esc queue ", review.runs.len());
    frame.render_widget(Paragraph::new(lines).block(block(&title)), area);
}

/// A run's status in the list and its header: running green, failed red, stopped yellow.
fn status_color(status: RunStatus) -> Color {
    match status {
        RunStatus::Running => Color::Green,
        RunStatus::Failed => Color::Red,
        RunStatus::Stopped => Color::Yellow,
        RunStatus::Finished => Color::Reset,
    }
}

fn draw_run(frame: &mut Frame, review: &Review, run: &RunRow, curves: &Curves, area: Rect) {
    let [header, top, bottom] =
        Layout::vertical([Constraint::Length(4), Constraint::Percentage(55), Constraint::Min(5)]).areas(area);
    let step = curves.step();
    let total = run.total_steps.map(|t| t.to_string()).unwrap_or_else(|| "?".into());
    let eta = match (run.status, review.eta(run, curves)) {
        (RunStatus::Running, Some(s)) => duration(s),
        (RunStatus::Running, None) => "–".into(),
        _ => "done".into(),
    };
    let status_color = status_color(run.status);
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!(" {} ", run.status), Style::default().fg(Color::Black).bg(status_color)),
            Span::raw(format!(
                "  step {step}/{total} · epoch {} · {} tok/s · {} s/step · ETA {eta}",
                number(curves.epoch, 2),
                number(curves.tokens_per_second, 0),
                number(curves.seconds_per_step, 2),
            )),
        ]),
        Line::raw(format!(
            " pairs {} train / {} test · {} truncated · base {} · loss {} · eval loss {} · eval acc {}",
            run.train_pairs.unwrap_or(0),
            run.test_pairs.unwrap_or(0),
            run.truncated.unwrap_or(0),
            run.base_model.as_deref().unwrap_or("–"),
            number(curves.loss.last().map(|p| p.1), 4),
            number(curves.eval_loss.last().map(|p| p.1), 4),
            number(curves.eval_accuracy.last().map(|p| p.1), 2),
        )),
    ];
    if let Some(error) = &run.error {
        lines.push(Line::styled(format!(" {error}"), Style::default().fg(Color::Red)));
    }
    let title = format!(" Run {} · {} ", run.id, run.name);
    frame.render_widget(Paragraph::new(lines).block(block(&title)), header);
    draw_chart(
        frame,
        top,
        " Loss ",
        &[("train", &curves.loss, Color::Cyan), ("eval", &curves.eval_loss, Color::Magenta)],
        None,
    );
    let [left, right] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);
    draw_chart(
        frame,
        left,
        " Reward margin (chosen − rejected) ",
        &[("train", &curves.margins, Color::Cyan), ("eval", &curves.eval_margins, Color::Magenta)],
        None,
    );
    draw_chart(
        frame,
        right,
        " Accuracy (margin > 0) ",
        &[("train", &curves.accuracy, Color::Cyan), ("eval", &curves.eval_accuracy, Color::Magenta)],
        Some((0.0, 1.0)),
    );
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

fn draw_chart(
    frame: &mut Frame,
    area: Rect,
    title: &str,
    series: &[(&str, &Vec<(f64, f64)>, Color)],
    fixed_y: Option<(f64, f64)>,
) {
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
