//! The SQLite store: schema, migrations and every SQL statement of the program.
//!
//! One file holds everything. It runs in WAL mode with foreign keys on and a busy
//! timeout, so two verdict processes (two annotators, or the TUI and a CLI training run)
//! can share it.

mod borrowed_insert;
mod bulk;
pub mod bundle;
mod evals;
mod evaluation;
mod guidelines;
mod import;
pub mod json;
mod labeling;
mod merge;
pub mod migrations;
mod models;
mod pairs;
mod run_examples;
mod runs;
mod slots;
mod stats;
mod team;
mod thumbs;
mod uids;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use evals::{EvalRow, EvalVoteRow, NewEvalVote, RunSample};
pub use import::{GoldItem, ImportSummary};
pub use labeling::{MyJudgment, NewJudgment, QueueRow, ResponseRow, Undo, Verdict};
pub use merge::MergeSummary;
pub use models::{GenerationTarget, ModelRow, TargetFilter};
pub use pairs::{ActiveJudgment, PairRow, PromptRow};
pub use run_examples::{RunAnswer, RunExample, RunSet};
pub use runs::RunRow;
pub use stats::{Stats, StatsRow};
pub use team::{AnnotatorRow, Dispute, JudgmentFacts, Vote};
pub use thumbs::{ActiveThumb, NewThumb, Thumb, ThumbUndo};

/// Errors from the store. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no database at {0}: run `verdict init` first, or pass --db PATH")]
    Missing(PathBuf),
    #[error("{0} is a directory, not a database file: pass --db PATH/TO/FILE.db")]
    IsDirectory(PathBuf),
    #[error("{path} is not a verdict database (SQLite says: {detail}); pass another --db")]
    NotADatabase { path: PathBuf, detail: String },
    #[error(
        "{path} was written by a newer verdict (schema version {found}, this build knows up to {known}); \
         it was not modified: upgrade verdict to open it"
    )]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error(
        "{path} has schema version {found}, this database {known}: open it once with this verdict \
         (`verdict --db {path} stats` upgrades an older file) or use the verdict that wrote it"
    )]
    SchemaMismatch { path: PathBuf, found: i64, known: i64 },
    #[error(
        "upgrading {path} to schema version {version} failed ({detail}); it was not modified: \
         `sqlite3 {path} 'PRAGMA foreign_key_check'` lists the rows"
    )]
    UpgradeFailed { path: PathBuf, version: i64, detail: String },
    #[error(
        "no prompts in the test split: import prompts with \"split\": \"test\" (the evaluation answers held-out \
         prompts, not the ones trained on)"
    )]
    NoTestPrompts,
    #[error("no model {0}: `verdict model list` shows the known ones")]
    NoModel(i64),
    #[error("model {model_id}'s files are no longer at {}: put them back or train/generate with it again", .path.display())]
    ModelFilesGone { model_id: i64, path: PathBuf },
    #[error("no run {0}: `verdict runs` lists them")]
    NoRun(i64),
    #[error("run {0} has no base model recorded")]
    NoBaseModel(i64),
    #[error("run {run_id} has no tuned model ({status}): a run registers its model when it finishes{hint}")]
    NoTunedModel { run_id: i64, status: crate::domain::RunStatus, hint: String },
    #[error(transparent)]
    Corrupt(#[from] json::CorruptJson),
    #[error("database error: {0}")]
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e {
            // A stored JSON value that did not parse, raised inside a row closure.
            rusqlite::Error::FromSqlConversionFailure(index, kind, inner) => {
                match inner.downcast::<json::CorruptJson>() {
                    Ok(corrupt) => StoreError::Corrupt(*corrupt),
                    Err(inner) => StoreError::Sql(rusqlite::Error::FromSqlConversionFailure(index, kind, inner)),
                }
            }
            other => StoreError::Sql(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The page size of databases this build creates (SQLite's default is 4096; an existing
/// file keeps its own until a VACUUM).
const NEW_PAGE_SIZE: i64 = 16384;

/// How `Store::open` treats a path with no database yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the file and the schema if the file does not exist.
    CreateIfMissing,
    /// Refuse with `StoreError::Missing`: reading commands never create files.
    MustExist,
}

/// An open connection to one verdict database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (and migrates) the database at `path`.
    ///
    /// A database with a schema newer than this build is refused before anything is
    /// written to it, so an old binary cannot damage a newer file.
    pub fn open(path: &Path, mode: OpenMode) -> Result<Store> {
        if path.is_dir() {
            return Err(StoreError::IsDirectory(path.to_path_buf()));
        }
        let exists = path.exists();
        if !exists && mode == OpenMode::MustExist {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let not_a_db =
            |e: rusqlite::Error| StoreError::NotADatabase { path: path.to_path_buf(), detail: e.to_string() };
        // Reading the header is the first thing we do: a random file fails here, untouched.
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(not_a_db)?;
        if version > migrations::LATEST_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                known: migrations::LATEST_VERSION,
            });
        }
        if version == 0 && exists && has_foreign_tables(&conn).map_err(not_a_db)? {
            return Err(StoreError::NotADatabase {
                path: path.to_path_buf(),
                detail: "it holds tables that verdict did not create".into(),
            });
        }
        if version == 0 {
            // A new file: larger pages halve what a bulk import writes through the WAL and
            // its checkpoint (fewer, fuller pages). Fixed once the first table exists.
            conn.pragma_update(None, "page_size", NEW_PAGE_SIZE)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL").map_err(not_a_db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // A bulk import adds to several indexes at once; 64 MiB keeps their pages in memory
        // (a larger cache gained nothing: docs/performance.md).
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Store { conn, path: path.to_path_buf() };
        store.migrate(version)?;
        Ok(store)
    }

    /// An in-memory database, for tests and benchmarks.
    pub fn open_in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Store { conn, path: PathBuf::from(":memory:") };
        store.migrate(0)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A number that changes whenever another connection (another process, or a job's
    /// thread) commits to the database: a screen that shows stored data re-reads it when this
    /// moves, instead of on a timer. Writes through this connection do not move it.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn migrate(&mut self, from: i64) -> Result<()> {
        for (index, sql) in migrations::MIGRATIONS.iter().enumerate().skip(from as usize) {
            let version = (index + 1) as i64;
            // Dropping a table that others reference is only allowed with foreign keys off
            // (and the switch is ignored inside a transaction); the rebuilt rows are
            // checked before the migration commits.
            let rebuilds = migrations::REBUILDS_TABLES.contains(&version);
            let _keys_off = if rebuilds { Some(ForeignKeysOff::new(&self.conn)?) } else { None };
            // Immediate, and the version read again inside: another process that opened the
            // same old file may have upgraded it while this one waited for the lock.
            let tx = rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Immediate)?;
            let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if current >= version {
                continue;
            }
            tx.execute_batch(sql)?;
            if rebuilds {
                let broken: i64 = tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))?;
                if broken > 0 {
                    // Rolled back when `tx` drops: the file stays at the old version.
                    return Err(StoreError::UpgradeFailed {
                        path: self.path.clone(),
                        version,
                        detail: format!("{broken} rows point at rows that do not exist"),
                    });
                }
            }
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// The id of the annotator called `name`, created on first use.
    pub fn annotator_id(&self, name: &str, role: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO annotators (name, role) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
            (name, role),
        )?;
        Ok(self.conn.query_row("SELECT id FROM annotators WHERE name = ?1", [name], |r| r.get(0))?)
    }
}

/// Turns foreign-key enforcement off on a connection until dropped. Only for work that
/// guarantees the references itself (a table rebuild that is checked afterwards, a bulk
/// import that assigns every id it writes).
struct ForeignKeysOff<'c> {
    conn: &'c Connection,
}

impl<'c> ForeignKeysOff<'c> {
    fn new(conn: &'c Connection) -> Result<ForeignKeysOff<'c>> {
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        Ok(ForeignKeysOff { conn })
    }
}

impl Drop for ForeignKeysOff<'_> {
    fn drop(&mut self) {
        // Outside a transaction (the guard outlives the one it wraps) this cannot fail.
        let _ = self.conn.pragma_update(None, "foreign_keys", "ON");
    }
}

fn has_foreign_tables(conn: &Connection) -> rusqlite::Result<bool> {
    let count: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        [],
        |r| r.get(0),
    )?;
    Ok(count > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_and_reopens_at_latest_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let store = Store::open(&path, OpenMode::CreateIfMissing).unwrap();
        assert_eq!(store.schema_version().unwrap(), migrations::LATEST_VERSION);
        drop(store);
        let store = Store::open(&path, OpenMode::MustExist).unwrap();
        assert_eq!(store.schema_version().unwrap(), migrations::LATEST_VERSION);
    }

    #[test]
    fn version_3_files_are_upgraded_with_their_rows_ids_and_uids() {
        use crate::domain::{ImportRecord, Message, NewPrompt, prompt_uid, response_uid};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        let messages = vec![Message::new("user", "Wo ist meine Karte?")];
        let (prompt, good, bad) = (
            prompt_uid(&messages),
            response_uid(&prompt_uid(&messages), "Gesperrt."),
            response_uid(&prompt_uid(&messages), "Weg."),
        );
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
            for sql in &migrations::MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(&format!(
                r#"INSERT INTO annotators (id, name) VALUES (1, 'amira');
                INSERT INTO prompts (id, uid, messages, language, split) VALUES (7, '{prompt}', '[{{"role":"user","content":"Wo ist meine Karte?"}}]', 'de', 'train');
                INSERT INTO responses (id, uid, prompt_id, content, origin) VALUES (3, '{good}', 7, 'Gesperrt.', 'import'), (5, '{bad}', 7, 'Weg.', 'import');
                INSERT INTO responses (id, uid, prompt_id, content, origin, parent_id, author) VALUES (6, 'r6', 7, 'Neu.', 'human', 5, 'amira');
                INSERT INTO judgments (id, uid, prompt_id, response_a, response_b, annotator_id, outcome) VALUES (2, 'j2', 7, 3, 5, 1, 'a');
                INSERT INTO judgments (id, uid, prompt_id, response_a, response_b, annotator_id, outcome, supersedes) VALUES (4, 'j4', 7, 3, 5, 1, 'undone', 2);
                INSERT INTO gold (response_a, response_b, outcome) VALUES (3, 5, 'a');
                INSERT INTO assignments (annotator_id, prompt_id, position) VALUES (1, 7, 0);
                PRAGMA user_version = 3;"#
            ))
            .unwrap();
        }
        let mut store = Store::open(&path, OpenMode::MustExist).unwrap();
        assert_eq!(store.schema_version().unwrap(), migrations::LATEST_VERSION);
        let rows = |sql: &str| -> Vec<String> {
            let mut s = store.conn.prepare(sql).unwrap();
            s.query_map([], |r| r.get::<_, String>(0)).unwrap().map(|r| r.unwrap()).collect()
        };
        assert_eq!(rows("SELECT id || ':' || uid FROM prompt_uids"), [format!("7:{prompt}")]);
        assert_eq!(
            rows("SELECT id || ':' || content || ':' || coalesce(parent_id, '-') FROM responses ORDER BY id"),
            ["3:Gesperrt.:-", "5:Weg.:-", "6:Neu.:5"]
        );
        assert_eq!(rows("SELECT id || ':' || uid FROM judgment_uids ORDER BY id"), ["2:j2", "4:j4"]);
        assert_eq!(rows("SELECT id || ':' || uid FROM response_uids ORDER BY id").len(), 3);
        let broken: i64 =
            store.conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).unwrap();
        assert_eq!(broken, 0);
        let keys_on: i64 = store.conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
        assert_eq!(keys_on, 1);
        // The migrated keys are the ones an import finds: the same pair adds nothing new
        // but its verdict (the import annotator's, not amira's).
        let pair = ImportRecord::Pair {
            prompt: NewPrompt {
                external_id: None,
                messages,
                language: "de".into(),
                domain: None,
                tags: Vec::new(),
                split: None,
                source: None,
            },
            chosen: "Gesperrt.".into(),
            rejected: "Weg.".into(),
            reasons: Vec::new(),
            note: None,
        };
        let summary = store.import_records(&[pair]).unwrap();
        assert_eq!((summary.prompts, summary.responses, summary.judgments), (0, 0, 1));
        // Keys stay unique: a second row with a taken uid is refused.
        let err = store.conn.execute("INSERT INTO prompt_uids (uid, id) VALUES (?1, 7)", [&prompt]).unwrap_err();
        assert!(err.to_string().contains("UNIQUE"), "{err}");
    }

    #[test]
    fn a_file_upgraded_by_another_process_meanwhile_is_not_upgraded_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let mut first = Store::open(&path, OpenMode::CreateIfMissing).unwrap();
        // As if this one had read the version before the other finished upgrading.
        first.migrate(2).unwrap();
        assert_eq!(first.schema_version().unwrap(), migrations::LATEST_VERSION);
        let tables: i64 = first
            .conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'prompt_uids'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 1);
    }

    #[test]
    fn refuses_missing_file_when_it_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let err = Store::open(&dir.path().join("nope.db"), OpenMode::MustExist).err().unwrap();
        assert!(matches!(err, StoreError::Missing(_)));
        assert!(!dir.path().join("nope.db").exists());
    }

    #[test]
    fn refuses_newer_schema_without_touching_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;").unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let err = Store::open(&path, OpenMode::MustExist).err().unwrap();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn refuses_a_text_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "these are my notes, not a database\n".repeat(100)).unwrap();
        let err = Store::open(&path, OpenMode::MustExist).err().unwrap();
        assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "these are my notes, not a database\n".repeat(100));
    }

    #[test]
    fn annotators_are_created_once() {
        let store = Store::open_in_memory().unwrap();
        let a = store.annotator_id("amira", "annotator").unwrap();
        let b = store.annotator_id("amira", "annotator").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, store.annotator_id("jonas", "annotator").unwrap());
    }
}
