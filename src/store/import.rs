//! Writing imported prompts, responses and the import pseudo-annotator's judgments (and, from
//! TRL's unpaired layout, its single-answer ratings).
//! One call is one transaction: a file is loaded whole or not at all.

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::uids::{self, Keyed};
use super::{ForeignKeysOff, Result, Store};
use crate::domain::{ImportRecord, NewPrompt, RatedRecord, Split, messages_json, prompt_uid_of_json, response_uid};

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

/// A gold item: a prompt and the pair whose chosen answer is the right call.
#[derive(Debug, Clone, Copy)]
pub struct GoldItem<'a> {
    pub prompt: &'a NewPrompt,
    pub chosen: &'a str,
    pub rejected: &'a str,
    pub note: Option<&'a str>,
}

impl Store {
    /// Adds `records` in one transaction. Content hashes make a second import a no-op.
    pub fn import_records(&mut self, records: &[ImportRecord]) -> Result<ImportSummary> {
        let importer = self.annotator_id(IMPORT_ANNOTATOR, "system")?;
        // The bulk path writes multi-row INSERTs that immediate foreign keys would make
        // abortable (and so journaled); it assigns every id it writes itself.
        let _keys_off = ForeignKeysOff::new(&self.conn)?;
        // Immediate: the look-ups and the writes see the same database, even with another
        // process writing to the file (it waits for the busy timeout instead).
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let summary = super::bulk::import(&tx, importer, records)?;
        tx.commit()?;
        Ok(summary)
    }

    /// Adds a prompt and two candidates without any verdict (gold items); returns the
    /// ids of (chosen, rejected).
    pub fn add_import_candidates(&mut self, prompt: &NewPrompt, chosen: &str, rejected: &str) -> Result<(i64, i64)> {
        let tx = self.conn.transaction()?;
        let (prompt_id, uid, _) = insert_prompt(&tx, prompt)?;
        let chosen = insert_import_response(&tx, prompt_id, &uid, chosen)?;
        let rejected = insert_import_response(&tx, prompt_id, &uid, rejected)?;
        tx.commit()?;
        Ok((chosen, rejected))
    }

    /// Adds gold items in one transaction: each pair's prompt and two candidates, without a
    /// verdict (annotators meet them in their queues without knowing they are gold), and the
    /// gold mark with the chosen answer winning. A failure part-way leaves the database as it
    /// was, so no gold item sits in a queue unmarked. Returns how many pairs became gold.
    pub fn import_gold(&mut self, items: &[GoldItem<'_>], source: &str) -> Result<usize> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let mut added = 0;
        for item in items {
            let (prompt_id, uid, _) = insert_prompt(&tx, item.prompt)?;
            let chosen = insert_import_response(&tx, prompt_id, &uid, item.chosen)?;
            let rejected = insert_import_response(&tx, prompt_id, &uid, item.rejected)?;
            let (a, b) = (chosen.min(rejected), chosen.max(rejected));
            let outcome = if chosen == a { "a" } else { "b" };
            added += tx.execute(
                "INSERT INTO gold (response_a, response_b, outcome, note, source) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(response_a, response_b) DO NOTHING",
                params![a, b, outcome, item.note, source],
            )?;
        }
        tx.commit()?;
        Ok(added)
    }

    /// Adds rated answers (TRL's unpaired layout) in one transaction: each prompt and answer
    /// once (content hashes), and the import pseudo-annotator's rating of the answer, appended
    /// like any rating (a different label for the same answer supersedes the earlier one, the
    /// same label again is a duplicate). Returns what was added; `judgments` counts ratings.
    pub fn import_rated(&mut self, records: &[RatedRecord]) -> Result<ImportSummary> {
        let importer = self.annotator_id(IMPORT_ANNOTATOR, "system")?;
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let mut summary = ImportSummary::default();
        for record in records {
            let (prompt_id, uid, new_prompt) = insert_prompt(&tx, &record.prompt)?;
            summary.prompts += usize::from(new_prompt);
            let (response_id, new_response) = insert_import_response_once(&tx, prompt_id, &uid, &record.completion)?;
            summary.responses += usize::from(new_response);
            let rating = if record.desirable { "good" } else { "bad" };
            let previous: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, rating FROM thumbs WHERE annotator_id = ?1 AND response_id = ?2 ORDER BY id DESC LIMIT 1",
                    params![importer, response_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if previous.as_ref().is_some_and(|(_, r)| r == rating) {
                summary.duplicates += 1;
                continue;
            }
            // The same file gives the same rows in any database (a merge recognises them).
            let after = previous.as_ref().map(|(id, _)| id.to_string()).unwrap_or_default();
            let thumb_uid = crate::domain::sha256_hex(&["thumb-import", &uid, &record.completion, rating, &after]);
            tx.execute(
                "INSERT INTO thumbs (uid, prompt_id, response_id, annotator_id, rating, reasons, note, supersedes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    thumb_uid,
                    prompt_id,
                    response_id,
                    importer,
                    rating,
                    serde_json::to_string(&record.reasons).expect("reasons serialize"),
                    record.note,
                    previous.map(|(id, _)| id),
                ],
            )?;
            summary.judgments += 1;
        }
        tx.commit()?;
        Ok(summary)
    }

    /// Adds one prompt (the TUI's "add prompt"); returns its id and whether it was new.
    pub fn add_prompt(&mut self, prompt: &NewPrompt) -> Result<(i64, bool)> {
        let tx = self.conn.transaction()?;
        let (id, _, new) = insert_prompt(&tx, prompt)?;
        tx.commit()?;
        Ok((id, new))
    }
}

/// Returns (id, uid, newly inserted).
fn insert_prompt(tx: &Transaction<'_>, prompt: &NewPrompt) -> Result<(i64, String, bool)> {
    let messages = messages_json(&prompt.messages);
    let uid = prompt_uid_of_json(&messages);
    let split = prompt.split.unwrap_or_else(|| Split::from_uid(&uid));
    let (id, new) = uids::insert_once(tx, Keyed::Prompts, &uid, || {
        tx.execute(
            "INSERT INTO prompts (uid, external_id, messages, language, domain, tags, split, split_explicit, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                uid,
                prompt.external_id,
                messages,
                prompt.language,
                prompt.domain,
                serde_json::to_string(&prompt.tags).expect("tags serialize"),
                split.as_str(),
                prompt.split.is_some(),
                prompt.source,
            ],
        )?;
        Ok(tx.last_insert_rowid())
    })?;
    Ok((id, uid, new))
}

fn insert_import_response(tx: &Transaction<'_>, prompt_id: i64, prompt_uid: &str, content: &str) -> Result<i64> {
    Ok(insert_import_response_once(tx, prompt_id, prompt_uid, content)?.0)
}

/// Returns (id, newly inserted).
fn insert_import_response_once(
    tx: &Transaction<'_>,
    prompt_id: i64,
    prompt_uid: &str,
    content: &str,
) -> Result<(i64, bool)> {
    let uid = response_uid(prompt_uid, content);
    let (id, new) = uids::insert_once(tx, Keyed::Responses, &uid, || {
        tx.execute(
            "INSERT INTO responses (uid, prompt_id, content, origin) VALUES (?1, ?2, ?3, 'import')",
            params![uid, prompt_id, content],
        )?;
        Ok(tx.last_insert_rowid())
    })?;
    if !new {
        // An evaluation answer imported as a candidate is one from now on.
        tx.execute("DELETE FROM evaluation_only WHERE response_id = ?1", [id])?;
    }
    Ok((id, new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Message, prompt_uid};

    fn prompt(text: &str) -> NewPrompt {
        NewPrompt {
            external_id: None,
            messages: vec![Message::new("user", text)],
            language: "en".into(),
            domain: None,
            tags: vec!["t".into()],
            split: None,
            source: None,
        }
    }

    fn pair(question: &str, chosen: &str, rejected: &str) -> ImportRecord {
        ImportRecord::Pair {
            prompt: prompt(question),
            chosen: chosen.into(),
            rejected: rejected.into(),
            reasons: vec!["accuracy".into()],
            note: None,
        }
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Every row has exactly its key, and foreign keys hold.
    fn assert_consistent(store: &Store) {
        for (rows, keys) in [("prompts", "prompt_uids"), ("responses", "response_uids"), ("judgments", "judgment_uids")]
        {
            let matched =
                count(store, &format!("SELECT count(*) FROM {rows} r JOIN {keys} k ON k.uid = r.uid AND k.id = r.id"));
            assert_eq!(matched, count(store, &format!("SELECT count(*) FROM {rows}")), "{rows}");
            assert_eq!(matched, count(store, &format!("SELECT count(*) FROM {keys}")), "{keys}");
        }
        assert_eq!(count(store, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
        assert_eq!(count(store, "PRAGMA foreign_keys"), 1, "foreign keys are back on after an import");
    }

    #[test]
    fn a_file_is_deduplicated_within_itself_and_against_the_store() {
        let mut store = Store::open_in_memory().unwrap();
        let records = vec![
            pair("q1", "good", "bad"),
            pair("q1", "good", "worse"), // same prompt, one answer shared
            pair("q1", "good", "bad"),   // the same verdict again
            pair("q2", "bad", "good"),
            ImportRecord::Prompt(prompt("q2")), // the prompt of a pair, as a bare prompt
            ImportRecord::Prompt(prompt("q3")),
            ImportRecord::Prompt(prompt("q3")),
        ];
        let summary = store.import_records(&records).unwrap();
        assert_eq!(summary, ImportSummary { prompts: 3, responses: 5, judgments: 3, duplicates: 2 });
        assert_consistent(&store);
        let again = store.import_records(&records).unwrap();
        assert_eq!(again, ImportSummary { prompts: 0, responses: 0, judgments: 0, duplicates: 7 });
        // A new file that overlaps the old one adds only what is new.
        let more = store.import_records(&[pair("q2", "bad", "good"), pair("q2", "good", "new"), pair("q4", "x", "y")]);
        assert_eq!(more.unwrap(), ImportSummary { prompts: 1, responses: 3, judgments: 2, duplicates: 1 });
        assert_consistent(&store);
    }

    #[test]
    fn rows_get_ids_in_file_order_and_verdicts_point_at_the_chosen_answer() {
        let mut store = Store::open_in_memory().unwrap();
        store.import_records(&[pair("first", "a1", "b1"), pair("second", "b2", "a2")]).unwrap();
        let contents: Vec<String> = {
            let mut s = store.conn.prepare("SELECT content FROM responses ORDER BY id").unwrap();
            s.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
        };
        assert_eq!(contents, ["a1", "b1", "b2", "a2"]);
        let first_uid: String = store.conn.query_row("SELECT uid FROM prompts WHERE id = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(first_uid, prompt_uid(&[Message::new("user", "first")]));
        let judgments = store.active_judgments().unwrap();
        // "first": chosen a1 (id 1) < rejected b1 (id 2): a; "second": chosen b2 (3) < a2 (4): a.
        let outcomes: Vec<(i64, i64, &str)> =
            judgments.iter().map(|j| (j.response_a, j.response_b, j.outcome.as_str())).collect();
        assert_eq!(outcomes, [(1, 2, "a"), (3, 4, "a")]);
        // The rejected answer with the lower id makes the verdict "b".
        store.import_records(&[pair("first", "b1", "a1")]).unwrap();
        let relabeled = store.active_judgments().unwrap();
        assert_eq!(relabeled[0].outcome.as_str(), "b");
        assert_eq!(relabeled[0].reasons, ["accuracy"]);
    }

    #[test]
    fn single_rows_and_bulk_rows_share_their_keys() {
        let mut store = Store::open_in_memory().unwrap();
        let (id, new) = store.add_prompt(&prompt("q1")).unwrap();
        assert!(new);
        assert_eq!(store.add_prompt(&prompt("q1")).unwrap(), (id, false));
        let summary = store.import_records(&[pair("q1", "good", "bad")]).unwrap();
        assert_eq!((summary.prompts, summary.responses), (0, 2));
        let (chosen, rejected) = store.add_import_candidates(&prompt("q1"), "good", "other").unwrap();
        assert_eq!((chosen, rejected), (1, 3), "the answer the import stored, then a new one");
        assert_consistent(&store);
    }

    #[test]
    fn a_large_import_hashes_on_several_threads_in_order() {
        let mut store = Store::open_in_memory().unwrap();
        let records: Vec<ImportRecord> =
            (0..10_000).map(|i| pair(&format!("q{i}"), &format!("good {i}"), &format!("bad {i}"))).collect();
        let summary = store.import_records(&records).unwrap();
        assert_eq!(summary, ImportSummary { prompts: 10_000, responses: 20_000, judgments: 10_000, duplicates: 0 });
        let last: String =
            store.conn.query_row("SELECT content FROM responses WHERE id = 20000", [], |r| r.get(0)).unwrap();
        assert_eq!(last, "bad 9999");
        assert_consistent(&store);
    }
}
