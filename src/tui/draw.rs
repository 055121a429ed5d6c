//! Drawing the frame from an immutable `App`: the screen on top (each screen draws itself),
//! the guidelines panel, the footer from the key map and the status line. Nothing here
//! changes state or waits on anything.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use unicode_segmentation::UnicodeSegmentation;

use super::app::App;
use super::field::TextField;
use super::input::Input;
use super::keymap;
use super::text::{truncate, width};
use super::widgets::{ACCENT, centered, draw_text_pane};

pub fn draw(frame: &mut Frame, app: &App) {
    let [main, footer, status] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(1), Constraint::Length(1)]).areas(frame.area());
    let main = if app.show_guidelines {
        let [left, right] = Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(main);
        draw_guidelines(frame, app, right);
        left
    } else {
        main
    };
    let ctx = app.ctx();
    let screen = app.screens.iter().rev().find(|s| !s.overlay());
    match (screen, &app.compare) {
        (Some(screen), _) => screen.draw(frame, main, &ctx),
        (None, Some(compare)) => compare.draw(frame, main, &ctx),
        (None, None) => app.queue.draw(frame, main),
    }
    draw_footer(frame, app, footer);
    draw_status(frame, app, status);
    if let Input::Rewrite { text, side, .. } = &app.input {
        draw_editor(frame, side, text);
    }
    for overlay in app.screens.iter().filter(|s| s.overlay()) {
        overlay.draw(frame, frame.area(), &ctx);
    }
}

fn draw_guidelines(frame: &mut Frame, app: &App, area: Rect) {
    let domain = app.queue.selected_item().and_then(|i| i.row.domain.clone());
    // Read and parsed by `App` when the panel opens or the domain changes, not here.
    let text = app.guidelines.as_ref().filter(|(d, _)| *d == domain).map(|(_, t)| t.as_str()).unwrap_or("");
    let title = format!(" Guidelines · {} · j/k scroll · r close ", domain.as_deref().unwrap_or("default"));
    draw_text_pane(frame, area, &title, text, app.guidelines_scroll, true);
}

fn draw_footer(frame: &mut Frame, app: &App, area: Rect) {
    let text = match &app.input {
        Input::Search(s) => {
            format!(" search: {}  Enter keep · Esc clear", s.with_marker_within("▏", typing_room(area, 37)))
        }
        Input::AddPrompt(s) => {
            format!(" new prompt: {}  Enter add · Esc cancel", s.with_marker_within("▏", typing_room(area, 40)))
        }
        Input::Note(_) => " typing a note · Enter keep · Esc cancel".to_string(),
        Input::Rewrite { .. } => " rewriting · ←→↑↓ Home End move · Ctrl-S save · Esc cancel".to_string(),
        Input::None => {
            let items: Vec<(keymap::Action, String)> = app
                .keymap
                .bindings(app.mode())
                .filter(|(_, _, footer)| *footer)
                .map(|(key, action, _)| (action, format!("{key} {}", short(action, app.mode()))))
                .collect();
            fit_footer(items, area.width as usize)
        }
    };
    frame.render_widget(
        Paragraph::new(Line::styled(
            truncate(&format!(" {text}"), area.width as usize),
            Style::default().fg(Color::Gray),
        )),
        area,
    );
}

/// The footer's keys joined, in the key map's order; on a terminal too narrow for all of them
/// the ones before help and quit give way (from the end) so that `? help`, where every key is
/// listed, always shows.
fn fit_footer(mut items: Vec<(keymap::Action, String)>, columns: usize) -> String {
    let joined = |items: &[(keymap::Action, String)]| {
        items.iter().map(|(_, text)| text.as_str()).collect::<Vec<_>>().join(" · ")
    };
    let kept = |action: keymap::Action| matches!(action, keymap::Action::Help | keymap::Action::Quit);
    while width(&joined(&items)) + 1 > columns {
        let Some(drop) = items.iter().rposition(|(action, _)| !kept(*action)) else { break };
        items.remove(drop);
    }
    joined(&items)
}

/// The columns left for typed text on a line of `area` that also holds `taken` columns of labels.
fn typing_room(area: Rect, taken: usize) -> usize {
    (area.width as usize).saturating_sub(taken).max(10)
}

fn short(action: keymap::Action, mode: keymap::Mode) -> &'static str {
    use keymap::Action::*;
    use keymap::Mode;
    match action {
        Back if matches!(mode, Mode::Run | Mode::Form | Mode::Samples | Mode::Diff | Mode::Blind | Mode::Arena) => {
            "runs"
        }
        LeftBetter => "left",
        RightBetter => "right",
        BothBad => "both bad",
        Rewrite => "rewrite",
        Undo => "undo",
        Guidelines => "guidelines",
        Help => "help",
        Back => "queue",
        FilterLanguage => "language",
        FilterDomain => "domain",
        FilterStatus => "status",
        AddPrompt => "add",
        Refresh => "refresh",
        Generate => "generate",
        GenerateAll => "generate all",
        Cancel => "stop",
        Quality => "QA",
        Open => "open",
        Review => "train & review",
        NewRun => "new run",
        StartRun => "start",
        StopRun => "stop",
        ResumeRun => "resume",
        Samples => "answers",
        Diff => "diff",
        Mark => "mark",
        BlindEval => "blind eval",
        Arena => "arena",
        Edit => "edit",
        Previous => "previous",
        Next => "next",
        Down => "down",
        Up => "up",
        Skip => "skip",
        SingleReview => "one by one",
        Good => "good",
        Bad => "bad",
        other => keymap::describe(other),
    }
}

fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
    let q = &app.queue;
    let position = if q.visible.is_empty() { "0/0".into() } else { format!("{}/{}", q.selected + 1, q.visible.len()) };
    // Today's pairwise judgments and single-answer ratings together, and the median seconds
    // one took.
    let median = median(&app.seconds_today).map(|s| format!("{s:.0}s")).unwrap_or_else(|| "–".into());
    let db = app.store.path().file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let left = format!(
        " {} · {} · {} · {position} · today {} labeled · median {median} each ",
        app.annotator,
        db,
        app.device,
        app.seconds_today.len()
    );
    let job = app.job.as_ref().map(|j| j.status());
    let training = app.training().map(|t| format!(" training: {} · T shows it ", t.phase));
    let loading = app.queue.loading.as_ref().map(|l| match l.waiting.len() {
        0 => " loading the queue… ".to_string(),
        1 => " loading the queue… (1 key waits for it) ".to_string(),
        n => format!(" loading the queue… ({n} keys wait for it) "),
    });
    let left =
        format!("{left}{}{}{}", job.unwrap_or_default(), training.unwrap_or_default(), loading.unwrap_or_default());
    let line = Line::from(vec![
        Span::styled(left.clone(), Style::default().bg(Color::DarkGray).fg(Color::White)),
        Span::styled(
            format!(" {}", truncate(&app.message, (area.width as usize).saturating_sub(width(&left) + 1))),
            Style::default().fg(if app.message.starts_with("error") { Color::Red } else { Color::Yellow }),
        ),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

/// The built-in rewrite editor over everything: the text wrapped as it will be read, the
/// character under the cursor reversed, the terminal's own cursor there too (an input method
/// opens its window at it), and the view following the cursor.
fn draw_editor(frame: &mut Frame, side: &str, field: &TextField) {
    let area = centered(frame.area(), 90, 80);
    frame.render_widget(Clear, area);
    let title = format!(" Rewrite of the {side} answer · Ctrl-S save · Esc cancel ");
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(Style::default().fg(ACCENT))
        .title(truncate(&title, area.width.saturating_sub(2) as usize));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.width < 2 || inner.height == 0 {
        return;
    }
    // One column stays free on the right for the cursor after a full line.
    let top = field.view(inner.width as usize - 1, inner.height as usize);
    let (text, lines) = (field.text(), field.lines());
    let row = field.row_in(&lines);
    let cursor = field.cursor().clamp(lines[row].start, lines[row].end);
    let shown = |s: &str| s.replace('\t', "    ");
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(top).take(inner.height as usize) {
        if i != row {
            out.push(Line::raw(shown(&text[line.clone()])));
            continue;
        }
        let (under, after) = match text[cursor..line.end].graphemes(true).next() {
            Some(g) => (g, &text[cursor + g.len()..line.end]),
            None => (" ", ""),
        };
        out.push(Line::from(vec![
            Span::raw(shown(&text[line.start..cursor])),
            Span::styled(shown(under), Style::default().add_modifier(Modifier::REVERSED)),
            Span::raw(shown(after)),
        ]));
    }
    frame.render_widget(Paragraph::new(out), inner);
    let column = width(&text[lines[row].start..cursor]) as u16;
    frame.set_cursor_position((inner.x + column.min(inner.width - 1), inner.y + (row - top) as u16));
}

/// Median seconds per label (a pairwise judgment or a single-answer rating) today.
fn median(seconds: &[f64]) -> Option<f64> {
    let mut s = seconds.to_vec();
    if s.is_empty() {
        return None;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    Some(s[s.len() / 2])
}
