//! Content-hash keys: `prompt_uids`, `response_uids` and `judgment_uids` map a row's uid
//! to its id. The rows keep their `uid` column; these tables are where the store finds a
//! row by uid, and their primary key is what keeps a uid unique. They are apart from the
//! rows so that a bulk import can add a whole file's keys in sorted order (see
//! `migrations::MIGRATION_4`). Every insert of a keyed row goes through here.

use rusqlite::{Connection, OptionalExtension};

use super::Result;

/// A table whose rows are identified by a content hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keyed {
    Prompts,
    Responses,
    Judgments,
}

impl Keyed {
    /// The table of the rows.
    pub(super) fn table(self) -> &'static str {
        match self {
            Keyed::Prompts => "prompts",
            Keyed::Responses => "responses",
            Keyed::Judgments => "judgments",
        }
    }

    /// The table of their keys.
    pub(super) fn keys(self) -> &'static str {
        match self {
            Keyed::Prompts => "prompt_uids",
            Keyed::Responses => "response_uids",
            Keyed::Judgments => "judgment_uids",
        }
    }
}

/// The id of the row with `uid`, if there is one.
pub(super) fn find(conn: &Connection, kind: Keyed, uid: &str) -> Result<Option<i64>> {
    let sql = match kind {
        Keyed::Prompts => "SELECT id FROM prompt_uids WHERE uid = ?1",
        Keyed::Responses => "SELECT id FROM response_uids WHERE uid = ?1",
        Keyed::Judgments => "SELECT id FROM judgment_uids WHERE uid = ?1",
    };
    Ok(conn.prepare_cached(sql)?.query_row([uid], |r| r.get(0)).optional()?)
}

/// Records that the row `id` has `uid`; fails (UNIQUE) when another row has it.
pub(super) fn add(conn: &Connection, kind: Keyed, uid: &str, id: i64) -> Result<()> {
    let sql = match kind {
        Keyed::Prompts => "INSERT INTO prompt_uids (uid, id) VALUES (?1, ?2)",
        Keyed::Responses => "INSERT INTO response_uids (uid, id) VALUES (?1, ?2)",
        Keyed::Judgments => "INSERT INTO judgment_uids (uid, id) VALUES (?1, ?2)",
    };
    conn.prepare_cached(sql)?.execute(rusqlite::params![uid, id])?;
    Ok(())
}

/// The row with `uid`, inserted by `insert` (which returns the new row's id) when there is
/// none yet. Returns the id and whether it is new. Call inside a transaction.
pub(super) fn insert_once(
    conn: &Connection,
    kind: Keyed,
    uid: &str,
    insert: impl FnOnce() -> Result<i64>,
) -> Result<(i64, bool)> {
    if let Some(id) = find(conn, kind, uid)? {
        return Ok((id, false));
    }
    let id = insert()?;
    add(conn, kind, uid, id)?;
    Ok((id, true))
}

/// Fills the key tables of a database whose rows were written without keys (a bundle's
/// staging database).
pub(super) fn fill_from_rows(conn: &Connection) -> Result<()> {
    for kind in [Keyed::Prompts, Keyed::Responses, Keyed::Judgments] {
        conn.execute(
            &format!("INSERT INTO {} (uid, id) SELECT uid, id FROM {} ORDER BY uid", kind.keys(), kind.table()),
            [],
        )?;
    }
    Ok(())
}
