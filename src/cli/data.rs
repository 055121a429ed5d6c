//! `verdict import` and `verdict export`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::Cli;
use crate::data::Format;
use crate::data::export::{self, ExportFormat, SplitFilter};
use crate::data::import::parse_file;
use crate::domain::ImportRecord;
use crate::store::bundle::Staged;
use crate::store::{OpenMode, Store};

/// How many bad lines to list before summarising the rest.
const SHOW_ERRORS: usize = 20;

pub fn import(cli: &Cli, files: &[PathBuf], format: Option<Format>, skip_invalid: bool) -> anyhow::Result<ExitCode> {
    // Read and check every file before the database is even opened: a bad file must
    // not leave a half-loaded (or newly created) database behind. Bundles are checked
    // row by row when they are read, before anything is written, and everything is then
    // written in one transaction.
    let mut records: Vec<ImportRecord> = Vec::new();
    let mut bad_lines = Vec::new();
    let mut per_file = Vec::new();
    let mut rated = Vec::new();
    let (bundles, files): (Vec<&PathBuf>, Vec<&PathBuf>) = files.iter().partition(|p| is_bundle(p));
    for path in files {
        // TRL's unpaired layout (`prompt`, `completion`, `label`) becomes single-answer ratings.
        if format.is_none() && crate::data::import::is_unpaired_file(path) {
            let (records, errors) = crate::data::import::parse_unpaired_file(path)?;
            per_file.push((path.clone(), "unpaired".to_string(), records.len(), errors.len()));
            rated.extend(records);
            bad_lines.extend(errors);
            continue;
        }
        let parsed = parse_file(path, format)?;
        let shown = parsed.format.map(|f| format!("{f:?}").to_lowercase()).unwrap_or_else(|| "empty".into());
        per_file.push((path.clone(), shown, parsed.records.len(), parsed.errors.len()));
        records.extend(parsed.records);
        bad_lines.extend(parsed.errors);
    }
    if !bad_lines.is_empty() {
        for error in bad_lines.iter().take(if skip_invalid { usize::MAX } else { SHOW_ERRORS }) {
            eprintln!("{}{error}", if skip_invalid { "skipped " } else { "" });
        }
        if !skip_invalid {
            if bad_lines.len() > SHOW_ERRORS {
                eprintln!("... and {} more bad lines", bad_lines.len() - SHOW_ERRORS);
            }
            anyhow::bail!(
                "{} invalid line(s); nothing was imported. Fix them, or pass --skip-invalid to load the valid lines",
                bad_lines.len()
            );
        }
    }
    let bundles: Vec<PathBuf> = bundles.into_iter().cloned().collect();
    let staged = Staged::read(&bundles).map_err(|e| anyhow::anyhow!("{e}; nothing was imported"))?;
    let (mut store, _) = super::init::open_for_writing(cli)?;
    let (merged, summary) =
        store.import_all(&staged, &records).map_err(|e| anyhow::anyhow!("{e}; nothing was imported"))?;
    let ratings = store.import_rated(&rated).map_err(|e| {
        anyhow::anyhow!("{e}; the unpaired files were not imported (the other files were), run the import again")
    })?;
    for (bundle, s) in bundles.iter().zip(&merged) {
        println!(
            "{} (bundle): {} prompts, {} responses, {} judgments, {} adjudications, {} gold, {} assignments, \
             {} blind votes, {} runs added",
            bundle.display(),
            s.prompts,
            s.responses,
            s.judgments,
            s.adjudications,
            s.gold,
            s.assignments,
            s.eval_votes,
            s.runs
        );
    }
    if per_file.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for (path, format, count, errors) in per_file {
        let skipped = if errors > 0 { format!(", {errors} skipped") } else { String::new() };
        println!("{}: {count} records ({format}{skipped})", path.display());
    }
    let rated_part = if rated.is_empty() { String::new() } else { format!(", {} ratings", ratings.judgments) };
    println!(
        "added {} prompts, {} responses, {} judgments{rated_part}; {} records were already present",
        summary.prompts + ratings.prompts,
        summary.responses + ratings.responses,
        summary.judgments,
        summary.duplicates + ratings.duplicates
    );
    Ok(if bad_lines.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn export(
    cli: &Cli,
    file: &Path,
    format: ExportFormat,
    split: SplitFilter,
    bundle: bool,
    run: Option<i64>,
) -> anyhow::Result<ExitCode> {
    let store = Store::open(&cli.db, OpenMode::MustExist)?;
    if bundle {
        let rows = if file == Path::new("-") {
            store.write_bundle(&mut std::io::stdout().lock())?
        } else {
            write_atomically(file, |out| Ok(store.write_bundle(out)?))?
        };
        eprintln!("wrote a bundle of {rows} rows to {}; load it elsewhere with `verdict import`", file.display());
        return Ok(ExitCode::SUCCESS);
    }
    let write = |out: &mut dyn Write| match run {
        Some(run) => export::export_run(&store, run, format, split, out),
        None => export::export(&store, format, split, out),
    };
    let summary =
        if file == Path::new("-") { write(&mut std::io::stdout().lock())? } else { write_atomically(file, write)? };
    let unpaired = matches!(format, ExportFormat::Unpaired | ExportFormat::UnpairedConversational);
    let (what, count, keep) = if unpaired {
        ("answers (label true = desirable)", summary.answers, "unpaired-conversational")
    } else {
        ("pairs", summary.pairs, "conversational")
    };
    eprintln!("wrote {count} {what} to {}", file.display());
    if let Some(set) = run.map(|run| store.run_set(run)).transpose()?.flatten() {
        eprintln!("run {}'s training set: {}, sha256 {}", run.unwrap_or_default(), set.method, set.hash);
    }
    if summary.skipped_multi_turn > 0 {
        eprintln!(
            "left out {} {} whose prompt has a system message or several turns: this format holds only a single \
             user turn; use --format {keep} to keep them",
            summary.skipped_multi_turn,
            if unpaired { "answers" } else { "pairs" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the file starts with a bundle header line.
fn is_bundle(path: &Path) -> bool {
    use std::io::BufRead;
    let Ok(file) = std::fs::File::open(path) else { return false };
    let mut first = String::new();
    let mut reader = std::io::BufReader::new(file).take(4096);
    reader.read_line(&mut first).is_ok() && crate::store::bundle::is_bundle_header(first.trim())
}

/// Writes through a temporary file renamed into place, so a failed export never leaves
/// a truncated file where a good one was.
fn write_atomically<T>(path: &Path, write: impl FnOnce(&mut dyn Write) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let temp = dir.join(format!(".{}.tmp", path.file_name().context("export needs a file name")?.to_string_lossy()));
    let result = (|| {
        let file = std::fs::File::create(&temp).with_context(|| format!("cannot write {}", temp.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let value = write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&temp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
