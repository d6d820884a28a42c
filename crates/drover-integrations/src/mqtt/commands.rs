//! Commands published by integration clients: a PUBLISH to `command/<app>/<device>/<command>`
//! sends a command for the user; with an MQTT 5 Response Topic the device's reply is published
//! back to the client.

use std::sync::Arc;
use std::time::Duration;

use drover_bus::commands::CommandError;
use drover_mqtt::{Inbound, PublishRefusal, QoS, SessionHandle};

use super::{IntegrationClient, IntegrationPolicy};
use crate::commands::{CommandRequest, CommandService, SendError, Sent};

/// How long a reply is waited for when the client does not say (`timeout` user property).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl IntegrationPolicy {
    /// Sends the command a PUBLISH asks for; its PUBACK follows once the command was handed
    /// on (see the module docs of [`super`]).
    pub(super) async fn send_command(
        &self,
        client: &IntegrationClient,
        msg: Inbound,
    ) -> Result<(), PublishRefusal> {
        let refuse = |why: &str, r: PublishRefusal| {
            tracing::info!(user = client.principal.name(), client_id = %client.client_id, topic = %msg.topic, "MQTT integration: PUBLISH refused: {why}");
            Err(r)
        };
        let Some(service) = &self.commands else {
            return refuse("commands are not available", PublishRefusal::NotAuthorized);
        };
        let Some((app, rest)) = msg
            .topic
            .strip_prefix("command/")
            .and_then(|r| r.split_once('/'))
        else {
            return refuse(
                "integration clients publish only commands, to command/<app>/<device>/<command>",
                PublishRefusal::TopicNameInvalid,
            );
        };
        let Some((device, name)) = rest.rsplit_once('/') else {
            return refuse(
                "expected command/<app>/<device>/<command>",
                PublishRefusal::TopicNameInvalid,
            );
        };
        let prop = |k: &str| msg.properties.user_property(k)?.parse::<u64>().ok();
        let response_topic = msg.properties.response_topic.clone();
        let timeout = response_topic
            .as_ref()
            .map(|_| prop("timeout").map_or(DEFAULT_TIMEOUT, Duration::from_secs));
        let request = CommandRequest {
            app: app.to_string(),
            device: device.to_string(),
            name: name.to_string(),
            payload: msg.payload.clone(),
            content_type: msg.properties.content_type.as_ref().map(|c| c.to_string()),
            timeout,
            ttl: prop("ttl").map(Duration::from_secs),
        };
        let sent = match service.send(&client.principal, request).await {
            Ok(s) => s,
            Err(e) => return refuse(&format!("command not sent: {e}"), refusal(&e)),
        };
        // MQTT 5: the reply goes to the response topic, with the correlation data.
        if let (Some(topic), Some(timeout), Some(session)) =
            (response_topic, timeout, client.session.get().cloned())
        {
            let reply = Reply {
                topic,
                correlation: msg.properties.correlation_data.clone(),
                timeout,
            };
            tokio::spawn(forward_reply(service.clone(), sent, reply, session));
        }
        Ok(())
    }
}

/// The PUBACK reason code for a command that was not sent.
fn refusal(e: &SendError) -> PublishRefusal {
    match e {
        SendError::Invalid(_) => PublishRefusal::TopicNameInvalid,
        SendError::Routing(CommandError::QueueFull(..)) => PublishRefusal::QuotaExceeded,
        SendError::Routing(CommandError::Unreachable(_)) => PublishRefusal::Unspecified,
        SendError::Routing(_) | SendError::External(_) => PublishRefusal::ImplementationSpecific,
        _ => PublishRefusal::NotAuthorized,
    }
}

/// Where a command's reply goes.
struct Reply {
    topic: drover_mqtt::ByteString,
    correlation: Option<bytes::Bytes>,
    timeout: Duration,
}

/// Waits for the reply of `sent` and publishes it to the client's session, with the request's
/// correlation data and a user property `status` (504 when no reply came in time).
async fn forward_reply(
    service: Arc<CommandService>,
    sent: Sent,
    reply: Reply,
    session: SessionHandle,
) {
    let (status, payload, content_type) = match service.wait(sent, reply.timeout).await {
        Some(r) => (r.status, r.payload, r.content_type),
        None => (
            504,
            bytes::Bytes::from_static(b"no reply from the device in time"),
            Some("text/plain".into()),
        ),
    };
    let props = drover_mqtt::MessageProperties {
        correlation_data: reply.correlation,
        content_type: content_type.map(Into::into),
        user_properties: vec![("status".into(), status.to_string().into())],
        ..Default::default()
    };
    let message = drover_mqtt::OutboundMessage::new(reply.topic, payload, QoS::AtLeastOnce)
        .with_properties(props);
    if let Err(e) = session.publish(message).await {
        tracing::info!("cannot deliver a command reply to the integration client: {e}");
    }
}
