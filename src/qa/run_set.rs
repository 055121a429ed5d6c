//! A run's training set as content: the hash that names it and the label counts it came from.
//!
//! The hash is sha256 over the method and, in the set's order, each example's split, prompt
//! messages, answer text(s), label and weight, one canonical JSON line each: two runs trained on
//! the same texts with the same labels share it, whatever the row ids of their databases, and it
//! changes when any text, label, weight or split does. It is stored at the run's start
//! (`store::run_examples`), beside the counts per label kind and language that `qa::compile`
//! reported, and shown by `verdict runs`, the TUI's runs list and `verdict eval report`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::compile::Compiled;
use crate::domain::Message;
use crate::store::{RunAnswer, RunExample, RunSet, Store};

/// How many hex digits of the hash a list shows.
pub const SHORT: usize = 12;

/// One line of a run's label counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetCount {
    pub kind: String,
    pub language: String,
    pub labels: usize,
    pub examples: usize,
    pub skipped: usize,
}

/// The compiler's counts as stored with a run.
pub fn counts(compiled: &Compiled) -> Vec<SetCount> {
    compiled
        .counts
        .iter()
        .map(|((kind, language), c)| SetCount {
            kind: kind.as_str().to_string(),
            language: language.clone(),
            labels: c.labels,
            examples: c.examples,
            skipped: c.skipped,
        })
        .collect()
}

/// The stored counts of a run's set, as lines a person reads (empty for a run whose counts were
/// not recorded). A stored value that does not parse is named, not hidden.
pub fn count_lines(set: &RunSet) -> Vec<String> {
    let counts: Vec<SetCount> = match serde_json::from_str(&set.counts) {
        Ok(counts) => counts,
        Err(e) => return vec![format!("(the stored label counts do not parse: {e})")],
    };
    counts
        .iter()
        .map(|c| {
            let skipped = if c.skipped > 0 { format!(", {} skipped", c.skipped) } else { String::new() };
            format!("{:<8} {:<6} {} labels -> {} examples{skipped}", c.kind, c.language, c.labels, c.examples)
        })
        .collect()
}

#[derive(Serialize)]
struct HashedLine<'a> {
    split: &'static str,
    prompt: &'a [Message],
    answer: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<bool>,
    weight: f64,
}

/// The content hash of a set of `method` (lowercase hex). Every prompt and answer must still be
/// in the store (they are never deleted).
pub fn content_hash(store: &Store, method: &str, examples: &[RunExample]) -> anyhow::Result<String> {
    let prompts: HashMap<i64, Vec<Message>> = store.prompts()?.into_iter().map(|p| (p.id, p.messages)).collect();
    let ids: Vec<i64> = examples.iter().flat_map(|e| [Some(e.answer_id), e.rejected_id()]).flatten().collect();
    let texts = store.response_texts(&ids)?;
    let missing = |what: &str, id: i64| anyhow::anyhow!("the run's {what} {id} is not in the database");
    let mut hasher = Sha256::new();
    hasher.update(serde_json::json!({ "method": method }).to_string().as_bytes());
    hasher.update(b"\n");
    for e in examples {
        let line = HashedLine {
            split: e.split.as_str(),
            prompt: prompts.get(&e.prompt_id).ok_or_else(|| missing("prompt", e.prompt_id))?,
            answer: texts.get(&e.answer_id).ok_or_else(|| missing("response", e.answer_id))?,
            rejected: match e.kind {
                RunAnswer::Pair { rejected_id } => {
                    Some(texts.get(&rejected_id).ok_or_else(|| missing("response", rejected_id))?.as_str())
                }
                _ => None,
            },
            label: match e.kind {
                RunAnswer::Unpaired { desirable } => Some(desirable),
                _ => None,
            },
            weight: e.weight,
        };
        hasher.update(serde_json::to_string(&line).expect("plain data serializes").as_bytes());
        hasher.update(b"\n");
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// What to store for a run whose examples are `examples`, compiled for `method` with `compiled`'s
/// counts (`None`: not known, for a run whose examples were stored before schema 7).
pub fn describe(
    store: &Store,
    method: &str,
    examples: &[RunExample],
    compiled: Option<&Compiled>,
) -> anyhow::Result<RunSet> {
    Ok(RunSet {
        method: method.to_string(),
        hash: content_hash(store, method, examples)?,
        counts: serde_json::to_string(&compiled.map(counts).unwrap_or_default()).expect("plain data serializes"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Split;
    use crate::store::OpenMode;

    /// The store's resolved pairs, and the first three as a DPO training set.
    fn first_three_pairs(store: &Store) -> (Vec<crate::qa::ResolvedPair>, Vec<RunExample>) {
        let pairs = super::super::resolved_pairs(store).unwrap();
        let set = pairs
            .iter()
            .take(3)
            .map(|p| RunExample {
                prompt_id: p.prompt_id,
                answer_id: p.chosen,
                kind: RunAnswer::Pair { rejected_id: p.rejected },
                split: Split::Train,
                weight: 1.0,
            })
            .collect();
        (pairs, set)
    }

    #[test]
    fn the_hash_names_the_content_not_the_row_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("v.db"), OpenMode::CreateIfMissing).unwrap();
        store.import_records(&crate::samples::records()).unwrap();
        let (pairs, set) = first_three_pairs(&store);
        let hash = content_hash(&store, "dpo", &set).unwrap();
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, content_hash(&store, "dpo", &set).unwrap(), "the same set, the same hash");
        assert_ne!(hash, content_hash(&store, "orpo", &set).unwrap(), "the method is part of it");
        let mut swapped = set.clone();
        swapped[0].kind = RunAnswer::Pair { rejected_id: set[0].answer_id };
        swapped[0].answer_id = pairs[0].rejected;
        assert_ne!(hash, content_hash(&store, "dpo", &swapped).unwrap(), "a flipped label changes it");
        let mut held_out = set.clone();
        held_out[2].split = Split::Test;
        assert_ne!(hash, content_hash(&store, "dpo", &held_out).unwrap(), "the split is part of it");

        // Another database with the same texts under other ids: the same hash.
        let mut other = Store::open(&dir.path().join("w.db"), OpenMode::CreateIfMissing).unwrap();
        other
            .add_prompt(&crate::domain::NewPrompt {
                external_id: None,
                messages: vec![Message::new("user", "a prompt of its own first")],
                language: "en".into(),
                domain: None,
                tags: Vec::new(),
                split: None,
                source: None,
            })
            .unwrap();
        other.import_records(&crate::samples::records()).unwrap();
        let (_, other_set) = first_three_pairs(&other);
        assert_ne!(other_set[0].prompt_id, set[0].prompt_id, "the ids differ");
        assert_eq!(content_hash(&other, "dpo", &other_set).unwrap(), hash);
    }
}
