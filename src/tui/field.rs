//! A text being typed with a cursor in it: the one-line fields (a search, a note, a new
//! prompt, a form field) and the multi-line rewrite editor. The cursor moves and deletes by
//! grapheme cluster, so an accented letter, a Hangul syllable or an emoji ZWJ sequence such as
//! 👩‍⚕️ is one step and one Backspace, never half a character. Up and Down move by the lines as
//! they are drawn (wrapped by `text::wrap_ranges` at the width the field was last drawn at),
//! keeping the column the cursor came from.

use std::cell::Cell;
use std::ops::Range;

use unicode_segmentation::UnicodeSegmentation;

use super::text::{truncate, width, wrap_ranges};

/// A cursor movement or deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    Left,
    Right,
    WordLeft,
    WordRight,
    /// The start of the line the cursor is on (as drawn).
    LineStart,
    /// The end of the line the cursor is on (as drawn).
    LineEnd,
    Up,
    Down,
    DeleteBack,
    DeleteForward,
    /// Delete back to the start of the word before the cursor.
    DeleteWordBack,
}

/// Text and a cursor (a byte offset on a grapheme boundary).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextField {
    text: String,
    cursor: usize,
    /// The column Up and Down aim for: where the cursor was before the first of them.
    goal_column: Option<usize>,
    /// The width the field was last drawn at (0: not drawn yet; lines are then the text's own).
    view_width: Cell<usize>,
    /// The first line shown, kept so the view moves only when the cursor leaves it.
    view_top: Cell<usize>,
}

impl TextField {
    /// `text` with the cursor at its end.
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        Self { cursor: text.len(), text, ..Self::default() }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn into_text(self) -> String {
        self.text
    }

    /// The cursor's byte offset in `text()`.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Types `c` at the cursor.
    pub fn insert(&mut self, c: char) {
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
        self.goal_column = None;
    }

    /// One movement or deletion.
    pub fn apply(&mut self, edit: Edit) {
        let vertical = matches!(edit, Edit::Up | Edit::Down);
        if !vertical {
            self.goal_column = None;
        }
        match edit {
            Edit::Left => self.cursor = self.previous_boundary(self.cursor),
            Edit::Right => self.cursor = self.next_boundary(self.cursor),
            Edit::WordLeft => self.cursor = self.word_start_before(self.cursor),
            Edit::WordRight => self.cursor = self.word_end_after(self.cursor),
            Edit::LineStart => self.cursor = self.lines()[self.row()].start,
            Edit::LineEnd => self.cursor = self.line_end(self.row()),
            Edit::Up | Edit::Down => self.vertical(edit == Edit::Up),
            Edit::DeleteBack => self.delete(self.previous_boundary(self.cursor)..self.cursor),
            Edit::DeleteForward => self.delete(self.cursor..self.next_boundary(self.cursor)),
            Edit::DeleteWordBack => self.delete(self.word_start_before(self.cursor)..self.cursor),
        }
    }

    fn delete(&mut self, range: Range<usize>) {
        self.text.replace_range(range.clone(), "");
        self.cursor = range.start;
    }

    fn previous_boundary(&self, at: usize) -> usize {
        self.text[..at].grapheme_indices(true).next_back().map_or(0, |(i, _)| i)
    }

    fn next_boundary(&self, at: usize) -> usize {
        self.text[at..].graphemes(true).next().map_or(at, |g| at + g.len())
    }

    /// The start of the word before `at` (spaces and punctuation just before it skipped).
    fn word_start_before(&self, at: usize) -> usize {
        self.text[..at]
            .split_word_bound_indices()
            .rev()
            .find(|(_, w)| w.chars().any(char::is_alphanumeric))
            .map_or(0, |(i, _)| i)
    }

    /// The end of the word after `at`.
    fn word_end_after(&self, at: usize) -> usize {
        self.text[at..]
            .split_word_bound_indices()
            .find(|(_, w)| w.chars().any(char::is_alphanumeric))
            .map_or(self.text.len(), |(i, w)| at + i + w.len())
    }

    /// The lines as drawn: wrapped at the last drawn width, or the text's own lines.
    pub fn lines(&self) -> Vec<Range<usize>> {
        match self.view_width.get() {
            0 => wrap_ranges(&self.text, usize::MAX),
            w => wrap_ranges(&self.text, w),
        }
    }

    /// The line the cursor is on: the last one starting at or before it (the spaces a wrap
    /// dropped and a line break belong to the line before them).
    pub fn row(&self) -> usize {
        self.row_in(&self.lines())
    }

    /// `row` with the lines already made.
    pub fn row_in(&self, lines: &[Range<usize>]) -> usize {
        lines.iter().rposition(|l| l.start <= self.cursor).unwrap_or(0)
    }

    /// The cursor's column on its line, in terminal columns.
    pub fn column(&self) -> usize {
        let lines = self.lines();
        let line = &lines[self.row_in(&lines)];
        width(&self.text[line.start..self.cursor.min(line.end)])
    }

    /// Where End puts the cursor on `row`: after its last character, or, where the line was
    /// wrapped inside a word (the next line starting right there), before it, so the cursor
    /// stays on that line.
    fn line_end(&self, row: usize) -> usize {
        let lines = self.lines();
        let line = &lines[row];
        match lines.get(row + 1) {
            Some(next) if next.start == line.end && line.end > line.start => self.previous_boundary(line.end),
            _ => line.end,
        }
    }

    fn vertical(&mut self, up: bool) {
        let lines = self.lines();
        let row = self.row_in(&lines);
        let goal = *self.goal_column.get_or_insert_with(|| {
            let line = &lines[row];
            width(&self.text[line.start..self.cursor.min(line.end)])
        });
        let target = match (up, row) {
            (true, 0) => {
                (self.cursor, self.goal_column) = (0, None);
                return;
            }
            (true, r) => r - 1,
            (false, r) if r + 1 >= lines.len() => {
                (self.cursor, self.goal_column) = (self.text.len(), None);
                return;
            }
            (false, r) => r + 1,
        };
        let line = lines[target].clone();
        let mut at = line.start;
        let mut used = 0;
        for (i, g) in self.text[line.clone()].grapheme_indices(true) {
            let w = width(g);
            if used + w > goal {
                break;
            }
            used += w;
            at = line.start + i + g.len();
        }
        self.cursor = at.min(self.line_end(target));
    }

    /// The text with `marker` at the cursor, for the one-line fields.
    pub fn with_marker(&self, marker: &str) -> String {
        format!("{}{marker}{}", &self.text[..self.cursor], &self.text[self.cursor..])
    }

    /// `with_marker` cut to `max` columns around the cursor: when the text is wider, the part
    /// before the cursor loses its start (shown as `…`) so the cursor stays in sight.
    pub fn with_marker_within(&self, marker: &str, max: usize) -> String {
        let full = self.with_marker(marker);
        if width(&full) <= max {
            return full;
        }
        let after = truncate(&self.text[self.cursor..], max.saturating_sub(width(marker) + 1).min(max / 3).max(1));
        let room = max.saturating_sub(width(marker) + width(&after) + 1);
        let before: Vec<&str> = self.text[..self.cursor].graphemes(true).collect();
        let (mut start, mut used) = (before.len(), 0);
        while start > 0 && used + width(before[start - 1]) <= room {
            start -= 1;
            used += width(before[start]);
        }
        let lead = if start > 0 { "…" } else { "" };
        format!("{lead}{}{marker}{after}", before[start..].concat())
    }

    /// Records the width the field is drawn at and returns the first line to show in `height`
    /// rows so that the cursor's line is visible (moving the view only when it leaves it).
    pub fn view(&self, width: usize, height: usize) -> usize {
        self.view_width.set(width.max(1));
        let row = self.row();
        let height = height.max(1);
        let mut top = self.view_top.get();
        if row < top {
            top = row;
        } else if row >= top + height {
            top = row + 1 - height;
        }
        self.view_top.set(top);
        top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(text: &str, cursor: usize) -> TextField {
        TextField { text: text.into(), cursor, ..TextField::default() }
    }

    #[test]
    fn backspace_removes_a_whole_emoji_sequence_and_accented_letters() {
        // 👩‍⚕️ is four code points (woman, ZWJ, staff of Aesculapius, variation selector).
        let mut f = TextField::new("ok 👩‍⚕️");
        f.apply(Edit::DeleteBack);
        assert_eq!(f.text(), "ok ");
        // "é" as e + combining acute accent: one grapheme.
        let mut f = TextField::new("cafe\u{301}");
        f.apply(Edit::DeleteBack);
        assert_eq!(f.text(), "caf");
    }

    #[test]
    fn spaces_typed_at_the_end_of_a_line_are_part_of_it() {
        let mut f = TextField::new("hello ");
        f.apply(Edit::Left);
        f.apply(Edit::LineEnd);
        assert_eq!(f.cursor(), 6, "End goes past the typed space");
        f.insert('w');
        assert_eq!(f.text(), "hello w");
        let f = TextField::new("one \ntwo");
        f.view(20, 5);
        let mut f = f;
        f.apply(Edit::Up);
        assert_eq!((f.row(), f.column()), (0, 3));
        f.apply(Edit::LineEnd);
        assert_eq!((f.row(), f.column()), (0, 4));
    }

    #[test]
    fn typing_in_the_middle_inserts_at_the_cursor() {
        let mut f = TextField::new("我们明天见");
        f.apply(Edit::Left);
        f.apply(Edit::Left);
        f.insert('后');
        assert_eq!(f.text(), "我们明后天见");
        f.apply(Edit::LineStart);
        f.insert('X');
        f.apply(Edit::LineEnd);
        f.insert('!');
        assert_eq!(f.text(), "X我们明后天见!");
        f.apply(Edit::LineStart);
        f.apply(Edit::DeleteForward);
        assert_eq!(f.text(), "我们明后天见!");
    }

    #[test]
    fn words_are_skipped_whole_in_any_script() {
        let mut f = TextField::new("Guten Tag, Frau Müller");
        f.apply(Edit::WordLeft);
        assert_eq!(&f.text()[f.cursor()..], "Müller");
        f.apply(Edit::WordLeft);
        f.apply(Edit::WordLeft);
        assert_eq!(&f.text()[f.cursor()..], "Tag, Frau Müller");
        f.apply(Edit::WordRight);
        assert_eq!(&f.text()[..f.cursor()], "Guten Tag");
        f.apply(Edit::DeleteWordBack);
        assert_eq!(f.text(), "Guten , Frau Müller");
    }

    #[test]
    fn up_and_down_follow_the_drawn_lines_and_keep_the_column() {
        // Drawn 10 columns wide: "one two" / "three four" / "x" / "five six".
        let f = TextField::new("one two three four\nx\nfive six");
        f.view(10, 3);
        let mut f = f;
        assert_eq!(f.row(), 3);
        f.apply(Edit::LineStart);
        f.apply(Edit::Right);
        f.apply(Edit::Right);
        f.apply(Edit::Right);
        f.apply(Edit::Right);
        f.apply(Edit::Right);
        assert_eq!(f.column(), 5);
        f.apply(Edit::Up);
        assert_eq!((f.row(), f.column()), (2, 1), "x is one column wide");
        f.apply(Edit::Up);
        assert_eq!((f.row(), f.column()), (1, 5), "the column comes back");
        assert_eq!(&f.text()[f.cursor()..f.cursor() + 1], " ");
        f.apply(Edit::Up);
        f.apply(Edit::Up);
        assert_eq!(f.cursor(), 0, "Up on the first line goes to its start");
        f.apply(Edit::Down);
        assert_eq!((f.row(), f.column()), (1, 0));
    }

    #[test]
    fn wide_characters_count_two_columns_when_moving_between_lines() {
        // 6 columns: "日本語" / "abcdef".
        let f = field("日本語abcdef", 0);
        f.view(6, 2);
        let mut f = f;
        f.apply(Edit::Right);
        f.apply(Edit::Right);
        assert_eq!(f.column(), 4);
        f.apply(Edit::Down);
        assert_eq!((f.row(), f.column()), (1, 4));
        f.apply(Edit::Right);
        f.apply(Edit::Up);
        assert_eq!((f.row(), f.column()), (0, 4), "column 5 falls inside 語: before it");
        // End on a line wrapped inside a word stays on that line.
        f.apply(Edit::LineEnd);
        assert_eq!(f.row(), 0);
    }

    #[test]
    fn a_long_line_keeps_the_cursor_in_sight() {
        let mut f = TextField::new("Die Überweisung wurde gestern ausgeführt, bitte prüfen Sie Ihr Konto");
        let shown = f.with_marker_within("▏", 20);
        assert!(width(&shown) <= 20, "{shown}");
        assert!(shown.starts_with('…') && shown.ends_with("Konto▏"), "{shown}");
        for _ in 0..f.text().chars().count() {
            f.apply(Edit::Left);
        }
        let shown = f.with_marker_within("▏", 20);
        assert!(width(&shown) <= 20 && shown.starts_with("▏Die"), "{shown}");
    }

    #[test]
    fn the_view_follows_the_cursor_only_when_it_leaves() {
        let text = (1..=30).map(|i| i.to_string()).collect::<Vec<_>>().join("\n");
        let mut f = TextField::new(text);
        assert_eq!(f.view(20, 10), 20, "the end is shown");
        for _ in 0..5 {
            f.apply(Edit::Up);
        }
        assert_eq!(f.view(20, 10), 20, "still inside the view");
        for _ in 0..10 {
            f.apply(Edit::Up);
        }
        assert_eq!(f.view(20, 10), 14);
        assert_eq!(f.with_marker("|").lines().nth(14), Some("15|"));
    }
}
