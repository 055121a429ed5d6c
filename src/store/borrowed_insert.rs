//! Multi-row INSERTs for bulk writes, with as many rows per statement as SQLite's parameter
//! limit allows and text bound without copying it.
//!
//! rusqlite binds every string with `SQLITE_TRANSIENT`: SQLite copies it into a fresh
//! allocation, and frees it again when the bindings are cleared. A bulk import binds about
//! two million strings per 100,000 pairs, and those copies were a fifth of its time. Here
//! values are bound with `SQLITE_STATIC` (SQLite reads them in place), which is sound
//! because `execute` borrows them for longer than the statement can look at them: it steps
//! the statement to completion and clears the bindings before it returns.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::{CStr, c_int};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use rusqlite::{Connection, ffi};

use super::Result;

/// Bound parameters per statement; bundled SQLite allows 32,766.
const MAX_PARAMS: usize = 30_000;

/// One bound value.
#[derive(Debug, Clone, Copy)]
pub(super) enum Param<'v> {
    Int(i64),
    Text(&'v str),
    Null,
}

impl<'v> From<&'v str> for Param<'v> {
    fn from(text: &'v str) -> Param<'v> {
        Param::Text(text)
    }
}

impl<'v> From<&'v Option<String>> for Param<'v> {
    fn from(text: &'v Option<String>) -> Param<'v> {
        text.as_deref().map_or(Param::Null, Param::Text)
    }
}

impl From<i64> for Param<'_> {
    fn from(n: i64) -> Self {
        Param::Int(n)
    }
}

/// A prepared statement of the connection `'c`, finalized when dropped.
pub(super) struct BorrowedInsert<'c> {
    db: *mut ffi::sqlite3,
    statement: NonNull<ffi::sqlite3_stmt>,
    _conn: PhantomData<&'c Connection>,
}

impl<'c> BorrowedInsert<'c> {
    pub(super) fn prepare(conn: &'c Connection, sql: &str) -> Result<BorrowedInsert<'c>> {
        // SAFETY: the handle stays valid while `conn` is borrowed, which `'c` ensures; this
        // type never closes it or hands it out.
        let db = unsafe { conn.handle() };
        let mut statement = ptr::null_mut();
        let len = c_int::try_from(sql.len()).expect("statements are far below 2 GiB");
        // SAFETY: `sql` is valid for `len` bytes; SQLite writes the new statement (or null)
        // into `statement`.
        let rc = unsafe { ffi::sqlite3_prepare_v2(db, sql.as_ptr().cast(), len, &mut statement, ptr::null_mut()) };
        if rc != ffi::SQLITE_OK {
            return Err(error(db, rc));
        }
        let statement = NonNull::new(statement).expect("an INSERT is never an empty statement");
        Ok(BorrowedInsert { db, statement, _conn: PhantomData })
    }

    /// Binds `params` to the statement's parameters 1, 2, ... and runs it once.
    pub(super) fn execute(&mut self, params: &[Param<'_>]) -> Result<()> {
        let statement = self.statement.as_ptr();
        // SAFETY: `statement` is a live statement of `self.db`. Text is bound with
        // SQLITE_STATIC and so must stay valid until it is unbound: `params` borrows it for
        // this whole call, and the bindings are cleared before the call returns.
        let rc = unsafe {
            let mut rc = ffi::SQLITE_OK;
            for (i, param) in params.iter().enumerate() {
                let index = c_int::try_from(i + 1).expect("at most 32,766 parameters");
                rc = match *param {
                    Param::Int(n) => ffi::sqlite3_bind_int64(statement, index, n),
                    Param::Null => ffi::sqlite3_bind_null(statement, index),
                    Param::Text(text) => {
                        let len = c_int::try_from(text.len()).expect("values are far below 2 GiB");
                        ffi::sqlite3_bind_text(statement, index, text.as_ptr().cast(), len, ffi::SQLITE_STATIC())
                    }
                };
                if rc != ffi::SQLITE_OK {
                    break;
                }
            }
            if rc == ffi::SQLITE_OK {
                rc = ffi::sqlite3_step(statement);
            }
            ffi::sqlite3_reset(statement);
            ffi::sqlite3_clear_bindings(statement);
            rc
        };
        match rc {
            ffi::SQLITE_DONE => Ok(()),
            rc => Err(error(self.db, rc)),
        }
    }
}

impl Drop for BorrowedInsert<'_> {
    fn drop(&mut self) {
        // SAFETY: the statement is live and finalized exactly once.
        unsafe {
            ffi::sqlite3_finalize(self.statement.as_ptr());
        }
    }
}

/// Writes `rows` into `table` with as many rows per INSERT as the parameter limit allows.
/// `columns` get each row's values from `values`; `shared` columns take one value for every
/// row, bound once per statement (the import's timestamp bound on each of 400,000 rows was
/// a tenth of the binding work).
///
/// `OR ROLLBACK` makes a violated constraint end the whole transaction (the import is
/// all-or-nothing anyway) instead of only the statement: SQLite then needs no statement
/// journal, which would copy every page a 1,000-row statement touches before touching it.
/// The caller turns foreign keys off for the same reason (an immediate foreign key makes a
/// multi-row statement abortable too); every id written here was just looked up or assigned
/// in this transaction.
pub(super) fn insert_rows<'v, R>(
    conn: &Connection,
    table: &str,
    columns: &[&str],
    shared: &[(&str, Param<'v>)],
    rows: &'v [R],
    values: impl Fn(&'v R, &mut Vec<Param<'v>>),
) -> Result<()> {
    let per_statement = ((MAX_PARAMS - shared.len()) / columns.len()).max(1);
    let names: Vec<&str> = columns.iter().chain(shared.iter().map(|(name, _)| name)).copied().collect();
    let shared_marks: String = (1..=shared.len()).map(|n| format!(",?{n}")).collect();
    let mut statements: HashMap<usize, BorrowedInsert<'_>> = HashMap::new();
    let mut params = Vec::with_capacity(MAX_PARAMS);
    for chunk in rows.chunks(per_statement) {
        let statement = match statements.entry(chunk.len()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let rows: Vec<String> = (0..chunk.len())
                    .map(|row| {
                        let first = shared.len() + row * columns.len() + 1;
                        let marks: Vec<String> = (first..first + columns.len()).map(|n| format!("?{n}")).collect();
                        format!("({}{shared_marks})", marks.join(","))
                    })
                    .collect();
                let sql = format!("INSERT OR ROLLBACK INTO {table} ({}) VALUES {}", names.join(", "), rows.join(","));
                e.insert(BorrowedInsert::prepare(conn, &sql)?)
            }
        };
        params.clear();
        params.extend(shared.iter().map(|(_, value)| *value));
        for row in chunk {
            values(row, &mut params);
        }
        statement.execute(&params)?;
    }
    Ok(())
}

/// The connection's error for the result code `rc`, as rusqlite reports errors.
fn error(db: *mut ffi::sqlite3, rc: c_int) -> super::StoreError {
    // SAFETY: `db` is a live connection; the message is copied before any other call.
    let message = unsafe {
        let text = ffi::sqlite3_errmsg(db);
        (!text.is_null()).then(|| CStr::from_ptr(text).to_string_lossy().into_owned())
    };
    // Extended codes say which constraint failed.
    let extended = unsafe { ffi::sqlite3_extended_errcode(db) };
    let code = if extended & 0xff == rc & 0xff { extended } else { rc };
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), message).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_every_kind_in_place_and_reports_constraint_errors() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT)").unwrap();
        let names = [String::from("ä"), String::from("b 🙂")];
        {
            let mut insert = BorrowedInsert::prepare(&conn, "INSERT INTO t VALUES (?, ?, ?), (?, ?, ?)").unwrap();
            let note = Some(String::from("n"));
            insert
                .execute(&[
                    Param::Int(1),
                    Param::from(names[0].as_str()),
                    Param::from(&note),
                    Param::Int(2),
                    Param::from(names[1].as_str()),
                    Param::Null,
                ])
                .unwrap();
            let err = insert
                .execute(&[Param::Int(3), Param::Null, Param::Null, Param::Int(4), Param::Text("x"), Param::Null])
                .unwrap_err();
            assert!(err.to_string().contains("NOT NULL constraint failed: t.name"), "{err}");
        }
        let rows: Vec<(i64, String, Option<String>)> = conn
            .prepare("SELECT id, name, note FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(rows, vec![(1, "ä".into(), Some("n".into())), (2, "b 🙂".into(), None)]);
    }
}
