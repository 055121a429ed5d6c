//! Word diffs for the review screens: two texts compared word by word (with `similar`),
//! neighbouring changes joined into one edit, drawn as lines marked `[-removed-]` and
//! `{+added+}` so they read without colour too.

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

/// A stretch of a word diff: text both have, or a change (what went, what came).
#[derive(Debug, Clone, PartialEq)]
pub enum DiffBlock {
    Same(String),
    Changed { removed: String, added: String },
}

/// The word diff of two texts in blocks: neighbouring changed words, and the spaces between
/// them, form one change, so a rewritten phrase reads as one edit rather than a marker per word.
pub fn diff_blocks(old: &str, new: &str) -> Vec<DiffBlock> {
    use similar::ChangeTag::*;
    let diff = similar::TextDiff::from_words(old, new);
    let mut blocks = Vec::new();
    let mut pending: Option<(String, String)> = None;
    let mut gap = String::new();
    for change in diff.iter_all_changes() {
        let text = change.value();
        match change.tag() {
            Equal if text.trim().is_empty() && pending.is_some() => gap.push_str(text),
            Equal => {
                if let Some((removed, added)) = pending.take() {
                    blocks.push(DiffBlock::Changed { removed, added });
                }
                blocks.push(DiffBlock::Same(std::mem::take(&mut gap) + text));
            }
            tag => {
                let (removed, added) = pending.get_or_insert_with(Default::default);
                if !gap.is_empty() {
                    removed.push_str(&gap);
                    added.push_str(&gap);
                    gap.clear();
                }
                if tag == Delete { removed.push_str(text) } else { added.push_str(text) }
            }
        }
    }
    if let Some((removed, added)) = pending {
        blocks.push(DiffBlock::Changed { removed, added });
    }
    if !gap.is_empty() {
        blocks.push(DiffBlock::Same(gap));
    }
    blocks
}

/// Spans of one run, marked `[-removed-]` or `{+added+}` so the diff reads without colour
/// (and in snapshots), split at newlines into `lines`.
fn push_run(lines: &mut Vec<Line<'static>>, tag: similar::ChangeTag, text: &str) {
    let (style, open, close) = match tag {
        similar::ChangeTag::Equal => (Style::default(), "", ""),
        similar::ChangeTag::Delete => (Style::default().fg(Color::Red).add_modifier(Modifier::CROSSED_OUT), "[-", "-]"),
        similar::ChangeTag::Insert => (Style::default().fg(Color::Black).bg(Color::Green), "{+", "+}"),
    };
    let mut parts = text.split('\n').peekable();
    while let Some(part) = parts.next() {
        if !part.is_empty() {
            let marked = if part.trim().is_empty() {
                part.to_string()
            } else {
                // Spaces at the edges stay outside the markers.
                let start = part.len() - part.trim_start().len();
                let end = part.trim_end().len();
                format!("{}{open}{}{close}{}", &part[..start], &part[start..end], &part[end..])
            };
            lines.last_mut().expect("one line").spans.push(Span::styled(marked, style));
        }
        if parts.peek().is_some() {
            lines.push(Line::default());
        }
    }
}

/// The new text with what changed since the old one marked (removed and added words).
pub fn word_diff(old: &str, new: &str) -> Vec<Line<'static>> {
    let mut lines = vec![Line::default()];
    for block in diff_blocks(old, new) {
        match block {
            DiffBlock::Same(text) => push_run(&mut lines, similar::ChangeTag::Equal, &text),
            DiffBlock::Changed { removed, added } => {
                push_run(&mut lines, similar::ChangeTag::Delete, &removed);
                push_run(&mut lines, similar::ChangeTag::Insert, &added);
            }
        }
    }
    lines
}

/// The two sides of a word diff: the old text with its removed words marked, the new one
/// with its added words marked.
pub fn diff_sides(old: &str, new: &str) -> (Vec<Line<'static>>, Vec<Line<'static>>) {
    let (mut left, mut right) = (vec![Line::default()], vec![Line::default()]);
    for block in diff_blocks(old, new) {
        match block {
            DiffBlock::Same(text) => {
                push_run(&mut left, similar::ChangeTag::Equal, &text);
                push_run(&mut right, similar::ChangeTag::Equal, &text);
            }
            DiffBlock::Changed { removed, added } => {
                push_run(&mut left, similar::ChangeTag::Delete, &removed);
                push_run(&mut right, similar::ChangeTag::Insert, &added);
            }
        }
    }
    (left, right)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbouring_changed_words_form_one_edit() {
        let blocks = diff_blocks("Please contact support today.", "Please block the card today.");
        let changed: Vec<_> = blocks.iter().filter(|b| matches!(b, DiffBlock::Changed { .. })).collect();
        assert_eq!(changed.len(), 1, "{blocks:?}");
        let (old, new) = diff_sides("Bitte rufen Sie an.", "Bitte sperren Sie die Karte. 🔒");
        let flat = |lines: &[Line]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n");
        assert_eq!(flat(&old), "Bitte [-rufen-] Sie [-an.-]");
        assert_eq!(flat(&new), "Bitte {+sperren+} Sie {+die Karte. 🔒+}");
        assert_eq!(flat(&word_diff("a b c", "a x y c")), "a [-b-]{+x y+} c");
    }
}
