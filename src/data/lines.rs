//! Reading a JSONL file line by line with errors that name `file:line`.
//!
//! Lines are read as bytes so that a line that is not UTF-8, or one far too long to be
//! a record, becomes an error for that line instead of a failed read of the whole file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// A record larger than this is refused: no sane preference pair is 16 MiB.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// What went wrong with one line of an input file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}:{line}: {message}", path.display())]
pub struct LineError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

/// An error opening or reading a whole file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}: no such file")]
    Missing(PathBuf),
    #[error("{0} is a directory: pass the JSONL files inside it")]
    Directory(PathBuf),
    #[error("{path}: cannot read it: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A line's text, or the reason it could not be read.
pub type Line = Result<String, String>;

/// Reads `path` and calls `each(line_number, line)` for every non-blank line.
pub fn for_each_line(path: &Path, mut each: impl FnMut(usize, Line)) -> Result<(), FileError> {
    if path.is_dir() {
        return Err(FileError::Directory(path.to_path_buf()));
    }
    let file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => FileError::Missing(path.to_path_buf()),
        _ => FileError::Io { path: path.to_path_buf(), source },
    })?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::with_capacity(4096);
    let mut number = 0;
    loop {
        buf.clear();
        number += 1;
        let (read, too_long) = read_capped_line(&mut reader, &mut buf)
            .map_err(|source| FileError::Io { path: path.to_path_buf(), source })?;
        if read == 0 {
            return Ok(());
        }
        if too_long {
            each(number, Err(format!("line is longer than the {} MiB limit for one record", MAX_LINE_BYTES >> 20)));
            continue;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let bytes = if number == 1 { buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&buf) } else { &buf[..] };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => each(number, Ok(text.to_string())),
            Err(e) => each(number, Err(format!("not valid UTF-8 (byte {}): save the file as UTF-8", e.valid_up_to()))),
        }
    }
}

/// Reads one line into `buf`, keeping at most MAX_LINE_BYTES; returns bytes consumed and
/// whether the line was cut.
fn read_capped_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut too_long = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok((consumed, too_long));
        }
        let (chunk, done) = match memchr_newline(available) {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let len = chunk.len();
        if !too_long {
            if buf.len() + len > MAX_LINE_BYTES {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        reader.consume(len);
        consumed += len;
        if done {
            return Ok((consumed, too_long));
        }
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// Reads a whole small file (used for sniffing); kept here so file errors read the same.
pub fn read_to_string(path: &Path) -> Result<String, FileError> {
    let mut text = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|source| FileError::Io { path: path.to_path_buf(), source })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(bytes: &[u8]) -> Vec<(usize, Line)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.jsonl");
        std::fs::write(&path, bytes).unwrap();
        let mut out = Vec::new();
        for_each_line(&path, |n, l| out.push((n, l))).unwrap();
        out
    }

    #[test]
    fn numbers_lines_and_skips_blank_ones() {
        let out = lines_of("\u{feff}{\"a\":1}\r\n\n  \n{\"b\":2}".as_bytes());
        assert_eq!(out, vec![(1, Ok("{\"a\":1}".into())), (4, Ok("{\"b\":2}".into()))]);
    }

    #[test]
    fn reports_invalid_utf8_on_its_line() {
        let out = lines_of(b"{\"a\":1}\n{\"b\":\"\xff\"}\n");
        assert_eq!(out.len(), 2);
        assert!(out[1].1.as_ref().unwrap_err().contains("UTF-8"));
        assert_eq!(out[1].0, 2);
    }

    #[test]
    fn refuses_a_huge_line_without_keeping_it() {
        let mut bytes = vec![b'x'; MAX_LINE_BYTES + 10];
        bytes.extend_from_slice(b"\n{\"ok\":1}\n");
        let out = lines_of(&bytes);
        assert_eq!(out.len(), 2);
        assert!(out[0].1.as_ref().unwrap_err().contains("MiB"));
        assert_eq!(out[1], (2, Ok("{\"ok\":1}".into())));
    }

    #[test]
    fn missing_file_and_directory_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(for_each_line(&dir.path().join("x"), |_, _| {}), Err(FileError::Missing(_))));
        assert!(matches!(for_each_line(dir.path(), |_, _| {}), Err(FileError::Directory(_))));
    }
}
