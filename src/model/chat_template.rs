//! Renders a model's own Jinja chat template with minijinja, configured the way Hugging Face's
//! `apply_chat_template` configures Jinja2 (trim_blocks, lstrip_blocks, loop controls,
//! `raise_exception`, `strftime_now`, Python-style `tojson`, common Python string methods), so
//! the text is byte-identical to transformers' (a fixture test).

use super::error::{ModelError, Result};
use super::info::SpecialTokens;
use super::jinja_compat;
use minijinja::Environment;
use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// A compiled chat template plus the special-token variables HF passes to it.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    specials: Vec<(&'static str, String)>,
    /// The model file and key the template came from, named in every error ("" when unknown).
    origin: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

const NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compiles `source`; an empty source makes `render` fail with advice.
    pub fn new(source: &str, special: &SpecialTokens) -> Result<Self> {
        Self::from_model(source, special, "")
    }

    /// `new` for the template of a model file: `origin` (e.g. `/m/model.gguf (GGUF
    /// tokenizer.chat_template)`) is named in every compile and render error.
    pub fn from_model(source: &str, special: &SpecialTokens, origin: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        jinja_compat::install(&mut env);
        let origin = origin.to_string();
        if !source.trim().is_empty() {
            env.add_template_owned(NAME, strip_generation_tags(source))
                .map_err(|e| template_error(&origin, format!("the template does not compile: {e:#}")))?;
        }
        let specials = [
            ("bos_token", &special.bos),
            ("eos_token", &special.eos),
            ("unk_token", &special.unk),
            ("pad_token", &special.pad),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect();
        Ok(ChatTemplate { env, specials, origin })
    }

    /// The prompt text for `messages`, ending with the assistant header when
    /// `add_generation_prompt` is set.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_object(OrderedMap(vec![
                    ("role".into(), Value::from(m.role.clone())),
                    ("content".into(), Value::from(m.content.clone())),
                ]))
            })
            .collect();
        self.render_with(Value::from(messages), add_generation_prompt, Vec::new())
    }

    /// `render` for messages of any shape (tool calls, reasoning content) and the extra
    /// variables `apply_chat_template` passes through (`tools`, `enable_thinking`,
    /// `date_string`…), e.g. built by [`json_value`].
    pub fn render_with(
        &self,
        messages: Value,
        add_generation_prompt: bool,
        extra: Vec<(String, Value)>,
    ) -> Result<String> {
        let template = self.env.get_template(NAME).map_err(|_| {
            template_error(
                &self.origin,
                "the model has no chat template; use a model whose tokenizer_config.json or GGUF \
                 metadata carries one"
                    .into(),
            )
        })?;
        let mut ctx: Vec<(String, Value)> =
            vec![("messages".into(), messages), ("add_generation_prompt".into(), Value::from(add_generation_prompt))];
        ctx.extend(self.specials.iter().map(|(k, v)| (k.to_string(), Value::from(v.clone()))));
        ctx.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        ctx.extend(extra);
        template.render(Value::from_object(OrderedMap(ctx))).map_err(|e| template_error(&self.origin, format!("{e:#}")))
    }
}

fn template_error(origin: &str, message: String) -> ModelError {
    ModelError::ChatTemplate(if origin.is_empty() { message } else { format!("{origin}: {message}") })
}

/// JSON text as a template value whose objects keep their keys in the text's order, as a
/// Python dict does (`tojson` in a template prints them in that order).
pub fn json_value(text: &str) -> std::result::Result<Value, serde_json::Error> {
    Ok(serde_json::from_str::<OrderedJson>(text)?.0)
}

struct OrderedJson(Value);

impl<'de> serde::Deserialize<'de> for OrderedJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(OrderedJsonVisitor)
    }
}

struct OrderedJsonVisitor;

impl<'de> serde::de::Visitor<'de> for OrderedJsonVisitor {
    type Value = OrderedJson;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<OrderedJson, E> {
        Ok(OrderedJson(Value::from(v)))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<OrderedJson, E> {
        Ok(OrderedJson(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<OrderedJson, E> {
        Ok(OrderedJson(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<OrderedJson, E> {
        Ok(OrderedJson(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<OrderedJson, E> {
        Ok(OrderedJson(Value::from(v)))
    }
    fn visit_unit<E>(self) -> std::result::Result<OrderedJson, E> {
        Ok(OrderedJson(Value::from(())))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<OrderedJson, A::Error> {
        let mut items = Vec::new();
        while let Some(OrderedJson(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(OrderedJson(Value::from(items)))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<OrderedJson, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, OrderedJson(v))) = map.next_entry::<String, OrderedJson>()? {
            entries.push((k, v));
        }
        Ok(OrderedJson(Value::from_object(OrderedMap(entries))))
    }
}

/// HF's `{% generation %}` block (an extension marking assistant text for training masks)
/// renders its body unchanged, so the tags are dropped before minijinja sees them.
fn strip_generation_tags(source: &str) -> String {
    let mut out = source.to_string();
    for tag in ["generation", "endgeneration"] {
        for (open, close) in [("{%", "%}"), ("{%-", "%}"), ("{%", "-%}"), ("{%-", "-%}")] {
            out = out.replace(&format!("{open} {tag} {close}"), "");
        }
    }
    out
}

/// A map that keeps insertion order, like a Python dict (minijinja's own maps sort keys, which
/// would change `tojson(message)` and `message.items()` output).
#[derive(Debug)]
pub struct OrderedMap(pub Vec<(String, Value)>);

impl Object for OrderedMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.iter().map(|(k, _)| Value::from(k.clone())).collect())
    }
}
