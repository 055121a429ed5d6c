//! Models the program has seen, and the candidates they generated.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::uids::{self, Keyed};
use super::{Result, Store};
use crate::domain::{Message, response_uid};

/// A row of the `models` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRow {
    pub id: i64,
    pub sha256: String,
    pub name: String,
    pub path: String,
    pub format: String,
    pub architecture: Option<String>,
    pub quantization: Option<String>,
    pub responses: i64,
}

/// A prompt that needs candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationTarget {
    pub prompt_id: i64,
    pub uid: String,
    pub messages: Vec<Message>,
    pub candidates: usize,
}

/// Which prompts `verdict generate` works on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetFilter {
    pub prompt_ids: Vec<i64>,
    pub language: Option<String>,
    pub domain: Option<String>,
    pub split: Option<String>,
    /// Prompts with fewer candidates than this.
    pub below: usize,
    pub limit: Option<usize>,
}

impl Store {
    /// Registers a model by the sha256 of its weights (once); returns its id.
    pub fn register_model(
        &self,
        sha256: &str,
        name: &str,
        path: &str,
        format: &str,
        architecture: &str,
        quantization: &str,
    ) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO models (sha256, name, path, format, architecture, quantization) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(sha256) DO UPDATE SET path = excluded.path, quantization = excluded.quantization",
            params![sha256, name, path, format, architecture, quantization],
        )?;
        Ok(self.conn.query_row("SELECT id FROM models WHERE sha256 = ?1", [sha256], |r| r.get(0))?)
    }

    pub fn models(&self) -> Result<Vec<ModelRow>> {
        let mut statement = self.conn.prepare(
            "SELECT m.id, m.sha256, m.name, m.path, m.format, m.architecture, m.quantization,
                    (SELECT count(*) FROM responses r WHERE r.model_id = m.id)
             FROM models m ORDER BY m.id",
        )?;
        let rows = statement.query_map([], |r| {
            Ok(ModelRow {
                id: r.get(0)?,
                sha256: r.get(1)?,
                name: r.get(2)?,
                path: r.get(3)?,
                format: r.get(4)?,
                architecture: r.get(5)?,
                quantization: r.get(6)?,
                responses: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The prompts matching `filter` that have fewer than `filter.below` candidates.
    pub fn generation_targets(&self, filter: &TargetFilter) -> Result<Vec<GenerationTarget>> {
        let mut statement = self.conn.prepare(
            "SELECT p.id, p.uid, p.messages, (SELECT count(*) FROM candidates r WHERE r.prompt_id = p.id) AS n,
                    p.language, p.domain, p.split
             FROM prompts p ORDER BY p.id",
        )?;
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)? as usize,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        let only: std::collections::HashSet<i64> = filter.prompt_ids.iter().copied().collect();
        let mut out = Vec::new();
        for row in rows {
            let (prompt_id, uid, messages, candidates, language, domain, split) = row?;
            let wanted = (only.is_empty() || only.contains(&prompt_id))
                && filter.language.as_ref().is_none_or(|l| *l == language)
                && filter.domain.as_ref().is_none_or(|d| domain.as_ref() == Some(d))
                && filter.split.as_ref().is_none_or(|s| *s == split)
                && candidates < filter.below;
            if wanted {
                out.push(GenerationTarget {
                    prompt_id,
                    uid,
                    messages: super::json::parse(&messages, "prompts", prompt_id, "messages")?,
                    candidates,
                });
                if filter.limit.is_some_and(|l| out.len() >= l) {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Stores a generated candidate; `None` when the prompt already has this exact text.
    pub fn add_generated(
        &self,
        prompt_id: i64,
        prompt_uid: &str,
        text: &str,
        model_id: i64,
        params_json: &str,
    ) -> Result<Option<i64>> {
        let uid = response_uid(prompt_uid, text);
        let tx = self.conn.unchecked_transaction()?;
        let (id, new) = uids::insert_once(&tx, Keyed::Responses, &uid, || {
            tx.execute(
                "INSERT INTO responses (uid, prompt_id, content, origin, model_id, params) VALUES (?1, ?2, ?3, 'model', ?4, ?5)",
                params![uid, prompt_id, text, model_id, params_json],
            )?;
            Ok(tx.last_insert_rowid())
        })?;
        // The same text as an evaluation answer becomes a candidate now.
        let shown = !new && tx.execute("DELETE FROM evaluation_only WHERE response_id = ?1", [id])? > 0;
        tx.commit()?;
        Ok((new || shown).then_some(id))
    }

    /// The sampling parameters a response was generated with (JSON), if any.
    pub fn response_params(&self, response_id: i64) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT params FROM responses WHERE id = ?1", [response_id], |r| r.get(0))
            .optional()?
            .flatten())
    }
}
