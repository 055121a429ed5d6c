//! Drawing pieces every screen uses: a bordered pane of wrapped, scrolled text, a centred
//! rectangle for overlays, and the accent colour.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph};

use super::text::{truncate, wrap};

pub const ACCENT: Color = Color::Cyan;

/// Wide terminals show two answers side by side, narrow ones stack them.
pub const SIDE_BY_SIDE_MIN_WIDTH: u16 = 120;

/// A bordered pane of `text` wrapped to its width, from line `scroll` on; the border is in
/// the accent colour when the pane has the focus.
pub fn draw_text_pane(frame: &mut Frame, area: Rect, title: &str, text: &str, scroll: u16, focused: bool) {
    let style = if focused { Style::default().fg(ACCENT) } else { Style::default() };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(style)
        .title(truncate(title, area.width.saturating_sub(2) as usize));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let lines = wrap(text, inner.width as usize);
    let start = (scroll as usize).min(lines.len().saturating_sub(1));
    let visible: Vec<Line> = lines.into_iter().skip(start).take(inner.height as usize).map(Line::raw).collect();
    frame.render_widget(Paragraph::new(visible), inner);
}

/// A rectangle `percent_x` by `percent_y` of `area`, in its middle.
pub fn centered(area: Rect, percent_x: u16, percent_y: u16) -> Rect {
    let w = area.width * percent_x / 100;
    let h = area.height * percent_y / 100;
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

/// A bordered block with its title, in the accent colour.
pub fn block(title: &str) -> Block<'_> {
    Block::default().borders(Borders::ALL).title(title).border_style(Style::default().fg(ACCENT))
}

/// Two answers side by side on a wide terminal, stacked on a narrow one.
pub fn answer_panes(area: Rect) -> (Rect, Rect) {
    if area.width >= SIDE_BY_SIDE_MIN_WIDTH {
        let [l, r] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
        (l, r)
    } else {
        let [l, r] = Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
        (l, r)
    }
}
