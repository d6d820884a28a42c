//! Kubernetes-style resources: metadata assigned by the server, free-form spec and status sections.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::{names, ValidationError};

/// The two kinds of registry resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    Application,
    Device,
}

impl Kind {
    /// The CloudEvent type of this kind's change events.
    pub fn change_event_type(self) -> &'static str {
        match self {
            Kind::Application => "io.drogue.registry.change.application",
            Kind::Device => "io.drogue.registry.change.device",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Application => "application",
            Kind::Device => "device",
        }
    }

    pub fn from_str_opt(s: &str) -> Option<Self> {
        match s {
            "application" => Some(Kind::Application),
            "device" => Some(Kind::Device),
            _ => None,
        }
    }
}

/// Metadata of a stored resource. Everything but labels, annotations and finalizers is assigned
/// by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    /// The application a device belongs to (devices only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    pub uid: String,
    pub creation_timestamp: DateTime<Utc>,
    /// Incremented whenever `.spec` changes.
    pub generation: u64,
    /// Opaque; changes with every write.
    pub resource_version: String,
    /// Set while the resource waits for its finalizers to be removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An application or a device as stored and returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Resource {
    pub metadata: Metadata,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub spec: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub status: Map<String, Value>,
}

impl Resource {
    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }
}

/// Metadata as a client sends it. Server-assigned fields are accepted (drg round-trips them) and
/// ignored, except `uid` and `resourceVersion`, which are preconditions on update.
/// Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataInput {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub application: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub creation_timestamp: Option<Value>,
    #[serde(default)]
    pub generation: Option<u64>,
    #[serde(default)]
    pub resource_version: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub deletion_timestamp: Option<Value>,
    #[serde(default)]
    pub finalizers: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A resource as a client sends it on create or update.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceInput {
    pub metadata: MetadataInput,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub spec: Map<String, Value>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub status: Map<String, Value>,
}

impl ResourceInput {
    /// The name, which must be present.
    pub fn name(&self) -> Result<&str, ValidationError> {
        self.metadata
            .name
            .as_deref()
            .ok_or_else(|| ValidationError::new("metadata.name is required"))
    }

    /// Checks labels, annotations and finalizers, and the known spec sections of `kind`.
    pub fn validate(&self, kind: Kind) -> Result<(), ValidationError> {
        for (k, v) in &self.metadata.labels {
            names::validate_key("label", k)?;
            names::validate_label_value(k, v)?;
        }
        for k in self.metadata.annotations.keys() {
            names::validate_key("annotation", k)?;
        }
        for f in &self.metadata.finalizers {
            names::validate_finalizer(f)?;
        }
        crate::spec::validate(kind, &self.spec)
    }
}

/// Which top-level paths differ between two versions of a resource, as change-event paths:
/// `.metadata`, `.spec.<section>`, `.status.<section>`.
pub fn changed_paths(old: &Resource, new: &Resource) -> Vec<String> {
    let mut paths = Vec::new();
    let (o, n) = (&old.metadata, &new.metadata);
    if o.labels != n.labels
        || o.annotations != n.annotations
        || o.finalizers != n.finalizers
        || o.deletion_timestamp != n.deletion_timestamp
    {
        paths.push(".metadata".to_string());
    }
    section_diff(".spec", &old.spec, &new.spec, &mut paths);
    section_diff(".status", &old.status, &new.status, &mut paths);
    paths
}

fn section_diff(
    prefix: &str,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    out: &mut Vec<String>,
) {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        if old.get(k) != new.get(k) {
            out.push(format!("{prefix}.{k}"));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn res(v: Value) -> Resource {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn input_refuses_unknown_metadata() {
        let r: Result<ResourceInput, _> =
            serde_json::from_value(json!({"metadata": {"name": "a", "nmae": "x"}}));
        assert!(r.unwrap_err().to_string().contains("unknown field `nmae`"));
    }

    #[test]
    fn input_accepts_drg_create() {
        let r: ResourceInput = serde_json::from_value(json!({"metadata": {"name": "a", "creationTimestamp": "2020-01-01T00:00:00Z", "generation": 0}})).unwrap();
        assert_eq!(r.name().unwrap(), "a");
    }

    #[test]
    fn diff_paths() {
        let base = json!({"metadata": {"name": "a", "uid": "u", "creationTimestamp": "2020-01-01T00:00:00Z", "generation": 1, "resourceVersion": "1"}, "spec": {"a": 1, "b": 2}});
        let mut changed = base.clone();
        changed["spec"]["b"] = json!(3);
        changed["spec"]["c"] = json!(true);
        changed["metadata"]["labels"] = json!({"x": "y"});
        changed["status"] = json!({"s": {}});
        assert_eq!(
            changed_paths(&res(base.clone()), &res(changed)),
            vec![".metadata", ".spec.b", ".spec.c", ".status.s"]
        );
        assert!(changed_paths(&res(base.clone()), &res(base)).is_empty());
    }
}
