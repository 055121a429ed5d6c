//! Wrapping text for the terminal by grapheme clusters and display width, so Chinese and
//! Japanese (two columns a character), combining marks, emoji ZWJ sequences and Arabic
//! all wrap without breaking a character or overflowing the pane.

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// The display width of `text` in terminal columns.
pub fn width(text: &str) -> usize {
    text.graphemes(true).map(grapheme_width).sum()
}

fn grapheme_width(g: &str) -> usize {
    // A ZWJ emoji sequence or a flag is one glyph two columns wide; unicode-width
    // already knows most, but never let a grapheme claim more than 2 columns.
    if g == "\t" {
        return 4;
    }
    g.width().min(2)
}

/// Wraps `text` into lines at most `max` columns wide. Breaks at word boundaries when it
/// can, between any two graphemes when a word is wider than the line (as in CJK text),
/// and keeps the text's own line breaks.
pub fn wrap(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let paragraph = paragraph.trim_end_matches('\r');
        let mut line = String::new();
        let mut used = 0;
        for word in paragraph.split_word_bounds() {
            let w = width(word);
            if used + w <= max {
                line.push_str(word);
                used += w;
                continue;
            }
            if word.trim().is_empty() {
                // A space at the end of a line is dropped rather than carried over.
                lines.push(std::mem::take(&mut line).trim_end().to_string());
                used = 0;
                continue;
            }
            if w <= max && used > 0 {
                lines.push(std::mem::take(&mut line).trim_end().to_string());
                line.push_str(word);
                used = w;
                continue;
            }
            for g in word.graphemes(true) {
                let gw = grapheme_width(g);
                if used + gw > max && used > 0 {
                    lines.push(std::mem::take(&mut line));
                    used = 0;
                }
                line.push_str(if g == "\t" { "    " } else { g });
                used += gw;
            }
        }
        lines.push(line.trim_end().to_string());
    }
    lines
}

/// Cuts `text` to at most `max` columns, ending with `…` when it was cut.
pub fn truncate(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for g in text.graphemes(true) {
        let gw = grapheme_width(g);
        if used + gw + 1 > max {
            break;
        }
        out.push_str(g);
        used += gw;
    }
    out.push('…');
    out
}

/// Pads `text` with spaces to exactly `columns` wide (cutting it if needed).
pub fn pad(text: &str, columns: usize) -> String {
    let cut = truncate(text, columns);
    let w = width(&cut);
    format!("{cut}{}", " ".repeat(columns.saturating_sub(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_fits(lines: &[String], max: usize) {
        for line in lines {
            assert!(width(line) <= max, "{line:?} is {} wide", width(line));
        }
    }

    #[test]
    fn wraps_english_at_word_boundaries() {
        let lines = wrap("Please call us using the number on your card.", 16);
        assert_eq!(lines, ["Please call us", "using the number", "on your card."]);
    }

    #[test]
    fn wraps_chinese_by_display_width() {
        let text = "请立即通过手机银行冻结您的银行卡，并致电客服。";
        let lines = wrap(text, 10);
        assert_fits(&lines, 10);
        assert_eq!(lines.concat(), text);
        assert_eq!(width(&lines[0]), 10);
    }

    #[test]
    fn japanese_mixed_with_latin_and_emoji_never_overflows() {
        let text = "カードを紛失された場合は、Northwind Bankアプリから直ちに停止してください👍 ありがとうございます。";
        for max in [7, 11, 20, 33] {
            let lines = wrap(text, max);
            assert_fits(&lines, max);
            assert_eq!(lines.concat().replace(' ', ""), text.replace(' ', ""));
        }
    }

    #[test]
    fn keeps_zwj_emoji_and_combining_marks_whole() {
        let family = "👨‍👩‍👧‍👦";
        assert_eq!(width(family), 2);
        let lines = wrap(&format!("ab{family}{family}{family}"), 4);
        assert!(lines.iter().all(|l| l.graphemes(true).all(|g| g == family || g.is_ascii())));
        let accented = "e\u{301}e\u{301}e\u{301}e\u{301}"; // é written with a combining mark
        assert_eq!(width(accented), 4);
        assert_eq!(wrap(accented, 2), ["e\u{301}e\u{301}", "e\u{301}e\u{301}"]);
    }

    #[test]
    fn arabic_wraps_in_logical_order() {
        let text = "يرجى الاتصال بنا فوراً لإيقاف البطاقة المفقودة";
        let lines = wrap(text, 16);
        assert_fits(&lines, 16);
        assert_eq!(lines.join(" "), text);
    }

    #[test]
    fn keeps_paragraphs_and_truncates_with_ellipsis() {
        assert_eq!(wrap("one\n\ntwo", 10), ["one", "", "two"]);
        assert_eq!(truncate("银行卡被吞了", 7), "银行卡…");
        assert_eq!(pad("ab", 4), "ab  ");
        assert_eq!(width(&pad("银行卡被吞了", 7)), 7);
    }
}
