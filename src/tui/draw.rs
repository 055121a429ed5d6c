//! Drawing: plain functions from an immutable `App` to a frame. Nothing here changes
//! state or waits on anything.

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::app::{App, Compare, Input, Pane};
use super::keymap;
use super::queue::Status;
use super::text::{pad, truncate, width};
use super::widgets::{ACCENT, centered, draw_text_pane};

/// Wide terminals show the two answers side by side, narrow ones stack them.
pub const SIDE_BY_SIDE_MIN_WIDTH: u16 = 120;

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
    match (screen, &app.review, &app.compare) {
        (Some(screen), _, _) => screen.draw(frame, main, &ctx),
        (None, Some(review), _) => super::review_draw::draw(frame, review, main),
        (None, None, Some(compare)) => draw_compare(frame, app, compare, main),
        (None, None, None) => draw_queue(frame, app, main),
    }
    draw_footer(frame, app, footer);
    draw_status(frame, app, status);
    if let Input::Rewrite { text, .. } = &app.input {
        draw_editor(frame, text);
    }
    for overlay in app.screens.iter().filter(|s| s.overlay()) {
        overlay.draw(frame, frame.area(), &ctx);
    }
}

fn draw_queue(frame: &mut Frame, app: &App, area: Rect) {
    let f = &app.filter;
    let title = format!(
        " Queue · {} of {} · language: {} · domain: {} · status: {}{}{} ",
        app.visible.len(),
        app.items.len(),
        f.language.as_deref().unwrap_or("all"),
        f.domain.as_deref().unwrap_or("all"),
        f.status.label(),
        if f.search.is_empty() { String::new() } else { format!(" · search: {}", f.search) },
        if app.loading.is_some() { " · loading…" } else { "" },
    );
    let block = Block::default().borders(Borders::ALL).title(truncate(&title, area.width.saturating_sub(2) as usize));
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
    let first = app.selected.saturating_sub(body_rows.saturating_sub(1));
    let mut lines = vec![header];
    for (offset, &index) in app.visible.iter().enumerate().skip(first).take(body_rows) {
        let item = &app.items[index];
        let style =
            if offset == app.selected { Style::default().bg(ACCENT).fg(Color::Black) } else { Style::default() };
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
            format!("{}/{}", item.mine.len(), item.all_judgments),
        );
        let room = (inner.width as usize).saturating_sub(width(&fixed));
        let preview = item.row.preview.replace('\n', " ");
        let text = format!("{fixed}{}", pad(&preview, room));
        lines.push(Line::styled(text, style));
    }
    if app.visible.is_empty() {
        lines.push(Line::raw(" nothing matches: L, D, S change the filters, / searches, Esc clears the search"));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_compare(frame: &mut Frame, app: &App, c: &Compare, area: Rect) {
    let item = app.selected_item();
    let badge = item
        .map(|i| format!(" {} · {} · {} ", i.row.language, i.row.domain.as_deref().unwrap_or("-"), i.row.split))
        .unwrap_or_default();
    let id = item.and_then(|i| i.row.external_id.clone()).unwrap_or_else(|| format!("#{}", c.prompt_id));
    // The chips wrap, so the tag area grows with them: border + chip lines + note.
    let chips_width: usize = app.reasons.iter().map(|r| width(&r.shortcut) + width(&r.label) + 4).sum();
    let chip_lines = chips_width.div_ceil(area.width.max(1) as usize).max(1) as u16;
    let [prompt_area, answers, tags] =
        Layout::vertical([Constraint::Percentage(25), Constraint::Min(4), Constraint::Length(2 + chip_lines)])
            .areas(area);
    let prompt_text: Vec<String> = c.messages.iter().map(|m| format!("{}: {}", m.role, m.content)).collect();
    draw_text_pane(
        frame,
        prompt_area,
        &format!(" Prompt {id} ·{badge}"),
        &prompt_text.join("\n"),
        c.scroll[0],
        c.focus == Pane::Prompt,
    );
    match c.pair {
        Some((left, right)) => {
            let direction =
                if area.width >= SIDE_BY_SIDE_MIN_WIDTH { Direction::Horizontal } else { Direction::Vertical };
            let [l, r] = Layout::default()
                .direction(direction)
                .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(answers);
            for (pane, id, rect, label, scroll) in
                [(Pane::Left, left, l, "Left · 1", c.scroll[1]), (Pane::Right, right, r, "Right · 2", c.scroll[2])]
            {
                let response = c.response(id);
                let origin = response.map(|r| if r.origin == "human" { " · rewrite" } else { "" }).unwrap_or("");
                let text = response.map(|r| r.content.as_str()).unwrap_or("(missing)");
                draw_text_pane(frame, rect, &format!(" {label}{origin} "), text, scroll, c.focus == pane);
            }
        }
        None => {
            let message = if c.responses.len() < 2 {
                format!("This prompt has {} candidate(s): it needs two to compare.", c.responses.len())
            } else {
                "You have judged every pair of this prompt. ] next prompt · u undo · Esc queue".to_string()
            };
            draw_text_pane(frame, answers, " Done ", &message, 0, false);
        }
    }
    draw_tags(frame, app, c, tags);
}

fn draw_tags(frame: &mut Frame, app: &App, c: &Compare, area: Rect) {
    let mut chips: Vec<Span> = vec![Span::raw(" ")];
    for reason in &app.reasons {
        let on = c.reasons.contains(&reason.key);
        let style =
            if on { Style::default().bg(Color::Yellow).fg(Color::Black) } else { Style::default().fg(Color::DarkGray) };
        chips.push(Span::styled(format!("[{}] {}", reason.shortcut, reason.label), style));
        chips.push(Span::raw(" "));
    }
    let note = match &app.input {
        Input::Note(text) => format!(" note: {text}▏"),
        _ if c.note.is_empty() => " note: (n to write one)".to_string(),
        _ => format!(" note: {}", c.note),
    };
    let block = Block::default().borders(Borders::TOP).title(" reasons (for the losing answer) ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let chips_line = Line::from(chips);
    frame.render_widget(
        Paragraph::new(vec![chips_line, Line::raw(truncate(&note, inner.width as usize))])
            .wrap(ratatui::widgets::Wrap { trim: true }),
        inner,
    );
}

fn draw_guidelines(frame: &mut Frame, app: &App, area: Rect) {
    let domain = app.selected_item().and_then(|i| i.row.domain.clone());
    // Read and parsed by `App` when the panel opens or the domain changes, not here.
    let text = app.guidelines.as_ref().filter(|(d, _)| *d == domain).map(|(_, t)| t.as_str()).unwrap_or("");
    let title = format!(" Guidelines · {} · j/k scroll · r close ", domain.as_deref().unwrap_or("default"));
    draw_text_pane(frame, area, &title, text, app.guidelines_scroll, true);
}

fn draw_footer(frame: &mut Frame, app: &App, area: Rect) {
    let text = match &app.input {
        Input::Search(s) => format!(" search: {s}▏  Enter keep · Esc clear"),
        Input::AddPrompt(s) => format!(" new prompt: {s}▏  Enter add · Esc cancel"),
        Input::Note(_) => " typing a note · Enter keep · Esc cancel".to_string(),
        Input::Rewrite { .. } => " rewriting · Ctrl-S save · Esc cancel".to_string(),
        Input::None => app
            .keymap
            .bindings(app.mode())
            .filter(|(_, _, footer)| *footer)
            .map(|(key, action, _)| format!("{key} {}", short(action)))
            .collect::<Vec<_>>()
            .join(" · "),
    };
    frame.render_widget(
        Paragraph::new(Line::styled(
            truncate(&format!(" {text}"), area.width as usize),
            Style::default().fg(Color::Gray),
        )),
        area,
    );
}

fn short(action: keymap::Action) -> &'static str {
    use keymap::Action::*;
    match action {
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
    let position =
        if app.visible.is_empty() { "0/0".into() } else { format!("{}/{}", app.selected + 1, app.visible.len()) };
    let median = app.median_seconds().map(|s| format!("{s:.0}s")).unwrap_or_else(|| "–".into());
    let db = app.store.path().file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let left = format!(
        " {} · {} · {} · {position} · today {} · median {median}/judgment ",
        app.annotator,
        db,
        app.device,
        app.seconds_today.len()
    );
    let job = app.job.as_ref().map(|j| {
        let width = 10;
        let filled = if j.prompts == 0 { 0 } else { j.done * width / j.prompts };
        format!(
            " generating [{}{}] {}/{} · {:.1} tok/s · Esc stops ",
            "█".repeat(filled),
            "░".repeat(width - filled),
            j.done,
            j.prompts,
            j.tokens_per_sec
        )
    });
    let training = app.training().map(|t| format!(" training: {} · T shows it ", t.phase));
    let loading = app.loading.as_ref().map(|l| match l.waiting.len() {
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

fn draw_editor(frame: &mut Frame, text: &str) {
    let area = centered(frame.area(), 90, 80);
    frame.render_widget(Clear, area);
    draw_text_pane(frame, area, " Rewrite · Ctrl-S save · Esc cancel ", &format!("{text}▏"), 0, true);
}
