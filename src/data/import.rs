//! Reading a whole import file into records, checking every line before anything is written:
//! the preference and prompt formats (`parse_file`) and TRL's unpaired layout (`parse_unpaired_file`).

use std::path::Path;

use super::lines::{self, FileError, Line, LineError};
use super::parse::{self, Format};
use crate::domain::ImportRecord;

/// The records of one file and the lines that could not be read.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub format: Option<Format>,
    pub records: Vec<ImportRecord>,
    pub errors: Vec<LineError>,
}

/// Lines parsed together; bounds the text held in memory besides the records.
const BATCH_LINES: usize = 8192;

/// Parses `path`. The format is `forced`, else detected from the first readable record
/// and then required of every line (a file mixing formats is almost always a mistake).
///
/// Once the format is known the lines are independent, so batches of them are parsed on
/// all cores (JSON parsing is most of the work; reading lines is cheap).
pub fn parse_file(path: &Path, forced: Option<Format>) -> Result<ParsedFile, FileError> {
    let mut parsed = ParsedFile { format: forced, ..ParsedFile::default() };
    let mut batch: Vec<(usize, Line)> = Vec::with_capacity(BATCH_LINES);
    lines::for_each_line(path, |line, text| {
        if parsed.format.is_none() {
            parse_batch(path, &mut parsed, vec![(line, text)]);
            return;
        }
        batch.push((line, text));
        if batch.len() == BATCH_LINES {
            parse_batch(path, &mut parsed, std::mem::take(&mut batch));
        }
    })?;
    parse_batch(path, &mut parsed, batch);
    Ok(parsed)
}

/// Parses `batch` (in file order) into `parsed`, with the format `parsed` has by then.
fn parse_batch(path: &Path, parsed: &mut ParsedFile, batch: Vec<(usize, Line)>) {
    let format = parsed.format;
    let parse_one = |(line, text): (usize, Line)| {
        text.and_then(|text| parse::parse_line(&text, format)).map_err(|message| LineError {
            path: path.to_path_buf(),
            line,
            message,
        })
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let results: Vec<Result<(Format, ImportRecord), LineError>> = if threads == 1 || batch.len() < 2 * threads {
        batch.into_iter().map(parse_one).collect()
    } else {
        let per_thread = batch.len().div_ceil(threads);
        let mut chunks = Vec::with_capacity(threads);
        let mut rest = batch.into_iter();
        loop {
            let chunk: Vec<(usize, Line)> = rest.by_ref().take(per_thread).collect();
            if chunk.is_empty() {
                break;
            }
            chunks.push(chunk);
        }
        std::thread::scope(|scope| {
            let workers: Vec<_> = chunks
                .into_iter()
                .map(|chunk| scope.spawn(move || chunk.into_iter().map(parse_one).collect::<Vec<_>>()))
                .collect();
            workers.into_iter().flat_map(|w| w.join().expect("parsing does not panic")).collect()
        })
    };
    for result in results {
        match result {
            Ok((format, record)) => {
                parsed.format = Some(format);
                parsed.records.push(record);
            }
            Err(error) => parsed.errors.push(error),
        }
    }
}

/// Parses text held in memory (the embedded sample data); any bad line is an error.
pub fn parse_embedded(name: &str, text: &str) -> Result<Vec<ImportRecord>, LineError> {
    let mut format = None;
    let mut records = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (f, record) = parse::parse_line(line, format).map_err(|message| LineError {
            path: name.into(),
            line: index + 1,
            message,
        })?;
        format = Some(f);
        records.push(record);
    }
    Ok(records)
}

/// Whether `path` holds TRL's unpaired layout, judged by its first non-blank line (which
/// `parse_unpaired_file` then requires of every line).
pub fn is_unpaired_file(path: &Path) -> bool {
    let mut first: Option<bool> = None;
    let _ = lines::for_each_line(path, |_, text| {
        if first.is_none() {
            first = Some(text.is_ok_and(|t| parse::is_unpaired_object(&t)));
        }
    });
    first.unwrap_or(false)
}

/// The rated answers of an unpaired file and the lines that could not be read, each named by
/// its file and line number like the other importers' errors.
pub fn parse_unpaired_file(path: &Path) -> Result<(Vec<crate::domain::RatedRecord>, Vec<LineError>), FileError> {
    let (mut records, mut errors) = (Vec::new(), Vec::new());
    lines::for_each_line(path, |line, text| match text.and_then(|t| parse::parse_unpaired_line(&t)) {
        Ok(record) => records.push(record),
        Err(message) => errors.push(LineError { path: path.to_path_buf(), line, message }),
    })?;
    Ok((records, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_bad_line_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pairs.jsonl");
        std::fs::write(
            &path,
            concat!(
                "{\"prompt\":\"q1\",\"chosen\":\"a\",\"rejected\":\"b\"}\n",
                "not json\n",
                "{\"prompt\":\"q3\",\"chosen\":\"a\"}\n",
                "{\"prompt\":\"q4\",\"chosen\":\"a\",\"rejected\":\"b\"}\n",
            ),
        )
        .unwrap();
        let parsed = parse_file(&path, None).unwrap();
        assert_eq!(parsed.records.len(), 2);
        let lines: Vec<usize> = parsed.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3]);
        assert!(parsed.errors[1].to_string().ends_with("pairs.jsonl:3: missing field `rejected`"));
    }

    #[test]
    fn a_long_file_keeps_its_order_and_line_numbers_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.jsonl");
        let mut text = String::from("not json\n");
        for i in 2..=20_000 {
            if i % 7_001 == 0 {
                text.push_str("{\"prompt\":\"q\",\"chosen\":\"a\"}\n");
            } else {
                text.push_str(&format!("{{\"prompt\":\"q{i}\",\"chosen\":\"a\",\"rejected\":\"b\"}}\n"));
            }
        }
        std::fs::write(&path, text).unwrap();
        let parsed = parse_file(&path, None).unwrap();
        assert_eq!(parsed.format, Some(Format::Standard));
        let lines: Vec<usize> = parsed.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 7_001, 14_002]);
        let prompts: Vec<String> = parsed
            .records
            .iter()
            .map(|r| match r {
                ImportRecord::Pair { prompt, .. } => prompt.messages[0].content.clone(),
                ImportRecord::Prompt(p) => p.messages[0].content.clone(),
            })
            .collect();
        let expected: Vec<String> = (2..=20_000).filter(|i| i % 7_001 != 0).map(|i| format!("q{i}")).collect();
        assert_eq!(prompts, expected);
    }

    #[test]
    fn a_file_mixing_formats_is_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mixed.jsonl");
        std::fs::write(
            &path,
            "{\"prompt\":\"only a prompt\"}\n{\"prompt\":\"q\",\"chosen\":\"a\",\"rejected\":\"b\"}\n",
        )
        .unwrap();
        let parsed = parse_file(&path, None).unwrap();
        assert_eq!(parsed.format, Some(Format::Prompts));
        assert_eq!(parsed.records.len(), 1);
        assert_eq!(parsed.errors.len(), 1);
        assert!(parsed.errors[0].message.contains("separate files"), "{}", parsed.errors[0]);
    }
}

#[cfg(test)]
mod unpaired_tests {
    use super::*;

    #[test]
    fn unpaired_lines_parse_with_their_labels_and_bad_lines_are_named_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kto.jsonl");
        std::fs::write(
            &path,
            concat!(
                "{\"prompt\":\"Block my card?\",\"completion\":\"Yes, in the app.\",\"label\":true,\"split\":\"test\"}\n",
                "{\"prompt\":\"Block my card?\",\"completion\":\"No idea.\",\"label\":\"no\"}\n",
                "\n",
                "{\"prompt\":[{\"role\":\"user\",\"content\":\"PIN?\"}],",
                "\"completion\":[{\"role\":\"assistant\",\"content\":\"Never share it.\"}],\"label\":false}\n",
                "{\"prompt\":\"q\",\"completion\":\"a\"}\n",
            ),
        )
        .unwrap();
        assert!(is_unpaired_file(&path));
        let (records, errors) = parse_unpaired_file(&path).unwrap();
        let got: Vec<(&str, bool)> = records.iter().map(|r| (r.completion.as_str(), r.desirable)).collect();
        assert_eq!(got, [("Yes, in the app.", true), ("Never share it.", false)]);
        assert_eq!(records[0].prompt.split, Some(crate::domain::Split::Test));
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 5]);
        assert!(errors[0].to_string().ends_with("kto.jsonl:2: field `label`: expected true or false, found a string"));
        assert!(errors[1].message.starts_with("missing field `label`"), "{}", errors[1]);
        let pairs = dir.path().join("pairs.jsonl");
        std::fs::write(&pairs, "{\"prompt\":\"q\",\"chosen\":\"a\",\"rejected\":\"b\"}\n").unwrap();
        assert!(!is_unpaired_file(&pairs));
    }
}
