//! Reading what label resolution and export need: active judgments, adjudications,
//! human rewrites, and the prompts and responses they point at.

use std::collections::HashMap;

use rusqlite::params;

use super::{Result, Store, json};
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
        // In the order of the covering index `judgments_active` the rows of each (annotator,
        // pair) come together, oldest first: the newest is the last of its run. One pass,
        // no map, no sort but the final one (several times faster than a GROUP BY).
        let sql = "SELECT annotator_id, response_a, response_b, prompt_id, outcome, reasons, id FROM judgments";
        let order = "ORDER BY annotator_id, response_a, response_b, id";
        let mut statement = match prompt_id {
            Some(_) => self.conn.prepare_cached(&format!("{sql} WHERE prompt_id = ?1 {order}"))?,
            None => self.conn.prepare_cached(&format!("{sql} WHERE ?1 IS NULL {order}"))?,
        };
        let mut out: Vec<ActiveJudgment> = Vec::new();
        // The newest row so far of the current run; `None` outcome for an undone judgment.
        let mut newest: Option<(ActiveJudgment, bool)> = None;
        let mut rows = statement.query([prompt_id])?;
        while let Some(r) = rows.next()? {
            let (annotator_id, response_a, response_b) = (r.get(0)?, r.get(1)?, r.get(2)?);
            if let Some((last, undone)) = newest.take() {
                let same =
                    (last.annotator_id, last.response_a, last.response_b) == (annotator_id, response_a, response_b);
                if !same && !undone {
                    out.push(last);
                }
            }
            // Text is read in place (no String per row); reason tags are parsed only when
            // there are some.
            let outcome = Outcome::parse(r.get_ref(4)?.as_str().map_err(rusqlite::Error::from)?);
            let reasons = match r.get_ref(5)?.as_str().map_err(rusqlite::Error::from)? {
                "[]" => Vec::new(),
                text => json::column(text, "judgments", r.get(6)?, "reasons")?,
            };
            let judgment = ActiveJudgment {
                prompt_id: r.get(3)?,
                response_a,
                response_b,
                annotator_id,
                outcome: outcome.unwrap_or(Outcome::Tie),
                reasons,
            };
            newest = Some((judgment, outcome.is_none()));
        }
        if let Some((last, false)) = newest {
            out.push(last);
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
            let id: i64 = r.get(0)?;
            let messages: String = r.get(2)?;
            let tags: String = r.get(5)?;
            let split: String = r.get(6)?;
            Ok(PromptRow {
                id,
                external_id: r.get(1)?,
                messages: json::column(&messages, "prompts", id, "messages")?,
                language: r.get(3)?,
                domain: r.get(4)?,
                tags: if tags == "[]" { Vec::new() } else { json::column(&tags, "prompts", id, "tags")? },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ImportRecord, Message, NewPrompt};
    use crate::store::{NewJudgment, Verdict};

    fn pair(question: &str) -> ImportRecord {
        ImportRecord::Pair {
            prompt: NewPrompt {
                external_id: None,
                messages: vec![Message::new("user", question)],
                language: "en".into(),
                domain: None,
                tags: Vec::new(),
                split: None,
                source: None,
            },
            chosen: format!("good {question}"),
            rejected: format!("bad {question}"),
            reasons: Vec::new(),
            note: None,
        }
    }

    fn judge(store: &mut Store, prompt_id: i64, annotator_id: i64, verdict: Verdict, reasons: &[&str]) {
        let (left, right) = (2 * prompt_id - 1, 2 * prompt_id);
        store
            .record_judgment(&NewJudgment {
                prompt_id,
                left,
                right,
                annotator_id,
                verdict,
                reasons: reasons.iter().map(|r| r.to_string()).collect(),
                note: None,
                seconds: None,
                guideline_id: None,
            })
            .unwrap();
    }

    #[test]
    fn the_newest_row_of_each_annotator_and_pair_is_active_and_undone_ones_are_not() {
        let mut store = Store::open_in_memory().unwrap();
        store.import_records(&[pair("q1"), pair("q2"), pair("q3")]).unwrap();
        let (amira, jonas) =
            (store.annotator_id("amira", "annotator").unwrap(), store.annotator_id("jonas", "annotator").unwrap());
        judge(&mut store, 1, amira, Verdict::Left, &[]);
        judge(&mut store, 1, amira, Verdict::Right, &["tone"]); // relabel: the newest counts
        judge(&mut store, 1, jonas, Verdict::Tie, &[]);
        judge(&mut store, 2, jonas, Verdict::Left, &[]);
        store.undo_last_judgment(jonas).unwrap(); // withdraws q2
        judge(&mut store, 3, jonas, Verdict::BothBad, &[]);
        let active: Vec<(i64, i64, Outcome, Vec<String>)> = store
            .active_judgments()
            .unwrap()
            .into_iter()
            .map(|j| (j.prompt_id, j.annotator_id, j.outcome, j.reasons))
            .collect();
        let import = store.annotator_id("import", "system").unwrap();
        let mut expected = vec![
            (1, import, Outcome::A, vec![]),
            (1, amira, Outcome::B, vec!["tone".to_string()]),
            (1, jonas, Outcome::Tie, vec![]),
            (2, import, Outcome::A, vec![]),
            (3, import, Outcome::A, vec![]),
            (3, jonas, Outcome::BothBad, vec![]),
        ];
        expected.sort_by_key(|(prompt, annotator, _, _)| (*prompt, *annotator));
        assert_eq!(active, expected);
        let of_one: Vec<i64> = store.active_judgments_of(1).unwrap().iter().map(|j| j.annotator_id).collect();
        assert_eq!(of_one.len(), 3);
        assert!(of_one.contains(&amira) && of_one.contains(&jonas) && of_one.contains(&import));
    }

    #[test]
    fn undo_after_a_change_restores_the_earlier_verdict_and_steps_back_like_a_stack() {
        let mut store = Store::open_in_memory().unwrap();
        store.import_records(&[pair("q1")]).unwrap();
        let amira = store.annotator_id("amira", "annotator").unwrap();
        let mine = |store: &Store| -> Option<(Outcome, Vec<String>)> {
            let active = store.my_judgments(amira, 1).unwrap();
            assert!(active.len() <= 1);
            active.into_iter().next().map(|j| (j.outcome, j.reasons))
        };
        let rows = |store: &Store| -> i64 {
            store
                .conn
                .query_row("SELECT count(*) FROM judgments WHERE annotator_id = ?1", [amira], |r| r.get(0))
                .unwrap()
        };
        judge(&mut store, 1, amira, Verdict::Left, &["tone"]);
        judge(&mut store, 1, amira, Verdict::Right, &[]);
        let undo = store.undo_last_judgment(amira).unwrap().unwrap();
        assert_eq!(undo.withdrawn.outcome, Outcome::B);
        assert_eq!(undo.restored.map(|j| j.outcome), Some(Outcome::A));
        assert_eq!(mine(&store), Some((Outcome::A, vec!["tone".to_string()])), "the earlier verdict, reasons and all");
        assert_eq!(store.undo_last_judgment(amira).unwrap().unwrap().restored, None);
        assert_eq!(mine(&store), None, "undoing the first verdict leaves none");
        assert_eq!(rows(&store), 4, "every step is a new row");

        // Changed back and forth by hand: each undo goes one step back.
        judge(&mut store, 1, amira, Verdict::Left, &[]);
        judge(&mut store, 1, amira, Verdict::Right, &[]);
        judge(&mut store, 1, amira, Verdict::Tie, &[]);
        store.undo_last_judgment(amira).unwrap();
        assert_eq!(mine(&store).map(|m| m.0), Some(Outcome::B));
        store.undo_last_judgment(amira).unwrap();
        assert_eq!(mine(&store).map(|m| m.0), Some(Outcome::A));
        store.undo_last_judgment(amira).unwrap();
        assert_eq!(mine(&store), None);
        assert!(store.undo_last_judgment(amira).unwrap().is_none(), "nothing left to undo");
        // What training sees is the same as what the screen shows.
        let import = store.annotator_id("import", "system").unwrap();
        assert!(store.active_judgments().unwrap().iter().all(|j| j.annotator_id == import));
    }
}
