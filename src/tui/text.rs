//! Wrapping text for the terminal by grapheme clusters and display width, so Chinese and
//! Japanese (two columns a character), combining marks, emoji ZWJ sequences and Arabic
//! all wrap without breaking a character or overflowing the pane.

use std::ops::Range;

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
/// and keeps the text's own line breaks. A tab is drawn as four spaces.
pub fn wrap(text: &str, max: usize) -> Vec<String> {
    wrap_ranges(text, max).into_iter().map(|line| text[line].replace('\t', "    ")).collect()
}

/// The lines `wrap` makes, as byte ranges of `text`: without the line breaks and without the
/// spaces dropped where a line was broken (which belong to no line). An editor maps its cursor
/// to a row and a column with them.
pub fn wrap_ranges(text: &str, max: usize) -> Vec<Range<usize>> {
    let max = max.max(1);
    let trimmed = |start: usize, end: usize| start..start + text[start..end].trim_end().len();
    let mut lines = Vec::new();
    let mut paragraph_start = 0;
    for paragraph in text.split('\n') {
        let base = paragraph_start;
        paragraph_start += paragraph.len() + 1;
        let paragraph = paragraph.trim_end_matches('\r');
        // The line being filled is text[start..end], `used` columns wide.
        let (mut start, mut end, mut used) = (base, base, 0);
        for (offset, word) in unbreakable_runs(paragraph) {
            let (word_start, word_end) = (base + offset, base + offset + word.len());
            let w = width(word);
            if used + w <= max {
                (end, used) = (word_end, used + w);
                continue;
            }
            if word.trim().is_empty() {
                // A space at the end of a line is dropped rather than carried over.
                lines.push(trimmed(start, end));
                (start, end, used) = (word_end, word_end, 0);
                continue;
            }
            if w <= max && used > 0 {
                lines.push(trimmed(start, end));
                (start, end, used) = (word_start, word_end, w);
                continue;
            }
            for (g_offset, g) in word.grapheme_indices(true) {
                let gw = grapheme_width(g);
                if used + gw > max && used > 0 {
                    lines.push(start..end);
                    (start, used) = (word_start + g_offset, 0);
                }
                (end, used) = (word_start + g_offset + g.len(), used + gw);
            }
        }
        // The last line keeps its spaces: the cursor of a field being typed sits after them.
        lines.push(start..end);
    }
    lines
}

/// Punctuation that opens what comes after it, so a line must not end with it: kept with the
/// next word.
const OPENING: &str = "([{«“‘¿¡（「『【〈《〔｛";

/// `text`'s word-boundary segments (UAX #29) joined where a line must not break, as (byte
/// offset, run): punctuation or a symbol right after a word stays with it (the full stop of
/// "card.", the comma of "你好，", the Arabic comma, a closing quote), opening punctuation and a
/// mark after a space stay with what follows them ("«Tarjetas»", "`unsafe`").
fn unbreakable_runs(text: &str) -> Vec<(usize, &str)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut glue_next = false;
    for (offset, segment) in text.split_word_bound_indices() {
        let blank = segment.trim().is_empty();
        let mark = !blank && !segment.chars().any(char::is_alphanumeric);
        let opens = segment.chars().next().is_some_and(|c| OPENING.contains(c));
        let after_word = runs.last().is_some_and(|&(start, end)| !text[start..end].trim().is_empty());
        match runs.last_mut() {
            Some(last) if !blank && after_word && (glue_next || (mark && !opens)) => last.1 = offset + segment.len(),
            _ => runs.push((offset, offset + segment.len())),
        }
        glue_next = !blank && (opens || (mark && !after_word));
    }
    runs.into_iter().map(|(start, end)| (start, &text[start..end])).collect()
}

/// Markdown as a reader wants it in a wrapped pane: the lines of a paragraph or of a list item
/// that the file broke by hand joined (the pane wraps them to its own width), bold and code
/// markers (`**`, backticks) left out, headings, rules, list items, quotes, tables and code
/// blocks (fenced or indented, kept verbatim) on their own lines.
pub fn markdown_for_reading(markdown: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let (mut in_code, mut joinable) = (false, false);
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_code = !in_code;
            joinable = false;
            continue;
        }
        if in_code {
            out.push(line.to_string());
            continue;
        }
        let rule = trimmed.len() >= 3 && trimmed.chars().all(|c| matches!(c, '-' | '*' | '_' | '=' | ' '));
        let indented_code = line.starts_with("    ") || line.starts_with('\t');
        let starts_block = trimmed.is_empty()
            || rule
            || indented_code
            || trimmed.starts_with(['#', '>', '|'])
            || trimmed.starts_with("- ")
            || trimmed.starts_with("* ")
            || trimmed.starts_with("+ ")
            || trimmed.split_once(". ").is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        let text = if indented_code { trimmed.to_string() } else { trimmed.replace("**", "").replace('`', "") };
        match out.last_mut() {
            Some(last) if joinable && !starts_block => {
                last.push(' ');
                last.push_str(text.trim_end());
            }
            _ => out.push(if trimmed.is_empty() {
                String::new()
            } else {
                format!("{}{}", &line[..line.len() - trimmed.len()], text.trim_end())
            }),
        }
        joinable = !trimmed.is_empty() && !rule && !indented_code && !trimmed.starts_with(['#', '|']);
    }
    out.join("\n")
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
    fn punctuation_stays_with_its_word() {
        assert_eq!(wrap("Please block the card. Then call.", 20), ["Please block the", "card. Then call."]);
        assert_eq!(wrap("vaya a «Tarjetas» ahora", 12), ["vaya a", "«Tarjetas»", "ahora"]);
        assert_eq!(wrap("it is also `unsafe`.", 16), ["it is also", "`unsafe`."]);
        assert_eq!(wrap("هل يمكنني، من فضلك", 9), ["هل", "يمكنني،", "من فضلك"]);
        // No line of Chinese starts with a comma or a full stop.
        let lines = wrap("请立即冻结您的银行卡，并致电客服。谢谢！", 10);
        assert_eq!(lines.concat(), "请立即冻结您的银行卡，并致电客服。谢谢！");
        assert!(lines.iter().all(|l| !l.starts_with(['，', '。', '！'])), "{lines:?}");
        assert_fits(&lines, 10);
    }

    #[test]
    fn guidelines_read_as_paragraphs_without_markup() {
        let markdown = "# Insurance\n\nThese rules add to the default guidelines for insurance\nconversations and documents.\n\n- An agent **never asks for**\n  a password.\n- Quote `policy` numbers.\n\n```\nkeep  as is\n```\n| a | b |\n| - | - |";
        assert_eq!(
            markdown_for_reading(markdown),
            "# Insurance\n\nThese rules add to the default guidelines for insurance conversations and documents.\n\n\
             - An agent never asks for a password.\n- Quote policy numbers.\n\nkeep  as is\n| a | b |\n| - | - |"
        );
    }

    #[test]
    fn rules_and_indented_code_stay_apart_from_paragraphs() {
        assert_eq!(markdown_for_reading("Intro\n---\nNext line\nand more"), "Intro\n---\nNext line and more");
        assert_eq!(markdown_for_reading("Run:\n\n    a = `b`\n    __init__()"), "Run:\n\n    a = `b`\n    __init__()");
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
