//! Device provisioning in the registry (Azure DPS compatible, see `shared/specs/azure-iot.md`
//! §3): enrollments — individual ones by registration id, groups by group id — each naming its
//! target application and its attestation (symmetric keys), and the record of each
//! registration. What a registration does (matching, attestation, creating the device) is the
//! provisioning service's (`drover-endpoints::dps`); this keeps the documents.
//!
//! Registration and group ids are unique per installation (one ID scope). Enrollment keys are
//! secrets: shown only to administrators of the application.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use drover_model::{Principal, ValidationError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Result;

/// Longest registration or group id.
pub const MAX_ID: usize = 128;

/// Individual or group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum EnrollmentKind {
    #[default]
    Individual,
    Group,
}

impl EnrollmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollmentKind::Individual => "individual",
            EnrollmentKind::Group => "group",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum ProvisioningStatus {
    #[default]
    Enabled,
    Disabled,
}

/// Symmetric keys (base64, 16 to 64 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SymmetricKeys {
    pub primary_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_key: Option<String>,
}

/// How devices of an enrollment prove who they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attestation {
    /// `symmetricKey` (X.509 attestation is not supported yet).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<SymmetricKeys>,
}

/// The twin a device gets when it is provisioned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitialTwin {
    #[serde(default)]
    pub tags: Map<String, Value>,
    #[serde(default)]
    pub desired: Map<String, Value>,
}

/// What a registration of an already provisioned device does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReprovisionPolicy {
    /// Provision again (the device gets the enrollment's labels and key again); false: the
    /// registration answers with the earlier assignment.
    #[serde(default = "yes")]
    pub update_hub_assignment: bool,
    /// Keep the device's twin (else the initial twin replaces it).
    #[serde(default = "yes")]
    pub migrate_device_data: bool,
}

fn yes() -> bool {
    true
}

impl Default for ReprovisionPolicy {
    fn default() -> Self {
        ReprovisionPolicy {
            update_hub_assignment: true,
            migrate_device_data: true,
        }
    }
}

/// An enrollment (individual or group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Enrollment {
    /// The registration id (individual) or group id; from the path.
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub kind: EnrollmentKind,
    /// The target application; from the path.
    #[serde(default)]
    pub application: String,
    /// The device's name (individual; default: the registration id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub attestation: Attestation,
    #[serde(default)]
    pub provisioning_status: ProvisioningStatus,
    #[serde(default)]
    pub initial_twin: InitialTwin,
    /// Labels the device gets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub reprovision_policy: ReprovisionPolicy,
    #[serde(default)]
    pub etag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<DateTime<Utc>>,
}

/// Checks a registration or group id: 1 to 128 letters, digits, `-`, `.`, `_` and `:`.
pub fn validate_id(what: &str, id: &str) -> std::result::Result<(), ValidationError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ValidationError(format!(
            "{what} '{id}' must be 1 to {MAX_ID} letters, digits, '-', '.', '_' or ':'"
        )))
    }
}

impl Enrollment {
    /// Checks what a client wrote.
    pub fn validate(&self) -> std::result::Result<(), ValidationError> {
        let what = match self.kind {
            EnrollmentKind::Individual => "registration id",
            EnrollmentKind::Group => "enrollment group id",
        };
        validate_id(what, &self.id)?;
        if let Some(d) = &self.device_id {
            if self.kind == EnrollmentKind::Group {
                return Err(ValidationError(
                    "deviceId is for individual enrollments (a group's devices are named by their registration ids)".into(),
                ));
            }
            drover_model::names::validate_device_name(d)?;
        }
        match (
            self.attestation.kind.as_str(),
            &self.attestation.symmetric_key,
        ) {
            ("symmetricKey", Some(keys)) => {
                for (name, key) in [
                    ("primaryKey", Some(&keys.primary_key)),
                    ("secondaryKey", keys.secondary_key.as_ref()),
                ] {
                    if let Some(k) = key {
                        drover_auth::sas::decode_key(k).map_err(|e| {
                            ValidationError(format!("attestation.symmetricKey.{name}: {e}"))
                        })?;
                    }
                }
                Ok(())
            }
            ("symmetricKey", None) => Err(ValidationError(
                "attestation.symmetricKey is needed for type symmetricKey".into(),
            )),
            (other, _) => Err(ValidationError(format!(
                "attestation type '{other}' is not supported: use symmetricKey"
            ))),
        }?;
        for (k, v) in &self.labels {
            drover_model::names::validate_key("label", k)?;
            drover_model::names::validate_label_value(k, v)?;
        }
        Ok(())
    }

    /// The enrollment as a reader who may not see keys sees it.
    pub fn redacted(mut self) -> Enrollment {
        if let Some(keys) = &mut self.attestation.symmetric_key {
            keys.primary_key = "<redacted>".into();
            if let Some(s) = &mut keys.secondary_key {
                *s = "<redacted>".into();
            }
        }
        self
    }
}

/// What provisioning did for a registration id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationRecord {
    pub registration_id: String,
    pub application: String,
    pub device_id: String,
    /// `assigned`, `failed` or `disabled`.
    pub status: String,
    /// `initialAssignment`, `deviceDataMigrated` or `deviceDataReset`.
    pub substatus: String,
    pub enrollment_kind: EnrollmentKind,
    pub enrollment_id: String,
    pub operation_id: String,
    pub etag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    pub created_date_time_utc: DateTime<Utc>,
    pub last_updated_date_time_utc: DateTime<Utc>,
}

/// Provisioning's documents (part of [`crate::Registry`]).
#[async_trait]
pub trait ProvisioningStore: Send + Sync {
    /// Creates or replaces an enrollment of `app` (write permission); an id another
    /// application uses is a conflict.
    async fn put_enrollment(&self, who: &Principal, app: &str, e: Enrollment)
        -> Result<Enrollment>;
    /// An enrollment of `app` (read permission; keys for administrators only).
    async fn enrollment(
        &self,
        who: &Principal,
        app: &str,
        kind: EnrollmentKind,
        id: &str,
    ) -> Result<Enrollment>;
    /// The enrollments of `app` (read permission; keys for administrators only).
    async fn enrollments(&self, who: &Principal, app: &str) -> Result<Vec<Enrollment>>;
    async fn delete_enrollment(
        &self,
        who: &Principal,
        app: &str,
        kind: EnrollmentKind,
        id: &str,
    ) -> Result<()>;
    /// The registration records of `app` (read permission).
    async fn registrations(&self, who: &Principal, app: &str) -> Result<Vec<RegistrationRecord>>;
    /// Deletes a registration record (write permission): the next registration is an initial
    /// assignment again.
    async fn delete_registration(&self, who: &Principal, app: &str, id: &str) -> Result<()>;

    // What the provisioning service reads and writes (no principal: the platform itself).

    /// An enrollment by kind and id, whatever its application.
    async fn find_enrollment(&self, kind: EnrollmentKind, id: &str) -> Result<Option<Enrollment>>;
    /// Every enrollment group.
    async fn enrollment_groups(&self) -> Result<Vec<Enrollment>>;
    /// The record of a registration id.
    async fn find_registration(&self, registration_id: &str) -> Result<Option<RegistrationRecord>>;
    /// Stores (replaces) the record of a registration id.
    async fn record_registration(&self, record: &RegistrationRecord) -> Result<()>;
}
