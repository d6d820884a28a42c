//! Output: human tables, JSON and YAML (a small emitter for JSON values, no extra dependency), and
//! the one place that writes to stdout and stderr.
//!
//! Every write to stdout goes through [`write_stdout`], which turns a reader that went away
//! (`drover app list | head -1`: `EPIPE`, as Rust ignores `SIGPIPE`) into
//! [`CliError::StdoutClosed`]: the command stops there and exits quietly with 0, as ripgrep does,
//! instead of panicking. Other write failures (a full disk) are errors. Status lines on stderr go
//! through [`note`], which never fails the command.

use std::io::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{CliError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Human-readable table (default).
    #[default]
    Table,
    /// JSON, as the API returns it.
    Json,
    /// YAML.
    Yaml,
}

/// Writes `bytes` to stdout and flushes them; a closed pipe is [`CliError::StdoutClosed`].
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => CliError::StdoutClosed,
            _ => CliError::Other(format!("cannot write the output: {e}")),
        })
}

/// Prints one line on stdout.
pub fn line(text: &str) -> Result<()> {
    write_stdout(format!("{text}\n").as_bytes())
}

/// Prints one line on stderr (status, notes, the error): best effort, as there is nowhere left
/// to report a failure to.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Prints a value as JSON or YAML.
pub fn print_doc(v: &Value, format: Format) -> Result<()> {
    match format {
        Format::Yaml => write_stdout(to_yaml(v).as_bytes()),
        _ => line(&serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())),
    }
}

/// The outcome of a command: `text` as a line for tables, else `doc` as JSON or YAML.
pub fn done(format: Format, doc: &Value, text: &str) -> Result<()> {
    match format {
        Format::Table => line(text),
        f => print_doc(doc, f),
    }
}

/// A list: a table with a `row` for each item under `headers`, or the items as one JSON or YAML
/// array.
pub fn print_list(
    format: Format,
    items: Vec<Value>,
    headers: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> Result<()> {
    match format {
        Format::Table => print_table(headers, &items.iter().map(row).collect::<Vec<_>>()),
        f => print_doc(&Value::Array(items), f),
    }
}

/// Prints rows under headers, columns padded to their widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut table = String::new();
    let mut line = |cells: &[String]| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == n {
                s.push_str(c);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                s.push_str(&format!("{c:<w$}   "));
            }
        }
        table.push_str(s.trim_end());
        table.push('\n');
    };
    line(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        line(r);
    }
    write_stdout(table.as_bytes())
}

/// Yes or no, for a table cell.
pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// `3m`, `5h`, `2d` since an RFC 3339 timestamp; `<unknown>` if absent.
pub fn age(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else {
        return "<unknown>".into();
    };
    let secs = (Utc::now() - t.with_timezone(&Utc)).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 120 * 60 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// `k=v,k2=v2` from a labels object; `<none>` when empty.
pub fn labels(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) if !s.is_empty() => format!("{k}={s}"),
                Some(_) => k.clone(),
                None => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

/// A list of strings as `a,b`; `<none>` when empty.
pub fn list(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => emit(v, 0, &mut out),
        Value::Array(a) if !a.is_empty() => emit(v, 0, &mut out),
        _ => {
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
    out
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn emit(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                out.push_str(&pad);
                out.push_str(&string(k));
                out.push(':');
                if is_block(val) {
                    out.push('\n');
                    let child = if val.is_array() { indent } else { indent + 2 };
                    emit(val, child, out);
                } else {
                    out.push(' ');
                    out.push_str(&scalar(val));
                    out.push('\n');
                }
            }
        }
        Value::Array(a) => {
            for item in a {
                if is_block(item) {
                    let mut sub = String::new();
                    emit(item, indent + 2, &mut sub);
                    // Turn the first line's indentation into the sequence entry marker.
                    let rest = &sub[(indent + 2).min(sub.len())..];
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(rest);
                } else {
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&scalar(item));
                    out.push('\n');
                }
            }
        }
        _ => {
            out.push_str(&pad);
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// A string, plain when that is unambiguous, else double-quoted (JSON escapes are valid YAML).
fn string(s: &str) -> String {
    let reserved = matches!(
        s.to_ascii_lowercase().as_str(),
        "" | "~" | "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
    );
    let numeric = s.parse::<f64>().is_ok() || s.starts_with(['.', '+', '-', '0'].as_slice());
    let special = s.contains(": ")
        || s.contains(" #")
        || s.ends_with(':')
        || s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`= ".contains(c))
        || s.ends_with(' ')
        || s.chars().any(|c| c.is_control() || "\"',[]{}".contains(c));
    if reserved || numeric || special {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_nested() {
        let v = json!({"metadata": {"labels": {"x": "1"}, "name": "a"}, "spec": {"alias": ["p", "q"], "e": {}, "list": [{"a": 1, "b": true}]}});
        assert_eq!(
            to_yaml(&v),
            "metadata:\n  labels:\n    x: \"1\"\n  name: a\nspec:\n  alias:\n  - p\n  - q\n  e: {}\n  list:\n  - a: 1\n    b: true\n"
        );
    }
}
