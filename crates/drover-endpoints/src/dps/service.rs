//! The provisioning service: attests a registration against the enrollments (the individual
//! enrollment of the registration id first, then the enrollment groups), provisions the device
//! in the enrollment's application, records the registration and answers in DPS's bodies.
//!
//! Attestation is by symmetric key: the SAS token of the registration (resource
//! `{idScope}/registrations/{registrationId}`) signed by the individual enrollment's key, or by
//! the key derived from a group's key (`base64(HMAC-SHA256(group key, registration id))`).
//! Provisioning creates the device (named by the enrollment's `deviceId`, else the
//! registration id) with that key as its SAS credential, the enrollment's labels and initial
//! twin, or — for a device provisioned before — follows the enrollment's reprovision policy.
//! Every registration appends an `io.drover.device.provisioned.v1` event to the application's
//! stream.

use std::sync::Arc;

use chrono::Utc;
use drover_auth::sas::{self, SasToken};
use drover_bus::{EventLog, StreamKey};
use drover_model::{Principal, Resource};
use drover_registry::provisioning::{
    Enrollment, EnrollmentKind, ProvisioningStatus, RegistrationRecord,
};
use drover_registry::{Registry, RegistryError};
use serde_json::{json, Map, Value};

/// CloudEvent type of a provisioning.
pub const PROVISIONED_TYPE: &str = "io.drover.device.provisioned.v1";

/// Seconds a client is told to wait before it polls.
pub const RETRY_AFTER: u64 = 1;

/// A refusal, as DPS answers it: the HTTP (or MQTT topic) status and the error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpsError {
    pub status: u16,
    pub error_code: u32,
    pub message: String,
}

impl DpsError {
    fn new(status: u16, error_code: u32, message: impl Into<String>) -> Self {
        DpsError {
            status,
            error_code,
            message: message.into(),
        }
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        DpsError::new(401, 401002, message)
    }

    fn unavailable(e: impl std::fmt::Display) -> Self {
        DpsError::new(503, 503000, format!("provisioning is unavailable now: {e}"))
    }

    /// `{"errorCode", "trackingId", "message", "timestampUtc"}`.
    pub fn body(&self) -> Value {
        json!({
            "errorCode": self.error_code,
            "trackingId": uuid::Uuid::new_v4().to_string(),
            "message": self.message,
            "timestampUtc": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
    }
}

/// A registration whose attestation verified.
#[derive(Debug, Clone)]
pub struct Attested {
    pub registration_id: String,
    pub enrollment: Enrollment,
    /// The device's SAS key (base64): the individual enrollment's, or the one derived from the
    /// group's.
    pub device_key: String,
}

/// The provisioning service.
pub struct Provisioning {
    registry: Arc<dyn Registry>,
    log: Arc<dyn EventLog>,
    /// The installation's ID scope.
    pub id_scope: String,
    /// The domain under which applications are hubs (`<app>.<hub domain>`).
    hub_domain: Option<String>,
    instance: String,
}

impl Provisioning {
    pub fn new(
        registry: Arc<dyn Registry>,
        log: Arc<dyn EventLog>,
        id_scope: String,
        hub_domain: Option<String>,
        instance: String,
    ) -> Self {
        Provisioning {
            registry,
            log,
            id_scope,
            hub_domain,
            instance,
        }
    }

    /// The hub host name a device of `app` is assigned to.
    pub fn assigned_hub(&self, app: &str) -> String {
        match &self.hub_domain {
            Some(d) => format!("{app}.{d}"),
            None => app.to_string(),
        }
    }

    /// Checks a registration's SAS token against the enrollments.
    pub async fn attest(
        &self,
        id_scope: &str,
        registration_id: &str,
        token: &str,
    ) -> Result<Attested, DpsError> {
        if !id_scope.eq_ignore_ascii_case(&self.id_scope) {
            return Err(DpsError::unauthorized(format!(
                "unknown ID scope '{id_scope}'"
            )));
        }
        drover_registry::provisioning::validate_id("registration id", registration_id)
            .map_err(|e| DpsError::new(400, 400004, e.to_string()))?;
        let token = SasToken::parse(token)
            .map_err(|e| DpsError::unauthorized(format!("bad shared access signature: {e}")))?;
        let resource = format!("{id_scope}/registrations/{registration_id}");
        let now = sas::unix_now();
        let individual = self
            .registry
            .find_enrollment(EnrollmentKind::Individual, registration_id)
            .await
            .map_err(DpsError::unavailable)?;
        let mut candidates: Vec<(Enrollment, Vec<String>)> = Vec::new();
        if let Some(e) = individual {
            let keys = keys_of(&e);
            candidates.push((e, keys));
        } else {
            for g in self
                .registry
                .enrollment_groups()
                .await
                .map_err(DpsError::unavailable)?
            {
                let keys = keys_of(&g)
                    .iter()
                    .filter_map(|k| sas::decode_key(k).ok())
                    .map(|k| sas::derive_group_key(&k, registration_id))
                    .collect();
                candidates.push((g, keys));
            }
        }
        let mut last = DpsError::unauthorized(format!(
            "no enrollment for registration '{registration_id}'"
        ));
        for (enrollment, keys) in candidates {
            let raw: Vec<Vec<u8>> = keys
                .iter()
                .filter_map(|k| sas::decode_key(k).ok())
                .collect();
            let refs: Vec<&[u8]> = raw.iter().map(Vec::as_slice).collect();
            match token.verify(&resource, &refs, now) {
                Ok(()) => {
                    if enrollment.provisioning_status == ProvisioningStatus::Disabled {
                        return Err(DpsError::unauthorized(format!(
                            "the {} enrollment '{}' is disabled",
                            enrollment.kind.as_str(),
                            enrollment.id
                        )));
                    }
                    // The key that signed: the first that verifies alone.
                    let device_key = keys
                        .iter()
                        .find(|k| {
                            sas::decode_key(k)
                                .is_ok_and(|b| token.verify(&resource, &[&b], now).is_ok())
                        })
                        .cloned()
                        .unwrap_or_default();
                    return Ok(Attested {
                        registration_id: registration_id.to_string(),
                        enrollment,
                        device_key,
                    });
                }
                Err(e) => last = DpsError::unauthorized(format!("{e}")),
            }
        }
        Err(last)
    }

    /// Provisions an attested registration: the device in the enrollment's application, the
    /// registration record, the event.
    pub async fn register(
        &self,
        a: &Attested,
        payload: Option<Value>,
    ) -> Result<RegistrationRecord, DpsError> {
        let e = &a.enrollment;
        let app = e.application.clone();
        let device = e
            .device_id
            .clone()
            .unwrap_or_else(|| a.registration_id.clone());
        let previous = self
            .registry
            .find_registration(&a.registration_id)
            .await
            .map_err(DpsError::unavailable)?;
        let now = Utc::now();
        if let Some(p) = &previous {
            if !e.reprovision_policy.update_hub_assignment && p.application == app {
                let mut again = p.clone();
                again.operation_id = uuid::Uuid::new_v4().to_string();
                again.last_updated_date_time_utc = now;
                again.payload = payload;
                self.registry
                    .record_registration(&again)
                    .await
                    .map_err(DpsError::unavailable)?;
                return Ok(again);
            }
        }
        let system = Principal::SystemAdmin("drover-provisioning".into());
        let substatus = self.provision_device(&system, a, &app, &device).await?;
        let record = RegistrationRecord {
            registration_id: a.registration_id.clone(),
            application: app.clone(),
            device_id: device.clone(),
            status: "assigned".into(),
            substatus: substatus.into(),
            enrollment_kind: e.kind,
            enrollment_id: e.id.clone(),
            operation_id: uuid::Uuid::new_v4().to_string(),
            etag: uuid::Uuid::new_v4().to_string(),
            payload,
            created_date_time_utc: previous.map(|p| p.created_date_time_utc).unwrap_or(now),
            last_updated_date_time_utc: now,
        };
        self.registry
            .record_registration(&record)
            .await
            .map_err(DpsError::unavailable)?;
        self.provisioned_event(&record).await;
        tracing::info!(app = %app, device = %device, registration = %a.registration_id, substatus, "provisioned a device");
        Ok(record)
    }

    /// Creates or updates the device; returns the substatus.
    async fn provision_device(
        &self,
        system: &Principal,
        a: &Attested,
        app: &str,
        device: &str,
    ) -> Result<&'static str, DpsError> {
        let e = &a.enrollment;
        let failed = |err: RegistryError| match err {
            RegistryError::NotFound(m) | RegistryError::ReferenceNotFound(m) => {
                DpsError::new(404, 404201, format!("the enrollment's application: {m}"))
            }
            RegistryError::BadRequest(m) => DpsError::new(400, 400004, m),
            e => DpsError::unavailable(e),
        };
        let existing = match self.registry.get_device(system, app, device).await {
            Ok(d) => Some(d),
            Err(RegistryError::NotFound(_)) => None,
            Err(err) => return Err(failed(err)),
        };
        let sas = json!({"sas": {"primaryKey": a.device_key}});
        let Some(existing) = existing else {
            let input = json!({
                "metadata": {"name": device, "labels": e.labels},
                "spec": {"authentication": {"credentials": [sas]}},
            });
            let input = serde_json::from_value(input)
                .map_err(|err| DpsError::new(400, 400004, err.to_string()))?;
            self.registry
                .create_device(system, app, input)
                .await
                .map_err(failed)?;
            self.initial_twin(system, app, device, e, None).await?;
            return Ok("initialAssignment");
        };
        let input = reprovisioned(existing, &e.labels, sas);
        let input = serde_json::from_value(input)
            .map_err(|err| DpsError::new(400, 400004, err.to_string()))?;
        self.registry
            .update_device(system, app, device, input)
            .await
            .map_err(failed)?;
        if e.reprovision_policy.migrate_device_data {
            return Ok("deviceDataMigrated");
        }
        let twin = self
            .registry
            .twin(system, app, device)
            .await
            .map_err(failed)?;
        self.initial_twin(system, app, device, e, Some(&twin.desired))
            .await?;
        Ok("deviceDataReset")
    }

    /// Gives the device the enrollment's initial twin; `old_desired` members it lacks are
    /// removed.
    async fn initial_twin(
        &self,
        system: &Principal,
        app: &str,
        device: &str,
        e: &Enrollment,
        old_desired: Option<&Map<String, Value>>,
    ) -> Result<(), DpsError> {
        let mut patch = e.initial_twin.desired.clone();
        for k in old_desired.into_iter().flat_map(|d| d.keys()) {
            patch.entry(k.clone()).or_insert(Value::Null);
        }
        let failed =
            |err: RegistryError| DpsError::new(400, 400004, format!("initial twin: {err}"));
        if !patch.is_empty() {
            self.registry
                .patch_desired(system, app, device, &patch, None)
                .await
                .map_err(failed)?;
        }
        if !e.initial_twin.tags.is_empty() || old_desired.is_some() {
            self.registry
                .replace_tags(system, app, device, e.initial_twin.tags.clone())
                .await
                .map_err(failed)?;
        }
        Ok(())
    }

    async fn provisioned_event(&self, r: &RegistrationRecord) {
        let system = Principal::SystemAdmin("drover-provisioning".into());
        let (Ok(app), Ok(dev)) = (
            self.registry.get_app(&system, &r.application).await,
            self.registry
                .get_device(&system, &r.application, &r.device_id)
                .await,
        ) else {
            return;
        };
        let event = drover_model::Event {
            id: uuid::Uuid::new_v4().to_string(),
            ty: PROVISIONED_TYPE.to_string(),
            channel: "provisioning".into(),
            time: Utc::now(),
            content_type: Some("application/json".into()),
            data_schema: None,
            application: r.application.clone(),
            application_uid: app.metadata.uid.clone(),
            device: r.device_id.clone(),
            device_uid: dev.metadata.uid.clone(),
            sender: r.device_id.clone(),
            sender_uid: dev.metadata.uid.clone(),
            instance: self.instance.clone(),
            extensions: Vec::new(),
            data: json!({
                "registrationId": r.registration_id,
                "substatus": r.substatus,
                "enrollment": {"kind": r.enrollment_kind, "id": r.enrollment_id},
            })
            .to_string()
            .into(),
        };
        let stream = StreamKey::new(&r.application, &app.metadata.uid);
        if let Err(e) = self.log.append(&stream, event).await {
            tracing::warn!(app = %r.application, "cannot record a provisioning: {e}");
        }
    }

    /// The registration of an operation a client polls.
    pub async fn operation(
        &self,
        registration_id: &str,
        operation_id: &str,
    ) -> Result<RegistrationRecord, DpsError> {
        self.registry
            .find_registration(registration_id)
            .await
            .map_err(DpsError::unavailable)?
            .filter(|r| r.operation_id == operation_id)
            .ok_or_else(|| {
                DpsError::new(
                    404,
                    404203,
                    format!("no operation '{operation_id}' for registration '{registration_id}'"),
                )
            })
    }

    /// The record of a registration id (its status lookup).
    pub async fn registration(
        &self,
        registration_id: &str,
    ) -> Result<RegistrationRecord, DpsError> {
        self.registry
            .find_registration(registration_id)
            .await
            .map_err(DpsError::unavailable)?
            .ok_or_else(|| {
                DpsError::new(
                    404,
                    404202,
                    format!("registration '{registration_id}' has not been provisioned"),
                )
            })
    }

    /// `{"operationId", "status": "assigning"}`: the answer to a registration.
    pub fn assigning(r: &RegistrationRecord) -> Value {
        json!({"operationId": r.operation_id, "status": "assigning"})
    }

    /// The RegistrationOperationStatus of a finished operation.
    pub fn status(&self, r: &RegistrationRecord) -> Value {
        json!({
            "operationId": r.operation_id,
            "status": r.status,
            "registrationState": self.registration_state(r),
        })
    }

    /// The registrationState of a record.
    pub fn registration_state(&self, r: &RegistrationRecord) -> Value {
        let time =
            |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut state = json!({
            "registrationId": r.registration_id,
            "createdDateTimeUtc": time(r.created_date_time_utc),
            "assignedHub": self.assigned_hub(&r.application),
            "deviceId": r.device_id,
            "status": r.status,
            "substatus": r.substatus,
            "lastUpdatedDateTimeUtc": time(r.last_updated_date_time_utc),
            "etag": r.etag,
            "symmetricKey": match r.enrollment_kind {
                EnrollmentKind::Group => json!({"enrollmentGroupId": r.enrollment_id}),
                EnrollmentKind::Individual => json!({}),
            },
        });
        if let Some(p) = &r.payload {
            state["payload"] = p.clone();
        }
        state
    }
}

fn keys_of(e: &Enrollment) -> Vec<String> {
    e.attestation
        .symmetric_key
        .iter()
        .flat_map(|k| std::iter::once(k.primary_key.clone()).chain(k.secondary_key.clone()))
        .collect()
}

/// The input that re-provisions `existing`: the enrollment's labels added, its SAS credential
/// the device's key (other credentials kept).
fn reprovisioned(
    existing: Resource,
    labels: &std::collections::BTreeMap<String, String>,
    sas: Value,
) -> Value {
    let mut doc = serde_json::to_value(existing).unwrap_or_default();
    if let Some(l) = doc["metadata"]["labels"].as_object_mut() {
        for (k, v) in labels {
            l.insert(k.clone(), json!(v));
        }
    } else {
        doc["metadata"]["labels"] = json!(labels);
    }
    let creds = doc["spec"]["authentication"]["credentials"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut creds: Vec<Value> = creds
        .into_iter()
        .filter(|c| c.get("sas").is_none())
        .collect();
    creds.push(sas);
    doc["spec"]["authentication"]["credentials"] = json!(creds);
    json!({"metadata": doc["metadata"], "spec": doc["spec"]})
}
