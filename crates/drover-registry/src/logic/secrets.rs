//! The secrets of devices: plain passwords hashed on write (reusing a stored hash of the same
//! password, so re-sending it is a no-op), and what those who may not see them read instead.

use std::collections::HashMap;

use drover_model::spec::{self, Credential, Password};
use drover_model::Resource;
use serde_json::{Map, Value};

use crate::{RegistryError, Result};

/// Hashes plain passwords (sha512-crypt), reusing a previous hash of `old` when it verifies the
/// same plain password, so that re-sending a password is a no-op. Runs on a blocking thread.
pub async fn hash_passwords(
    spec: Map<String, Value>,
    old: Option<Map<String, Value>>,
) -> Result<Map<String, Value>> {
    if !has_plain_passwords(&spec) {
        return Ok(spec);
    }
    tokio::task::spawn_blocking(move || {
        let mut spec = spec;
        let previous = old.as_ref().map(passwords).unwrap_or_default();
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
    .map_err(|e| RegistryError::internal("password hashing failed", e))?
}

/// Whether a credentials section of `spec` holds a plain password.
fn has_plain_passwords(spec: &Map<String, Value>) -> bool {
    ["authentication", "credentials"].iter().any(|s| {
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
    })
}

/// The passwords (plain or hashed) of the credentials sections of `spec`.
fn passwords(spec: &Map<String, Value>) -> Vec<Password> {
    let mut v = Vec::new();
    for s in ["authentication", "credentials"] {
        if let Some(a) = spec
            .get(s)
            .and_then(|v| serde_json::from_value::<spec::Authentication>(v.clone()).ok())
        {
            for c in a.credentials {
                match c {
                    Credential::Pass(p) | Credential::User { password: p, .. } => v.push(p),
                    _ => {}
                }
            }
        }
    }
    v
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::new_resource;
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
