//! Backend-independent rules of the registry: building new resources, applying updates, computed
//! status, the names a device is found by, paging; the secrets of devices (password hashing on
//! write, what readers see of them) in [`secrets`]. Stores call these inside their transactions.

use chrono::{DateTime, Utc};
use drover_model::resource::changed_paths;
use drover_model::spec;
use drover_model::{Kind, Metadata, Resource, ResourceInput};
use serde_json::{json, Value};

mod secrets;

pub use secrets::{hash_passwords, redact_keys, redact_secrets};

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
pub fn page<T>(items: Vec<T>, limit: Option<usize>, offset: usize) -> Vec<T> {
    items
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}
