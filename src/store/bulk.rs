//! The bulk path of an import: everything is planned in memory (content hashes, which
//! rows already exist, the ids new rows will get), then written with multi-row INSERTs:
//! the rows in id order, then their keys (`uids`) in uid order, so that every B-tree
//! insert of a first import is an append.
//!
//! What made it fast, measured on 100,000 pairs (docs/performance.md): sorted keys in
//! their own tables instead of a UNIQUE index filled in random order; no statement journal
//! (see `insert_rows`); one timestamp bound per import instead of `strftime` per row;
//! hashing on all cores.

use std::collections::HashSet;

use rusqlite::Transaction;

use super::borrowed_insert::{Param, insert_rows};
use super::slots::Slots;
use super::uids::Keyed;
use super::{ImportSummary, Result};
use crate::domain::{
    ImportRecord, NewPrompt, Outcome, Split, messages_json, prompt_uid_of_json, response_uid, sha256_hex,
};

/// Below this many records, hashing on one thread is quicker than starting others.
const PARALLEL_FROM: usize = 4096;

/// The content hashes of one record.
struct Identity {
    messages: String,
    prompt: String,
    /// (chosen, rejected, judgment) for a pair.
    pair: Option<(String, String, String)>,
}

fn identify(record: &ImportRecord) -> Identity {
    let prompt = match record {
        ImportRecord::Prompt(p) | ImportRecord::Pair { prompt: p, .. } => p,
    };
    let messages = messages_json(&prompt.messages);
    let prompt_uid = prompt_uid_of_json(&messages);
    let pair = match record {
        ImportRecord::Prompt(_) => None,
        ImportRecord::Pair { chosen, rejected, .. } => {
            let chosen = response_uid(&prompt_uid, chosen);
            let rejected = response_uid(&prompt_uid, rejected);
            let judgment = sha256_hex(&["judgment", super::import::IMPORT_ANNOTATOR, &chosen, &rejected]);
            Some((chosen, rejected, judgment))
        }
    };
    Identity { messages, prompt: prompt_uid, pair }
}

/// Hashes every record, split over the available cores.
fn identify_all(records: &[ImportRecord]) -> Vec<Identity> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if records.len() < PARALLEL_FROM || threads == 1 {
        return records.iter().map(identify).collect();
    }
    let per_thread = records.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = records
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().map(identify).collect::<Vec<_>>()))
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("hashing does not panic")).collect()
    })
}

fn insert_keys(tx: &Transaction<'_>, kind: Keyed, keys: &[(&str, i64)]) -> Result<()> {
    insert_rows(tx, kind.keys(), &["uid", "id"], &[], keys, |&(uid, id), out| {
        out.extend([Param::Text(uid), Param::Int(id)])
    })
}

/// A pair's answers and verdict, by slot.
struct PlannedPair<'r> {
    prompt: usize,
    chosen: usize,
    rejected: usize,
    judgment: usize,
    reasons: &'r [String],
    note: &'r Option<String>,
}

/// Writes `records` inside `tx`, attributing pairs to the annotator `importer`. The caller
/// has turned foreign keys off (see `borrowed_insert::insert_rows`).
pub(super) fn import(tx: &Transaction<'_>, importer: i64, records: &[ImportRecord]) -> Result<ImportSummary> {
    let identities = identify_all(records);

    // Content identities first: the same prompt, answer or verdict twice in a file is one row.
    let n = records.len();
    let mut prompts = Slots::with_capacity(n);
    let mut responses = Slots::with_capacity(2 * n);
    let mut judgments = Slots::with_capacity(n);
    // By slot: the prompt with its canonical messages, and each answer with its prompt's slot.
    let mut prompt_rows: Vec<(&NewPrompt, &str)> = Vec::with_capacity(n);
    let mut response_rows: Vec<(usize, &str)> = Vec::with_capacity(2 * n);
    let mut pairs: Vec<PlannedPair<'_>> = Vec::with_capacity(n);
    // Per record: its prompt's slot (bare prompts) or its verdict's slot (pairs), and whether
    // it is the first such record.
    let mut record_slots: Vec<(usize, bool)> = Vec::with_capacity(records.len());
    let mut bare_prompts_seen = HashSet::new();
    for (record, identity) in records.iter().zip(&identities) {
        let (prompt, first) = prompts.slot(&identity.prompt);
        if first {
            let p = match record {
                ImportRecord::Prompt(p) | ImportRecord::Pair { prompt: p, .. } => p,
            };
            prompt_rows.push((p, &identity.messages));
        }
        match (record, &identity.pair) {
            (
                ImportRecord::Pair { chosen, rejected, reasons, note, .. },
                Some((chosen_uid, rejected_uid, judgment_uid)),
            ) => {
                let mut answer_slots = [0; 2];
                for (slot, (uid, text)) in answer_slots.iter_mut().zip([(chosen_uid, chosen), (rejected_uid, rejected)])
                {
                    let first;
                    (*slot, first) = responses.slot(uid);
                    if first {
                        response_rows.push((prompt, text));
                    }
                }
                let [chosen, rejected] = answer_slots;
                let (judgment, first) = judgments.slot(judgment_uid);
                if first {
                    pairs.push(PlannedPair { prompt, chosen, rejected, judgment, reasons, note });
                }
                record_slots.push((judgment, first));
            }
            _ => record_slots.push((prompt, bare_prompts_seen.insert(prompt))),
        }
    }
    prompts.resolve(tx, Keyed::Prompts)?;
    responses.resolve(tx, Keyed::Responses)?;
    judgments.resolve(tx, Keyed::Judgments)?;
    // An evaluation answer imported as a candidate is one from now on.
    let any_evaluation_only: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM evaluation_only)", [], |r| r.get(0))?;
    if any_evaluation_only {
        let mut unmark = tx.prepare_cached("DELETE FROM evaluation_only WHERE response_id = ?1")?;
        for id in responses.existing_ids() {
            unmark.execute([id])?;
        }
    }

    // A record added nothing when its prompt (bare prompts) or its verdict (pairs) was
    // already there, or came earlier in the file.
    let duplicates = records
        .iter()
        .zip(&record_slots)
        .filter(|(record, (slot, first))| {
            let new = match record {
                ImportRecord::Prompt(_) => prompts.new[*slot],
                ImportRecord::Pair { .. } => judgments.new[*slot],
            };
            !(new && *first)
        })
        .count();
    let summary = ImportSummary {
        prompts: prompts.new_count(),
        responses: responses.new_count(),
        judgments: judgments.new_count(),
        duplicates,
    };

    // One timestamp for the whole import, in the format of the columns' default.
    let now: String = tx.query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |r| r.get(0))?;
    struct PromptRow<'r> {
        slot: usize,
        prompt: &'r NewPrompt,
        messages: &'r str,
        tags: String,
        split: &'static str,
    }
    let new_prompts: Vec<PromptRow<'_>> = prompt_rows
        .into_iter()
        .enumerate()
        .filter(|(slot, _)| prompts.new[*slot])
        .map(|(slot, (prompt, messages))| PromptRow {
            slot,
            prompt,
            messages,
            tags: serde_json::to_string(&prompt.tags).expect("tags serialize"),
            split: prompt.split.unwrap_or_else(|| Split::from_uid(prompts.uids[slot])).as_str(),
        })
        .collect();
    insert_rows(
        tx,
        "prompts",
        &["id", "uid", "external_id", "messages", "language", "domain", "tags", "split", "split_explicit", "source"],
        &[("created_at", Param::Text(&now))],
        &new_prompts,
        |row, out| {
            let p = row.prompt;
            out.extend([
                Param::Int(prompts.ids[row.slot]),
                Param::Text(prompts.uids[row.slot]),
                Param::from(&p.external_id),
                Param::Text(row.messages),
                Param::Text(&p.language),
                Param::from(&p.domain),
                Param::Text(&row.tags),
                Param::Text(row.split),
                Param::Int(p.split.is_some() as i64),
                Param::from(&p.source),
            ])
        },
    )?;

    let new_responses: Vec<(usize, usize, &str)> = response_rows
        .into_iter()
        .enumerate()
        .filter(|(slot, _)| responses.new[*slot])
        .map(|(slot, (prompt, text))| (slot, prompt, text))
        .collect();
    insert_rows(
        tx,
        "responses",
        &["id", "uid", "prompt_id", "content"],
        &[("origin", Param::Text("import")), ("created_at", Param::Text(&now))],
        &new_responses,
        |&(slot, prompt, text), out| {
            out.extend([
                Param::Int(responses.ids[slot]),
                Param::Text(responses.uids[slot]),
                Param::Int(prompts.ids[prompt]),
                Param::Text(text),
            ])
        },
    )?;

    struct JudgmentRow<'r> {
        judgment: usize,
        prompt: usize,
        a: i64,
        b: i64,
        outcome: Outcome,
        reasons: String,
        note: &'r Option<String>,
    }
    let new_judgments: Vec<JudgmentRow<'_>> = pairs
        .iter()
        .filter(|pair| judgments.new[pair.judgment])
        .map(|pair| {
            let (chosen, rejected) = (responses.ids[pair.chosen], responses.ids[pair.rejected]);
            let (a, b, outcome) =
                if chosen < rejected { (chosen, rejected, Outcome::A) } else { (rejected, chosen, Outcome::B) };
            JudgmentRow {
                judgment: pair.judgment,
                prompt: pair.prompt,
                a,
                b,
                outcome,
                reasons: serde_json::to_string(pair.reasons).expect("reasons serialize"),
                note: pair.note,
            }
        })
        .collect();
    insert_rows(
        tx,
        "judgments",
        &["id", "uid", "prompt_id", "response_a", "response_b", "outcome", "reasons", "note"],
        &[("annotator_id", Param::Int(importer)), ("created_at", Param::Text(&now))],
        &new_judgments,
        |row, out| {
            out.extend([
                Param::Int(judgments.ids[row.judgment]),
                Param::Text(judgments.uids[row.judgment]),
                Param::Int(prompts.ids[row.prompt]),
                Param::Int(row.a),
                Param::Int(row.b),
                Param::Text(row.outcome.as_str()),
                Param::Text(&row.reasons),
                Param::from(row.note),
            ])
        },
    )?;

    insert_keys(tx, Keyed::Prompts, &prompts.new_keys())?;
    insert_keys(tx, Keyed::Responses, &responses.new_keys())?;
    insert_keys(tx, Keyed::Judgments, &judgments.new_keys())?;
    Ok(summary)
}
