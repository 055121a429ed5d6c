//! The SQLite store: schema, migrations and every SQL statement of the program.
//!
//! One file holds everything. It runs in WAL mode with foreign keys on and a busy
//! timeout, so two verdict processes (two annotators, or the TUI and a CLI training run)
//! can share it.

mod bulk;
pub mod bundle;
mod evals;
mod guidelines;
mod import;
mod labeling;
mod merge;
pub mod migrations;
mod models;
mod pairs;
mod runs;
mod stats;
mod team;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use evals::{EvalRow, EvalVoteRow, NewEvalVote, RunSample};
pub use import::ImportSummary;
pub use labeling::{MyJudgment, NewJudgment, QueueRow, ResponseRow, Verdict};
pub use merge::MergeSummary;
pub use models::{GenerationTarget, ModelRow, TargetFilter};
pub use pairs::{ActiveJudgment, PairRow, PromptRow};
pub use runs::RunRow;
pub use stats::{Stats, StatsRow};
pub use team::{AnnotatorRow, Dispute, JudgmentFacts, Vote};

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
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

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
        conn.pragma_update(None, "journal_mode", "WAL").map_err(not_a_db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Content hashes are random keys: their index inserts touch pages all over the
        // file, so a bulk import thrashes SQLite's default 2 MiB page cache. 64 MiB keeps
        // a 100,000-pair import in memory.
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

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn migrate(&mut self, from: i64) -> Result<()> {
        for (index, sql) in migrations::MIGRATIONS.iter().enumerate().skip(from as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (index + 1) as i64)?;
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
