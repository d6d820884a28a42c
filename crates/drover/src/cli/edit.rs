//! `drover app|device edit`: the resource as YAML in `$EDITOR` (then `$VISUAL`, else `vi`), sent
//! back with the `resourceVersion` it was read at. Nothing here is interactive beyond the editor
//! itself, so scripts can drive it with `EDITOR=<script>`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::client::Api;
use super::output::{done, line, to_yaml, Format};
use super::resources::put_and_read;
use super::{CliError, Result};

/// What is being edited, for messages: `app app1`, `device dev1`.
pub struct Target<'a> {
    /// API path of the resource.
    pub path: &'a str,
    /// `app app1` or `device dev1 in app app1`.
    pub what: String,
    /// The command that edits it again, e.g. `drover app edit app1`.
    pub again: String,
    /// For the temporary file's name.
    pub file_stem: String,
}

/// The editor command: `$EDITOR`, then `$VISUAL`, else `vi`.
fn editor() -> String {
    ["EDITOR", "VISUAL"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "vi".to_string())
}

/// A file name made of safe characters only (device names may hold anything).
fn safe_stem(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    s
}

/// Creates a new file only the user can read (a device's spec may hold credentials).
fn create_private(text: &str, stem: &str) -> Result<PathBuf> {
    use std::io::Write as _;
    let dir = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = dir.join(format!(
        "drover-edit-{}-{}-{nanos:x}.yaml",
        safe_stem(stem),
        std::process::id()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&path)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

/// Runs the editor on `path` through the shell, so `EDITOR="code --wait"` works.
async fn run_editor(path: &Path) -> Result<()> {
    let editor = editor();
    #[cfg(unix)]
    let mut cmd = {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sh")
            .arg(path);
        c
    };
    #[cfg(not(unix))]
    let mut cmd = {
        let mut parts = editor.split_whitespace();
        let mut c = tokio::process::Command::new(parts.next().unwrap_or("notepad"));
        c.args(parts).arg(path);
        c
    };
    let status = cmd
        .status()
        .await
        .map_err(|e| CliError::Other(format!("cannot start the editor {editor:?}: {e}")))?;
    if !status.success() {
        return Err(CliError::Other(format!(
            "the editor {editor:?} failed ({status}); nothing was sent, your edits are kept in {}",
            path.display()
        )));
    }
    Ok(())
}

/// One line, whatever the parser said.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses the edited text. `Ok(None)`: the file was emptied (the edit is cancelled).
pub fn parse(text: &str) -> std::result::Result<Option<Value>, String> {
    let v: Value = serde_norway::from_str(text).map_err(|e| one_line(&e.to_string()))?;
    match v {
        Value::Null => Ok(None),
        Value::Object(_) => Ok(Some(v)),
        _ => Err("the document is not a mapping (expected metadata:, spec: ...)".into()),
    }
}

fn header(t: &Target<'_>, version: &str) -> String {
    format!(
        "# Edit {what} and save to apply it; an unchanged or empty file sends nothing.\n\
         # It is sent back with resourceVersion {version}: if someone changes {what} meanwhile,\n\
         # nothing is applied. status is computed by the server and ignored.\n",
        what = t.what
    )
}

/// Reads, edits and writes back one resource.
pub async fn edit(api: &Api, format: Format, t: Target<'_>) -> Result<()> {
    let original = api.get(t.path).await?;
    let version = original["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let text = format!("{}{}", header(&t, &version), to_yaml(&original));
    let file = create_private(&text, &t.file_stem)?;
    let kept = |msg: String| format!("{msg}; your edits are kept in {}", file.display());

    run_editor(&file).await?;
    let edited = std::fs::read_to_string(&file)
        .map_err(|e| CliError::Other(format!("cannot read the edited {}: {e}", file.display())))?;
    let unchanged = |file: &Path| {
        let _ = std::fs::remove_file(file);
        done(format, &original, &format!("{}: no changes", t.what))
    };
    if edited == text {
        return unchanged(&file);
    }
    let mut doc = match parse(&edited) {
        Ok(Some(doc)) => doc,
        Ok(None) => {
            let _ = std::fs::remove_file(&file);
            return line(&format!("{}: the file is empty, edit cancelled", t.what));
        }
        Err(e) => {
            return Err(CliError::Other(kept(format!(
                "the edited {} is not valid YAML ({e}); nothing was sent",
                t.what
            ))))
        }
    };
    if doc == original {
        return unchanged(&file);
    }
    // Without its resourceVersion the write would be unconditional: put back the one read.
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.entry("resourceVersion")
            .or_insert_with(|| Value::String(version.clone()));
    }
    match put_and_read(api, t.path, &doc).await {
        Ok(res) => {
            let _ = std::fs::remove_file(&file);
            done(format, &res, &format!("{} edited", t.what))
        }
        Err(CliError::Conflict(m)) => Err(CliError::Conflict(kept(format!(
            "{} was changed by someone else after it was opened in the editor, so nothing was applied ({m}): run `{}` again",
            t.what, t.again
        )))),
        Err(CliError::NotFound(m)) => Err(CliError::NotFound(kept(m))),
        Err(CliError::Usage(m)) => Err(CliError::Usage(kept(m))),
        Err(CliError::Other(m)) => Err(CliError::Other(kept(format!(
            "the server refused the edited {}: {m}",
            t.what
        )))),
        Err(e @ CliError::StdoutClosed) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_round_trips() {
        let v = json!({
            "metadata": {"name": "a", "resourceVersion": "12", "generation": 3,
                "creationTimestamp": "2024-05-01T12:00:00.123456Z",
                "labels": {"x": "1", "yes": "no", "e": "", "t": "true", "n": "-5", "o": "0x1f", "f": "1e5"},
                "annotations": {"k": "multi\nline \"quoted\" # not a comment: really"}},
            "spec": {"alias": ["CN=sensor-1, O=Devices", "a: b", "[x]"], "empty": {}, "none": [],
                "core": {"disabled": false}, "f": 21.5, "nil": null,
                "list": [{"a": 1, "b": [1, 2]}, {"c": {"d": "e"}}]}
        });
        let text = to_yaml(&v);
        assert_eq!(parse(&text).unwrap().unwrap(), v, "{text}");
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
        assert!(parse("metadata: [\n").is_err());
        assert!(parse("- a\n").is_err());
    }
}
