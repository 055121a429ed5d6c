//! Writing imported prompts, responses and the import pseudo-annotator's judgments.
//! One call is one transaction: a file is loaded whole or not at all.

use rusqlite::{Transaction, params};

use super::{Result, Store};
use crate::domain::{ImportRecord, NewPrompt, Split, response_uid};

/// The pseudo-annotator that imported pairs are attributed to.
pub const IMPORT_ANNOTATOR: &str = "import";

/// What an import added; records already present are counted as duplicates.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    pub prompts: usize,
    pub responses: usize,
    pub judgments: usize,
    pub duplicates: usize,
}

impl ImportSummary {
    pub fn add(&mut self, other: ImportSummary) {
        self.prompts += other.prompts;
        self.responses += other.responses;
        self.judgments += other.judgments;
        self.duplicates += other.duplicates;
    }
}

impl Store {
    /// Adds `records` in one transaction. Content hashes make a second import a no-op.
    pub fn import_records(&mut self, records: &[ImportRecord]) -> Result<ImportSummary> {
        let importer = self.annotator_id(IMPORT_ANNOTATOR, "system")?;
        let tx = self.conn.transaction()?;
        let summary = super::bulk::import(&tx, importer, records)?;
        tx.commit()?;
        Ok(summary)
    }

    /// Adds a prompt and two candidates without any verdict (gold items); returns the
    /// ids of (chosen, rejected).
    pub fn add_import_candidates(&mut self, prompt: &NewPrompt, chosen: &str, rejected: &str) -> Result<(i64, i64)> {
        let tx = self.conn.transaction()?;
        let ids = {
            let mut writer = Writer::new(&tx)?;
            let (prompt_id, uid, _) = writer.prompt(prompt)?;
            let (chosen, _, _) = writer.response(prompt_id, &uid, chosen)?;
            let (rejected, _, _) = writer.response(prompt_id, &uid, rejected)?;
            (chosen, rejected)
        };
        tx.commit()?;
        Ok(ids)
    }

    /// Adds one prompt (the TUI's "add prompt"); returns its id and whether it was new.
    pub fn add_prompt(&mut self, prompt: &NewPrompt) -> Result<(i64, bool)> {
        let tx = self.conn.transaction()?;
        let (id, _, new) = Writer::new(&tx)?.prompt(prompt)?;
        tx.commit()?;
        Ok((id, new))
    }
}

/// Prepared statements reused for every record of an import.
struct Writer<'t> {
    tx: &'t Transaction<'t>,
    insert_prompt: rusqlite::Statement<'t>,
    find_prompt: rusqlite::Statement<'t>,
    insert_response: rusqlite::Statement<'t>,
    find_response: rusqlite::Statement<'t>,
}

impl<'t> Writer<'t> {
    fn new(tx: &'t Transaction<'t>) -> Result<Writer<'t>> {
        Ok(Writer {
            tx,
            insert_prompt: tx.prepare(
                "INSERT INTO prompts (uid, external_id, messages, language, domain, tags, split, split_explicit, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(uid) DO NOTHING",
            )?,
            find_prompt: tx.prepare("SELECT id FROM prompts WHERE uid = ?1")?,
            insert_response: tx.prepare(
                "INSERT INTO responses (uid, prompt_id, content, origin) VALUES (?1, ?2, ?3, 'import')
                 ON CONFLICT(uid) DO NOTHING",
            )?,
            find_response: tx.prepare("SELECT id FROM responses WHERE uid = ?1")?,
        })
    }

    /// Returns (id, uid, newly inserted).
    fn prompt(&mut self, prompt: &NewPrompt) -> Result<(i64, String, bool)> {
        let uid = prompt.uid();
        let split = prompt.split.unwrap_or_else(|| Split::from_uid(&uid));
        let inserted = self.insert_prompt.execute(params![
            uid,
            prompt.external_id,
            serde_json::to_string(&prompt.messages).expect("messages serialize"),
            prompt.language,
            prompt.domain,
            serde_json::to_string(&prompt.tags).expect("tags serialize"),
            split.as_str(),
            prompt.split.is_some(),
            prompt.source,
        ])? == 1;
        let id =
            if inserted { self.tx.last_insert_rowid() } else { self.find_prompt.query_row([&uid], |r| r.get(0))? };
        Ok((id, uid, inserted))
    }

    fn response(&mut self, prompt_id: i64, prompt_uid: &str, content: &str) -> Result<(i64, String, bool)> {
        let uid = response_uid(prompt_uid, content);
        let inserted = self.insert_response.execute(params![uid, prompt_id, content])? == 1;
        let id =
            if inserted { self.tx.last_insert_rowid() } else { self.find_response.query_row([&uid], |r| r.get(0))? };
        Ok((id, uid, inserted))
    }
}
