//! Writing resolved pairs as TRL preference JSONL, and every label as TRL's unpaired
//! preference JSONL (`prompt`, `completion`, `label`: what KTO trains on, compiled by
//! `qa::compile`).
//!
//! Besides TRL's fields each line carries the prompt's metadata (id, language, domain,
//! tags, split, source, reasons); TRL ignores extra columns and `verdict import` reads
//! them back, so an export re-imported and exported again is byte-identical.

use std::collections::HashMap;
use std::io::Write;

use serde::Serialize;

use crate::domain::{Message, Split};
use crate::qa;
use crate::store::{PromptRow, Store};

/// Which TRL layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// `prompt`, `chosen`, `rejected` as strings (single-turn prompts only).
    Standard,
    /// Message lists: `prompt` = the turns, `chosen`/`rejected` = one assistant message.
    Conversational,
    /// TRL's unpaired preference layout, one answer per line: `prompt`, `completion` as
    /// strings and `label` (true = desirable), from every label (wins, ties, both-bad,
    /// rewrites; see `qa::compile`). Single-turn prompts only.
    Unpaired,
    /// The unpaired layout with message lists.
    UnpairedConversational,
}

/// Which prompts to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitFilter {
    Train,
    Test,
    All,
}

impl SplitFilter {
    fn admits(self, split: Split) -> bool {
        match self {
            SplitFilter::All => true,
            SplitFilter::Train => split == Split::Train,
            SplitFilter::Test => split == Split::Test,
        }
    }
}

/// What an export wrote and what it had to leave out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    pub pairs: usize,
    /// Unpaired lines written (the unpaired formats).
    pub answers: usize,
    /// Pairs (answers, for the unpaired formats) whose prompt has a system turn or several turns, which the standard
    /// format cannot hold.
    pub skipped_multi_turn: usize,
}

/// A prompt or an answer: a plain string, or messages in TRL's `role`, `content` order.
#[derive(Serialize)]
#[serde(untagged)]
enum Field<'a> {
    Text(&'a str),
    Messages(Vec<Message>),
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    prompt: Field<'a>,
    chosen: Field<'a>,
    rejected: Field<'a>,
    #[serde(flatten)]
    about: About<'a>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    reasons: &'a [String],
}

/// The prompt's metadata every exported line carries after TRL's fields.
#[derive(Serialize)]
struct About<'a> {
    language: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    split: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
}

impl<'a> About<'a> {
    fn of(prompt: &'a PromptRow) -> About<'a> {
        About {
            language: &prompt.language,
            domain: prompt.domain.as_deref(),
            tags: &prompt.tags,
            split: prompt.split.as_str(),
            source: prompt.source.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct UnpairedLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    prompt: Field<'a>,
    completion: Field<'a>,
    label: bool,
    #[serde(flatten)]
    about: About<'a>,
}

/// Writes the resolved pairs of `store` to `out` (every label as unpaired answers for the
/// unpaired formats).
pub fn export(
    store: &Store,
    format: ExportFormat,
    split: SplitFilter,
    out: &mut dyn Write,
) -> anyhow::Result<ExportSummary> {
    if matches!(format, ExportFormat::Unpaired | ExportFormat::UnpairedConversational) {
        return export_unpaired(store, format == ExportFormat::UnpairedConversational, split, out);
    }
    let pairs = qa::resolved_pairs(store)?;
    let prompts: HashMap<i64, PromptRow> = store.prompts()?.into_iter().map(|p| (p.id, p)).collect();
    let ids: Vec<i64> = pairs.iter().flat_map(|p| [p.chosen, p.rejected]).collect();
    let texts = store.response_texts(&ids)?;
    let mut summary = ExportSummary::default();
    let mut line = Vec::with_capacity(4096);
    for pair in &pairs {
        let prompt = &prompts[&pair.prompt_id];
        if !split.admits(prompt.split) {
            continue;
        }
        let (chosen, rejected) = (&texts[&pair.chosen], &texts[&pair.rejected]);
        let (prompt_value, chosen_value, rejected_value) = match format {
            ExportFormat::Standard => match prompt.messages.as_slice() {
                [only] if only.role == "user" => {
                    (Field::Text(&only.content), Field::Text(chosen), Field::Text(rejected))
                }
                _ => {
                    summary.skipped_multi_turn += 1;
                    continue;
                }
            },
            _ => (
                Field::Messages(prompt.messages.clone()),
                Field::Messages(vec![Message::new("assistant", chosen)]),
                Field::Messages(vec![Message::new("assistant", rejected)]),
            ),
        };
        let record = Line {
            id: prompt.external_id.as_deref(),
            prompt: prompt_value,
            chosen: chosen_value,
            rejected: rejected_value,
            about: About::of(prompt),
            reasons: &pair.reasons,
        };
        line.clear();
        serde_json::to_writer(&mut line, &record)?;
        line.push(b'\n');
        out.write_all(&line)?;
        summary.pairs += 1;
    }
    out.flush()?;
    Ok(summary)
}

fn export_unpaired(
    store: &Store,
    conversational: bool,
    split: SplitFilter,
    out: &mut dyn Write,
) -> anyhow::Result<ExportSummary> {
    let compiled = qa::compile::compile_store(store, qa::compile::Method::Kto)?;
    let prompts: HashMap<i64, PromptRow> = store.prompts()?.into_iter().map(|p| (p.id, p)).collect();
    let ids: Vec<i64> = compiled.unpaired.iter().map(|u| u.response_id).collect();
    let texts = store.response_texts(&ids)?;
    let mut summary = ExportSummary::default();
    let mut line = Vec::with_capacity(4096);
    for answer in &compiled.unpaired {
        let prompt = &prompts[&answer.prompt_id];
        if !split.admits(prompt.split) {
            continue;
        }
        let completion = &texts[&answer.response_id];
        let (prompt_value, completion_value) = if conversational {
            (Field::Messages(prompt.messages.clone()), Field::Messages(vec![Message::new("assistant", completion)]))
        } else {
            match prompt.messages.as_slice() {
                [only] if only.role == "user" => (Field::Text(&only.content), Field::Text(completion)),
                _ => {
                    summary.skipped_multi_turn += 1;
                    continue;
                }
            }
        };
        let record = UnpairedLine {
            id: prompt.external_id.as_deref(),
            prompt: prompt_value,
            completion: completion_value,
            label: answer.desirable,
            about: About::of(prompt),
        };
        line.clear();
        serde_json::to_writer(&mut line, &record)?;
        line.push(b'\n');
        out.write_all(&line)?;
        summary.answers += 1;
    }
    out.flush()?;
    Ok(summary)
}
