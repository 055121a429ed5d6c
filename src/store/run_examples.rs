//! A run's training set, stored at its start (schema 5): which pairs (prompt, chosen, rejected
//! response), in which split, with which weight. A resumed run trains on exactly these, so a
//! label changed after the stop cannot change the batches of the run it continues.

use rusqlite::params;

use super::{Result, Store};
use crate::domain::Split;

/// One stored training example of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunExample {
    pub prompt_id: i64,
    pub chosen_id: i64,
    pub rejected_id: i64,
    pub split: Split,
    pub weight: f64,
}

impl Store {
    /// Records a run's examples in order (all or none); a run's set is written once.
    pub fn save_run_examples(&self, run_id: i64, examples: &[RunExample]) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO run_examples (run_id, position, prompt_id, chosen_id, rejected_id, split, weight)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (i, e) in examples.iter().enumerate() {
                insert.execute(params![
                    run_id,
                    i as i64,
                    e.prompt_id,
                    e.chosen_id,
                    e.rejected_id,
                    e.split.as_str(),
                    e.weight
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A run's examples in the order they were stored; empty for a run started before schema 5.
    pub fn run_examples(&self, run_id: i64) -> Result<Vec<RunExample>> {
        let mut statement = self.conn.prepare(
            "SELECT prompt_id, chosen_id, rejected_id, split, weight FROM run_examples
             WHERE run_id = ?1 ORDER BY position",
        )?;
        let rows = statement.query_map([run_id], |r| {
            let split: String = r.get(3)?;
            Ok(RunExample {
                prompt_id: r.get(0)?,
                chosen_id: r.get(1)?,
                rejected_id: r.get(2)?,
                split: Split::parse(&split).ok_or_else(|| {
                    let why = format!("run_examples of run {run_id}: split `{split}` is neither train nor test");
                    rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, why.into())
                })?,
                weight: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_examples_come_back_in_order() -> Result<()> {
        let store = Store::open_in_memory()?;
        assert!(store.run_examples(1)?.is_empty());
        store.conn.execute_batch(
            "INSERT INTO prompts (id, uid, messages, language, split) VALUES (1, 'p', '[]', 'en', 'train');
             INSERT INTO responses (id, uid, prompt_id, content, origin) VALUES (1, 'a', 1, 'A', 'import'),
                                                                             (2, 'b', 1, 'B', 'import');",
        )?;
        let run = store.create_run("r", "dpo", "{}", None)?;
        let examples = vec![
            RunExample { prompt_id: 1, chosen_id: 2, rejected_id: 1, split: Split::Train, weight: 1.5 },
            RunExample { prompt_id: 1, chosen_id: 1, rejected_id: 2, split: Split::Test, weight: 0.5 },
        ];
        store.save_run_examples(run, &examples)?;
        assert_eq!(store.run_examples(run)?, examples);
        Ok(())
    }
}
