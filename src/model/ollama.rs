//! An Ollama Modelfile for a GGUF: `FROM` the file, its chat template as an Ollama Go template
//! (`TEMPLATE`), the template's built-in system prompt (`SYSTEM`) and the stop tokens
//! (`PARAMETER stop`), so the model runs in Ollama with the template it was trained on.
//!
//! The Go template is derived from the Jinja one by rendering probe conversations and reading
//! off what each role's message is wrapped in, the text before the first message, the default
//! system prompt and the generation prompt. That covers templates that wrap every message the
//! same way (ChatML as in SmolLM2 and Qwen2, Llama 3, Gemma, Phi-3); before anything is
//! written the result is rendered (`go_template`) and compared with the Jinja rendering on
//! several conversations, and a template it does not reproduce is an error, not a guess.

use super::chat_template::{ChatMessage, ChatTemplate};
use super::error::{ModelError, Result};
use super::gguf_meta::Meta;
use super::go_template::GoTemplate;
use super::info::SpecialTokens;
use std::path::Path;

/// What a Modelfile says about the chat format.
#[derive(Debug, Clone, PartialEq)]
pub struct OllamaChat {
    /// The Go template (`TEMPLATE`).
    pub template: String,
    /// The Jinja template's default system prompt, used when a chat has none (`SYSTEM`).
    pub system: Option<String>,
    /// `PARAMETER stop` values.
    pub stops: Vec<String>,
    /// How many conversations the template was checked on.
    pub checked: usize,
}

const MARK: [&str; 4] =
    ["\u{2a01}sys\u{2a01}", "\u{2a01}user1\u{2a01}", "\u{2a01}asst\u{2a01}", "\u{2a01}user2\u{2a01}"];

fn cannot(why: String) -> ModelError {
    ModelError::ChatTemplate(format!(
        "cannot write this chat template as an Ollama template ({why}); write TEMPLATE in the Modelfile by hand \
         (https://github.com/ollama/ollama/blob/main/docs/template.md)"
    ))
}

fn split_at_mark<'a>(text: &'a str, mark: &str) -> Result<(&'a str, &'a str)> {
    text.split_once(mark).ok_or_else(|| cannot(format!("the message text {mark:?} is not rendered as given")))
}

/// The conversations the derived template is checked on (Ollama adds `SYSTEM` to those without
/// a system message).
pub fn check_conversations() -> Vec<Vec<ChatMessage>> {
    let m = ChatMessage::new;
    vec![
        vec![m("user", "What is the capital of France?")],
        vec![m("system", "You answer in one word."), m("user", "Capital of Italy?")],
        vec![m("user", "Hi"), m("assistant", "Hello! How can I help?"), m("user", "Write a haiku\nabout rain.")],
        vec![
            m("system", "Be brief."),
            m("user", "2+2?"),
            m("assistant", "4"),
            m("user", "Und auf Deutsch? «vier» — ja?"),
        ],
    ]
}

/// Derives the Go template from `chat`. `bos` is the BOS text when the tokenizer adds BOS itself
/// (Ollama's llama.cpp then adds it too, so the template must not).
pub fn derive(chat: &ChatTemplate, bos_added: Option<&str>, stops: Vec<String>) -> Result<OllamaChat> {
    let m = ChatMessage::new;
    let (s, u1, a, u2) = (m("system", MARK[0]), m("user", MARK[1]), m("assistant", MARK[2]), m("user", MARK[3]));
    let r_su = chat.render(&[s.clone(), u1.clone()], false)?;
    let r_su_gen = chat.render(&[s.clone(), u1.clone()], true)?;
    let r_sua = chat.render(&[s.clone(), u1.clone(), a.clone()], false)?;
    let r_suau = chat.render(&[s, u1.clone(), a, u2], false)?;
    let r_u = chat.render(&[u1], false)?;
    let after = |longer: &str, shorter: &str, what: &str| -> Result<String> {
        longer
            .strip_prefix(shorter)
            .map(str::to_string)
            .ok_or_else(|| cannot(format!("{what} changes what comes before it")))
    };
    let generation = after(&r_su_gen, &r_su, "the generation prompt")?;
    let (pre_a, post_a) = split_at_mark(&after(&r_sua, &r_su, "an assistant message")?, MARK[2]).map(own)?;
    let (pre_u, post_u) = split_at_mark(&after(&r_suau, &r_sua, "a second user message")?, MARK[3]).map(own)?;
    let user1 = format!("{pre_u}{}{post_u}", MARK[1]);
    let no_user = |r: &str| {
        r.strip_suffix(&user1)
            .map(str::to_string)
            .ok_or_else(|| cannot("the first user message is wrapped unlike the second".into()))
    };
    let (head_pre_s, post_s) = split_at_mark(&no_user(&r_su)?, MARK[0]).map(own)?;
    let before_user = no_user(&r_u)?;
    let (mut head, pre_s, system) = match before_user.strip_prefix(&head_pre_s).and_then(|x| x.strip_suffix(&post_s)) {
        Some(default) if !before_user.is_empty() => (String::new(), head_pre_s, Some(default.to_string())),
        _ => {
            let pre_s = head_pre_s
                .strip_prefix(&before_user)
                .ok_or_else(|| cannot("the text before a system message is not what starts a chat".into()))?;
            (before_user.clone(), pre_s.to_string(), None)
        }
    };
    if let Some(bos) = bos_added.filter(|b| !b.is_empty())
        && let Some(rest) = head.strip_prefix(bos)
    {
        head = rest.to_string();
    }
    let parts = [&head, &pre_s, &post_s, &pre_u, &post_u, &pre_a, &post_a, &generation];
    if parts.iter().any(|p| p.contains("{{") || p.contains("\"\"\"")) {
        return Err(cannot("its text contains {{ or \"\"\"".into()));
    }
    let wrap = |role: &str, pre: &str, post: &str| format!("eq .Role \"{role}\" }}}}{pre}{{{{ .Content }}}}{post}");
    let template = format!(
        "{head}{{{{ range .Messages }}}}{{{{ if {}{{{{ else if {}{{{{ else if {}{{{{ end }}}}{{{{ end }}}}{generation}",
        wrap("system", &pre_s, &post_s),
        wrap("user", &pre_u, &post_u),
        wrap("assistant", &pre_a, &post_a),
    );
    let out = OllamaChat { template, system, stops, checked: 0 };
    let checked = check(&out, chat, bos_added)?;
    Ok(OllamaChat { checked, ..out })
}

fn own((a, b): (&str, &str)) -> (String, String) {
    (a.to_string(), b.to_string())
}

/// Renders the Go template as Ollama would (SYSTEM put in front of a chat without a system
/// message) and the Jinja template, on `check_conversations`; returns how many agree, or an error
/// at the first that does not.
pub fn check(ollama: &OllamaChat, chat: &ChatTemplate, bos_added: Option<&str>) -> Result<usize> {
    let go = GoTemplate::parse(&ollama.template)?;
    let conversations = check_conversations();
    for (i, conversation) in conversations.iter().enumerate() {
        let mut messages = conversation.clone();
        if let Some(system) = &ollama.system
            && messages.first().is_none_or(|m| m.role != "system")
        {
            messages.insert(0, ChatMessage::new("system", system.clone()));
        }
        let jinja = chat.render(conversation, true)?;
        let jinja = bos_added.and_then(|b| jinja.strip_prefix(b)).unwrap_or(&jinja);
        let rendered = go.render(&messages, "")?;
        if rendered != jinja {
            return Err(cannot(format!(
                "conversation {} renders as {rendered:?}, the Jinja template as {jinja:?}",
                i + 1
            )));
        }
    }
    Ok(conversations.len())
}

/// End-of-turn and end-of-text tokens generation stops at, as Modelfile stop strings: the
/// file's EOS and EOT and the common end markers its vocabulary has.
pub fn stop_strings(special: &SpecialTokens, vocabulary: &[String]) -> Vec<String> {
    let mut stops: Vec<String> = [&special.eos, &special.eot].into_iter().flatten().cloned().collect();
    for token in super::loaded::KNOWN_EOT.iter().chain(super::loaded::END_OF_TEXT.iter()) {
        if vocabulary.iter().any(|t| t == token) && !stops.iter().any(|s| s == token) {
            stops.push(token.to_string());
        }
    }
    stops
}

/// The chat facts of a GGUF file: its template compiled, the stop strings, and the BOS text when
/// the tokenizer adds BOS itself.
pub fn from_gguf(path: &Path) -> Result<OllamaChat> {
    let bad = |reason: String| ModelError::BadGguf { path: path.to_path_buf(), reason };
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).map_err(|e| bad(e.to_string()))?;
    let meta = Meta(content.metadata);
    let tokens = meta.strings("tokenizer.ggml.tokens").unwrap_or_default();
    let special = meta.special_tokens(&tokens);
    let source = meta
        .string("tokenizer.chat_template")
        .ok_or_else(|| bad("it has no tokenizer.chat_template: Ollama needs a TEMPLATE, write one by hand".into()))?;
    let chat = ChatTemplate::new(source, &special)?;
    // llama.cpp adds BOS unless the file says not to (SentencePiece vocabularies default to it).
    let add_bos = match meta.0.get("tokenizer.ggml.add_bos_token") {
        Some(candle_core::quantized::gguf_file::Value::Bool(b)) => *b,
        _ => meta.string("tokenizer.ggml.model") == Some("llama"),
    };
    let bos = special.bos.clone().filter(|_| add_bos);
    derive(&chat, bos.as_deref(), stop_strings(&special, &tokens))
}

/// The Modelfile text for `gguf_name` (a path relative to the Modelfile).
pub fn modelfile(gguf_name: &str, chat: &OllamaChat) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!(
        "# Written by verdict. TEMPLATE is the model's Jinja chat template in Ollama's Go template syntax,\n\
         # checked to render the same text on {} conversations.\n\
         FROM ./{gguf_name}\n\
         TEMPLATE \"\"\"{}\"\"\"\n",
        chat.checked, chat.template
    );
    if let Some(system) = &chat.system {
        out.push_str(&format!("SYSTEM \"\"\"{system}\"\"\"\n"));
    }
    for stop in &chat.stops {
        out.push_str(&format!("PARAMETER stop {}\n", quote(stop)));
    }
    out
}

#[cfg(test)]
#[path = "ollama_tests.rs"]
mod tests;
