//! Backend-independent rules of the registry: building new resources, applying updates, computed
//! status, password hashing on write. Stores call these inside their transactions.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use drover_model::resource::changed_paths;
use drover_model::spec::{self, Credential, Password};
use drover_model::{Kind, Metadata, Resource, ResourceInput};
use serde_json::{json, Map, Value};

use crate::{Preconditions, RegistryError, Result, FINALIZER_HAS_DEVICES};

/// Checks what does not need the store: names, labels, known spec sections.
pub fn validate_input(
    kind: Kind,
    input: &ResourceInput,
    path_name: Option<&str>,
    app: Option<&str>,
) -> Result<()> {
    let name = input.name()?;
    match kind {
        Kind::Application => drover_model::names::validate_app_name(name)?,
        Kind::Device => drover_model::names::validate_device_name(name)?,
    }
    if let Some(p) = path_name {
        if p != name {
            return Err(RegistryError::BadRequest(format!(
                "metadata.name '{name}' does not match the name in the path '{p}'"
            )));
        }
    }
    if let (Some(app), Some(given)) = (app, input.metadata.application.as_deref()) {
        if given != app {
            return Err(RegistryError::BadRequest(format!(
                "metadata.application '{given}' does not match the application in the path '{app}'"
            )));
        }
    }
    input.validate(kind)?;
    Ok(())
}

/// A new resource from a create request. resourceVersion is set by the store.
pub fn new_resource(input: ResourceInput, app: Option<&str>, now: DateTime<Utc>) -> Resource {
    let m = input.metadata;
    let mut finalizers = m.finalizers;
    finalizers.retain(|f| f != FINALIZER_HAS_DEVICES);
    dedup(&mut finalizers);
    Resource {
        metadata: Metadata {
            name: m.name.unwrap_or_default(),
            application: app.map(str::to_string),
            uid: uuid::Uuid::new_v4().to_string(),
            creation_timestamp: now,
            generation: 1,
            resource_version: String::new(),
            deletion_timestamp: None,
            finalizers,
            labels: m.labels,
            annotations: m.annotations,
        },
        spec: input.spec,
        status: input.status,
    }
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|f| seen.insert(f.clone()));
}

/// Checks `uid` / `resourceVersion` preconditions against the stored resource.
pub fn check_preconditions(stored: &Resource, uid: Option<&str>, rv: Option<&str>) -> Result<()> {
    if let Some(uid) = uid {
        if uid != stored.metadata.uid {
            return Err(RegistryError::OptimisticLockFailed(format!(
                "uid '{uid}' does not match the stored resource's uid '{}'",
                stored.metadata.uid
            )));
        }
    }
    if let Some(rv) = rv {
        if rv != stored.metadata.resource_version {
            return Err(RegistryError::OptimisticLockFailed(format!(
                "resourceVersion '{rv}' is outdated: the stored resource is at '{}'; read it again and retry",
                stored.metadata.resource_version
            )));
        }
    }
    Ok(())
}

pub fn check_delete_preconditions(stored: &Resource, pre: &Preconditions) -> Result<()> {
    check_preconditions(stored, pre.uid.as_deref(), pre.resource_version.as_deref())
}

/// The stored resource after an update request, and the paths that changed (empty: a no-op).
/// `server_finalizers` are finalizers only the server manages (kept as they are).
pub fn apply_update(old: &Resource, input: ResourceInput) -> Result<(Resource, Vec<String>)> {
    let m = &input.metadata;
    check_preconditions(old, m.uid.as_deref(), m.resource_version.as_deref())?;
    let mut finalizers: Vec<String> = input
        .metadata
        .finalizers
        .iter()
        .filter(|f| f.as_str() != FINALIZER_HAS_DEVICES)
        .cloned()
        .collect();
    dedup(&mut finalizers);
    if old
        .metadata
        .finalizers
        .iter()
        .any(|f| f == FINALIZER_HAS_DEVICES)
    {
        finalizers.push(FINALIZER_HAS_DEVICES.to_string());
    }
    if old.is_deleting() {
        if let Some(added) = finalizers
            .iter()
            .find(|f| !old.metadata.finalizers.contains(f))
        {
            return Err(RegistryError::BadRequest(format!(
                "cannot add finalizer '{added}': the resource is being deleted"
            )));
        }
    }
    let mut new = old.clone();
    new.metadata.finalizers = finalizers;
    new.metadata.labels = input.metadata.labels;
    new.metadata.annotations = input.metadata.annotations;
    new.spec = input.spec;
    new.status = input.status;
    if new.spec != old.spec {
        new.metadata.generation += 1;
    }
    let paths = changed_paths(old, &new);
    Ok((new, paths))
}

/// Fills `status.trustAnchors` of an application from `spec.trustAnchors`.
pub fn compute_app_status(app: &mut Resource) {
    if !app.spec.contains_key("trustAnchors") {
        app.status.remove("trustAnchors");
        return;
    }
    let anchors: Vec<Value> = spec::trust_anchors(&app.spec)
        .iter()
        .map(|cert| match drover_auth::x509::parse_trust_anchor(cert) {
            // As Drogue Cloud: `certificate` echoes the spec entry (base64 of the PEM text),
            // times in whole seconds.
            Ok(info) => json!({"valid": {
                "subject": info.subject,
                "certificate": cert,
                "notBefore": info.not_before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "notAfter": info.not_after.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }}),
            Err(e) => json!({"invalid": {"error": e.kind(), "message": e.to_string()}}),
        })
        .collect();
    app.status
        .insert("trustAnchors".to_string(), json!({ "anchors": anchors }));
}

/// Subject DNs of an application's valid trust anchors (from its computed status).
pub fn trust_anchor_subjects(app: &Resource) -> Vec<String> {
    app.status
        .get("trustAnchors")
        .and_then(|t| t.get("anchors"))
        .and_then(Value::as_array)
        .map(|anchors| {
            anchors
                .iter()
                .filter_map(|a| a.get("valid")?.get("subject")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Hashes plain passwords (sha512-crypt), reusing a previous hash of `old` when it verifies the
/// same plain password, so that re-sending a password is a no-op. Runs on a blocking thread.
pub async fn hash_passwords(
    spec: Map<String, Value>,
    old: Option<Map<String, Value>>,
) -> Result<Map<String, Value>> {
    let needs = ["authentication", "credentials"].iter().any(|s| {
        spec.get(*s).is_some_and(|v| {
            serde_json::from_value::<spec::Authentication>(v.clone())
                .map(|a| {
                    a.credentials.iter().any(|c| {
                        matches!(
                            c,
                            Credential::Pass(Password::Plain(_))
                                | Credential::User {
                                    password: Password::Plain(_),
                                    ..
                                }
                        )
                    })
                })
                .unwrap_or(false)
        })
    });
    if !needs {
        return Ok(spec);
    }
    tokio::task::spawn_blocking(move || {
        let mut spec = spec;
        let previous: Vec<Password> = old
            .as_ref()
            .map(|o| {
                let mut v = Vec::new();
                for s in ["authentication", "credentials"] {
                    if let Some(a) = o.get(s).and_then(|v| {
                        serde_json::from_value::<spec::Authentication>(v.clone()).ok()
                    }) {
                        for c in a.credentials {
                            match c {
                                Credential::Pass(p) | Credential::User { password: p, .. } => {
                                    v.push(p)
                                }
                                _ => {}
                            }
                        }
                    }
                }
                v
            })
            .unwrap_or_default();
        let mut memo: HashMap<String, Password> = HashMap::new();
        spec::hash_plain_passwords(&mut spec, &mut |plain| {
            if let Some(p) = memo.get(plain) {
                return p.clone();
            }
            let reused = previous.iter().find(|p| match p {
                Password::Sha512(h) => drover_auth::password::verify_sha512_crypt(plain, h),
                _ => false,
            });
            let p = reused.cloned().unwrap_or_else(|| {
                Password::Sha512(drover_auth::password::hash_sha512_crypt(plain))
            });
            memo.insert(plain.to_string(), p.clone());
            p
        })?;
        Ok(spec)
    })
    .await
    .map_err(|e| RegistryError::Internal(format!("password hashing failed: {e}")))?
}

/// The names a device is found by within its app: (kind, value).
pub fn device_names(dev: &Resource) -> Vec<(&'static str, String)> {
    let mut v = vec![("id", dev.metadata.name.clone())];
    for a in spec::aliases(&dev.spec) {
        if a != dev.metadata.name && !v.iter().any(|(_, x)| *x == a) {
            v.push(("id", a));
        }
    }
    let mut users: Vec<String> = spec::unique_usernames(&dev.spec);
    users.sort();
    users.dedup();
    v.extend(users.into_iter().map(|u| ("username", u)));
    v
}

/// Pagination of an in-memory, already filtered and ordered list.
/// What a reader (who may not change the device) sees of a secret.
pub const REDACTED: &str = "<redacted>";

/// Replaces the symmetric keys of a device's `sas` credentials by [`REDACTED`]: they are the
/// device's secret itself (not a hash of it), so only administrators of the application see
/// them.
pub fn redact_keys(dev: &mut Resource) {
    for section in ["authentication", "credentials"] {
        let creds = dev
            .spec
            .get_mut(section)
            .and_then(|s| s.get_mut("credentials"))
            .and_then(|c| c.as_array_mut());
        for c in creds.into_iter().flatten() {
            if let Some(keys) = c.get_mut("sas").and_then(|k| k.as_object_mut()) {
                for v in keys.values_mut() {
                    *v = serde_json::Value::String(REDACTED.into());
                }
            }
        }
    }
}

/// Replaces the secrets of a device's spec — passwords and password hashes, pre-shared keys,
/// SAS keys, the header values of external command endpoints (which may carry credentials) — by
/// [`REDACTED`], keeping their shape (a reader sees that a `pass` credential hashed with
/// SHA-512 exists, not the hash).
pub fn redact_secrets(dev: &mut Resource) {
    redact_keys(dev);
    fn hide(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(tagged) => {
                for inner in tagged.values_mut() {
                    *inner = serde_json::Value::String(REDACTED.into());
                }
            }
            other => *other = serde_json::Value::String(REDACTED.into()),
        }
    }
    for section in ["authentication", "credentials"] {
        let Some(creds) = dev
            .spec
            .get_mut(section)
            .and_then(|s| s.get_mut("credentials"))
            .and_then(|c| c.as_array_mut())
        else {
            continue;
        };
        for c in creds {
            if let Some(p) = c.get_mut("pass") {
                hide(p);
            }
            if let Some(p) = c.get_mut("user").and_then(|u| u.get_mut("password")) {
                hide(p);
            }
            if let Some(k) = c.get_mut("psk").and_then(|u| u.get_mut("key")) {
                hide(k);
            }
        }
    }
    let endpoints = dev
        .spec
        .get_mut("commands")
        .and_then(|c| c.get_mut("commands"))
        .and_then(|c| c.as_array_mut());
    for e in endpoints.into_iter().flatten() {
        let headers = e
            .get_mut("external")
            .and_then(|x| x.get_mut("headers"))
            .and_then(|h| h.as_object_mut());
        for v in headers.into_iter().flat_map(|h| h.values_mut()) {
            *v = serde_json::Value::String(REDACTED.into());
        }
    }
}

pub fn page<T>(items: Vec<T>, limit: Option<usize>, offset: usize) -> Vec<T> {
    items
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}

#[cfg(test)]
mod redaction_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_redacted_and_shapes_kept() {
        let mut dev = new_resource(
            drover_model::ResourceInput {
                metadata: serde_json::from_value(json!({"name": "d"})).expect("metadata"),
                spec: serde_json::from_value(json!({
                    "authentication": {"credentials": [
                        {"pass": {"sha512": "$6$salt$hash"}},
                        {"pass": "plain"},
                        {"user": {"username": "alice", "password": {"bcrypt": "$2b$..."}, "unique": true}},
                        {"psk": {"key": "c2VjcmV0"}},
                        {"cert": {}}
                    ]},
                    "commands": {"commands": [{"external": {"url": "https://x", "headers": {"Authorization": "Bearer s3cret"}}}]},
                    "gatewaySelector": {"matchNames": ["gw"]}
                }))
                .expect("spec"),
                ..Default::default()
            },
            Some("app"),
            chrono::Utc::now(),
        );
        redact_secrets(&mut dev);
        let spec = serde_json::to_value(&dev.spec).expect("json");
        assert_eq!(
            spec["authentication"]["credentials"],
            json!([
                {"pass": {"sha512": REDACTED}},
                {"pass": REDACTED},
                {"user": {"username": "alice", "password": {"bcrypt": REDACTED}, "unique": true}},
                {"psk": {"key": REDACTED}},
                {"cert": {}}
            ])
        );
        assert_eq!(
            spec["commands"]["commands"][0]["external"],
            json!({"url": "https://x", "headers": {"Authorization": REDACTED}})
        );
        assert_eq!(spec["gatewaySelector"], json!({"matchNames": ["gw"]}));
    }
}
