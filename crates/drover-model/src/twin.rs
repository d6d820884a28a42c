//! Device twins: per device, the `desired` state (what applications want), the `reported` state
//! (what the device says), each a JSON object with its own version that moves on every change,
//! and `tags` (service-side only). Changes are JSON merge patches (RFC 7386: `null` deletes a
//! member, objects merge, anything else replaces).
//!
//! The limits are Azure IoT Hub's, so that a device written for it behaves the same: keys are
//! at most 1 KiB of UTF-8 without control characters, `.`, `$` or space; objects nest at most 10
//! deep; integers lie within ±2^52; strings are at most 4 KiB; `desired` and `reported` are at
//! most 32 KiB each and `tags` 8 KiB, as compact JSON. (Azure refuses arrays in some API
//! versions; Drover accepts them, their elements under the same rules.)

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ValidationError;

/// The topic (and command name) of desired changes sent to a device.
pub const DESIRED_TOPIC: &str = "$twin/desired";
/// The topic (and command name) of the whole twin sent to a device.
pub const CURRENT_TOPIC: &str = "$twin/current";
/// The topic a device publishes to for its twin.
pub const GET_TOPIC: &str = "$twin/get";
/// The topic a device publishes its reported-property patches to.
pub const REPORTED_TOPIC: &str = "$twin/reported";

/// Most bytes of `desired` or `reported`, as compact JSON.
pub const MAX_PROPERTIES_BYTES: usize = 32 * 1024;
/// Most bytes of `tags`, as compact JSON.
pub const MAX_TAGS_BYTES: usize = 8 * 1024;
/// Deepest nesting of objects (the document itself is depth 1).
pub const MAX_DEPTH: usize = 10;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest string value, in bytes.
pub const MAX_STRING_BYTES: usize = 4096;
/// Largest integer magnitude (Azure's ±4503599627370495).
pub const MAX_INTEGER: i64 = 4_503_599_627_370_495;

/// Which part of a twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    Desired,
    Reported,
    Tags,
}

impl Section {
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Desired => "desired",
            Section::Reported => "reported",
            Section::Tags => "tags",
        }
    }

    fn max_bytes(self) -> usize {
        match self {
            Section::Tags => MAX_TAGS_BYTES,
            _ => MAX_PROPERTIES_BYTES,
        }
    }
}

/// A device's twin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Twin {
    /// What applications want the device to be.
    #[schema(value_type = Object)]
    pub desired: Map<String, Value>,
    /// Moves on every change of `desired` (starts at 1).
    pub desired_version: u64,
    /// What the device says it is.
    #[schema(value_type = Object)]
    pub reported: Map<String, Value>,
    /// Moves on every change of `reported` (starts at 1).
    pub reported_version: u64,
    /// Service-side labels; devices never see them.
    #[schema(value_type = Object)]
    pub tags: Map<String, Value>,
}

impl Twin {
    /// A new device's twin: empty documents at version 1.
    pub fn new() -> Twin {
        Twin {
            desired_version: 1,
            reported_version: 1,
            ..Twin::default()
        }
    }

    /// `desired` or `reported` as devices see it: the document with `"$version"` in it (Azure's
    /// twin GET and desired push shape).
    pub fn versioned(&self, section: Section) -> Value {
        let (doc, version) = match section {
            Section::Desired => (&self.desired, self.desired_version),
            Section::Reported => (&self.reported, self.reported_version),
            Section::Tags => return Value::Object(self.tags.clone()),
        };
        let mut m = doc.clone();
        m.insert("$version".into(), Value::from(version));
        Value::Object(m)
    }

    /// Applies a merge patch to `section`; returns whether anything changed (the version then
    /// moves, except for tags, which have none). The result is checked against the limits; on a
    /// refusal the twin is unchanged.
    pub fn patch(
        &mut self,
        section: Section,
        patch: &Map<String, Value>,
    ) -> Result<bool, ValidationError> {
        check_patch(section, patch)?;
        let doc = match section {
            Section::Desired => &mut self.desired,
            Section::Reported => &mut self.reported,
            Section::Tags => &mut self.tags,
        };
        let mut next = doc.clone();
        if !merge_patch(&mut next, patch) {
            return Ok(false);
        }
        check_document(section, &next)?;
        *doc = next;
        match section {
            Section::Desired => self.desired_version += 1,
            Section::Reported => self.reported_version += 1,
            Section::Tags => {}
        }
        Ok(true)
    }

    /// Replaces the tags (checked against the limits).
    pub fn set_tags(&mut self, tags: Map<String, Value>) -> Result<bool, ValidationError> {
        check_document(Section::Tags, &tags)?;
        let changed = self.tags != tags;
        self.tags = tags;
        Ok(changed)
    }
}

/// Applies an RFC 7386 merge patch to `target`; returns whether it changed.
pub fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) -> bool {
    let mut changed = false;
    for (k, v) in patch {
        match v {
            Value::Null => changed |= target.remove(k).is_some(),
            Value::Object(inner) => {
                let slot = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                    changed = true;
                }
                if let Value::Object(t) = slot {
                    changed |= merge_patch(t, inner);
                }
            }
            other => {
                if target.get(k) != Some(other) {
                    target.insert(k.clone(), other.clone());
                    changed = true;
                }
            }
        }
    }
    changed
}

fn refuse(section: Section, path: &str, why: impl std::fmt::Display) -> ValidationError {
    let at = if path.is_empty() {
        section.as_str().to_string()
    } else {
        format!("{}.{path}", section.as_str())
    };
    ValidationError(format!("invalid twin {at}: {why}"))
}

/// Checks a patch's keys and values (nulls allowed: they delete). `$version` and other
/// `$`-members are refused: the server keeps versions.
pub fn check_patch(section: Section, patch: &Map<String, Value>) -> Result<(), ValidationError> {
    check_object(section, "", patch, 1, true)
}

/// Checks a whole document: keys, values, depth and size.
pub fn check_document(section: Section, doc: &Map<String, Value>) -> Result<(), ValidationError> {
    check_object(section, "", doc, 1, false)?;
    let size = serde_json::to_vec(doc)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > section.max_bytes() {
        return Err(refuse(
            section,
            "",
            format!(
                "{size} bytes of JSON; the most is {} bytes",
                section.max_bytes()
            ),
        ));
    }
    Ok(())
}

fn check_object(
    section: Section,
    path: &str,
    obj: &Map<String, Value>,
    depth: usize,
    nulls: bool,
) -> Result<(), ValidationError> {
    if depth > MAX_DEPTH {
        return Err(refuse(
            section,
            path,
            format!("objects nest deeper than {MAX_DEPTH}"),
        ));
    }
    for (k, v) in obj {
        let here = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        check_key(section, path, k)?;
        check_value(section, &here, v, depth, nulls)?;
    }
    Ok(())
}

fn check_key(section: Section, path: &str, k: &str) -> Result<(), ValidationError> {
    if k.is_empty() {
        return Err(refuse(section, path, "empty key"));
    }
    if k.len() > MAX_KEY_BYTES {
        return Err(refuse(
            section,
            path,
            format!("a key is longer than {MAX_KEY_BYTES} bytes"),
        ));
    }
    if let Some(c) = k
        .chars()
        .find(|c| c.is_control() || matches!(c, '.' | '$' | ' '))
    {
        return Err(refuse(
            section,
            path,
            format!("key {k:?} contains {c:?}: keys may not contain control characters, '.', '$' or spaces"),
        ));
    }
    Ok(())
}

fn check_value(
    section: Section,
    path: &str,
    v: &Value,
    depth: usize,
    nulls: bool,
) -> Result<(), ValidationError> {
    match v {
        Value::Null if nulls => Ok(()),
        Value::Null => Err(refuse(
            section,
            path,
            "null is not a value (in a patch it deletes)",
        )),
        Value::Bool(_) => Ok(()),
        Value::Number(n) => match n.as_i64() {
            Some(i) if !(-MAX_INTEGER - 1..=MAX_INTEGER).contains(&i) => Err(refuse(
                section,
                path,
                format!("integers lie within {} and {MAX_INTEGER}", -MAX_INTEGER - 1),
            )),
            None if n.as_u64().is_some() => Err(refuse(
                section,
                path,
                format!("integers lie within {} and {MAX_INTEGER}", -MAX_INTEGER - 1),
            )),
            _ => Ok(()),
        },
        Value::String(s) if s.len() > MAX_STRING_BYTES => Err(refuse(
            section,
            path,
            format!("a string is longer than {MAX_STRING_BYTES} bytes"),
        )),
        Value::String(_) => Ok(()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_value(section, &format!("{path}[{i}]"), item, depth, false)?;
            }
            Ok(())
        }
        Value::Object(inner) => check_object(section, path, inner, depth + 1, nulls),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn merge_patches_as_rfc_7386_says() {
        let mut doc = obj(json!({"a": 1, "b": {"c": 2, "d": 3}, "e": "x"}));
        let changed = merge_patch(
            &mut doc,
            &obj(json!({"a": null, "b": {"c": 20, "d": null, "f": {"g": true}}, "e": "x"})),
        );
        assert!(changed);
        assert_eq!(
            Value::Object(doc.clone()),
            json!({"b": {"c": 20, "f": {"g": true}}, "e": "x"})
        );
        assert!(!merge_patch(
            &mut doc,
            &obj(json!({"e": "x", "gone": null}))
        ));
        // A patch object replaces a scalar.
        assert!(merge_patch(&mut doc, &obj(json!({"e": {"now": "object"}}))));
        assert_eq!(doc["e"], json!({"now": "object"}));
    }

    #[test]
    fn versions_move_on_change_only() {
        let mut t = Twin::new();
        assert!(t
            .patch(Section::Desired, &obj(json!({"fw": "2.0"})))
            .unwrap());
        assert_eq!(t.desired_version, 2);
        assert!(!t
            .patch(Section::Desired, &obj(json!({"fw": "2.0"})))
            .unwrap());
        assert_eq!(t.desired_version, 2);
        assert_eq!(t.reported_version, 1);
        assert_eq!(
            t.versioned(Section::Desired),
            json!({"fw": "2.0", "$version": 2})
        );
    }

    #[test]
    fn limits_are_azures() {
        let mut t = Twin::new();
        for (patch, what) in [
            (json!({"a.b": 1}), "'.'"),
            (json!({"$version": 3}), "'$'"),
            (json!({"a b": 1}), "' '"),
            (json!({"k": 4_503_599_627_370_496i64}), "integers"),
            (json!({"k": "x".repeat(4097)}), "string"),
        ] {
            let e = t.patch(Section::Reported, &obj(patch)).expect_err(what).0;
            assert!(e.starts_with("invalid twin reported"), "{e}");
        }
        let mut deep = json!(1);
        for _ in 0..10 {
            deep = json!({ "d": deep });
        }
        // Ten objects deep (the document and nine below it): allowed; eleven: refused.
        t.patch(Section::Desired, &obj(deep.clone()))
            .expect("depth 10");
        let deep = json!({ "d": deep });
        let e = t.patch(Section::Desired, &obj(deep)).expect_err("depth").0;
        assert!(e.contains("deeper than 10"), "{e}");
        // Size: many keys of 1 KiB strings pass individually but not together.
        let mut big = Map::new();
        for i in 0..40 {
            big.insert(format!("k{i}"), Value::String("x".repeat(1000)));
        }
        let e = t.patch(Section::Desired, &big).expect_err("size").0;
        assert!(e.contains("the most is 32768 bytes"), "{e}");
        assert_eq!(t.desired_version, 2, "a refused patch changes nothing");
        let e = t.set_tags(big).expect_err("tags").0;
        assert!(e.contains("8192"), "{e}");
    }
}
