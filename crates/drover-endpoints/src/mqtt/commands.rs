//! Commands to devices: the sink that hands them to a device's session, its registration with
//! the command router, and the devices' replies.

use std::sync::Arc;

use bytes::Bytes;
use drover_bus::commands::{Command, CommandRouter, CommandSink, Reply, SinkRefusal};
use drover_mqtt::{Inbound, PublishRefusal, QoS, SessionHandle};

use super::{DeviceConnection, DevicePolicy};
use crate::event::{telemetry, Message};

/// Hands commands to a device's MQTT session (its own, or a gateway's for devices behind it).
struct MqttSink {
    session: SessionHandle,
    /// The device this session belongs to.
    device: String,
    v5: bool,
    /// The device speaks Azure IoT Hub's dialect.
    azure: bool,
    /// For answering a direct method the device cannot be sent (see `refuse_oversized`).
    router: std::sync::Weak<CommandRouter>,
    app: String,
    app_uid: String,
}

impl CommandSink for MqttSink {
    fn deliver(&self, c: &Command) -> Result<(), SinkRefusal> {
        if self.azure {
            return self.deliver_iothub(c);
        }
        if c.name.starts_with("$twin/") {
            return self.deliver_twin(c);
        }
        let inbox = if c.device == self.device {
            String::new()
        } else {
            c.device.clone()
        };
        let mut topic = format!("command/inbox/{inbox}/{}", c.name);
        let mut props = drover_mqtt::MessageProperties::default();
        if c.expects_reply {
            if self.v5 {
                props.response_topic = Some(format!("command/reply/{}", c.id).into());
                props.correlation_data = Some(Bytes::from(c.id.clone()));
            } else {
                // MQTT 3.1.1 has no properties: the request id is the topic's last level.
                topic.push('/');
                topic.push_str(&c.id);
            }
        }
        props.content_type = c.content_type.clone().map(Into::into);
        let qos = self
            .session
            .subscription_qos(&topic)
            .ok_or(SinkRefusal::NotSubscribed)?;
        let msg =
            drover_mqtt::OutboundMessage::new(topic, c.payload.clone(), qos.min(QoS::AtLeastOnce))
                .with_properties(props);
        match self.session.try_publish(msg) {
            Ok(_) => Ok(()),
            Err(drover_mqtt::TryPublishError::Full(_)) => Err(SinkRefusal::Full),
            Err(_) => Err(SinkRefusal::Gone),
        }
    }
}

impl MqttSink {
    /// A command to an Azure device: on the topic its dialect has for it.
    fn deliver_iothub(&self, c: &Command) -> Result<(), SinkRefusal> {
        if c.device != self.device {
            return Err(SinkRefusal::NotSubscribed);
        }
        if let Some(limit) = super::iothub::payload_limit(c) {
            if c.payload.len() > limit {
                self.refuse_oversized(c, limit);
                return Ok(());
            }
        }
        let (topic, qos) =
            super::iothub::command_topic(&self.device, c).ok_or(SinkRefusal::NotSubscribed)?;
        let granted = self
            .session
            .subscription_qos(&topic)
            .ok_or(SinkRefusal::NotSubscribed)?;
        let msg = drover_mqtt::OutboundMessage::new(topic, c.payload.clone(), qos.min(granted));
        match self.session.try_publish(msg) {
            Ok(_) => Ok(()),
            Err(drover_mqtt::TryPublishError::Full(_)) => Err(SinkRefusal::Full),
            Err(_) => Err(SinkRefusal::Gone),
        }
    }

    /// A command over IoT Hub's limit for its kind is taken but not sent: a direct method's
    /// caller gets 413 with the reason as the device's answer; a cloud-to-device message is
    /// dropped with a log line (the command API accepted it before knowing which dialect the
    /// device speaks).
    fn refuse_oversized(&self, c: &Command, limit: usize) {
        let kind = if c.expects_reply {
            "direct method"
        } else {
            "cloud-to-device message"
        };
        let message = format!(
            "the {kind} '{}' has a payload of {} bytes, over IoT Hub's limit of {} KiB for Azure devices: not sent to device '{}'",
            c.name,
            c.payload.len(),
            limit / 1024,
            c.device
        );
        tracing::warn!(app = %self.app, device = %c.device, command = %c.id, "{message}");
        if !c.expects_reply {
            return;
        }
        let Some(router) = self.router.upgrade() else {
            return;
        };
        let reply = Reply {
            status: 413,
            payload: Bytes::from(serde_json::json!({ "message": message }).to_string()),
            content_type: Some("application/json".into()),
        };
        let (app_uid, device, id) = (self.app_uid.clone(), c.device.clone(), c.id.clone());
        // Not from here: the router is busy delivering (and, for a caller on another node,
        // starts waiting for the reply only once the command is taken).
        tokio::spawn(async move {
            for _ in 0..50 {
                match router.reply(&app_uid, &device, &id, reply.clone()) {
                    Err(drover_bus::commands::ReplyError::Unknown(_)) => {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    _ => return,
                }
            }
        });
    }

    /// A twin message (`$twin/desired`, `$twin/current`): on its own topic, to the device's
    /// own session only, if it subscribes.
    fn deliver_twin(&self, c: &Command) -> Result<(), SinkRefusal> {
        if c.device != self.device {
            return Err(SinkRefusal::NotSubscribed);
        }
        let qos = self
            .session
            .subscription_qos(&c.name)
            .ok_or(SinkRefusal::NotSubscribed)?;
        let props = drover_mqtt::MessageProperties {
            content_type: c.content_type.clone().map(Into::into),
            ..Default::default()
        };
        let msg = drover_mqtt::OutboundMessage::new(
            c.name.clone(),
            c.payload.clone(),
            qos.min(QoS::AtLeastOnce),
        )
        .with_properties(props);
        match self.session.try_publish(msg) {
            Ok(_) => Ok(()),
            Err(drover_mqtt::TryPublishError::Full(_)) => Err(SinkRefusal::Full),
            Err(_) => Err(SinkRefusal::Gone),
        }
    }
}

impl DevicePolicy {
    /// A reply to a command: `command/reply/<id>[/<status>]`.
    pub(super) async fn reply(
        &self,
        conn: &DeviceConnection,
        rest: &str,
        msg: Inbound,
    ) -> Result<(), PublishRefusal> {
        let (id, status) = match rest.split_once('/') {
            Some((id, status)) => (id, status.parse::<u16>().ok()),
            None => (rest, Some(200)),
        };
        let status = status
            .or_else(|| msg.properties.user_property("status")?.parse().ok())
            .filter(|s| (100..600).contains(s))
            .ok_or_else(|| {
                tracing::info!(
                    app = conn.device.app_name(),
                    device = conn.device.device_name(),
                    "reply refused: status must be 100..599 (command/reply/<id>/<status>)"
                );
                PublishRefusal::TopicNameInvalid
            })?;
        let reply = Reply {
            status,
            payload: msg.payload.clone(),
            content_type: msg.properties.content_type.as_ref().map(|c| c.to_string()),
        };
        self.commands
            .reply(conn.device.app_uid(), conn.device.device_name(), id, reply)
            .map_err(|e| {
                tracing::info!(
                    app = conn.device.app_name(),
                    device = conn.device.device_name(),
                    "reply refused: {e}"
                );
                PublishRefusal::NotAuthorized
            })?;
        let mut event = telemetry(
            &conn.device,
            &conn.device.device,
            Message {
                channel: format!("reply/{id}"),
                content_type: msg.properties.content_type.as_ref().map(|c| c.to_string()),
                data: msg.payload,
                extensions: vec![
                    ("commandid".into(), id.to_string()),
                    ("status".into(), status.to_string()),
                ],
                ..Message::default()
            },
            &self.instance,
        );
        event.ty = drover_model::event::COMMAND_REPLY_TYPE.to_string();
        self.append(conn, event).await
    }
}

/// (Re-)registers a session with the command router, which hands it what is queued for it.
/// With `only_if_registered`, nothing happens once the connection ended.
pub(super) fn register_commands(
    router: &Arc<CommandRouter>,
    conn: &DeviceConnection,
    session: &SessionHandle,
    only_if_registered: bool,
) {
    let mut slot = conn.commands.lock().unwrap_or_else(|e| e.into_inner());
    if only_if_registered && slot.is_none() {
        return;
    }
    let sink = Arc::new(MqttSink {
        session: session.clone(),
        device: conn.device.device_name().to_string(),
        v5: conn.v5,
        azure: conn.azure.is_some(),
        router: Arc::downgrade(router),
        app: conn.device.app_name().to_string(),
        app_uid: conn.device.app_uid().to_string(),
    });
    let key = (
        conn.device.app_uid().to_string(),
        conn.device.device_name().to_string(),
    );
    // The new registration first, then the old one goes: the device never looks unreachable
    // in between (on a cluster that would unsubscribe it and subscribe it again).
    let registration = router.register(key, sink);
    *slot = Some(registration);
}
