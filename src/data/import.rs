//! Reading a whole import file into records, checking every line before anything is written.

use std::path::Path;

use super::lines::{self, FileError, LineError};
use super::parse::{self, Format};
use crate::domain::ImportRecord;

/// The records of one file and the lines that could not be read.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub format: Option<Format>,
    pub records: Vec<ImportRecord>,
    pub errors: Vec<LineError>,
}

/// Parses `path`. The format is `forced`, else detected from the first readable record
/// and then required of every line (a file mixing formats is almost always a mistake).
pub fn parse_file(path: &Path, forced: Option<Format>) -> Result<ParsedFile, FileError> {
    let mut parsed = ParsedFile { format: forced, ..ParsedFile::default() };
    lines::for_each_line(path, |line, text| {
        let result = text.and_then(|text| parse::parse_line(&text, parsed.format));
        match result {
            Ok((format, record)) => {
                parsed.format = Some(format);
                parsed.records.push(record);
            }
            Err(message) => parsed.errors.push(LineError { path: path.to_path_buf(), line, message }),
        }
    })?;
    Ok(parsed)
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
