//! Guideline versions: each distinct text is stored once, keyed by its hash.

use super::{Result, Store};
use crate::guidelines::Guideline;

impl Store {
    /// Stores the guideline versions not yet present; returns how many were new.
    pub fn load_guidelines(&mut self, guidelines: &[Guideline]) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let mut added = 0;
        {
            let mut insert = tx.prepare(
                "INSERT INTO guidelines (hash, name, domain, title, content, reasons) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(hash) DO NOTHING",
            )?;
            for g in guidelines {
                let reasons = serde_json::to_string(&g.reasons).expect("reasons serialize");
                added += insert.execute((&g.hash, &g.name, &g.domain, &g.title, &g.content, reasons))?;
            }
        }
        tx.commit()?;
        Ok(added)
    }

    /// The id of the newest stored version of the guideline for `domain`.
    pub fn current_guideline_id(&self, domain: &str) -> Result<Option<i64>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .query_row("SELECT id FROM guidelines WHERE domain = ?1 ORDER BY id DESC LIMIT 1", [domain], |r| r.get(0))
            .optional()?)
    }

    /// How many guideline versions are stored.
    pub fn guideline_versions(&self) -> Result<i64> {
        self.count("guidelines")
    }
}
