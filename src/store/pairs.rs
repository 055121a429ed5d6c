//! Reading what label resolution and export need: active judgments, adjudications,
//! human rewrites, and the prompts and responses they point at.

use std::collections::HashMap;

use rusqlite::params;

use super::{Result, Store};
use crate::domain::{Message, Outcome, Split};

/// The current verdict of one annotator on one pair (a < b by response id).
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveJudgment {
    pub prompt_id: i64,
    pub response_a: i64,
    pub response_b: i64,
    pub annotator_id: i64,
    pub outcome: Outcome,
    pub reasons: Vec<String>,
}

/// A prompt as export needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptRow {
    pub id: i64,
    pub external_id: Option<String>,
    pub messages: Vec<Message>,
    pub language: String,
    pub domain: Option<String>,
    pub tags: Vec<String>,
    pub split: Split,
    pub source: Option<String>,
}

/// A human rewrite (`id`) of the response `parent_id`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairRow {
    pub prompt_id: i64,
    pub rewrite_id: i64,
    pub parent_id: i64,
}

impl Store {
    /// The newest judgment of each (annotator, pair), leaving out undone ones.
    pub fn active_judgments(&self) -> Result<Vec<ActiveJudgment>> {
        self.active_judgments_where(None)
    }

    fn active_judgments_where(&self, prompt_id: Option<i64>) -> Result<Vec<ActiveJudgment>> {
        // One pass over the table, then a sort that puts the rows of each (annotator, pair)
        // together, oldest first: several times faster than a GROUP BY, and than a map of
        // the newest row per key (which costs a hash and a scattered write per row).
        let sql = "SELECT id, prompt_id, response_a, response_b, annotator_id, outcome, reasons FROM judgments";
        let mut statement = match prompt_id {
            Some(_) => self.conn.prepare_cached(&format!("{sql} WHERE prompt_id = ?1"))?,
            None => self.conn.prepare_cached(&format!("{sql} WHERE ?1 IS NULL"))?,
        };
        struct Row {
            /// (annotator, a, b, id)
            key: (i64, i64, i64, i64),
            prompt_id: i64,
            /// `None` for an undone judgment.
            outcome: Option<Outcome>,
            reasons: Vec<String>,
        }
        let mut all = Vec::new();
        let mut rows = statement.query([prompt_id])?;
        while let Some(r) = rows.next()? {
            // Text is read in place (no String per row); reason tags are parsed only when
            // there are some.
            let reasons = match r.get_ref(6)?.as_str().map_err(rusqlite::Error::from)? {
                "[]" => Vec::new(),
                text => serde_json::from_str(text).unwrap_or_default(),
            };
            all.push(Row {
                key: (r.get(4)?, r.get(2)?, r.get(3)?, r.get(0)?),
                prompt_id: r.get(1)?,
                outcome: Outcome::parse(r.get_ref(5)?.as_str().map_err(rusqlite::Error::from)?),
                reasons,
            });
        }
        all.sort_unstable_by_key(|row| row.key);
        let mut out: Vec<ActiveJudgment> = Vec::with_capacity(all.len());
        let same_pair = |x: &Row, y: &Row| (x.key.0, x.key.1, x.key.2) == (y.key.0, y.key.1, y.key.2);
        for versions in all.chunk_by_mut(same_pair) {
            let newest = versions.last_mut().expect("chunks are not empty");
            let (annotator_id, response_a, response_b, _) = newest.key;
            if let Some(outcome) = newest.outcome {
                out.push(ActiveJudgment {
                    prompt_id: newest.prompt_id,
                    response_a,
                    response_b,
                    annotator_id,
                    outcome,
                    reasons: std::mem::take(&mut newest.reasons),
                });
            }
        }
        out.sort_unstable_by_key(|j| (j.prompt_id, j.response_a, j.response_b, j.annotator_id));
        Ok(out)
    }

    /// The active judgments of one prompt, by every annotator.
    pub fn active_judgments_of(&self, prompt_id: i64) -> Result<Vec<ActiveJudgment>> {
        self.active_judgments_where(Some(prompt_id))
    }

    /// The newest adjudicated verdict of each pair, keyed by (a, b).
    pub fn adjudications(&self) -> Result<HashMap<(i64, i64), Outcome>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT response_a, response_b, outcome FROM adjudications
             WHERE id IN (SELECT MAX(id) FROM adjudications GROUP BY response_a, response_b)",
        )?;
        let rows = statement.query_map([], |r| {
            let outcome: String = r.get(2)?;
            Ok(((r.get(0)?, r.get(1)?), Outcome::parse(&outcome).expect("schema CHECK")))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every human rewrite with the response it replaced.
    pub fn rewrites(&self) -> Result<Vec<PairRow>> {
        // Without statistics the planner takes the partial index for as large as the table
        // and scans every response; the index holds only the rewrites.
        let mut statement = self.conn.prepare_cached(
            "SELECT prompt_id, id, parent_id FROM responses INDEXED BY responses_parent
             WHERE origin = 'human' AND parent_id IS NOT NULL ORDER BY id",
        )?;
        let rows = statement
            .query_map([], |r| Ok(PairRow { prompt_id: r.get(0)?, rewrite_id: r.get(1)?, parent_id: r.get(2)? }))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// All prompts, in insertion order.
    pub fn prompts(&self) -> Result<Vec<PromptRow>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, external_id, messages, language, domain, tags, split, source FROM prompts ORDER BY id",
        )?;
        let rows = statement.query_map([], |r| {
            let messages: String = r.get(2)?;
            let tags: String = r.get(5)?;
            let split: String = r.get(6)?;
            Ok(PromptRow {
                id: r.get(0)?,
                external_id: r.get(1)?,
                messages: serde_json::from_str(&messages).unwrap_or_default(),
                language: r.get(3)?,
                domain: r.get(4)?,
                tags: if tags == "[]" { Vec::new() } else { serde_json::from_str(&tags).unwrap_or_default() },
                split: Split::parse(&split).expect("schema CHECK"),
                source: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The text of every response whose id is in `ids`.
    pub fn response_texts(&self, ids: &[i64]) -> Result<HashMap<i64, String>> {
        let mut wanted: Vec<i64> = ids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut out = HashMap::with_capacity(wanted.len());
        // One scan beats thousands of point queries once most rows are wanted.
        if wanted.len() * 4 > self.count("responses")? as usize {
            let mut statement = self.conn.prepare_cached("SELECT id, content FROM responses")?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                if wanted.binary_search(&id).is_ok() {
                    out.insert(id, row.get(1)?);
                }
            }
        } else {
            let mut statement = self.conn.prepare_cached("SELECT content FROM responses WHERE id = ?1")?;
            for id in wanted {
                out.insert(id, statement.query_row(params![id], |r| r.get(0))?);
            }
        }
        Ok(out)
    }

    pub(crate) fn count(&self, table: &str) -> Result<i64> {
        Ok(self.conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
    }
}
