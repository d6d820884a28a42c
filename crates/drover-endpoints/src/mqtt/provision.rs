//! Provisioning clients on the device MQTT listeners (Azure DPS's MQTT protocol, see
//! `crate::dps`): attested at CONNECT by the SAS token in the password, they subscribe to
//! `$dps/registrations/res/#`, register and poll; the answers go to their session.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use drover_mqtt::{
    Accepted, ConnectRequest, Inbound, OutboundMessage, PublishRefusal, QoS, Refusal,
    SessionHandle, SubscribeRefusal, SubscribeRequest,
};
use serde_json::Value;

use super::{DevicePolicy, Identity};
use crate::dps::service::{Attested, DpsError, Provisioning, RETRY_AFTER};
use crate::dps::{self, Request};

/// A provisioning client's connection.
pub struct ProvisioningClient {
    attested: Attested,
    session: Mutex<Option<SessionHandle>>,
}

impl ProvisioningClient {
    pub(super) fn connected(&self, session: &SessionHandle) {
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(session.clone());
    }

    pub(super) fn subscribe(&self, req: &SubscribeRequest) -> Vec<Result<QoS, SubscribeRefusal>> {
        req.filters
            .iter()
            .map(|f| {
                if f.filter == dps::RESPONSE_FILTER {
                    Ok(f.options.qos.min(QoS::AtLeastOnce))
                } else {
                    tracing::info!(registration = %self.attested.registration_id, filter = %f.filter, "subscription refused: provisioning clients subscribe to $dps/registrations/res/# only");
                    Err(SubscribeRefusal::TopicFilterInvalid)
                }
            })
            .collect()
    }

    /// Sends an answer to the client's session.
    fn answer(&self, topic: String, body: &Value) {
        let session = self
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(session) = session else { return };
        let msg = OutboundMessage::new(topic, Bytes::from(body.to_string()), QoS::AtLeastOnce);
        if session.try_publish(msg).is_err() {
            tracing::debug!(registration = %self.attested.registration_id, "provisioning answer not sent (the session is gone or full)");
        }
    }
}

impl DevicePolicy {
    /// A CONNECT with a provisioning username: attested by its SAS token (the session key is
    /// `dps/<registration id>`), or refused. `None` for other usernames.
    pub(super) async fn provisioning_client(
        &self,
        req: &ConnectRequest,
    ) -> Result<Option<Accepted<Identity>>, Refusal> {
        let Some(service) = &self.provisioning else {
            return Ok(None);
        };
        let Some(user) = dps::Username::parse(req.username.as_deref().unwrap_or("")) else {
            return Ok(None);
        };
        let peer = req.connection.peer_addr;
        let Some(password) = &req.password else {
            tracing::info!(%peer, registration = %user.registration_id, "provisioning connect refused: no SAS token (X.509 attestation is not supported yet)");
            return Err(Refusal::BadCredentials);
        };
        let token = String::from_utf8_lossy(password);
        let attested = service
            .attest(&user.id_scope, &user.registration_id, &token)
            .await
            .map_err(|e| {
                tracing::info!(%peer, registration = %user.registration_id, "provisioning connect refused: {}", e.message);
                match e.status {
                    401 | 400 => Refusal::BadCredentials,
                    _ => Refusal::ServerUnavailable,
                }
            })?;
        let key = format!("dps/{}", user.registration_id);
        let client = ProvisioningClient {
            attested,
            session: Mutex::new(None),
        };
        Ok(Some(
            Accepted::new(Identity::Provisioning(Arc::new(client)), key)
                .shared_subscriptions(false)
                .wildcard_subscriptions(true),
        ))
    }

    /// A register or poll request of a provisioning client.
    pub(super) async fn provisioning_publish(
        &self,
        client: &ProvisioningClient,
        msg: Inbound,
    ) -> Result<(), PublishRefusal> {
        let Some(service) = &self.provisioning else {
            return Err(PublishRefusal::TopicNameInvalid);
        };
        let request = dps::parse_publish(&msg.topic).map_err(|e| {
            tracing::info!(registration = %client.attested.registration_id, "provisioning publish refused: {e}");
            PublishRefusal::TopicNameInvalid
        })?;
        match request {
            Request::Register { rid } => {
                let (status, body, retry) = register(service, client, &msg.payload).await;
                client.answer(dps::response_topic(status, &rid, retry), &body);
            }
            Request::Poll { rid, operation_id } => {
                let (status, body) = match service
                    .operation(&client.attested.registration_id, &operation_id)
                    .await
                {
                    Ok(r) => (200, service.status(&r)),
                    Err(e) => (e.status, e.body()),
                };
                client.answer(dps::response_topic(status, &rid, None), &body);
            }
        }
        Ok(())
    }
}

/// Registers: 202 with the operation (the client polls for the result), or the refusal.
async fn register(
    service: &Provisioning,
    client: &ProvisioningClient,
    payload: &[u8],
) -> (u16, Value, Option<u64>) {
    let body: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        // The Python SDK sends a body; the C SDK may send none.
        Err(_) if payload.iter().all(u8::is_ascii_whitespace) => Value::Null,
        Err(e) => {
            let e = DpsError {
                status: 400,
                error_code: 400004,
                message: format!("the registration body is not JSON: {e}"),
            };
            return (e.status, e.body(), None);
        }
    };
    if let Some(id) = body.get("registrationId").and_then(Value::as_str) {
        if id != client.attested.registration_id {
            let e = DpsError {
                status: 400,
                error_code: 400004,
                message: format!(
                    "the body's registrationId '{id}' is not the connection's '{}'",
                    client.attested.registration_id
                ),
            };
            return (e.status, e.body(), None);
        }
    }
    let custom = body.get("payload").filter(|p| !p.is_null()).cloned();
    match service.register(&client.attested, custom).await {
        Ok(r) => (202, Provisioning::assigning(&r), Some(RETRY_AFTER)),
        Err(e) => (e.status, e.body(), None),
    }
}
