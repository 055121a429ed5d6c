//! What the evaluation screens and commands look up before they compare two models: the
//! held-out prompts they answer, a run's base and tuned model, and where a registered model's
//! files are. Plain queries over the other modules' tables; each error says what to do.

use std::path::PathBuf;

use super::{Result, Store, StoreError};
use crate::domain::{RunStatus, Split};

impl Store {
    /// The default evaluation prompts: the test split in id order, at most `limit`. An error
    /// that says what to do when there is no test split.
    pub fn evaluation_prompts(&self, limit: Option<usize>) -> Result<Vec<i64>> {
        let ids: Vec<i64> = self
            .prompts()?
            .into_iter()
            .filter(|p| p.split == Split::Test)
            .map(|p| p.id)
            .take(limit.unwrap_or(usize::MAX))
            .collect();
        if ids.is_empty() {
            return Err(StoreError::NoTestPrompts);
        }
        Ok(ids)
    }

    /// A registered model's file or folder; an error that says what to do when it is gone. A
    /// relative path (a run started with a relative `--out`) is tried from the working
    /// directory, then from the database's folder.
    pub fn model_path(&self, model_id: i64) -> Result<PathBuf> {
        let (_, path) = self.model_by_id(model_id)?.ok_or(StoreError::NoModel(model_id))?;
        let mut path = PathBuf::from(path);
        if path.is_relative()
            && !path.exists()
            && let Some(beside_db) = self.path().parent().map(|dir| dir.join(&path)).filter(|p| p.exists())
        {
            path = beside_db;
        }
        if !path.exists() {
            return Err(StoreError::ModelFilesGone { model_id, path });
        }
        Ok(path)
    }

    /// A run's base and output model ids; errors say why a run has none yet.
    pub fn run_models(&self, run_id: i64) -> Result<(i64, i64)> {
        let run = self.run(run_id)?.ok_or(StoreError::NoRun(run_id))?;
        let base = run.base_model_id.ok_or(StoreError::NoBaseModel(run_id))?;
        let Some(tuned) = run.output_model_id else {
            let hint = if run.status == RunStatus::Stopped {
                format!("; continue it with `verdict train --resume {run_id}`")
            } else {
                String::new()
            };
            return Err(StoreError::NoTunedModel { run_id, status: run.status, hint });
        };
        Ok((base, tuned))
    }

    /// A registered model's name, or `fallback` when the table has none for it.
    pub fn model_name_or(&self, model_id: i64, fallback: &str) -> Result<String> {
        Ok(self.models()?.into_iter().find(|m| m.id == model_id).map(|m| m.name).unwrap_or_else(|| fallback.into()))
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{OpenMode, Store};

    #[test]
    fn each_lookup_says_what_to_do_when_it_finds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("e.db"), OpenMode::CreateIfMissing).unwrap();
        let no_test = store.evaluation_prompts(None).unwrap_err().to_string();
        assert!(no_test.contains("no prompts in the test split: import prompts with"), "{no_test}");
        assert!(store.model_path(7).unwrap_err().to_string().contains("no model 7: `verdict model list`"));
        assert!(store.run_models(3).unwrap_err().to_string().contains("no run 3: `verdict runs` lists them"));
        let run = store.create_run("r", "dpo", "{}", None).unwrap();
        assert_eq!(store.run_models(run).unwrap_err().to_string(), format!("run {run} has no base model recorded"));
        assert_eq!(store.model_name_or(9, "/models/x").unwrap(), "/models/x");
    }
}
