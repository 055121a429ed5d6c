//! The plain data types every module shares: messages, prompts, outcomes, splits,
//! and the content hashes that make imports and merges idempotent.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One chat turn, as in TRL's conversational format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.to_string(), content: content.to_string() }
    }
}

/// Train or test. A prompt's split is fixed by its data, else by its content hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Split> {
        match s {
            "train" => Some(Split::Train),
            "test" => Some(Split::Test),
            _ => None,
        }
    }

    /// The split of a prompt whose data did not set one: about 10% test, decided by
    /// the prompt's content hash so it never changes between runs or machines.
    pub fn from_uid(uid: &str) -> Split {
        let bucket = u64::from_str_radix(&uid[..8.min(uid.len())], 16).unwrap_or(0) % 100;
        if bucket < 10 { Split::Test } else { Split::Train }
    }
}

/// An annotator's verdict on a pair (a, b), where a is the response with the lower id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    A,
    B,
    Tie,
    BothBad,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::A => "a",
            Outcome::B => "b",
            Outcome::Tie => "tie",
            Outcome::BothBad => "both_bad",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "a" => Some(Outcome::A),
            "b" => Some(Outcome::B),
            "tie" => Some(Outcome::Tie),
            "both_bad" => Some(Outcome::BothBad),
            _ => None,
        }
    }
}

/// Where a training run stands: `runs.status`, stored as `as_str`'s text (the schema's CHECK
/// lists the same four).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Training now, or the process training it died (its folder's lock is free).
    Running,
    /// Every step ran and the model was written.
    Finished,
    /// Stopped on request after a checkpoint; `--resume` continues it.
    Stopped,
    /// Stopped by an error, recorded with the run; `--resume` continues it.
    Failed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 4] = [RunStatus::Running, RunStatus::Finished, RunStatus::Stopped, RunStatus::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Stopped => "stopped",
            RunStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// Whether the run has ended, one way or another.
    pub fn is_over(self) -> bool {
        self != RunStatus::Running
    }

    /// Whether `--resume` may continue it (a crashed `running` run too, which only its
    /// folder's free lock tells).
    pub fn resumable(self) -> bool {
        matches!(self, RunStatus::Stopped | RunStatus::Failed)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A prompt as it arrives from a file, the TUI or the sample data.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPrompt {
    pub external_id: Option<String>,
    pub messages: Vec<Message>,
    /// BCP-47 code.
    pub language: String,
    pub domain: Option<String>,
    pub tags: Vec<String>,
    pub split: Option<Split>,
    pub source: Option<String>,
}

impl NewPrompt {
    /// The content identity of the prompt: the same turns are the same prompt.
    pub fn uid(&self) -> String {
        prompt_uid(&self.messages)
    }
}

/// One record of an import file: a bare prompt, or a prompt with a labeled pair.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportRecord {
    Prompt(NewPrompt),
    Pair { prompt: NewPrompt, chosen: String, rejected: String, reasons: Vec<String>, note: Option<String> },
}

/// One line of TRL's unpaired preference layout (`prompt`, `completion`, `label`; what
/// `verdict export --format unpaired` and `unpaired-conversational` write): an answer rated on
/// its own, desirable (`label: true`) or not, with the prompt's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct RatedRecord {
    pub prompt: NewPrompt,
    pub completion: String,
    pub desirable: bool,
    pub reasons: Vec<String>,
    pub note: Option<String>,
}

pub fn sha256_hex(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        hasher.update([0u8]);
    }
    lower_hex(&hasher.finalize())
}

/// Lowercase hex, as `hex::encode` writes it, without a per-character iterator: an import
/// of 100,000 pairs hashes 400,000 times.
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[(byte >> 4) as usize]);
        out.push(DIGITS[(byte & 0xf) as usize]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// The canonical text of a prompt's turns: what its uid hashes, and what the store keeps.
pub fn messages_json(messages: &[Message]) -> String {
    serde_json::to_string(messages).expect("messages serialize")
}

pub fn prompt_uid(messages: &[Message]) -> String {
    prompt_uid_of_json(&messages_json(messages))
}

/// The uid of the prompt whose `messages_json` is `canonical`.
pub fn prompt_uid_of_json(canonical: &str) -> String {
    sha256_hex(&["prompt", canonical])
}

pub fn response_uid(prompt_uid: &str, content: &str) -> String {
    sha256_hex(&["response", prompt_uid, content])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_depends_on_every_turn() {
        let one = vec![Message::new("user", "Hallo")];
        let two = vec![Message::new("system", "Sie sind höflich."), Message::new("user", "Hallo")];
        assert_ne!(prompt_uid(&one), prompt_uid(&two));
        assert_eq!(prompt_uid(&one), prompt_uid(&one.clone()));
    }

    #[test]
    fn hashes_are_lowercase_hex() {
        let uid = sha256_hex(&["a", "b"]);
        assert_eq!(uid.len(), 64);
        assert!(uid.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{uid}");
        // Pinned: uids are stored and exported, so their bytes must never change.
        assert_eq!(
            prompt_uid(&[Message::new("user", "Hallo")]),
            "c0f1824e9392f7310487b4773718d8da4d5e50c31c63d0b8dfa20f0a118005b3"
        );
        assert_eq!(lower_hex(&[0x00, 0x9f, 0xa0, 0xff]), "009fa0ff");
    }

    #[test]
    fn split_from_uid_is_stable_and_mostly_train() {
        let splits: Vec<Split> =
            (0..1000).map(|i| Split::from_uid(&prompt_uid(&[Message::new("user", &format!("q{i}"))]))).collect();
        let tests = splits.iter().filter(|s| **s == Split::Test).count();
        assert!((50..150).contains(&tests), "{tests} of 1000 in test");
        let again = Split::from_uid(&prompt_uid(&[Message::new("user", "q7")]));
        assert_eq!(again, splits[7]);
    }

    #[test]
    fn run_status_text_is_what_serde_writes_and_parses_back() {
        for status in RunStatus::ALL {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_string(&status).unwrap(), format!("\"{status}\""));
        }
        assert_eq!(RunStatus::parse("Running"), None);
    }
}
