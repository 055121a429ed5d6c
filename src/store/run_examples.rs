//! A run's training set, stored at its start (schema 5, unpaired and SFT answers since 7): which
//! examples (a pair, an unpaired answer with its label, or an answer to imitate), in which split,
//! with which weight, and in `run_sets` the set's method, content hash and label counts. A resumed
//! run trains on exactly these, and `verdict export --run N` writes them, whatever was relabeled
//! since.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Result, Store};
use crate::domain::Split;

/// What one stored example is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAnswer {
    /// A preference pair: `answer_id` (the chosen answer) over `rejected_id`.
    Pair { rejected_id: i64 },
    /// An unpaired answer (KTO), desirable or not.
    Unpaired { desirable: bool },
    /// An answer to imitate (SFT).
    Imitate,
}

/// One stored training example of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunExample {
    pub prompt_id: i64,
    /// The chosen answer of a pair, else the example's only answer.
    pub answer_id: i64,
    pub kind: RunAnswer,
    pub split: Split,
    pub weight: f64,
}

impl RunExample {
    /// A pair's rejected answer.
    pub fn rejected_id(&self) -> Option<i64> {
        match self.kind {
            RunAnswer::Pair { rejected_id } => Some(rejected_id),
            _ => None,
        }
    }
}

/// What a run's set is, in one line: the method it was compiled for, the content hash of the
/// whole set and the label counts it was compiled from (JSON written by `qa::run_set`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSet {
    pub method: String,
    pub hash: String,
    pub counts: String,
}

impl Store {
    /// Records a run's examples in order and what the set is, all or none; a run's set is
    /// written once.
    pub fn save_run_examples(&self, run_id: i64, examples: &[RunExample], set: &RunSet) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO run_examples (run_id, position, prompt_id, chosen_id, rejected_id, desirable, split, weight)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for (i, e) in examples.iter().enumerate() {
                let desirable = match e.kind {
                    RunAnswer::Unpaired { desirable } => Some(desirable),
                    _ => None,
                };
                insert.execute(params![
                    run_id,
                    i as i64,
                    e.prompt_id,
                    e.answer_id,
                    e.rejected_id(),
                    desirable,
                    e.split.as_str(),
                    e.weight
                ])?;
            }
        }
        tx.execute(
            "INSERT INTO run_sets (run_id, method, hash, counts) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(run_id) DO NOTHING",
            params![run_id, set.method, set.hash, set.counts],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A run's examples in the order they were stored; empty for a run started before schema 5.
    pub fn run_examples(&self, run_id: i64) -> Result<Vec<RunExample>> {
        let mut statement = self.conn.prepare(
            "SELECT prompt_id, chosen_id, rejected_id, desirable, split, weight FROM run_examples
             WHERE run_id = ?1 ORDER BY position",
        )?;
        let rows = statement.query_map([run_id], |r| {
            let split: String = r.get(4)?;
            let kind = match (r.get::<_, Option<i64>>(2)?, r.get::<_, Option<bool>>(3)?) {
                (Some(rejected_id), _) => RunAnswer::Pair { rejected_id },
                (None, Some(desirable)) => RunAnswer::Unpaired { desirable },
                (None, None) => RunAnswer::Imitate,
            };
            Ok(RunExample {
                prompt_id: r.get(0)?,
                answer_id: r.get(1)?,
                kind,
                split: Split::parse(&split).ok_or_else(|| {
                    let why = format!("run_examples of run {run_id}: split `{split}` is neither train nor test");
                    rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, why.into())
                })?,
                weight: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Records what a run's set is, for a run whose examples were stored before schema 7
    /// (once: the first record stays).
    pub fn save_run_set(&self, run_id: i64, set: &RunSet) -> Result<()> {
        self.conn.execute(
            "INSERT INTO run_sets (run_id, method, hash, counts) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(run_id) DO NOTHING",
            params![run_id, set.method, set.hash, set.counts],
        )?;
        Ok(())
    }

    /// What a run's set is; `None` for a run that has not started training yet.
    pub fn run_set(&self, run_id: i64) -> Result<Option<RunSet>> {
        Ok(self
            .conn
            .query_row("SELECT method, hash, counts FROM run_sets WHERE run_id = ?1", [run_id], |r| {
                Ok(RunSet { method: r.get(0)?, hash: r.get(1)?, counts: r.get(2)? })
            })
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_examples_and_set_come_back_as_stored() -> Result<()> {
        let store = Store::open_in_memory()?;
        assert!(store.run_examples(1)?.is_empty());
        store.conn.execute_batch(
            "INSERT INTO prompts (id, uid, messages, language, split) VALUES (1, 'p', '[]', 'en', 'train');
             INSERT INTO responses (id, uid, prompt_id, content, origin) VALUES (1, 'a', 1, 'A', 'import'),
                                                                             (2, 'b', 1, 'B', 'import');",
        )?;
        let run = store.create_run("r", "dpo", "{}", None)?;
        let example = |answer_id, kind, split, weight| RunExample { prompt_id: 1, answer_id, kind, split, weight };
        let examples = vec![
            example(2, RunAnswer::Pair { rejected_id: 1 }, Split::Train, 1.5),
            example(1, RunAnswer::Pair { rejected_id: 2 }, Split::Test, 0.5),
            example(1, RunAnswer::Unpaired { desirable: false }, Split::Train, 1.0),
            example(2, RunAnswer::Unpaired { desirable: true }, Split::Train, 1.0),
            example(2, RunAnswer::Imitate, Split::Test, 1.0),
        ];
        assert_eq!(store.run_set(run)?, None);
        let set = |hash: &str| RunSet { method: "dpo".into(), hash: hash.into(), counts: "[]".into() };
        store.save_run_examples(run, &examples, &set("abc"))?;
        assert_eq!(store.run_examples(run)?, examples);
        store.save_run_set(run, &set("changed"))?;
        assert_eq!(store.run_set(run)?, Some(set("abc")), "a run's set is recorded once");
        Ok(())
    }
}
