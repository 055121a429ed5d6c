//! Training runs: config, status, metrics per step (TRL's names), checkpoints, and the
//! cache of reference log-probs.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Result, Store};
use crate::domain::RunStatus;

/// A row of `runs`, with the figures the runs list shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub name: String,
    pub method: String,
    pub config: String,
    pub status: RunStatus,
    pub error: Option<String>,
    pub base_model: Option<String>,
    pub base_model_id: Option<i64>,
    pub output_model_id: Option<i64>,
    pub started_at: String,
    pub updated_at: String,
    pub total_steps: Option<i64>,
    pub train_pairs: Option<i64>,
    pub test_pairs: Option<i64>,
    pub truncated: Option<i64>,
    pub last_step: Option<i64>,
    pub last_loss: Option<f64>,
    pub eval_accuracy: Option<f64>,
    /// The content hash of the run's training set (`qa::run_set`), once it started training.
    pub set_hash: Option<String>,
}

impl Store {
    pub fn create_run(&self, name: &str, method: &str, config_json: &str, base_model_id: Option<i64>) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (name, method, config, status, base_model_id) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, method, config_json, RunStatus::Running.as_str(), base_model_id],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Sets a run's status and error text; an ended run gets its `finished_at`.
    pub fn set_run_status(&self, run_id: i64, status: RunStatus, error: Option<&str>) -> Result<()> {
        let finished = status.is_over();
        self.conn.execute(
            "UPDATE runs SET status = ?2, error = ?3, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                 finished_at = CASE WHEN ?4 THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') ELSE NULL END
             WHERE id = ?1",
            params![run_id, status.as_str(), error, finished],
        )?;
        Ok(())
    }

    /// Marks a run `failed` with `error` only if it still says `running` (a trainer that just
    /// finished keeps its own word); whether it did.
    pub fn fail_if_running(&self, run_id: i64, error: &str) -> Result<bool> {
        let changed = self.conn.execute(
            "UPDATE runs SET status = 'failed', error = ?2, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                 finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE id = ?1 AND status = 'running'",
            params![run_id, error],
        )?;
        Ok(changed == 1)
    }

    /// The model a run trains from, once it is loaded and registered (a run is recorded
    /// before, so that a start that fails on the way is in the list too).
    pub fn set_run_base_model(&self, run_id: i64, model_id: i64) -> Result<()> {
        self.conn.execute("UPDATE runs SET base_model_id = ?2 WHERE id = ?1", params![run_id, model_id])?;
        Ok(())
    }

    /// What the run will do: steps in all, pairs in each split, pairs truncated.
    pub fn set_run_plan(
        &self,
        run_id: i64,
        total_steps: usize,
        train: usize,
        test: usize,
        truncated: usize,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET total_steps = ?2, train_pairs = ?3, test_pairs = ?4, truncated = ?5 WHERE id = ?1",
            params![run_id, total_steps as i64, train as i64, test as i64, truncated as i64],
        )?;
        Ok(())
    }

    /// The run's checkpoints, oldest first: (step, path).
    pub fn checkpoints(&self, run_id: i64) -> Result<Vec<(i64, String)>> {
        let mut statement =
            self.conn.prepare_cached("SELECT step, path FROM checkpoints WHERE run_id = ?1 ORDER BY step, id")?;
        let rows = statement.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn set_run_output(&self, run_id: i64, model_id: i64) -> Result<()> {
        self.conn.execute("UPDATE runs SET output_model_id = ?2 WHERE id = ?1", params![run_id, model_id])?;
        self.conn.execute("UPDATE models SET run_id = ?1 WHERE id = ?2", params![run_id, model_id])?;
        Ok(())
    }

    /// Records one step's metrics (a resumed run overwrites the steps it redoes).
    pub fn add_metrics(&mut self, run_id: i64, step: i64, metrics: &[(String, f64)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO run_metrics (run_id, step, name, value) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(run_id, name, step) DO UPDATE SET value = excluded.value",
            )?;
            for (name, value) in metrics {
                if value.is_finite() {
                    insert.execute(params![run_id, step, name, value])?;
                }
            }
            tx.execute("UPDATE runs SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1", [run_id])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// One metric's curve: (step, value), in step order.
    pub fn metric_series(&self, run_id: i64, name: &str) -> Result<Vec<(i64, f64)>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT step, value FROM run_metrics WHERE run_id = ?1 AND name = ?2 ORDER BY step")?;
        let rows = statement.query_map(params![run_id, name], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn add_checkpoint(&self, run_id: i64, step: i64, path: &str) -> Result<()> {
        self.conn
            .execute("INSERT INTO checkpoints (run_id, step, path) VALUES (?1, ?2, ?3)", params![run_id, step, path])?;
        Ok(())
    }

    pub fn run(&self, run_id: i64) -> Result<Option<RunRow>> {
        Ok(self.runs()?.into_iter().find(|r| r.id == run_id))
    }

    pub fn runs(&self) -> Result<Vec<RunRow>> {
        let mut statement = self.conn.prepare(
            "SELECT r.id, r.name, r.method, r.config, r.status, r.error, m.name, r.output_model_id, r.started_at, r.updated_at,
                    r.total_steps, r.train_pairs, r.test_pairs, r.truncated,
                    (SELECT max(step) FROM run_metrics x WHERE x.run_id = r.id AND x.name = 'loss'),
                    (SELECT value FROM run_metrics x WHERE x.run_id = r.id AND x.name = 'loss' ORDER BY step DESC LIMIT 1),
                    (SELECT value FROM run_metrics x WHERE x.run_id = r.id AND x.name = 'eval_rewards/accuracies'
                     ORDER BY step DESC LIMIT 1),
                    r.base_model_id, (SELECT hash FROM run_sets s WHERE s.run_id = r.id)
             FROM runs r LEFT JOIN models m ON m.id = r.base_model_id ORDER BY r.id",
        )?;
        let rows = statement.query_map([], |r| {
            let id: i64 = r.get(0)?;
            let status: String = r.get(4)?;
            Ok(RunRow {
                id,
                name: r.get(1)?,
                method: r.get(2)?,
                config: r.get(3)?,
                status: RunStatus::parse(&status).ok_or_else(|| {
                    let why = format!("run {id}: status `{status}` is none of running, finished, stopped, failed");
                    rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, why.into())
                })?,
                error: r.get(5)?,
                base_model: r.get(6)?,
                output_model_id: r.get(7)?,
                started_at: r.get(8)?,
                updated_at: r.get(9)?,
                total_steps: r.get(10)?,
                train_pairs: r.get(11)?,
                test_pairs: r.get(12)?,
                truncated: r.get(13)?,
                last_step: r.get(14)?,
                last_loss: r.get(15)?,
                eval_accuracy: r.get(16)?,
                base_model_id: r.get(17)?,
                set_hash: r.get(18)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Cached reference log-probs for (model, template) keyed by pair.
    pub fn ref_logps(&self, model_sha: &str, template_hash: &str) -> Result<HashMap<String, (f64, f64)>> {
        let mut statement = self.conn.prepare(
            "SELECT pair_key, chosen_logp, rejected_logp FROM ref_logps WHERE model_sha = ?1 AND template_hash = ?2",
        )?;
        let rows =
            statement.query_map(params![model_sha, template_hash], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn save_ref_logps(
        &mut self,
        model_sha: &str,
        template_hash: &str,
        values: &[(String, f64, f64)],
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO ref_logps (model_sha, pair_key, template_hash, chosen_logp, rejected_logp)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (key, chosen, rejected) in values {
                insert.execute(params![model_sha, key, template_hash, chosen, rejected])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The sha256 and path of a registered model.
    pub fn model_by_id(&self, id: i64) -> Result<Option<(String, String)>> {
        Ok(self
            .conn
            .query_row("SELECT sha256, path FROM models WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_status_is_stored_as_its_text_and_read_back() -> Result<()> {
        let store = Store::open_in_memory()?;
        let run = store.create_run("r", "dpo", "{}", None)?;
        assert_eq!(store.run(run)?.unwrap().status, RunStatus::Running);
        for status in RunStatus::ALL {
            store.set_run_status(run, status, None)?;
            let (text, ended): (String, bool) =
                store.conn.query_row("SELECT status, finished_at IS NOT NULL FROM runs WHERE id = ?1", [run], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            assert_eq!((text.as_str(), ended), (status.as_str(), status.is_over()));
            assert_eq!(store.run(run)?.unwrap().status, status);
        }
        // A status no verdict writes (a hand-edited file) is an error naming the run.
        store.conn.execute_batch("PRAGMA ignore_check_constraints = ON; UPDATE runs SET status = 'paused';")?;
        let error = store.runs().unwrap_err().to_string();
        assert!(error.contains("run 1: status `paused`"), "{error}");
        Ok(())
    }
}
