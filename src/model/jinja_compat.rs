//! The Python-side helpers Hugging Face adds to its Jinja2 environment, and the Python methods
//! chat templates call on strings and dicts (`.strip()`, `.startswith()`, `.items()`…), which
//! Jinja2 gets for free from Python and minijinja does not have.

use super::pyjson::{JsonStyle, dumps, python_str};
use minijinja::value::{Kwargs, Value, ValueKind, from_args};
use minijinja::{Environment, Error, ErrorKind, State};

pub fn install(env: &mut Environment<'static>) {
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |fmt: String| -> String { strftime_utc(&fmt, now_unix()) });
    env.add_filter("tojson", tojson);
    env.set_unknown_method_callback(python_method);
    // Printed values follow Python's str(): True/False/None, ['a', 'b'].
    env.set_formatter(|out, state, value| match python_str(value) {
        Some(s) => out.write_str(&s).map_err(Error::from),
        None => minijinja::escape_formatter(out, state, value),
    });
}

/// `tojson(x, ensure_ascii=False, indent=None, sort_keys=False)` as HF defines it.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or("").to_string()),
        Some(v) if v.is_none() => None,
        Some(v) => Some(" ".repeat(usize::try_from(v)?)),
    };
    let style = JsonStyle {
        indent,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    let _ = kwargs.get::<Option<Value>>("separators")?;
    kwargs.assert_all_used()?;
    Ok(Value::from(dumps(value, &style)?))
}

fn python_method(state: &State, value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        return string_method(s, method, args);
    }
    if value.kind() == ValueKind::Map {
        return match method {
            "items" => state.apply_filter("items", std::slice::from_ref(value)),
            "keys" => Ok(Value::from(value.try_iter()?.collect::<Vec<_>>())),
            "values" => Ok(Value::from(value.try_iter()?.map(|k| value.get_item(&k)).collect::<Result<Vec<_>, _>>()?)),
            "get" => {
                let (key, default): (Value, Option<Value>) = from_args(args)?;
                let v = value.get_item(&key)?;
                Ok(if v.is_undefined() { default.unwrap_or(Value::from(())) } else { v })
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        };
    }
    Err(Error::from(ErrorKind::UnknownMethod))
}

fn string_method(s: &str, method: &str, args: &[Value]) -> Result<Value, Error> {
    let chars = |a: Option<String>| move |c: char| a.as_deref().map_or(c.is_whitespace(), |set| set.contains(c));
    Ok(match method {
        "strip" => Value::from(s.trim_matches(chars(from_args::<(Option<String>,)>(args)?.0))),
        "lstrip" => Value::from(s.trim_start_matches(chars(from_args::<(Option<String>,)>(args)?.0))),
        "rstrip" => Value::from(s.trim_end_matches(chars(from_args::<(Option<String>,)>(args)?.0))),
        "upper" => Value::from(s.to_uppercase()),
        "lower" => Value::from(s.to_lowercase()),
        "title" => Value::from(title_case(s)),
        "capitalize" => {
            let mut cs = s.chars();
            Value::from(
                cs.next()
                    .map(|c| c.to_uppercase().chain(cs.as_str().to_lowercase().chars()).collect::<String>())
                    .unwrap_or_default(),
            )
        }
        "startswith" | "endswith" => {
            let (pat,): (Value,) = from_args(args)?;
            let pats: Vec<String> = match pat.kind() {
                ValueKind::Seq => pat.try_iter()?.map(|p| p.to_string()).collect(),
                _ => vec![pat.to_string()],
            };
            let hit = pats
                .iter()
                .any(|p| if method == "startswith" { s.starts_with(p.as_str()) } else { s.ends_with(p.as_str()) });
            Value::from(hit)
        }
        "split" => {
            let (sep, maxsplit): (Option<String>, Option<i64>) = from_args(args)?;
            let max = maxsplit.filter(|m| *m >= 0).map(|m| m as usize + 1).unwrap_or(usize::MAX);
            let parts: Vec<Value> = match sep {
                Some(sep) => s.splitn(max, sep.as_str()).map(Value::from).collect(),
                None => s.split_whitespace().map(Value::from).collect(),
            };
            Value::from(parts)
        }
        "replace" => {
            let (old, new, count): (String, String, Option<i64>) = from_args(args)?;
            match count.filter(|c| *c >= 0) {
                Some(n) => Value::from(s.replacen(old.as_str(), &new, n as usize)),
                None => Value::from(s.replace(old.as_str(), &new)),
            }
        }
        "find" => {
            let (needle,): (String,) = from_args(args)?;
            Value::from(s.find(needle.as_str()).map(|b| s[..b].chars().count() as i64).unwrap_or(-1))
        }
        _ => return Err(Error::from(ErrorKind::UnknownMethod)),
    })
}

fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_alpha = false;
    for c in s.chars() {
        if prev_alpha {
            out.extend(c.to_lowercase())
        } else {
            out.extend(c.to_uppercase())
        }
        prev_alpha = c.is_alphabetic();
    }
    out
}

/// The time `strftime_now` prints: `SOURCE_DATE_EPOCH` (seconds, the reproducible-builds
/// convention) when it is set, else the clock. Llama 3's template prints today's date into every
/// system turn, so the same pair tokenizes differently from one day to the next; a fixed epoch
/// makes renders, token ids and log-probs repeatable (tests pin it per thread).
fn now_unix() -> i64 {
    #[cfg(test)]
    if let Some(fixed) = FIXED_NOW.with(|f| f.get()) {
        return fixed;
    }
    if let Some(epoch) = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok()) {
        return epoch;
    }
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
thread_local! {
    static FIXED_NOW: std::cell::Cell<Option<i64>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with `strftime_now` printing `unix` on this thread (tests run in parallel threads,
/// where setting `SOURCE_DATE_EPOCH` would race).
#[cfg(test)]
pub fn with_fixed_now<R>(unix: i64, f: impl FnOnce() -> R) -> R {
    let before = FIXED_NOW.with(|c| c.replace(Some(unix)));
    let out = f();
    FIXED_NOW.with(|c| c.set(before));
    out
}

/// `datetime.now().strftime(fmt)` for the codes chat templates use, in UTC (verdict has no
/// time-zone database; templates only use it to print today's date).
pub fn strftime_utc(fmt: &str, unix: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let month = MONTHS[(m - 1) as usize];
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('-') => match it.next() {
                Some('d') => out.push_str(&d.to_string()),
                Some('m') => out.push_str(&m.to_string()),
                Some(o) => {
                    out.push_str("%-");
                    out.push(o)
                }
                None => out.push_str("%-"),
            },
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('B') => out.push_str(month),
            Some('b') => out.push_str(&month[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o)
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Llama 3's template line, rendered on a pinned day: what makes fixture log-probs repeat.
    #[test]
    fn strftime_now_prints_the_pinned_day_and_the_clock_otherwise() {
        let mut env = Environment::new();
        install(&mut env);
        let render = || env.render_str(r#"Today Date: {{ strftime_now("%d %b %Y") }}"#, ()).unwrap();
        assert_eq!(with_fixed_now(1_767_225_600, render), "Today Date: 01 Jan 2026");
        let today = strftime_utc("%d %b %Y", now_unix());
        assert_eq!(render(), format!("Today Date: {today}"));
    }
}
