//! The spec sections Drover understands, typed. Sections are stored as free-form JSON (so unknown
//! sections round-trip untouched); known sections are validated against these types on every write
//! and read through them by the platform.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Kind, ValidationError};

/// A stored password: plain (hashed by the registry on write), bcrypt, or sha512-crypt (`$6$`).
/// On the wire either a bare string (plain) or `{"plain"|"bcrypt"|"sha512": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PasswordRepr")]
#[serde(rename_all = "lowercase")]
pub enum Password {
    Plain(String),
    Bcrypt(String),
    Sha512(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PasswordRepr {
    Bare(String),
    Tagged(TaggedPassword),
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum TaggedPassword {
    Plain(String),
    Bcrypt(String),
    Sha512(String),
}

impl From<PasswordRepr> for Password {
    fn from(r: PasswordRepr) -> Self {
        match r {
            PasswordRepr::Bare(s) | PasswordRepr::Tagged(TaggedPassword::Plain(s)) => {
                Password::Plain(s)
            }
            PasswordRepr::Tagged(TaggedPassword::Bcrypt(s)) => Password::Bcrypt(s),
            PasswordRepr::Tagged(TaggedPassword::Sha512(s)) => Password::Sha512(s),
        }
    }
}

/// One entry of `spec.authentication.credentials[]` (externally tagged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Credential {
    Pass(Password),
    User {
        username: String,
        password: Password,
        #[serde(default)]
        unique: bool,
    },
    Psk {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        validity: Option<Validity>,
    },
    Cert(Value),
    /// Azure IoT symmetric keys (base64): a shared access signature made with either
    /// authenticates the device.
    Sas(SasKeys),
}

/// A device's SAS keys, as Azure IoT Hub holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SasKeys {
    pub primary_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_key: Option<String>,
}

impl SasKeys {
    /// The keys' raw bytes, primary first (keys that do not decode are left out: validation
    /// refuses them on write).
    pub fn decoded(&self) -> Vec<Vec<u8>> {
        use base64::Engine as _;
        std::iter::once(&self.primary_key)
            .chain(self.secondary_key.as_ref())
            .filter_map(|k| {
                base64::engine::general_purpose::STANDARD
                    .decode(k.trim())
                    .ok()
            })
            .collect()
    }
}

/// Fewest and most bytes of a SAS key (Azure's are 32 or 64).
pub const SAS_KEY_LEN: std::ops::RangeInclusive<usize> = 16..=64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Validity {
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

/// `spec.authentication` (and its legacy twin `spec.credentials`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Authentication {
    #[serde(default)]
    pub credentials: Vec<Credential>,
}

/// `spec.gatewaySelector`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySelector {
    #[serde(default)]
    pub match_names: Vec<String>,
}

/// `spec.core`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Core {
    #[serde(default)]
    pub disabled: bool,
}

/// `spec.commands`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Commands {
    #[serde(default)]
    pub commands: Vec<CommandEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandEndpoint {
    External(ExternalEndpoint),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalEndpoint {
    #[serde(default, rename = "type")]
    pub r#type: Option<String>,
    pub url: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `spec.mqtt`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mqtt {
    #[serde(default)]
    pub dialect: MqttDialect,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MqttDialect {
    #[default]
    #[serde(rename = "drogue/v1")]
    DrogueV1,
    #[serde(rename = "plainTopic", rename_all = "camelCase")]
    PlainTopic {
        #[serde(default)]
        device_prefix: bool,
    },
}

/// `spec.trustAnchors` of an application.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrustAnchors {
    #[serde(default)]
    pub anchors: Vec<TrustAnchor>,
    /// A valid certificate of one of the anchors whose common name names no device creates
    /// that device on its first connection.
    #[serde(
        default,
        rename = "autoRegister",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub auto_register: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustAnchor {
    /// Base64 of a PEM certificate.
    pub certificate: String,
}

fn typed<T: DeserializeOwned>(section: &str, value: &Value) -> Result<T, ValidationError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." || path.is_empty() {
            format!("spec.{section}")
        } else {
            format!("spec.{section}.{path}")
        };
        ValidationError(format!("invalid {at}: {}", e.inner()))
    })
}

/// Validates the known sections of a spec for a resource of `kind`. Unknown sections pass.
pub fn validate(kind: Kind, spec: &Map<String, Value>) -> Result<(), ValidationError> {
    for (name, value) in spec {
        match (kind, name.as_str()) {
            (_, "core") => typed::<Core>(name, value).map(drop)?,
            (_, "mqtt") => typed::<Mqtt>(name, value).map(drop)?,
            (Kind::Application, "trustAnchors") => typed::<TrustAnchors>(name, value).map(drop)?,
            (Kind::Device, "authentication" | "credentials") => {
                let auth: Authentication = typed(name, value)?;
                for (i, c) in auth.credentials.iter().enumerate() {
                    validate_credential(name, i, c)?;
                }
            }
            (Kind::Device, "gatewaySelector") => typed::<GatewaySelector>(name, value).map(drop)?,
            (Kind::Device, "alias") => {
                let aliases: Vec<String> = typed(name, value)?;
                for a in &aliases {
                    crate::names::validate_device_name(a)
                        .map_err(|e| ValidationError(format!("invalid spec.alias entry: {e}")))?;
                }
            }
            (Kind::Device, "commands") => typed::<Commands>(name, value).map(drop)?,
            _ => {}
        }
    }
    Ok(())
}

fn validate_credential(section: &str, i: usize, c: &Credential) -> Result<(), ValidationError> {
    let at = format!("spec.{section}.credentials[{i}]");
    let check_pw = |p: &Password| match p {
        Password::Plain(s) if s.is_empty() => Err(ValidationError(format!(
            "invalid {at}: password must not be empty"
        ))),
        Password::Bcrypt(h)
            if !(h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$")) =>
        {
            Err(ValidationError(format!(
                "invalid {at}: not a bcrypt hash (expected $2a$, $2b$ or $2y$)"
            )))
        }
        Password::Sha512(h) if !h.starts_with("$6$") => Err(ValidationError(format!(
            "invalid {at}: not a sha512-crypt hash (expected $6$...)"
        ))),
        _ => Ok(()),
    };
    match c {
        Credential::Pass(p) => check_pw(p),
        Credential::User {
            username, password, ..
        } => {
            if username.is_empty() {
                return Err(ValidationError(format!(
                    "invalid {at}: username must not be empty"
                )));
            }
            check_pw(password)
        }
        Credential::Psk { key, validity } => {
            use base64::Engine as _;
            if base64::engine::general_purpose::STANDARD
                .decode(key)
                .is_err()
            {
                return Err(ValidationError(format!(
                    "invalid {at}: psk key is not base64"
                )));
            }
            if let Some(v) = validity {
                if v.not_after <= v.not_before {
                    return Err(ValidationError(format!(
                        "invalid {at}: psk validity notAfter must be after notBefore"
                    )));
                }
            }
            Ok(())
        }
        Credential::Cert(_) => Ok(()),
        Credential::Sas(keys) => {
            use base64::Engine as _;
            let named = std::iter::once(("primaryKey", Some(&keys.primary_key))).chain(
                std::iter::once(("secondaryKey", keys.secondary_key.as_ref())),
            );
            for (name, key) in named {
                let Some(key) = key else { continue };
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(key.trim())
                    .map_err(|_| {
                        ValidationError(format!("invalid {at}: sas {name} is not base64"))
                    })?;
                if !SAS_KEY_LEN.contains(&bytes.len()) {
                    return Err(ValidationError(format!(
                        "invalid {at}: sas {name} has {} bytes; a key has {} to {} bytes (Azure's have 32)",
                        bytes.len(),
                        SAS_KEY_LEN.start(),
                        SAS_KEY_LEN.end()
                    )));
                }
            }
            Ok(())
        }
    }
}

fn section<T: DeserializeOwned + Default>(spec: &Map<String, Value>, name: &str) -> T {
    spec.get(name)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// The device's credentials: `spec.authentication` when present, else the legacy `spec.credentials`.
pub fn credentials(spec: &Map<String, Value>) -> Vec<Credential> {
    let name = if spec.contains_key("authentication") {
        "authentication"
    } else {
        "credentials"
    };
    section::<Authentication>(spec, name).credentials
}

/// Usernames of `user` credentials marked `unique` (app-wide lookup names).
pub fn unique_usernames(spec: &Map<String, Value>) -> Vec<String> {
    credentials(spec)
        .into_iter()
        .filter_map(|c| match c {
            Credential::User {
                username,
                unique: true,
                ..
            } => Some(username),
            _ => None,
        })
        .collect()
}

/// `spec.alias`.
pub fn aliases(spec: &Map<String, Value>) -> Vec<String> {
    section(spec, "alias")
}

/// `spec.core.disabled`.
pub fn disabled(spec: &Map<String, Value>) -> bool {
    section::<Core>(spec, "core").disabled
}

/// `spec.gatewaySelector.matchNames`.
pub fn gateways(spec: &Map<String, Value>) -> Vec<String> {
    section::<GatewaySelector>(spec, "gatewaySelector").match_names
}

/// `spec.trustAnchors.anchors[].certificate`.
pub fn trust_anchors(spec: &Map<String, Value>) -> Vec<String> {
    section::<TrustAnchors>(spec, "trustAnchors")
        .anchors
        .into_iter()
        .map(|a| a.certificate)
        .collect()
}

/// `spec.trustAnchors.autoRegister`.
pub fn auto_register(spec: &Map<String, Value>) -> bool {
    section::<TrustAnchors>(spec, "trustAnchors").auto_register
}

/// Replaces every plain password in both credential sections with what `hash` returns for it.
/// Returns whether anything was replaced.
pub fn hash_plain_passwords(
    spec: &mut Map<String, Value>,
    hash: &mut dyn FnMut(&str) -> Password,
) -> Result<bool, ValidationError> {
    let mut changed = false;
    for name in ["authentication", "credentials"] {
        let Some(value) = spec.get(name) else {
            continue;
        };
        let mut auth: Authentication = typed(name, value)?;
        let mut here = false;
        for c in &mut auth.credentials {
            let pw = match c {
                Credential::Pass(p) => p,
                Credential::User { password, .. } => password,
                _ => continue,
            };
            if let Password::Plain(plain) = pw {
                *pw = hash(plain);
                here = true;
            }
        }
        if here {
            let mut v = serde_json::to_value(&auth)
                .map_err(|e| ValidationError(format!("spec.{name}: {e}")))?;
            // keep any other fields of the section
            if let (Some(Value::Object(orig)), Value::Object(new)) = (spec.get(name), &mut v) {
                for (k, val) in orig {
                    new.entry(k.clone()).or_insert_with(|| val.clone());
                }
            }
            spec.insert(name.to_string(), v);
            changed = true;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn password_forms() {
        let s = spec(json!({"authentication": {"credentials": [
            {"pass": "plain"}, {"pass": {"bcrypt": "$2b$x"}}, {"pass": {"sha512": "$6$x"}},
            {"user": {"username": "u", "password": "p", "unique": true}}]}}));
        validate(Kind::Device, &s).unwrap();
        let c = credentials(&s);
        assert_eq!(c[0], Credential::Pass(Password::Plain("plain".into())));
        assert_eq!(c[1], Credential::Pass(Password::Bcrypt("$2b$x".into())));
        assert_eq!(unique_usernames(&s), vec!["u"]);
    }

    #[test]
    fn errors_name_the_path() {
        let s = spec(json!({"authentication": {"credentials": [{"pass": {"md5": "x"}}]}}));
        let e = validate(Kind::Device, &s).unwrap_err().to_string();
        assert!(e.contains("spec.authentication"), "{e}");
        let s = spec(json!({"core": {"disabled": "yes"}}));
        let e = validate(Kind::Application, &s).unwrap_err().to_string();
        assert!(e.contains("spec.core.disabled"), "{e}");
        let s = spec(json!({"alias": "notalist"}));
        assert!(validate(Kind::Device, &s).is_err());
        let s = spec(json!({"mqtt": {"dialect": {"type": "plainTopic", "devicePrefix": true}}}));
        validate(Kind::Device, &s).unwrap();
        let s = spec(json!({"mqtt": {"dialect": {"type": "nope"}}}));
        assert!(validate(Kind::Device, &s).is_err());
        let s =
            spec(json!({"authentication": {"credentials": [{"pass": {"sha512": "plaintext"}}]}}));
        assert!(validate(Kind::Device, &s).is_err());
    }

    #[test]
    fn hashing_rewrites_both_sections() {
        let mut s = spec(json!({"authentication": {"credentials": [{"pass": "a"}]},
                               "credentials": {"credentials": [{"user": {"username": "u", "password": {"plain": "b"}}}]}}));
        let changed =
            hash_plain_passwords(&mut s, &mut |p| Password::Sha512(format!("$6$h-{p}"))).unwrap();
        assert!(changed);
        assert_eq!(
            s["authentication"],
            json!({"credentials": [{"pass": {"sha512": "$6$h-a"}}]})
        );
        assert_eq!(
            s["credentials"]["credentials"][0]["user"]["password"],
            json!({"sha512": "$6$h-b"})
        );
        assert!(!hash_plain_passwords(&mut s, &mut |_| unreachable!()).unwrap());
    }

    #[test]
    fn sas_keys_are_checked() {
        let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
        let s = spec(
            json!({"authentication": {"credentials": [{"sas": {"primaryKey": key, "secondaryKey": key}}]}}),
        );
        validate(Kind::Device, &s).unwrap();
        match &credentials(&s)[0] {
            Credential::Sas(k) => assert_eq!(k.decoded().len(), 2),
            other => panic!("{other:?}"),
        }
        for bad in [
            json!({"sas": {"primaryKey": "not base64!"}}),
            json!({"sas": {"primaryKey": "AAAA"}}),
            json!({"sas": {"primaryKey": key, "secondaryKey": "AA=="}}),
            json!({"sas": {"primaryKey": key, "tertiaryKey": key}}),
        ] {
            let s = spec(json!({"authentication": {"credentials": [bad]}}));
            let e = validate(Kind::Device, &s).expect_err("refused").0;
            assert!(e.contains("credentials[0]"), "{e}");
        }
    }
}
