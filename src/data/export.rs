//! Writing resolved pairs as TRL preference JSONL, and every label as TRL's unpaired
//! preference JSONL (`prompt`, `completion`, `label`: what KTO trains on, compiled by
//! `qa::compile`).
//!
//! Besides TRL's fields each line carries the prompt's metadata (id, language, domain,
//! tags, split, source, reasons); TRL ignores extra columns and `verdict import` reads
//! them back, so an export re-imported and exported again is byte-identical.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Context;
use serde::Serialize;

use crate::domain::{Message, Split};
use crate::qa;
use crate::store::{PromptRow, RunAnswer, Store};

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
    if format.is_unpaired() {
        return export_unpaired(store, format == ExportFormat::UnpairedConversational, split, out);
    }
    let pairs = qa::resolved_pairs(store)?;
    let prompts: HashMap<i64, PromptRow> = store.prompts()?.into_iter().map(|p| (p.id, p)).collect();
    let ids: Vec<i64> = pairs.iter().flat_map(|p| [p.chosen, p.rejected]).collect();
    let texts = store.response_texts(&ids)?;
    let mut writer = Writer { format, split, out, line: Vec::with_capacity(4096), summary: ExportSummary::default() };
    for pair in &pairs {
        writer.pair(&prompts[&pair.prompt_id], &texts[&pair.chosen], &texts[&pair.rejected], &pair.reasons)?;
    }
    writer.finish()
}

impl ExportFormat {
    fn is_unpaired(self) -> bool {
        matches!(self, ExportFormat::Unpaired | ExportFormat::UnpairedConversational)
    }
}

/// Writes lines of one format, counting what it writes and what the format cannot hold.
struct Writer<'w> {
    format: ExportFormat,
    split: SplitFilter,
    out: &'w mut dyn Write,
    line: Vec<u8>,
    summary: ExportSummary,
}

impl Writer<'_> {
    fn write(&mut self, record: &impl Serialize) -> anyhow::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        Ok(())
    }

    /// One pair in the standard or conversational layout.
    fn pair(&mut self, prompt: &PromptRow, chosen: &str, rejected: &str, reasons: &[String]) -> anyhow::Result<()> {
        if !self.split.admits(prompt.split) {
            return Ok(());
        }
        let (prompt_value, chosen_value, rejected_value) = match self.format {
            ExportFormat::Standard => match prompt.messages.as_slice() {
                [only] if only.role == "user" => {
                    (Field::Text(&only.content), Field::Text(chosen), Field::Text(rejected))
                }
                _ => {
                    self.summary.skipped_multi_turn += 1;
                    return Ok(());
                }
            },
            _ => (
                Field::Messages(prompt.messages.clone()),
                Field::Messages(vec![Message::new("assistant", chosen)]),
                Field::Messages(vec![Message::new("assistant", rejected)]),
            ),
        };
        self.write(&Line {
            id: prompt.external_id.as_deref(),
            prompt: prompt_value,
            chosen: chosen_value,
            rejected: rejected_value,
            about: About::of(prompt),
            reasons,
        })?;
        self.summary.pairs += 1;
        Ok(())
    }

    /// One answer in the unpaired layout (strings or, for `UnpairedConversational`, messages).
    fn unpaired(&mut self, prompt: &PromptRow, completion: &str, label: bool) -> anyhow::Result<()> {
        if !self.split.admits(prompt.split) {
            return Ok(());
        }
        let (prompt_value, completion_value) = if self.format == ExportFormat::UnpairedConversational {
            (Field::Messages(prompt.messages.clone()), Field::Messages(vec![Message::new("assistant", completion)]))
        } else {
            match prompt.messages.as_slice() {
                [only] if only.role == "user" => (Field::Text(&only.content), Field::Text(completion)),
                _ => {
                    self.summary.skipped_multi_turn += 1;
                    return Ok(());
                }
            }
        };
        self.write(&UnpairedLine {
            id: prompt.external_id.as_deref(),
            prompt: prompt_value,
            completion: completion_value,
            label,
            about: About::of(prompt),
        })?;
        self.summary.answers += 1;
        Ok(())
    }

    fn finish(self) -> anyhow::Result<ExportSummary> {
        self.out.flush()?;
        Ok(self.summary)
    }
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
    let format = if conversational { ExportFormat::UnpairedConversational } else { ExportFormat::Unpaired };
    let mut writer = Writer { format, split, out, line: Vec::with_capacity(4096), summary: ExportSummary::default() };
    for answer in &compiled.unpaired {
        writer.unpaired(&prompts[&answer.prompt_id], &texts[&answer.response_id], answer.desirable)?;
    }
    writer.finish()
}

/// Writes the training set run `run_id` stored at its start, in its order: exactly what it
/// trained on (and held out), whatever was relabeled since. A set of pairs takes any format (an
/// unpaired one writes each pair's chosen answer as desirable and its rejected one as not); a set
/// of unpaired answers (KTO) or answers to imitate (SFT, written with label true) takes the
/// unpaired formats.
pub fn export_run(
    store: &Store,
    run_id: i64,
    format: ExportFormat,
    split: SplitFilter,
    out: &mut dyn Write,
) -> anyhow::Result<ExportSummary> {
    let examples = store.run_examples(run_id)?;
    if examples.is_empty() {
        let why = match store.run(run_id)? {
            None => "there is no such run (`verdict runs` lists them)".to_string(),
            Some(_) => "it stored none: it stopped before training started".to_string(),
        };
        anyhow::bail!("run {run_id} has no training set to export: {why}");
    }
    if !format.is_unpaired()
        && let Some(other) = examples.iter().find(|e| !matches!(e.kind, RunAnswer::Pair { .. }))
    {
        let what = match other.kind {
            RunAnswer::Unpaired { .. } => "unpaired answers (KTO)",
            _ => "answers to imitate (SFT)",
        };
        anyhow::bail!(
            "run {run_id} trained on {what}, not pairs: pass --format unpaired or --format unpaired-conversational"
        );
    }
    let prompts: HashMap<i64, PromptRow> = store.prompts()?.into_iter().map(|p| (p.id, p)).collect();
    let ids: Vec<i64> = examples.iter().flat_map(|e| [Some(e.answer_id), e.rejected_id()]).flatten().collect();
    let texts = store.response_texts(&ids)?;
    let text = |id: i64| texts.get(&id).map(String::as_str).with_context(|| format!("response {id} is gone"));
    let mut writer = Writer { format, split, out, line: Vec::with_capacity(4096), summary: ExportSummary::default() };
    for e in &examples {
        let prompt = prompts.get(&e.prompt_id).with_context(|| format!("prompt {} is gone", e.prompt_id))?;
        let answer = text(e.answer_id)?;
        match (e.kind, format.is_unpaired()) {
            (RunAnswer::Pair { rejected_id }, false) => writer.pair(prompt, answer, text(rejected_id)?, &[])?,
            (RunAnswer::Pair { rejected_id }, true) => {
                writer.unpaired(prompt, answer, true)?;
                writer.unpaired(prompt, text(rejected_id)?, false)?;
            }
            (RunAnswer::Unpaired { desirable }, _) => writer.unpaired(prompt, answer, desirable)?,
            (RunAnswer::Imitate, _) => writer.unpaired(prompt, answer, true)?,
        }
    }
    writer.finish()
}
