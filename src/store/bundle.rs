//! A portable bundle: the whole database as JSONL, for sending by mail. Each line is
//! `{"table": ..., "row": {...}}` after a header line naming the schema version.
//! Reading a bundle fills a temporary database that is then merged, so a bundle and a
//! database file follow exactly the same identity rules.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Transaction, TransactionBehavior};
use serde_json::{Map, Value};

use super::{ImportSummary, MergeSummary, OpenMode, Result, Store, StoreError, migrations};
use crate::domain::ImportRecord;

/// The tables a bundle carries, parents before children, with the order their rows are
/// written in (tables without a rowid by their primary key).
const TABLES: &[(&str, &str)] = &[
    ("annotators", "rowid"),
    ("guidelines", "rowid"),
    ("models", "rowid"),
    ("prompts", "rowid"),
    ("responses", "rowid"),
    ("judgments", "rowid"),
    ("adjudications", "rowid"),
    ("gold", "rowid"),
    ("thumbs", "rowid"),
    ("thumb_gold", "rowid"),
    ("thumb_adjudications", "rowid"),
    ("assignments", "rowid"),
    ("model_answers", "model_id, prompt_id, seed"),
    ("evaluation_only", "response_id"),
    ("eval_votes", "rowid"),
    ("runs", "rowid"),
    ("run_metrics", "run_id, name, step"),
    ("run_samples", "run_id, prompt_id, step"),
    ("run_examples", "run_id, position"),
    ("run_sets", "run_id"),
    ("evals", "rowid"),
];

/// The oldest schema version whose bundles have the rows of today's (version 4 changed
/// only indexes and constraints), so its bundles still load.
const ROWS_UNCHANGED_SINCE: i64 = 3;

/// The first line of a bundle.
pub const BUNDLE_KIND: &str = "verdict-bundle";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}:{line}: {message}")]
    Line { path: String, line: usize, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0} bundles in one import; at most {MAX_BUNDLES} load together: import the rest with a second command")]
    TooMany(usize),
}

impl From<rusqlite::Error> for BundleError {
    fn from(e: rusqlite::Error) -> BundleError {
        BundleError::Store(StoreError::from(e))
    }
}

/// Whether `first_line` is a bundle header.
pub fn is_bundle_header(first_line: &str) -> bool {
    serde_json::from_str::<Value>(first_line)
        .ok()
        .is_some_and(|v| v.get("kind").and_then(Value::as_str) == Some(BUNDLE_KIND))
}

impl Store {
    /// Writes every table as JSONL; returns the number of rows written.
    pub fn write_bundle(&self, out: &mut dyn Write) -> std::result::Result<usize, BundleError> {
        let header = serde_json::json!({"kind": BUNDLE_KIND, "schema_version": migrations::LATEST_VERSION});
        writeln!(out, "{header}")?;
        let mut rows = 0;
        for (table, order) in TABLES {
            let mut statement = self.conn.prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))?;
            let names: Vec<String> = statement.column_names().iter().map(|s| s.to_string()).collect();
            let mut cursor = statement.query([])?;
            while let Some(row) = cursor.next()? {
                let mut object = Map::new();
                for (i, name) in names.iter().enumerate() {
                    let value = match row.get::<_, SqlValue>(i)? {
                        SqlValue::Null => Value::Null,
                        SqlValue::Integer(n) => Value::from(n),
                        SqlValue::Real(x) => Value::from(x),
                        SqlValue::Text(t) => Value::from(t),
                        SqlValue::Blob(_) => continue,
                    };
                    object.insert(name.clone(), value);
                }
                serde_json::to_writer(&mut *out, &serde_json::json!({"table": table, "row": object}))
                    .map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
                rows += 1;
            }
        }
        out.flush()?;
        Ok(rows)
    }

    /// Reads a bundle into a temporary database, then merges that into this one.
    pub fn import_bundle(&mut self, path: &Path) -> std::result::Result<MergeSummary, BundleError> {
        let staged = Staged::read(&[path.to_path_buf()])?;
        let (mut merged, _) = self.import_all(&staged, &[])?;
        Ok(merged.pop().unwrap_or_default())
    }

    /// One `verdict import`: the staged bundles (each merged by content identity, as
    /// `merge` does) and the records of import files, in ONE transaction: a failure
    /// part-way, or a kill, leaves this database as it was. Returns each bundle's summary
    /// and the records'.
    pub fn import_all(
        &mut self,
        staged: &Staged,
        records: &[ImportRecord],
    ) -> std::result::Result<(Vec<MergeSummary>, ImportSummary), BundleError> {
        for (i, temp) in staged.temps.iter().enumerate() {
            self.conn.execute(&format!("ATTACH DATABASE ?1 AS bundle{i}"), [temp.to_string_lossy()])?;
        }
        let written = self.write_all(staged.temps.len(), records);
        for i in 0..staged.temps.len() {
            self.conn.execute(&format!("DETACH DATABASE bundle{i}"), [])?;
        }
        Ok(written?)
    }

    /// The writing half of `import_all`, with the bundles attached as `bundle0`, `bundle1`...
    fn write_all(&mut self, bundles: usize, records: &[ImportRecord]) -> Result<(Vec<MergeSummary>, ImportSummary)> {
        // The bulk path writes multi-row INSERTs that immediate foreign keys would make
        // abortable (and so journaled); it assigns every id it writes itself, and the merge
        // steps take every id they write from a join.
        let _keys_off = super::ForeignKeysOff::new(&self.conn)?;
        // Immediate: the look-ups and the writes see the same database, even with another
        // process writing to the file (it waits for the busy timeout instead).
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let mut merged = Vec::with_capacity(bundles);
        for i in 0..bundles {
            merged.push(super::merge::merge_attached(&tx, &format!("bundle{i}"))?);
        }
        let summary = if records.is_empty() {
            ImportSummary::default()
        } else {
            let importer = self.annotator_id(super::import::IMPORT_ANNOTATOR, "system")?;
            super::bulk::import(&tx, importer, records)?
        };
        tx.commit()?;
        Ok((merged, summary))
    }
}

/// SQLite attaches at most 10 databases to a connection.
const MAX_BUNDLES: usize = 10;

/// Bundles read and checked, each into its own temporary database, before the database
/// they go into is opened: a bad row anywhere stops the import before anything is written.
/// The temporary files are removed on drop.
pub struct Staged {
    temps: Vec<PathBuf>,
}

impl Staged {
    pub fn read(bundles: &[PathBuf]) -> std::result::Result<Staged, BundleError> {
        if bundles.len() > MAX_BUNDLES {
            return Err(BundleError::TooMany(bundles.len()));
        }
        let mut staged = Staged { temps: Vec::with_capacity(bundles.len()) };
        for (i, bundle) in bundles.iter().enumerate() {
            let temp = tempfile_path(bundle, i);
            staged.temps.push(temp.clone());
            let mut staging = Store::open(&temp, OpenMode::CreateIfMissing)?;
            fill_from_bundle(&mut staging, bundle)?;
        }
        Ok(staged)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for temp in &self.temps {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", temp.display()));
            }
        }
    }
}

fn tempfile_path(bundle: &Path, index: usize) -> PathBuf {
    let name = bundle.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    std::env::temp_dir().join(format!("verdict-bundle-{}-{index}-{name}.db", std::process::id()))
}

fn fill_from_bundle(staging: &mut Store, path: &Path) -> std::result::Result<(), BundleError> {
    let shown = path.display().to_string();
    let bad = |line: usize, message: String| BundleError::Line { path: shown.clone(), line, message };
    let reader = std::io::BufReader::new(std::fs::File::open(path)?);
    // A vote names the later vote that superseded it, so rows may point forward: the
    // references are checked once every row is in.
    let _keys_off = super::ForeignKeysOff::new(&staging.conn)?;
    let tx = staging.conn.unchecked_transaction()?;
    let mut version = 0;
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| bad(number, format!("cannot read: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line).map_err(|e| bad(number, format!("not valid JSON: {e}")))?;
        if number == 1 {
            let header_version = value.get("schema_version").and_then(Value::as_i64);
            version = header_version.unwrap_or(0);
            let version = header_version;
            if !is_bundle_header(&line) {
                return Err(bad(1, "not a verdict bundle (no header line)".into()));
            }
            if !version.is_some_and(|v| (ROWS_UNCHANGED_SINCE..=migrations::LATEST_VERSION).contains(&v)) {
                return Err(bad(
                    1,
                    format!(
                        "bundle has schema version {}, this verdict {}: use the verdict that wrote it",
                        version.unwrap_or(0),
                        migrations::LATEST_VERSION
                    ),
                ));
            }
            continue;
        }
        let table = value.get("table").and_then(Value::as_str).unwrap_or("");
        if !TABLES.iter().any(|(known, _)| *known == table) {
            return Err(bad(number, format!("unknown table \"{table}\"")));
        }
        let Some(Value::Object(row)) = value.get("row") else {
            return Err(bad(number, "missing field `row`".into()));
        };
        check_row(&tx, table, row).map_err(|message| bad(number, format!("{table}: {message}")))?;
        let columns: Vec<&String> = row.keys().collect();
        if columns.iter().any(|c| !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')) {
            return Err(bad(number, "bad column name".into()));
        }
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            columns.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
            (1..=columns.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
        );
        let values: Vec<SqlValue> = row
            .values()
            .map(|v| match v {
                Value::Null => SqlValue::Null,
                Value::Number(n) if n.is_i64() => SqlValue::Integer(n.as_i64().unwrap_or(0)),
                Value::Number(n) => SqlValue::Real(n.as_f64().unwrap_or(0.0)),
                Value::String(s) => SqlValue::Text(s.clone()),
                other => SqlValue::Text(other.to_string()),
            })
            .collect();
        tx.execute(&sql, rusqlite::params_from_iter(values)).map_err(|e| bad(number, format!("{table}: {e}")))?;
    }
    if version < migrations::EVALUATION_ONLY_SINCE {
        // Written before evaluation answers were told apart from candidates.
        tx.execute_batch(migrations::EVALUATION_ONLY_FROM_ANSWERS)?;
    }
    let broken: i64 = tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))?;
    if broken > 0 {
        let (table, rowid): (String, i64) =
            tx.query_row("SELECT \"table\", rowid FROM pragma_foreign_key_check LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0)))
            })?;
        return Err(BundleError::Line {
            path: shown.clone(),
            line: 0,
            message: format!(
                "{broken} rows point at rows that are not in the bundle (the first: table {table}, id {rowid}); \
                 export the bundle again"
            ),
        });
    }
    super::uids::fill_from_rows(&tx)?;
    tx.commit()?;
    Ok(())
}

/// The checks an import file's lines get, for the rows of a bundle: JSON columns hold what
/// verdict writes there, a prompt ends with a user turn, and content identities (uids) are
/// the hashes of the content they name, so a bundle edited by hand cannot bring a row in
/// under another row's identity.
fn check_row(tx: &rusqlite::Transaction<'_>, table: &str, row: &Map<String, Value>) -> std::result::Result<(), String> {
    let text = |column: &str| -> std::result::Result<Option<&str>, String> {
        match row.get(column) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(format!("column {column}: expected text, found {other}")),
        }
    };
    let json = |column: &str, what: &str, ok: &dyn Fn(&Value) -> bool| -> std::result::Result<(), String> {
        let Some(raw) = text(column)? else { return Ok(()) };
        let value: Value =
            serde_json::from_str(raw).map_err(|e| format!("column {column} is not valid JSON ({e}): {raw:.80}"))?;
        if ok(&value) { Ok(()) } else { Err(format!("column {column}: expected {what}, found {raw:.80}")) }
    };
    let strings = |v: &Value| v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
    let object = |v: &Value| v.is_object();
    match table {
        "prompts" => {
            let raw = text("messages")?.ok_or("missing column messages")?;
            let messages: Vec<crate::domain::Message> =
                serde_json::from_str(raw).map_err(|e| format!("column messages is not a list of messages ({e})"))?;
            match messages.last() {
                None => return Err("column messages is an empty list".into()),
                Some(last) if last.role != "user" => {
                    return Err(
                        "column messages: the last turn is not the user's; a prompt ends with a user turn".into()
                    );
                }
                Some(_) => {}
            }
            let uid = crate::domain::prompt_uid(&messages);
            if text("uid")? != Some(uid.as_str()) {
                return Err(format!("uid is not the hash of the prompt's messages (expected {uid})"));
            }
            json("tags", "a list of strings", &strings)?;
        }
        "responses" => {
            let content = text("content")?.ok_or("missing column content")?;
            let prompt_id = row.get("prompt_id").and_then(Value::as_i64).ok_or("missing column prompt_id")?;
            let prompt_uid: String =
                tx.query_row("SELECT uid FROM prompts WHERE id = ?1", [prompt_id], |r| r.get(0))
                    .map_err(|_| format!("prompt_id {prompt_id}: no such prompt earlier in the bundle"))?;
            let uid = crate::domain::response_uid(&prompt_uid, content);
            if text("uid")? != Some(uid.as_str()) {
                return Err(format!("uid is not the hash of the response's prompt and content (expected {uid})"));
            }
            json("params", "a JSON object", &object)?;
        }
        "judgments" | "thumbs" => json("reasons", "a list of strings", &strings)?,
        "runs" => json("config", "a JSON object", &object)?,
        "run_samples" => json("params", "a JSON object", &object)?,
        "evals" => json("by_language", "a JSON object", &object)?,
        "annotators" => json("languages", "a list of strings", &strings)?,
        "guidelines" => {
            if let Some(raw) = text("reasons")? {
                serde_json::from_str::<Vec<crate::guidelines::Reason>>(raw)
                    .map_err(|e| format!("column reasons is not a list of reason tags ({e})"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with_version(dir: &Path, version: i64) -> std::path::PathBuf {
        let dir_db = dir.join(format!("source-{version}.db"));
        let mut source = Store::open(&dir_db, OpenMode::CreateIfMissing).unwrap();
        source.import_records(&crate::samples::records()).unwrap();
        let mut text = Vec::new();
        source.write_bundle(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        let (header, rows) = text.split_once('\n').unwrap();
        let header = header.replace(
            &format!("\"schema_version\":{}", migrations::LATEST_VERSION),
            &format!("\"schema_version\":{version}"),
        );
        let path = dir.join(format!("v{version}.bundle.jsonl"));
        std::fs::write(&path, format!("{header}\n{rows}")).unwrap();
        path
    }

    #[test]
    fn bundles_from_version_3_on_load_and_older_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut target = Store::open(&dir.path().join("target.db"), OpenMode::CreateIfMissing).unwrap();
        let summary = target.import_bundle(&bundle_with_version(dir.path(), 3)).unwrap();
        assert!(summary.prompts > 0 && summary.judgments > 0, "{summary:?}");
        assert_eq!(target.import_bundle(&bundle_with_version(dir.path(), 3)).unwrap().prompts, 0, "merged once");
        let err = target.import_bundle(&bundle_with_version(dir.path(), 2)).unwrap_err();
        assert!(err.to_string().contains("bundle has schema version 2"), "{err}");
    }

    #[test]
    fn bundle_rows_are_checked_like_import_lines_and_a_bad_one_loads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let good = bundle_with_version(dir.path(), migrations::LATEST_VERSION);
        let text = std::fs::read_to_string(&good).unwrap();
        let mut target = Store::open(&dir.path().join("target.db"), OpenMode::CreateIfMissing).unwrap();
        let edit = |find: &dyn Fn(&Value) -> bool, change: &dyn Fn(&mut Map<String, Value>)| -> (usize, String) {
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            let index = lines.iter().position(|l| find(&serde_json::from_str(l).unwrap())).unwrap();
            let mut value: Value = serde_json::from_str(&lines[index]).unwrap();
            change(value["row"].as_object_mut().unwrap());
            lines[index] = value.to_string();
            (index + 1, lines.join("\n"))
        };
        let of = |table: &'static str| move |v: &Value| v["table"] == table;
        let judged = |v: &Value| v["table"] == "judgments" && v["row"]["reasons"] != "[]";
        let cases = [
            (
                edit(&of("prompts"), &|r| drop(r.insert("messages".into(), "[{\"role\":\"user\"".into()))),
                "not a list of messages",
            ),
            (
                edit(&of("prompts"), &|r| {
                    drop(r.insert("messages".into(), "[{\"role\":\"assistant\",\"content\":\"hi\"}]".into()))
                }),
                "ends with a user turn",
            ),
            (edit(&of("prompts"), &|r| drop(r.insert("tags".into(), "{}".into()))), "expected a list of strings"),
            (
                edit(&of("responses"), &|r| drop(r.insert("content".into(), "changed by hand".into()))),
                "uid is not the hash",
            ),
            (edit(&judged, &|r| drop(r.insert("reasons".into(), "tone".into()))), "reasons is not valid JSON"),
        ];
        for ((line, bundle), expected) in cases {
            let path = dir.path().join("bad.bundle.jsonl");
            std::fs::write(&path, bundle).unwrap();
            let err = target.import_bundle(&path).unwrap_err().to_string();
            assert!(err.contains(&format!("bad.bundle.jsonl:{line}: ")) && err.contains(expected), "{err}");
            assert_eq!(target.count("prompts").unwrap(), 0, "nothing loaded: {err}");
        }
        assert!(target.import_bundle(&good).unwrap().prompts > 0, "the unedited bundle loads");
    }
}
