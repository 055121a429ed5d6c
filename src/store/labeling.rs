//! What the labeling screens read and write: the queue, a prompt's candidates,
//! committing a verdict, undo, rewrites, and where an annotator left off.

use rusqlite::{OptionalExtension, params};

use super::json;
use super::uids::{self, Keyed};
use super::{Result, Store};
use crate::domain::{Message, Outcome, response_uid, sha256_hex};

/// One prompt in the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRow {
    pub prompt_id: i64,
    pub external_id: Option<String>,
    /// The last (user) turn, cut to 200 characters.
    pub preview: String,
    pub language: String,
    pub domain: Option<String>,
    pub split: String,
}

/// A candidate answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseRow {
    pub id: i64,
    pub prompt_id: i64,
    pub content: String,
    pub origin: String,
    pub parent_id: Option<i64>,
    pub author: Option<String>,
    /// A generated answer that stopped at the token limit, not at its end.
    pub cut_off: bool,
}

/// A verdict about to be committed.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJudgment {
    pub prompt_id: i64,
    /// The two responses in any order; the store keeps them as (lower id, higher id).
    pub left: i64,
    pub right: i64,
    pub annotator_id: i64,
    /// The preferred side, as shown: `None` for tie / both bad.
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub note: Option<String>,
    pub seconds: Option<f64>,
    pub guideline_id: Option<i64>,
}

/// A verdict in terms of what the annotator saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Left,
    Right,
    Tie,
    BothBad,
}

/// What an undo did: the judgment it took back, and the earlier verdict the pair has again
/// (None: the annotator has no verdict on the pair now).
#[derive(Debug, Clone, PartialEq)]
pub struct Undo {
    pub withdrawn: MyJudgment,
    pub restored: Option<MyJudgment>,
}

/// A judgment row as the labeling screens see it.
#[derive(Debug, Clone, PartialEq)]
pub struct MyJudgment {
    pub id: i64,
    pub prompt_id: i64,
    pub response_a: i64,
    pub response_b: i64,
    pub outcome: Outcome,
    pub reasons: Vec<String>,
    pub note: Option<String>,
}

impl Store {
    /// Every prompt, in insertion order, with what the queue shows.
    pub fn queue_rows(&self) -> Result<Vec<QueueRow>> {
        let mut statement = self.conn.prepare_cached(&format!("{QUEUE_ROW_SELECT} ORDER BY id"))?;
        let rows = statement.query_map([], queue_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One prompt as the queue shows it, or None when there is no such prompt.
    pub fn queue_row(&self, prompt_id: i64) -> Result<Option<QueueRow>> {
        let mut statement = self.conn.prepare_cached(&format!("{QUEUE_ROW_SELECT} WHERE id = ?1"))?;
        Ok(statement.query_row([prompt_id], queue_row).optional()?)
    }

    /// The id of every prompt, in insertion order: what a queue needs before its rows.
    pub fn prompt_ids(&self) -> Result<Vec<i64>> {
        // Without ORDER BY, SQLite reads the ids from the smallest covering index instead of
        // the whole table (messages and all): half the time at 100,000 prompts.
        let mut statement = self.conn.prepare_cached("SELECT id FROM prompts")?;
        let rows = statement.query_map([], |r| r.get(0))?;
        let mut ids: Vec<i64> = rows.collect::<rusqlite::Result<_>>()?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// The ids of a prompt's candidates, oldest first (read from the index alone).
    pub fn response_ids_of(&self, prompt_id: i64) -> Result<Vec<i64>> {
        let mut statement = self.conn.prepare_cached("SELECT id FROM candidates WHERE prompt_id = ?1 ORDER BY id")?;
        let rows = statement.query_map([prompt_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// (prompt id, response id) of every candidate, ordered by prompt then response.
    pub fn response_ids(&self) -> Result<Vec<(i64, i64)>> {
        let mut statement = self.conn.prepare_cached("SELECT prompt_id, id FROM candidates ORDER BY prompt_id, id")?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A prompt's turns.
    pub fn prompt_messages(&self, prompt_id: i64) -> Result<Vec<Message>> {
        let text: String =
            self.conn.query_row("SELECT messages FROM prompts WHERE id = ?1", [prompt_id], |r| r.get(0))?;
        Ok(json::parse(&text, "prompts", prompt_id, "messages")?)
    }

    /// A prompt's candidates, oldest first.
    pub fn responses_of(&self, prompt_id: i64) -> Result<Vec<ResponseRow>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, prompt_id, content, origin, parent_id, author,
                    COALESCE(json_extract(params, '$.cut_off'), 0)
             FROM candidates WHERE prompt_id = ?1 ORDER BY id",
        )?;
        let rows = statement.query_map([prompt_id], |r| {
            Ok(ResponseRow {
                id: r.get(0)?,
                prompt_id: r.get(1)?,
                content: r.get(2)?,
                origin: r.get(3)?,
                parent_id: r.get(4)?,
                author: r.get(5)?,
                cut_off: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The active judgments of one annotator on one prompt.
    pub fn my_judgments(&self, annotator_id: i64, prompt_id: i64) -> Result<Vec<MyJudgment>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT j.id, j.prompt_id, j.response_a, j.response_b, j.outcome, j.reasons, j.note FROM judgments j
             WHERE j.annotator_id = ?1 AND j.prompt_id = ?2 AND j.outcome != 'undone'
               AND j.id = (SELECT MAX(id) FROM judgments k WHERE k.annotator_id = j.annotator_id
                           AND k.response_a = j.response_a AND k.response_b = j.response_b)
             ORDER BY j.id",
        )?;
        let rows = statement.query_map(params![annotator_id, prompt_id], my_judgment)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Commits one verdict in its own transaction; returns the new row's id.
    pub fn record_judgment(&mut self, j: &NewJudgment) -> Result<i64> {
        let (a, b) = (j.left.min(j.right), j.left.max(j.right));
        let left_is_a = j.left == a;
        let outcome = match (j.verdict, left_is_a) {
            (Verdict::Left, true) | (Verdict::Right, false) => Outcome::A,
            (Verdict::Left, false) | (Verdict::Right, true) => Outcome::B,
            (Verdict::Tie, _) => Outcome::Tie,
            (Verdict::BothBad, _) => Outcome::BothBad,
        };
        let tx = self.conn.transaction()?;
        let previous: Option<i64> = tx
            .query_row(
                "SELECT MAX(id) FROM judgments WHERE annotator_id = ?1 AND response_a = ?2 AND response_b = ?3",
                params![j.annotator_id, a, b],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let stamp = format!("{:?}", std::time::SystemTime::now());
        let uid = sha256_hex(&[
            "judgment",
            &j.annotator_id.to_string(),
            &a.to_string(),
            &b.to_string(),
            outcome.as_str(),
            &stamp,
        ]);
        tx.execute(
            "INSERT INTO judgments (uid, prompt_id, response_a, response_b, annotator_id, outcome, reasons, note,
                                    shown_left, seconds, guideline_id, supersedes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                uid,
                j.prompt_id,
                a,
                b,
                j.annotator_id,
                outcome.as_str(),
                serde_json::to_string(&j.reasons).expect("reasons serialize"),
                j.note,
                if left_is_a { "a" } else { "b" },
                j.seconds,
                j.guideline_id,
                previous,
            ],
        )?;
        let id = tx.last_insert_rowid();
        uids::add(&tx, Keyed::Judgments, &uid, id)?;
        tx.commit()?;
        Ok(id)
    }

    /// Takes back the annotator's most recent active judgment: the pair gets back the verdict
    /// it had before that judgment (a copy of the earlier row), or none when it had none (an
    /// `undone` row). Both are new rows; history stays append-only.
    ///
    /// A row that restores an earlier verdict records that row in `supersedes`; every other
    /// row records the row it replaced, which is always the pair's previous row. So the
    /// verdict before any row is found by following `supersedes`, and undoing a restore goes
    /// one step further back, as an undo stack would.
    pub fn undo_last_judgment(&mut self, annotator_id: i64) -> Result<Option<Undo>> {
        let tx = self.conn.transaction()?;
        let last = tx
            .query_row(
                "SELECT j.id, j.prompt_id, j.response_a, j.response_b, j.outcome, j.reasons, j.note FROM judgments j
                 WHERE j.annotator_id = ?1 AND j.outcome != 'undone'
                   AND j.id = (SELECT MAX(id) FROM judgments k WHERE k.annotator_id = j.annotator_id
                               AND k.response_a = j.response_a AND k.response_b = j.response_b)
                 ORDER BY j.id DESC LIMIT 1",
                [annotator_id],
                my_judgment,
            )
            .optional()?;
        let Some(last) = last else {
            return Ok(None);
        };
        // The pair's history for this annotator: (id, supersedes, outcome), oldest first.
        let history: Vec<(i64, Option<i64>, String)> = {
            let mut statement = tx.prepare_cached(
                "SELECT id, supersedes, outcome FROM judgments
                 WHERE annotator_id = ?1 AND response_a = ?2 AND response_b = ?3 ORDER BY id",
            )?;
            statement
                .query_map(params![annotator_id, last.response_a, last.response_b], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?
        };
        let earlier = verdict_before(&history, last.id);
        let stamp = format!("{:?}", std::time::SystemTime::now());
        let uid = sha256_hex(&["undo", &last.id.to_string(), &stamp]);
        let restored = match earlier {
            Some(earlier) => {
                tx.execute(
                    "INSERT INTO judgments (uid, prompt_id, response_a, response_b, annotator_id, outcome, reasons,
                                            note, shown_left, seconds, guideline_id, supersedes)
                     SELECT ?1, prompt_id, response_a, response_b, annotator_id, outcome, reasons,
                            note, shown_left, seconds, guideline_id, id
                     FROM judgments WHERE id = ?2",
                    params![uid, earlier],
                )?;
                let id = tx.last_insert_rowid();
                uids::add(&tx, Keyed::Judgments, &uid, id)?;
                Some(tx.query_row(
                    "SELECT id, prompt_id, response_a, response_b, outcome, reasons, note FROM judgments WHERE id = ?1",
                    [id],
                    my_judgment,
                )?)
            }
            None => {
                tx.execute(
                    "INSERT INTO judgments (uid, prompt_id, response_a, response_b, annotator_id, outcome, supersedes)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'undone', ?6)",
                    params![uid, last.prompt_id, last.response_a, last.response_b, annotator_id, last.id],
                )?;
                uids::add(&tx, Keyed::Judgments, &uid, tx.last_insert_rowid())?;
                None
            }
        };
        tx.commit()?;
        Ok(Some(Undo { withdrawn: last, restored }))
    }

    /// Stores a human rewrite of `parent_id`; returns the new response's id (or the
    /// existing one when the same text is already a candidate of the prompt).
    pub fn add_rewrite(&mut self, parent_id: i64, content: &str, author: &str) -> Result<i64> {
        let tx = self.conn.transaction()?;
        let (prompt_id, prompt_uid): (i64, String) = tx.query_row(
            "SELECT p.id, p.uid FROM responses r JOIN prompts p ON p.id = r.prompt_id WHERE r.id = ?1",
            [parent_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let uid = response_uid(&prompt_uid, content);
        let (id, _) = uids::insert_once(&tx, Keyed::Responses, &uid, || {
            tx.execute(
                "INSERT INTO responses (uid, prompt_id, content, origin, parent_id, author)
                 VALUES (?1, ?2, ?3, 'human', ?4, ?5)",
                params![uid, prompt_id, content, parent_id, author],
            )?;
            Ok(tx.last_insert_rowid())
        })?;
        tx.commit()?;
        Ok(id)
    }

    /// Remembers the prompt the annotator is on.
    pub fn set_cursor(&self, annotator_id: i64, prompt_id: i64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO annotator_state (annotator_id, prompt_id) VALUES (?1, ?2)
             ON CONFLICT(annotator_id) DO UPDATE SET prompt_id = excluded.prompt_id,
                 updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            params![annotator_id, prompt_id],
        )?;
        Ok(())
    }

    /// The prompt the annotator was on last time.
    pub fn cursor(&self, annotator_id: i64) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row("SELECT prompt_id FROM annotator_state WHERE annotator_id = ?1", [annotator_id], |r| r.get(0))
            .optional()?
            .flatten())
    }

    /// Seconds spent on each of the annotator's labels made today (UTC) as they stand now:
    /// active judgments and single-answer ratings (a change or an undo leaves one label, with
    /// the seconds of the row that is active).
    pub fn seconds_today(&self, annotator_id: i64) -> Result<Vec<f64>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT coalesce(seconds, 0) FROM judgments j
             WHERE annotator_id = ?1 AND outcome != 'undone' AND created_at >= strftime('%Y-%m-%dT00:00:00', 'now')
               AND id = (SELECT MAX(id) FROM judgments k WHERE k.annotator_id = j.annotator_id
                         AND k.response_a = j.response_a AND k.response_b = j.response_b)
             UNION ALL
             SELECT coalesce(seconds, 0) FROM thumbs t
             WHERE annotator_id = ?1 AND rating != 'undone' AND created_at >= strftime('%Y-%m-%dT00:00:00', 'now')
               AND id = (SELECT MAX(id) FROM thumbs k WHERE k.annotator_id = t.annotator_id
                         AND k.response_id = t.response_id)",
        )?;
        let rows = statement.query_map([annotator_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The reason taxonomy of the newest default guideline.
    pub fn reason_taxonomy(&self) -> Result<Vec<crate::guidelines::Reason>> {
        let row: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT id, reasons FROM guidelines WHERE domain = 'default' ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            Some((id, text)) => Ok(json::parse(&text, "guidelines", id, "reasons")?),
            None => Ok(Vec::new()),
        }
    }

    /// The newest text of the guideline for `domain`, falling back to the default.
    pub fn guideline_text(&self, domain: Option<&str>) -> Result<Option<(i64, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, content FROM guidelines WHERE domain IN (?1, 'default')
                 ORDER BY domain = 'default', id DESC LIMIT 1",
                [domain.unwrap_or("default")],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }
}

// A prompt always ends with a user turn (import refuses others), so the last message is
// the one to preview; json_extract keeps this one pass.
const QUEUE_ROW_SELECT: &str = "SELECT id, external_id, substr(json_extract(messages, '$[#-1].content'), 1, 200),
                                       language, domain, split
                                FROM prompts";

/// The row whose verdict the pair had before row `id` was written (None: no verdict), from
/// the pair's rows (id, supersedes, outcome) of one annotator, oldest first.
pub(super) fn verdict_before(history: &[(i64, Option<i64>, String)], id: i64) -> Option<i64> {
    let mut current = id;
    // Each step moves to an older row, so this ends.
    loop {
        let position = history.iter().position(|(row, _, _)| *row == current)?;
        let (_, supersedes, _) = &history[position];
        let previous = position.checked_sub(1).map(|p| history[p].0);
        let target = (*supersedes)?;
        if Some(target) == previous {
            // An ordinary row: the verdict before it is the row it replaced.
            let (_, _, outcome) = &history[position - 1];
            return (outcome != "undone").then_some(target);
        }
        if target >= current {
            return None;
        }
        // A restore of `target`: before it, the pair had what it had before `target`.
        current = target;
    }
}

fn queue_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueueRow> {
    Ok(QueueRow {
        prompt_id: r.get(0)?,
        external_id: r.get(1)?,
        preview: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        language: r.get(3)?,
        domain: r.get(4)?,
        split: r.get(5)?,
    })
}

fn my_judgment(r: &rusqlite::Row<'_>) -> rusqlite::Result<MyJudgment> {
    let id: i64 = r.get(0)?;
    let outcome: String = r.get(4)?;
    let reasons: String = r.get(5)?;
    Ok(MyJudgment {
        id,
        prompt_id: r.get(1)?,
        response_a: r.get(2)?,
        response_b: r.get(3)?,
        outcome: Outcome::parse(&outcome).expect("active judgments are never undone rows"),
        reasons: json::column(&reasons, "judgments", id, "reasons")?,
        note: r.get(6)?,
    })
}
