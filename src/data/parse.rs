//! Turning one JSON object into an import record, in one of the formats users bring:
//! TRL's standard and conversational preference formats, prompt lists, and (`parse_unpaired_line`)
//! TRL's unpaired layout of single rated answers.

use serde_json::{Map, Value};

use super::language;
use crate::domain::{ImportRecord, Message, NewPrompt, RatedRecord, Split};

/// The shape of a file's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `prompt`/`chosen`/`rejected` as strings.
    Standard,
    /// `chosen`/`rejected` as message lists, with an explicit or implicit `prompt`.
    Conversational,
    /// `{"prompt": str | messages, "id"?, "language"?, "domain"?, "tags"?, "split"?, "source"?}`, no answers.
    Prompts,
}

impl Format {
    /// Guesses the format from one record.
    pub fn detect(object: &Map<String, Value>) -> Result<Format, String> {
        match (object.get("chosen"), object.get("rejected"), object.get("prompt")) {
            (Some(Value::Array(_)), _, _) => Ok(Format::Conversational),
            (Some(_), Some(_), _) => Ok(Format::Standard),
            (None, None, Some(_)) => Ok(Format::Prompts),
            (Some(_), None, _) => Err("has `chosen` but no `rejected`".into()),
            (None, Some(_), _) => Err("has `rejected` but no `chosen`".into()),
            (None, None, None) => {
                Err("cannot tell the format: expected `prompt`, or `chosen` and `rejected` (TRL preference format)"
                    .into())
            }
        }
    }
}

/// The message for a line that is not JSON: serde_json says "at line 1 column 38" of the one
/// line it was given, while the caller names the file's line; the column is what helps.
fn not_json(e: serde_json::Error) -> String {
    let message = e.to_string();
    let message = message.strip_suffix(&format!(" at line {} column {}", e.line(), e.column())).unwrap_or(&message);
    format!("not valid JSON at column {}: {message}", e.column())
}

/// Parses one line's text. Errors are messages naming the field, without the location.
pub fn parse_line(text: &str, format: Option<Format>) -> Result<(Format, ImportRecord), String> {
    let value: Value = serde_json::from_str(text).map_err(not_json)?;
    let Value::Object(object) = value else {
        return Err(format!("expected a JSON object, found {}", kind(&value)));
    };
    let format = match format {
        Some(f) => f,
        None => Format::detect(&object)?,
    };
    let record = match format {
        Format::Prompts => {
            if object.contains_key("chosen") || object.contains_key("rejected") {
                return Err("this line is a preference pair, but the file's records are prompts (decided by its \
                     first record): put pairs and prompts in separate files"
                    .into());
            }
            ImportRecord::Prompt(prompt_meta(&object, messages_field(&object, "prompt")?)?)
        }
        Format::Standard => {
            let prompt = text_field(&object, "prompt")?;
            let chosen = text_field(&object, "chosen")?;
            let rejected = text_field(&object, "rejected")?;
            pair(&object, vec![Message::new("user", &prompt)], chosen, rejected)?
        }
        Format::Conversational => conversational(&object)?,
    };
    Ok((format, record))
}

fn conversational(object: &Map<String, Value>) -> Result<ImportRecord, String> {
    let chosen = message_list(object, "chosen")?;
    let rejected = message_list(object, "rejected")?;
    let (prompt, chosen, rejected) = match object.get("prompt") {
        Some(_) => {
            (messages_field(object, "prompt")?, completion(&chosen, "chosen")?, completion(&rejected, "rejected")?)
        }
        None => {
            // Implicit prompt: both lists share every turn but the last answer.
            let (Some((c_last, c_prefix)), Some((r_last, r_prefix))) = (chosen.split_last(), rejected.split_last())
            else {
                return Err("field `chosen` or `rejected` is an empty list".into());
            };
            if c_prefix != r_prefix || c_prefix.is_empty() {
                return Err("no `prompt` field, and `chosen` and `rejected` do not share the turns before their last \
                     message (the implicit prompt): add a `prompt` field"
                    .into());
            }
            (
                c_prefix.to_vec(),
                completion(std::slice::from_ref(c_last), "chosen")?,
                completion(std::slice::from_ref(r_last), "rejected")?,
            )
        }
    };
    pair(object, prompt, chosen, rejected)
}

fn completion(messages: &[Message], field: &str) -> Result<String, String> {
    match messages {
        [only] if only.role == "assistant" => Ok(only.content.clone()),
        [only] => Err(format!("field `{field}`: the answer must have role \"assistant\", found \"{}\"", only.role)),
        _ => Err(format!("field `{field}`: expected exactly one assistant message, found {}", messages.len())),
    }
}

fn pair(
    object: &Map<String, Value>,
    messages: Vec<Message>,
    chosen: String,
    rejected: String,
) -> Result<ImportRecord, String> {
    if chosen == rejected {
        return Err("fields `chosen` and `rejected` are the same text".into());
    }
    let mut reasons = optional_strings(object, "reasons")?;
    if let Some(reason) = optional_text(object, "reason")? {
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    }
    let note = optional_text(object, "note")?;
    let mut prompt = prompt_meta(object, messages)?;
    if prompt.language == language::UNDETERMINED {
        prompt.language = language::detect(&format!("{} {chosen}", last_user_text(&prompt.messages)));
    }
    Ok(ImportRecord::Pair { prompt, chosen, rejected, reasons, note })
}

fn prompt_meta(object: &Map<String, Value>, messages: Vec<Message>) -> Result<NewPrompt, String> {
    let language = match optional_text(object, "language")? {
        Some(tag) if language::is_valid_tag(&tag) => language::normalize_tag(&tag),
        Some(tag) => {
            return Err(format!("field `language`: \"{tag}\" is not a BCP-47 code (like \"en\", \"pt-BR\", \"zh\")"));
        }
        None => language::detect(last_user_text(&messages)),
    };
    let split = match optional_text(object, "split")? {
        None => None,
        Some(s) => Some(
            Split::parse(&s).ok_or_else(|| format!("field `split`: expected \"train\" or \"test\", found \"{s}\""))?,
        ),
    };
    let external_id = match object.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(format!("field `id`: expected a string or number, found {}", kind(other)));
        }
    };
    Ok(NewPrompt {
        external_id,
        messages,
        language,
        domain: optional_text(object, "domain")?,
        tags: optional_strings(object, "tags")?,
        split,
        source: optional_text(object, "source")?,
    })
}

fn last_user_text(messages: &[Message]) -> &str {
    messages.iter().rev().find(|m| m.role == "user").map(|m| m.content.as_str()).unwrap_or("")
}

/// A prompt given as a string (one user turn) or as a message list.
fn messages_field(object: &Map<String, Value>, field: &str) -> Result<Vec<Message>, String> {
    match object.get(field) {
        Some(Value::String(_)) => Ok(vec![Message::new("user", &text_field(object, field)?)]),
        Some(Value::Array(_)) => {
            let messages = message_list(object, field)?;
            match messages.last() {
                Some(last) if last.role == "assistant" => {
                    Err(format!("field `{field}`: the last turn is the assistant's; a prompt ends with a user turn"))
                }
                _ => Ok(messages),
            }
        }
        Some(other) => Err(format!("field `{field}`: expected a string or a list of messages, found {}", kind(other))),
        None => Err(format!("missing field `{field}`")),
    }
}

fn message_list(object: &Map<String, Value>, field: &str) -> Result<Vec<Message>, String> {
    let items = match object.get(field) {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(format!("field `{field}`: expected a list of messages, found {}", kind(other)));
        }
        None => return Err(format!("missing field `{field}`")),
    };
    if items.is_empty() {
        return Err(format!("field `{field}` is an empty list"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(m) = item else {
                return Err(format!("field `{field}[{i}]`: expected {{\"role\", \"content\"}}, found {}", kind(item)));
            };
            let role = text_field(m, "role").map_err(|e| format!("field `{field}[{i}]`: {e}"))?;
            if !["system", "user", "assistant", "tool"].contains(&role.as_str()) {
                return Err(format!(
                    "field `{field}[{i}].role`: unknown role \"{role}\" (system, user, assistant or tool)"
                ));
            }
            let content = text_field(m, "content").map_err(|e| format!("field `{field}[{i}]`: {e}"))?;
            Ok(Message { role, content })
        })
        .collect()
}

fn text_field(object: &Map<String, Value>, field: &str) -> Result<String, String> {
    match object.get(field) {
        Some(Value::String(s)) if s.trim().is_empty() => Err(format!("field `{field}` is empty")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("field `{field}`: expected a string, found {}", kind(other))),
        None => Err(format!("missing field `{field}`")),
    }
}

fn optional_text(object: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("field `{field}`: expected a string, found {}", kind(other))),
    }
}

fn optional_strings(object: &Map<String, Value>, field: &str) -> Result<Vec<String>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("field `{field}`: expected a list of strings, found {} in it", kind(other))),
            })
            .collect(),
        Some(other) => Err(format!("field `{field}`: expected a list of strings, found {}", kind(other))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Whether a line's object is in the unpaired layout: it has `completion` and no `chosen`.
pub fn is_unpaired_object(text: &str) -> bool {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => object.contains_key("completion") && !object.contains_key("chosen"),
        _ => false,
    }
}

/// Parses one line of the unpaired layout. `completion` is a string (then `prompt` is one
/// user turn as a string, or a message list) or one assistant message in a list.
pub fn parse_unpaired_line(text: &str) -> Result<RatedRecord, String> {
    let value: Value = serde_json::from_str(text).map_err(not_json)?;
    let Value::Object(object) = value else {
        return Err(format!("expected a JSON object, found {}", kind(&value)));
    };
    let desirable = match object.get("label") {
        Some(Value::Bool(label)) => *label,
        Some(other) => return Err(format!("field `label`: expected true or false, found {}", kind(other))),
        None => return Err("missing field `label` (true for a desirable answer, false for an undesirable one)".into()),
    };
    let messages = messages_field(&object, "prompt")?;
    let completion = match object.get("completion") {
        Some(Value::Array(_)) => completion(&message_list(&object, "completion")?, "completion")?,
        _ => text_field(&object, "completion")?,
    };
    let mut reasons = optional_strings(&object, "reasons")?;
    if let Some(reason) = optional_text(&object, "reason")?
        && !reasons.contains(&reason)
    {
        reasons.push(reason);
    }
    let note = optional_text(&object, "note")?;
    let mut prompt = prompt_meta(&object, messages)?;
    if prompt.language == language::UNDETERMINED {
        prompt.language = language::detect(&format!("{} {completion}", last_user_text(&prompt.messages)));
    }
    Ok(RatedRecord { prompt, completion, desirable, reasons, note })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair_of(line: &str) -> (NewPrompt, String, String) {
        match parse_line(line, None).unwrap().1 {
            ImportRecord::Pair { prompt, chosen, rejected, .. } => (prompt, chosen, rejected),
            other => panic!("not a pair: {other:?}"),
        }
    }

    #[test]
    fn standard_pair_keeps_metadata() {
        let (p, c, r) = pair_of(
            r#"{"id":"x1","prompt":"Wie sperre ich meine Karte?","chosen":"Rufen Sie uns an.","rejected":"Keine Ahnung.","language":"de","domain":"banking","tags":["cards"],"split":"test","source":"s"}"#,
        );
        assert_eq!(p.messages, vec![Message::new("user", "Wie sperre ich meine Karte?")]);
        assert_eq!((c.as_str(), r.as_str()), ("Rufen Sie uns an.", "Keine Ahnung."));
        assert_eq!(p.language, "de");
        assert_eq!(p.split, Some(Split::Test));
        assert_eq!(p.external_id.as_deref(), Some("x1"));
        assert_eq!(p.tags, vec!["cards"]);
    }

    #[test]
    fn conversational_with_implicit_prompt() {
        let (p, c, r) = pair_of(
            r#"{"chosen":[{"role":"user","content":"我的卡丢了"},{"role":"assistant","content":"请立即冻结银行卡。"}],"rejected":[{"role":"user","content":"我的卡丢了"},{"role":"assistant","content":"没关系。"}]}"#,
        );
        assert_eq!(p.messages.len(), 1);
        assert_eq!(p.language, "zh");
        assert_eq!((c.as_str(), r.as_str()), ("请立即冻结银行卡。", "没关系。"));
    }

    #[test]
    fn conversational_with_explicit_prompt() {
        let (p, c, _) = pair_of(
            r#"{"prompt":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hola"}],"chosen":[{"role":"assistant","content":"¡Hola!"}],"rejected":[{"role":"assistant","content":"Hello!"}],"language":"es"}"#,
        );
        assert_eq!(p.messages.len(), 2);
        assert_eq!(c, "¡Hola!");
    }

    #[test]
    fn prompt_list_record() {
        let (format, record) =
            parse_line(r#"{"prompt":"مرحبا، كيف أغير كلمة المرور؟","tags":["login"]}"#, None).unwrap();
        assert_eq!(format, Format::Prompts);
        let ImportRecord::Prompt(p) = record else { panic!() };
        assert_eq!(p.language, "ar");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"prompt":"q","chosen":"a"}"#, "rejected"),
            (r#"{"prompt":"q","chosen":"a","rejected":5}"#, "field `rejected`: expected a string, found a number"),
            (r#"{"prompt":"q","chosen":"","rejected":"b"}"#, "field `chosen` is empty"),
            (r#"{"prompt":"q","chosen":"a","rejected":"b","language":"english"}"#, "field `language`"),
            (r#"{"prompt":"q","chosen":"a","rejected":"b","split":"dev"}"#, "field `split`"),
            (r#"{"prompt":"q","chosen":"a","rejected":"a"}"#, "the same text"),
            (r#"[1,2]"#, "expected a JSON object"),
            (r#"{"prompt":"q","chosen":"a""#, "not valid JSON"),
            (r#"{"prompt":[{"role":"robot","content":"x"}]}"#, "unknown role"),
            (r#"{"text":"x"}"#, "cannot tell the format"),
        ];
        for (line, expected) in cases {
            let err = parse_line(line, None).unwrap_err();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }

    #[test]
    fn forced_format_rejects_other_shapes() {
        let err =
            parse_line(r#"{"prompt":"q","chosen":"a","rejected":"b"}"#, Some(Format::Conversational)).unwrap_err();
        assert!(err.contains("field `chosen`: expected a list of messages"), "{err}");
    }
}
