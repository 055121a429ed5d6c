//! Python's `json.dumps` output for minijinja values, so `tojson` in chat templates renders the
//! same bytes as Hugging Face's (which calls `json.dumps(x, ensure_ascii=False)`): `", "` and
//! `": "` separators, Python float formatting, and no HTML escaping (minijinja's built-in
//! `tojson` is compact and escapes `<`, `>`, `&`, `'`).

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// Formatting options, as `json.dumps` takes them.
pub struct JsonStyle {
    pub indent: Option<String>,
    pub sort_keys: bool,
    pub ensure_ascii: bool,
}

pub fn dumps(value: &Value, style: &JsonStyle) -> Result<String, Error> {
    let mut out = String::new();
    write_value(value, style, 0, &mut out)?;
    Ok(out)
}

fn write_value(v: &Value, style: &JsonStyle, level: usize, out: &mut String) -> Result<(), Error> {
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Undefined => {
            return Err(Error::new(ErrorKind::UndefinedError, "tojson of an undefined value"));
        }
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                out.push_str(&v.to_string());
            } else {
                out.push_str(&python_float(f64::try_from(v.clone())?));
            }
        }
        ValueKind::String => write_str(v.as_str().unwrap_or(""), style.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            write_container(out, style, level, '[', ']', &items, |item, out| write_value(item, style, level + 1, out))?;
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if style.sort_keys {
                keys.sort();
            }
            write_container(out, style, level, '{', '}', &keys, |key, out| {
                write_str(&key.to_string(), style.ensure_ascii, out);
                out.push_str(": ");
                write_value(&v.get_item(key)?, style, level + 1, out)
            })?;
        }
        _ => write_str(&v.to_string(), style.ensure_ascii, out),
    }
    Ok(())
}

fn write_container(
    out: &mut String,
    style: &JsonStyle,
    level: usize,
    open: char,
    close: char,
    items: &[Value],
    mut each: impl FnMut(&Value, &mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        match &style.indent {
            // With an indent Python switches the item separator to "," (no trailing space).
            Some(ind) => {
                if i > 0 {
                    out.push(',');
                }
                out.push('\n');
                out.push_str(&ind.repeat(level + 1));
            }
            None if i > 0 => out.push_str(", "),
            None => {}
        }
        each(item, out)?;
    }
    if let Some(ind) = &style.indent {
        out.push('\n');
        out.push_str(&ind.repeat(level));
    }
    out.push(close);
    Ok(())
}

fn write_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{:04x}", unit));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `str(value)` for what Jinja2 prints differently from minijinja: `True`/`False`,
/// `None`, and lists/dicts in repr form (`['a', 'b']`). `None` for everything else.
pub fn python_str(v: &Value) -> Option<String> {
    match v.kind() {
        ValueKind::Bool | ValueKind::None | ValueKind::Seq | ValueKind::Map => Some(python_repr(v)),
        _ => None,
    }
}

fn python_repr(v: &Value) -> String {
    match v.kind() {
        ValueKind::Bool => {
            if v.is_true() {
                "True".into()
            } else {
                "False".into()
            }
        }
        ValueKind::None => "None".into(),
        ValueKind::Number if !v.is_integer() => {
            f64::try_from(v.clone()).map(python_float).unwrap_or_else(|_| v.to_string())
        }
        ValueKind::String => {
            let s = v.as_str().unwrap_or("");
            let q = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
            let mut out = String::from(q);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == q => {
                        out.push('\\');
                        out.push(c)
                    }
                    c => out.push(c),
                }
            }
            out.push(q);
            out
        }
        ValueKind::Seq => {
            let items: Vec<String> = v.try_iter().map(|it| it.map(|x| python_repr(&x)).collect()).unwrap_or_default();
            format!("[{}]", items.join(", "))
        }
        ValueKind::Map => {
            let items: Vec<String> = v
                .try_iter()
                .map(|it| {
                    it.map(|k| format!("{}: {}", python_repr(&k), python_repr(&v.get_item(&k).unwrap_or_default())))
                        .collect()
                })
                .unwrap_or_default();
            format!("{{{}}}", items.join(", "))
        }
        _ => v.to_string(),
    }
}

/// Python's `repr(float)`: shortest round-trip digits, `1.0` for integral values, exponent form
/// (`1e-05`, `1e+16`) outside [1e-4, 1e16).
pub fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{f:e}"); // e.g. "1.5e-7"
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let s = format!("{f}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_format_like_python() {
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.5), "0.5");
        assert_eq!(python_float(1e-5), "1e-05");
        assert_eq!(python_float(1.5e20), "1.5e+20");
        assert_eq!(python_float(123.25), "123.25");
    }

    #[test]
    fn containers_use_python_separators() {
        let v = Value::from_serialize(serde_json::json!({"a": [1, 2.5, "x\"<é>"], "b": null}));
        let plain = JsonStyle { indent: None, sort_keys: false, ensure_ascii: false };
        assert_eq!(dumps(&v, &plain).unwrap(), r#"{"a": [1, 2.5, "x\"<é>"], "b": null}"#);
        let indented = JsonStyle { indent: Some("  ".into()), sort_keys: false, ensure_ascii: true };
        assert_eq!(
            dumps(&v, &indented).unwrap(),
            "{\n  \"a\": [\n    1,\n    2.5,\n    \"x\\\"<\\u00e9>\"\n  ],\n  \"b\": null\n}"
        );
    }
}
