//! A small renderer for the part of Go's `text/template` that Ollama chat templates use, so
//! verdict can check a Modelfile `TEMPLATE` against the model's Jinja chat template before
//! writing it: text, `{{ .Content }}`/`{{ .Role }}`/`{{ .System }}`/`{{ $.System }}`,
//! `{{ range .Messages }}`, `{{ if }}`/`{{ else if }}`/`{{ else }}`/`{{ end }}` on a field or on
//! `eq`/`ne` with a string, comments, and the `{{-`/`-}}` whitespace trims.
//!
//! The data is Ollama's: the messages (a Modelfile `SYSTEM` already put in front as a system
//! message, as Ollama does when a chat has none) and `.System`.

use super::chat_template::ChatMessage;
use super::error::{ModelError, Result};

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Field { top: bool, name: String },
    Range(Vec<Node>),
    If(Vec<(Cond, Vec<Node>)>, Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    Field { top: bool, name: String },
    Eq { top: bool, name: String, value: String, equal: bool },
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct GoTemplate(Vec<Node>);

fn bad(msg: String) -> ModelError {
    ModelError::ChatTemplate(format!("Go template: {msg}"))
}

/// `.Name` or `$.Name` → (refers to the top level, Name).
fn field(token: &str) -> Result<(bool, String)> {
    let (top, rest) = match token.strip_prefix("$.") {
        Some(rest) => (true, rest),
        None => (false, token.strip_prefix('.').ok_or_else(|| bad(format!("expected a field, got {token:?}")))?),
    };
    Ok((top, rest.to_string()))
}

fn parse_cond(text: &str) -> Result<Cond> {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        [f] => field(f).map(|(top, name)| Cond::Field { top, name }),
        [op @ ("eq" | "ne"), f, v] if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') => {
            let (top, name) = field(f)?;
            Ok(Cond::Eq { top, name, value: v[1..v.len() - 1].to_string(), equal: *op == "eq" })
        }
        _ => Err(bad(format!("unsupported condition {text:?}"))),
    }
}

/// Splits the source into text and actions, applying the trim markers.
fn lex(source: &str) -> Result<Vec<(bool, String)>> {
    let mut out: Vec<(bool, String)> = Vec::new();
    let mut rest = source;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_string();
        if trim_next {
            text = text.trim_start().to_string();
        }
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| bad("an action is not closed with }}".into()))?;
        let mut action = &after[..end];
        if action.starts_with("- ") || action.starts_with("-\n") || action == "-" {
            text = text.trim_end().to_string();
            action = &action[1..];
        }
        trim_next = action.ends_with(" -") || action.ends_with("\n-");
        if trim_next {
            action = &action[..action.len() - 1];
        }
        out.push((false, text));
        out.push((true, action.trim().to_string()));
        rest = &after[end + 2..];
    }
    out.push((false, if trim_next { rest.trim_start().to_string() } else { rest.to_string() }));
    Ok(out.into_iter().filter(|(action, s)| *action || !s.is_empty()).collect())
}

/// Parses nodes until `{{ end }}`/`{{ else … }}` (returned) or the end of input.
fn parse_block(
    tokens: &mut std::iter::Peekable<std::vec::IntoIter<(bool, String)>>,
) -> Result<(Vec<Node>, Option<String>)> {
    let mut nodes = Vec::new();
    while let Some((is_action, text)) = tokens.next() {
        if !is_action {
            nodes.push(Node::Text(text));
            continue;
        }
        if text.starts_with("/*") {
            continue;
        }
        if text == "end" || text == "else" || text.starts_with("else ") {
            return Ok((nodes, Some(text)));
        }
        if let Some(what) = text.strip_prefix("range ") {
            if what.trim() != ".Messages" && what.trim() != "$.Messages" {
                return Err(bad(format!("unsupported range over {what:?}")));
            }
            let (body, end) = parse_block(tokens)?;
            if end.as_deref() != Some("end") {
                return Err(bad("range without end".into()));
            }
            nodes.push(Node::Range(body));
        } else if let Some(cond) = text.strip_prefix("if ") {
            let mut branches = vec![];
            let mut cond = parse_cond(cond)?;
            let otherwise = loop {
                let (body, end) = parse_block(tokens)?;
                branches.push((cond, body));
                match end.as_deref() {
                    Some("end") => break Vec::new(),
                    Some("else") => {
                        let (body, end) = parse_block(tokens)?;
                        if end.as_deref() != Some("end") {
                            return Err(bad("else without end".into()));
                        }
                        break body;
                    }
                    Some(e) if e.starts_with("else if ") => cond = parse_cond(&e["else if ".len()..])?,
                    _ => return Err(bad("if without end".into())),
                }
            };
            nodes.push(Node::If(branches, otherwise));
        } else {
            let (top, name) = field(&text)?;
            nodes.push(Node::Field { top, name });
        }
    }
    Ok((nodes, None))
}

impl GoTemplate {
    pub fn parse(source: &str) -> Result<Self> {
        let mut tokens = lex(source)?.into_iter().peekable();
        match parse_block(&mut tokens)? {
            (nodes, None) => Ok(GoTemplate(nodes)),
            (_, Some(extra)) => Err(bad(format!("{{{{ {extra} }}}} without an opening if/range"))),
        }
    }

    /// Renders for `messages` (with any system message already in front) and `.System`.
    pub fn render(&self, messages: &[ChatMessage], system: &str) -> Result<String> {
        let mut out = String::new();
        render(&self.0, &Scope { messages, system, message: None }, &mut out)?;
        Ok(out)
    }
}

struct Scope<'a> {
    messages: &'a [ChatMessage],
    system: &'a str,
    message: Option<&'a ChatMessage>,
}

impl Scope<'_> {
    fn get(&self, top: bool, name: &str) -> Result<String> {
        match (top, self.message, name) {
            (false, Some(m), "Role") => Ok(m.role.clone()),
            (false, Some(m), "Content") => Ok(m.content.clone()),
            (_, _, "System") if top || self.message.is_none() => Ok(self.system.to_string()),
            _ => Err(bad(format!("unknown field .{name} here"))),
        }
    }

    fn test(&self, cond: &Cond) -> Result<bool> {
        Ok(match cond {
            Cond::Field { top, name } if name == "Messages" && (*top || self.message.is_none()) => {
                !self.messages.is_empty()
            }
            Cond::Field { top, name } => !self.get(*top, name)?.is_empty(),
            Cond::Eq { top, name, value, equal } => (self.get(*top, name)? == *value) == *equal,
        })
    }
}

fn render(nodes: &[Node], scope: &Scope, out: &mut String) -> Result<()> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Field { top, name } => out.push_str(&scope.get(*top, name)?),
            Node::Range(body) => {
                for m in scope.messages {
                    render(body, &Scope { message: Some(m), ..*scope }, out)?;
                }
            }
            Node::If(branches, otherwise) => {
                let mut taken = None;
                for (cond, body) in branches {
                    if scope.test(cond)? {
                        taken = Some(body);
                        break;
                    }
                }
                render(taken.unwrap_or(otherwise), scope, out)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_ranges_conditions_fields_and_trims() {
        let t = GoTemplate::parse(
            "{{- /* c */ -}}\n{{ if .System }}S={{ .System }};{{ end }}{{ range .Messages }}{{ if eq .Role \"user\" }}U:{{ .Content }}\n{{- else if ne .Role \"system\" }}A:{{ .Content }}|{{ $.System }}{{ else }}X{{ end }}\n{{ end }}",
        )
        .unwrap();
        let msgs =
            [ChatMessage::new("system", "s"), ChatMessage::new("user", "hi"), ChatMessage::new("assistant", "yo")];
        assert_eq!(t.render(&msgs, "sys").unwrap(), "S=sys;X\nU:hi\nA:yo|sys\n");
        assert_eq!(t.render(&msgs[1..], "").unwrap(), "U:hi\nA:yo|\n");
        assert!(GoTemplate::parse("{{ if .System }}").is_err());
        assert!(GoTemplate::parse("{{ range .Tools }}{{ end }}").is_err());
    }
}
