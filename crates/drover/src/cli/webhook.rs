//! `drover webhook`: an application's webhook subscriptions through
//! `/api/registry/v1alpha1/apps/{app}/webhooks` — create, list, show, delete, the state of their
//! delivery and their dead letters.

use serde_json::{json, Map, Value};

use super::client::{items, seg, Api};
use super::grammar::WebhookCmd;
use super::output::{age, done, print_doc, print_list, yes_no, Format};
use super::twin::{object, read_patch};
use super::{CliError, Result, REGISTRY};

fn base(app: &str) -> String {
    format!("{REGISTRY}/apps/{}/webhooks", seg(app))
}

/// A cell: the string, or the JSON of anything else, empty if absent.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A document as printed: YAML for tables, else as asked.
fn show(doc: &Value, format: Format) -> Result<()> {
    match format {
        Format::Table => print_doc(doc, Format::Yaml),
        f => print_doc(doc, f),
    }
}

pub async fn webhook(api: &Api, format: Format, app: &str, cmd: WebhookCmd) -> Result<()> {
    match cmd {
        WebhookCmd::Create {
            name,
            url,
            schema,
            mode,
            types,
            subjects,
            headers,
            secret,
            ca_file,
            validation_handshake,
            max_events,
            max_attempts,
            earliest,
            spec,
            file,
        } => {
            let mut s = match (spec, file) {
                (None, None) => Map::new(),
                (spec, file) => match object("the spec", &read_patch(spec, file)?)? {
                    Value::Object(m) => m,
                    _ => Map::new(),
                },
            };
            let mut set = |k: &str, v: Value| {
                s.insert(k.into(), v);
            };
            if let Some(u) = url {
                set("url", u.into());
            }
            if let Some(v) = schema {
                set("schema", v.into());
            }
            if let Some(v) = mode {
                set("mode", v.into());
            }
            if !types.is_empty() {
                set("types", types.into());
            }
            if !subjects.is_empty() {
                set("subjects", subjects.into());
            }
            if !headers.is_empty() {
                let mut h = Map::new();
                for kv in headers {
                    let Some((k, v)) = kv.split_once('=') else {
                        return Err(CliError::Usage(format!(
                            "--header '{kv}': expected Name=value"
                        )));
                    };
                    h.insert(k.trim().to_string(), v.into());
                }
                set("headers", h.into());
            }
            if let Some(v) = secret {
                set("secret", v.into());
            }
            if let Some(f) = ca_file {
                let pem = std::fs::read_to_string(&f)
                    .map_err(|e| CliError::Other(format!("cannot read {}: {e}", f.display())))?;
                set("caPem", pem.into());
            }
            if validation_handshake {
                set("validationHandshake", true.into());
            }
            if let Some(v) = max_events {
                set("maxEvents", v.into());
            }
            if let Some(v) = max_attempts {
                set("retry", json!({"maxAttempts": v}));
            }
            if earliest {
                set("startAt", "earliest".into());
            }
            let body = json!({"metadata": {"name": name}, "spec": s});
            let created = api.post(&base(app), &body).await?;
            done(format, &created, &format!("webhook {name} created"))
        }
        WebhookCmd::List => {
            let hooks = items(api.get(&base(app)).await?);
            print_list(
                format,
                hooks,
                &["NAME", "URL", "SCHEMA", "SIGNED", "AGE"],
                |h| {
                    vec![
                        cell(&h["metadata"]["name"]),
                        cell(&h["spec"]["url"]),
                        cell(&h["spec"]["schema"]),
                        yes_no(h["signed"].as_bool() == Some(true)),
                        age(h["metadata"]["creationTimestamp"].as_str()),
                    ]
                },
            )
        }
        WebhookCmd::Show { name } => show(
            &api.get(&format!("{}/{}", base(app), seg(&name))).await?,
            format,
        ),
        WebhookCmd::Delete { name } => {
            api.delete(&format!("{}/{}", base(app), seg(&name))).await?;
            done(
                format,
                &json!({"deleted": name}),
                &format!("webhook {name} deleted"),
            )
        }
        WebhookCmd::Status { name } => {
            let s = api
                .get(&format!("{}/{}/status", base(app), seg(&name)))
                .await?;
            match format {
                Format::Table => print_list(
                    format,
                    vec![s],
                    &[
                        "DELIVERED",
                        "FAILED",
                        "RETRYING",
                        "LAG",
                        "VALIDATED",
                        "LAST ERROR",
                    ],
                    |s| {
                        vec![
                            cell(&s["delivered"]),
                            cell(&s["failed"]),
                            cell(&s["retrying"]),
                            cell(&s["lag"]),
                            yes_no(s["validated"].as_bool() == Some(true)),
                            cell(&s["lastError"]),
                        ]
                    },
                ),
                f => print_doc(&s, f),
            }
        }
        WebhookCmd::DeadLetters { name, after, limit } => {
            let mut path = format!("{}/{}/dead-letters?after={after}", base(app), seg(&name));
            if let Some(l) = limit {
                path.push_str(&format!("&limit={l}"));
            }
            let letters = items(api.get(&path).await?);
            print_list(
                format,
                letters,
                &[
                    "SEQ", "OFFSET", "DEVICE", "TYPE", "ATTEMPTS", "AGE", "ERROR",
                ],
                |d| {
                    vec![
                        cell(&d["seq"]),
                        cell(&d["offset"]),
                        cell(&d["device"]),
                        cell(&d["eventType"]),
                        cell(&d["attempts"]),
                        age(d["time"].as_str()),
                        cell(&d["error"]),
                    ]
                },
            )
        }
    }
}
