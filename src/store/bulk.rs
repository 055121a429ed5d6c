//! The bulk path of an import: everything is planned in memory (content hashes, which
//! rows already exist, the ids new rows will get), then written with multi-row INSERTs.
//! Per-row statements spent most of their time opening and closing cursors; this keeps
//! a 100,000-pair import to a few hundred statements.

use std::collections::{HashMap, HashSet};

use rusqlite::Transaction;
use rusqlite::types::Value;

use super::{ImportSummary, Result};
use crate::domain::{ImportRecord, NewPrompt, Outcome, Split, response_uid, sha256_hex};

/// Rows per INSERT statement; bundled SQLite allows 32,766 parameters.
const CHUNK: usize = 1000;

/// Ids of rows that already exist, by uid, looked up in chunks.
fn existing(tx: &Transaction<'_>, table: &str, uids: &[&str]) -> Result<HashMap<String, i64>> {
    let mut out = HashMap::new();
    // A first import into an empty table has nothing to look up.
    let empty: bool = tx.query_row(&format!("SELECT NOT EXISTS (SELECT 1 FROM {table})"), [], |r| r.get(0))?;
    if empty {
        return Ok(out);
    }
    for chunk in uids.chunks(CHUNK) {
        let marks = vec!["?"; chunk.len()].join(",");
        let mut statement = tx.prepare_cached(&format!("SELECT uid, id FROM {table} WHERE uid IN ({marks})"))?;
        let rows = statement.query_map(rusqlite::params_from_iter(chunk.iter()), |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            let (uid, id): (String, i64) = row?;
            out.insert(uid, id);
        }
    }
    Ok(out)
}

fn next_id(tx: &Transaction<'_>, table: &str) -> Result<i64> {
    Ok(tx.query_row(&format!("SELECT coalesce(max(id), 0) + 1 FROM {table}"), [], |r| r.get(0))?)
}

fn insert_all(tx: &Transaction<'_>, table: &str, columns: &[&str], rows: &[Vec<Value>]) -> Result<()> {
    let row_marks = format!("({})", vec!["?"; columns.len()].join(","));
    for chunk in rows.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES {}",
            columns.join(", "),
            vec![row_marks.as_str(); chunk.len()].join(",")
        );
        let mut statement = tx.prepare_cached(&sql)?;
        statement.execute(rusqlite::params_from_iter(chunk.iter().flatten()))?;
    }
    Ok(())
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn opt(s: &Option<String>) -> Value {
    s.as_ref().map(|s| Value::Text(s.clone())).unwrap_or(Value::Null)
}

/// Writes `records` inside `tx`, attributing pairs to the annotator `importer`.
pub(super) fn import(tx: &Transaction<'_>, importer: i64, records: &[ImportRecord]) -> Result<ImportSummary> {
    // Content identities first: the same prompt or answer twice in a file is one row.
    let mut prompt_uid_of: Vec<String> = Vec::with_capacity(records.len());
    let mut prompts: Vec<(&str, &NewPrompt)> = Vec::new();
    let mut seen_prompts: HashSet<&str> = HashSet::new();
    for record in records {
        let prompt = match record {
            ImportRecord::Prompt(p) | ImportRecord::Pair { prompt: p, .. } => p,
        };
        prompt_uid_of.push(prompt.uid());
    }
    for (record, uid) in records.iter().zip(&prompt_uid_of) {
        let prompt = match record {
            ImportRecord::Prompt(p) | ImportRecord::Pair { prompt: p, .. } => p,
        };
        if seen_prompts.insert(uid.as_str()) {
            prompts.push((uid.as_str(), prompt));
        }
    }
    let prompt_uids: Vec<&str> = prompts.iter().map(|(u, _)| *u).collect();
    let mut prompt_ids = existing(tx, "prompts", &prompt_uids)?;
    let mut new_prompt_rows = Vec::new();
    let mut next = next_id(tx, "prompts")?;
    let mut new_prompts: HashSet<&str> = HashSet::new();
    for (uid, p) in &prompts {
        if prompt_ids.contains_key(*uid) {
            continue;
        }
        prompt_ids.insert(uid.to_string(), next);
        new_prompts.insert(uid);
        let split = p.split.unwrap_or_else(|| Split::from_uid(uid));
        new_prompt_rows.push(vec![
            Value::Integer(next),
            text(uid),
            opt(&p.external_id),
            Value::Text(serde_json::to_string(&p.messages).expect("messages serialize")),
            text(&p.language),
            opt(&p.domain),
            Value::Text(serde_json::to_string(&p.tags).expect("tags serialize")),
            text(split.as_str()),
            Value::Integer(p.split.is_some() as i64),
            opt(&p.source),
        ]);
        next += 1;
    }

    // Answers and verdicts of the pairs.
    struct PairPlan<'r> {
        prompt_uid: &'r str,
        chosen: String,
        rejected: String,
        judgment: String,
        reasons: &'r [String],
        note: &'r Option<String>,
    }
    let mut pairs = Vec::new();
    let mut responses: Vec<(String, &str, &str)> = Vec::new();
    let mut seen_responses: HashSet<String> = HashSet::new();
    for (record, prompt_uid) in records.iter().zip(&prompt_uid_of) {
        let ImportRecord::Pair { chosen, rejected, reasons, note, .. } = record else { continue };
        let chosen_uid = response_uid(prompt_uid, chosen);
        let rejected_uid = response_uid(prompt_uid, rejected);
        for (uid, content) in [(&chosen_uid, chosen), (&rejected_uid, rejected)] {
            if seen_responses.insert(uid.clone()) {
                responses.push((uid.clone(), prompt_uid, content));
            }
        }
        let judgment = sha256_hex(&["judgment", super::import::IMPORT_ANNOTATOR, &chosen_uid, &rejected_uid]);
        pairs.push(PairPlan { prompt_uid, chosen: chosen_uid, rejected: rejected_uid, judgment, reasons, note });
    }
    let response_uids: Vec<&str> = responses.iter().map(|(u, _, _)| u.as_str()).collect();
    let mut response_ids = existing(tx, "responses", &response_uids)?;
    let mut new_response_rows = Vec::new();
    let mut next = next_id(tx, "responses")?;
    for (uid, prompt_uid, content) in &responses {
        if response_ids.contains_key(uid) {
            continue;
        }
        response_ids.insert(uid.clone(), next);
        new_response_rows.push(vec![
            Value::Integer(next),
            text(uid),
            Value::Integer(prompt_ids[*prompt_uid]),
            text(content),
            text("import"),
        ]);
        next += 1;
    }
    let judgment_uids: Vec<&str> = pairs.iter().map(|p| p.judgment.as_str()).collect();
    let known_judgments = existing(tx, "judgments", &judgment_uids)?;
    let mut new_judgment_rows = Vec::new();
    let mut seen_judgments: HashSet<&str> = HashSet::new();
    for pair in &pairs {
        if known_judgments.contains_key(&pair.judgment) || !seen_judgments.insert(&pair.judgment) {
            continue;
        }
        let (chosen, rejected) = (response_ids[&pair.chosen], response_ids[&pair.rejected]);
        let (a, b, outcome) =
            if chosen < rejected { (chosen, rejected, Outcome::A) } else { (rejected, chosen, Outcome::B) };
        new_judgment_rows.push(vec![
            text(&pair.judgment),
            Value::Integer(prompt_ids[pair.prompt_uid]),
            Value::Integer(a),
            Value::Integer(b),
            Value::Integer(importer),
            text(outcome.as_str()),
            Value::Text(serde_json::to_string(pair.reasons).expect("reasons serialize")),
            opt(pair.note),
        ]);
    }

    // A record added nothing when its prompt (bare prompts) or its verdict (pairs) was
    // already there.
    let mut duplicates = 0;
    let mut first_seen: HashSet<&str> = HashSet::new();
    let mut pair_index = 0;
    for (record, uid) in records.iter().zip(&prompt_uid_of) {
        match record {
            ImportRecord::Prompt(_) => {
                let fresh = new_prompts.contains(uid.as_str()) && first_seen.insert(uid);
                duplicates += !fresh as usize;
            }
            ImportRecord::Pair { .. } => {
                let judgment = pairs[pair_index].judgment.as_str();
                pair_index += 1;
                let fresh = !known_judgments.contains_key(judgment) && first_seen.insert(judgment);
                duplicates += !fresh as usize;
            }
        }
    }
    let summary = ImportSummary {
        prompts: new_prompt_rows.len(),
        responses: new_response_rows.len(),
        judgments: new_judgment_rows.len(),
        duplicates,
    };
    insert_all(
        tx,
        "prompts",
        &["id", "uid", "external_id", "messages", "language", "domain", "tags", "split", "split_explicit", "source"],
        &new_prompt_rows,
    )?;
    insert_all(tx, "responses", &["id", "uid", "prompt_id", "content", "origin"], &new_response_rows)?;
    insert_all(
        tx,
        "judgments",
        &["uid", "prompt_id", "response_a", "response_b", "annotator_id", "outcome", "reasons", "note"],
        &new_judgment_rows,
    )?;
    Ok(summary)
}
