//! The MQTT device endpoint: Drogue's MQTT dialects on top of the session machinery of
//! `drover-mqtt`. This module is the *policy* — who may connect, what a PUBLISH means — and the
//! listeners (plain and TLS).
//!
//! - CONNECT: user name `device@app` + password; user name `user` + password with client id
//!   `device@app` (a `user` credential); or a TLS client certificate. One live connection per
//!   device: the session key is `<app>/<device>`, so a second connection takes over.
//! - PUBLISH, dialect `drogue/v1` (default): `<channel>` for the device itself,
//!   `<channel>/<device>` as a gateway for `<device>`. Dialect `plainTopic`: the topic is the
//!   channel; with `devicePrefix: true` it is `<device>/<channel>`. Set per device or per app in
//!   `spec.mqtt.dialect` (the device's wins).
//! - The event is appended durably before a QoS 1 PUBACK; MQTT 5 content type and user
//!   properties are carried into it.
//! - SUBSCRIBE: the command inboxes `command/inbox//#`, `command/inbox/<device>/#`,
//!   `command/inbox/#`; once one is stored in the session (the `subscribed` hook) the device's
//!   queued commands are handed over; anything else is refused.
//! - Connection changes become `io.drogue.connection.v1` events; a will becomes an event when
//!   the connection ends without a clean DISCONNECT.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use drover_auth::device::{AuthError, AuthenticatedDevice, DeviceAuthenticator, DeviceCredentials};
use drover_bus::commands::{
    Command, CommandRouter, CommandSink, Reply, SinkRefusal, SinkRegistration,
};
use drover_bus::{BusError, EventLog, StreamKey};
use drover_model::event::CONNECTION_TYPE;
use drover_model::spec::MqttDialect;
use drover_model::Resource;
use drover_mqtt::{
    Accepted, CloseReason, ConnectRequest, Inbound, Policy, PublishRefusal, QoS, Refusal,
    SessionHandle, SubscribeRefusal, SubscribeRequest, Subscription,
};

use crate::event::{detect_content_type, is_json, telemetry, Message};

/// Who is connected.
pub struct DeviceConnection {
    pub device: AuthenticatedDevice,
    pub dialect: MqttDialect,
    stream: StreamKey,
    v5: bool,
    /// Registered with the command router while connected.
    commands: std::sync::Mutex<Option<SinkRegistration>>,
    /// Devices this gateway was authorized to publish for, with when.
    targets:
        std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Arc<Resource>)>>,
    /// Serializes gateway lookups so publishes keep their order (see `gateway_target`).
    lookup: tokio::sync::Mutex<()>,
    /// Puts batches of publishes into the log in packet order (see `publish_batch`).
    order: tokio::sync::Mutex<()>,
}

/// The CloudEvent extension that marks an event an MQTT 3.1.1 device published with RETAIN set
/// (MQTT 5 devices are told retain is not available and are disconnected with 0x9A if they
/// set it). Drover keeps no retained messages.
pub const RETAIN_EXTENSION: &str = "mqttretain";

/// How long a gateway's authorization for a device is reused.
const TARGET_CACHE: std::time::Duration = std::time::Duration::from_secs(10);

impl DeviceConnection {
    fn cached_target(&self, target: &str) -> Option<Arc<Resource>> {
        let cache = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(target)
            .filter(|(at, _)| at.elapsed() < TARGET_CACHE)
            .map(|(_, d)| d.clone())
    }
}

/// Hands commands to a device's MQTT session (its own, or a gateway's for devices behind it).
struct MqttSink {
    session: SessionHandle,
    /// The device this session belongs to.
    device: String,
    v5: bool,
}

impl CommandSink for MqttSink {
    fn deliver(&self, c: &Command) -> Result<(), SinkRefusal> {
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

/// The device endpoint's MQTT policy.
pub struct DevicePolicy {
    auth: Arc<DeviceAuthenticator>,
    log: Arc<dyn EventLog>,
    commands: Arc<CommandRouter>,
    instance: String,
}

impl DevicePolicy {
    pub fn new(
        auth: Arc<DeviceAuthenticator>,
        log: Arc<dyn EventLog>,
        commands: Arc<CommandRouter>,
        instance: String,
    ) -> Self {
        Self {
            auth,
            log,
            commands,
            instance,
        }
    }

    /// A reply to a command: `command/reply/<id>[/<status>]`.
    async fn reply(
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

    async fn append(
        &self,
        conn: &DeviceConnection,
        event: drover_model::Event,
    ) -> Result<(), PublishRefusal> {
        match self.log.append(&conn.stream, event).await {
            Ok(_) => Ok(()),
            Err(e) => Err(Self::refusal(conn, e)),
        }
    }

    /// Appends `events` (the messages at `slots` of `results`) in one batch; failures go to
    /// their results.
    async fn append_events(
        &self,
        conn: &DeviceConnection,
        events: Vec<drover_model::Event>,
        slots: &[usize],
        results: &mut [Result<(), PublishRefusal>],
    ) {
        let outcomes = self.log.append_batch(&conn.stream, events).await;
        Self::record_outcomes(conn, outcomes, slots, results);
    }

    fn record_outcomes(
        conn: &DeviceConnection,
        outcomes: Vec<drover_bus::Result<drover_bus::Offset>>,
        slots: &[usize],
        results: &mut [Result<(), PublishRefusal>],
    ) {
        for (&slot, outcome) in slots.iter().zip(outcomes) {
            if let (Err(e), Some(result)) = (outcome, results.get_mut(slot)) {
                *result = Err(Self::refusal(conn, e));
            }
        }
    }

    fn refusal(conn: &DeviceConnection, e: BusError) -> PublishRefusal {
        tracing::warn!(
            app = conn.device.app_name(),
            device = conn.device.device_name(),
            "cannot accept MQTT publish: {e}"
        );
        match e {
            BusError::TooLarge(_) | BusError::Overloaded(_) => PublishRefusal::QuotaExceeded,
            _ => PublishRefusal::ImplementationSpecific,
        }
    }

    async fn connection_event(&self, conn: &DeviceConnection, connected: bool) {
        let mut event = telemetry(
            &conn.device,
            &conn.device.device,
            Message {
                channel: "connection".into(),
                content_type: Some("application/json".into()),
                data: Bytes::from(format!("{{\"connected\":{connected}}}")),
                ..Message::default()
            },
            &self.instance,
        );
        event.ty = CONNECTION_TYPE.to_string();
        if let Err(e) = self.log.append(&conn.stream, event).await {
            tracing::warn!(
                app = conn.device.app_name(),
                device = conn.device.device_name(),
                "cannot record connection change: {e}"
            );
        }
    }

    /// Channel and target device of a topic, per dialect.
    fn route<'t>(
        conn: &DeviceConnection,
        topic: &'t str,
    ) -> Result<(String, Option<&'t str>), PublishRefusal> {
        if topic.is_empty() {
            return Err(PublishRefusal::TopicNameInvalid);
        }
        Ok(match &conn.dialect {
            MqttDialect::DrogueV1 => match topic.split_once('/') {
                Some((channel, device)) if !channel.is_empty() && !device.is_empty() => {
                    (channel.to_string(), Some(device))
                }
                Some(_) => return Err(PublishRefusal::TopicNameInvalid),
                None => (topic.to_string(), None),
            },
            MqttDialect::PlainTopic {
                device_prefix: false,
            } => (topic.to_string(), None),
            MqttDialect::PlainTopic {
                device_prefix: true,
            } => match topic.split_once('/') {
                Some((device, channel)) if !device.is_empty() && !channel.is_empty() => {
                    (channel.to_string(), Some(device))
                }
                _ => return Err(PublishRefusal::TopicNameInvalid),
            },
        })
    }

    /// The device a gateway publishes for, authorized through the registry and cached for a few
    /// seconds. Publishes are processed concurrently but must reach the log in packet order: a
    /// lookup happens under a per-connection lock, and the append is enqueued before the next
    /// publish can take it, so a later message for the same device never overtakes an earlier
    /// one.
    async fn gateway_target(
        &self,
        conn: &DeviceConnection,
        target: &str,
    ) -> Result<Arc<Resource>, PublishRefusal> {
        if let Some(d) = conn.cached_target(target) {
            return Ok(d);
        }
        let _order = conn.lookup.lock().await;
        if let Some(d) = conn.cached_target(target) {
            return Ok(d);
        }
        let device = self
            .auth
            .authorize_as(&conn.device, target)
            .await
            .map_err(|e| {
                tracing::info!(
                    app = conn.device.app_name(),
                    gateway = conn.device.device_name(),
                    target,
                    "publish refused: {e}"
                );
                if e.is_unavailable() {
                    PublishRefusal::ImplementationSpecific
                } else {
                    PublishRefusal::NotAuthorized
                }
            })?;
        let mut cache = conn.targets.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= 1024 {
            cache.clear();
        }
        cache.insert(
            target.to_string(),
            (std::time::Instant::now(), device.clone()),
        );
        Ok(device)
    }

    async fn event_for(
        &self,
        conn: &DeviceConnection,
        msg: Inbound,
    ) -> Result<drover_model::Event, PublishRefusal> {
        let (channel, target) = Self::route(conn, &msg.topic)?;
        let device: Arc<Resource> = match target {
            None => conn.device.device.clone(),
            Some(t) if t == conn.device.device_name() => conn.device.device.clone(),
            Some(t) => self.gateway_target(conn, t).await?,
        };
        let declared = msg.properties.content_type.as_ref().map(|c| c.to_string());
        if let Some(ct) = declared.as_deref().filter(|c| is_json(c)) {
            if serde_json::from_slice::<serde::de::IgnoredAny>(&msg.payload).is_err() {
                tracing::info!(
                    app = conn.device.app_name(),
                    device = conn.device.device_name(),
                    "publish refused: content type '{ct}' but the payload is not JSON"
                );
                return Err(PublishRefusal::PayloadFormatInvalid);
            }
        }
        let mut extensions: Vec<(String, String)> = msg
            .properties
            .user_properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if msg.retain {
            // MQTT 3.1.1 cannot refuse it: the event says the device asked (nothing is retained).
            extensions.push((RETAIN_EXTENSION.into(), "true".into()));
        }
        let message = Message {
            content_type: detect_content_type(declared.as_deref(), &msg.payload),
            data_schema: None,
            extensions,
            data: msg.payload,
            channel,
        };
        Ok(telemetry(&conn.device, &device, message, &self.instance))
    }
}

/// (Re-)registers a session with the command router, which hands it what is queued for it.
/// With `only_if_registered`, nothing happens once the connection ended.
fn register_commands(
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

fn credentials(req: &ConnectRequest) -> Option<DeviceCredentials> {
    let username = req.username.as_ref().map(|u| u.to_string());
    let password = req
        .password
        .as_ref()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    match (username, password) {
        (Some(username), Some(password)) => {
            if username.contains('@') {
                Some(DeviceCredentials::Password {
                    username,
                    password,
                    application: None,
                    device: None,
                })
            } else {
                // `user` credential: the client id says which device of which app.
                let (device, app) = req.client_id.rsplit_once('@')?;
                Some(DeviceCredentials::Password {
                    username,
                    password,
                    application: Some(app.to_string()),
                    device: Some(device.to_string()),
                })
            }
        }
        _ => req.connection.client_certificates.as_ref().map(|chain| {
            DeviceCredentials::Certificate {
                chain: chain.clone(),
                application: req
                    .client_id
                    .rsplit_once('@')
                    .map(|(_, app)| app.to_string()),
            }
        }),
    }
}

fn dialect(conn: &AuthenticatedDevice) -> MqttDialect {
    let of = |r: &Resource| {
        r.spec
            .get("mqtt")
            .and_then(|m| serde_json::from_value::<drover_model::spec::Mqtt>(m.clone()).ok())
            .map(|m| m.dialect)
    };
    of(&conn.device)
        .or_else(|| of(&conn.application))
        .unwrap_or_default()
}

/// Command inbox filters a device may subscribe to.
fn is_command_inbox(filter: &str) -> bool {
    filter == "command/inbox/#"
        || filter
            .strip_prefix("command/inbox/")
            .and_then(|rest| rest.strip_suffix("/#"))
            .is_some_and(|device| !device.contains(['+', '#']))
}

impl Policy for DevicePolicy {
    type Identity = Arc<DeviceConnection>;

    async fn connect(&self, req: &ConnectRequest) -> Result<Accepted<Self::Identity>, Refusal> {
        let Some(creds) = credentials(req) else {
            tracing::info!(peer = %req.connection.peer_addr, client_id = %req.client_id, "MQTT connect refused: no credentials (user name `device@app` and password, or a client certificate)");
            return Err(Refusal::BadCredentials);
        };
        let peer = req.connection.peer_addr;
        let device = self.auth.authenticate(&creds, peer.ip()).await.map_err(|e: AuthError| {
            if e.is_unavailable() {
                tracing::warn!(%peer, "MQTT connect: authentication unavailable: {e}");
                return Refusal::ServerUnavailable;
            }
            if let Some(held_back) = self.auth.throttle().admit_log() {
                tracing::info!(%peer, client_id = %req.client_id, credentials = ?creds, held_back, "MQTT connect refused: {e}");
            }
            match e {
                AuthError::Throttled(_) => Refusal::ConnectionRateExceeded,
                _ => Refusal::BadCredentials,
            }
        })?;
        let key = format!("{}/{}", device.app_name(), device.device_name());
        let conn = DeviceConnection {
            dialect: dialect(&device),
            stream: StreamKey::new(device.app_name(), device.app_uid()),
            device,
            v5: req.protocol.is_v5(),
            commands: std::sync::Mutex::new(None),
            targets: std::sync::Mutex::new(std::collections::HashMap::new()),
            lookup: tokio::sync::Mutex::new(()),
            order: tokio::sync::Mutex::new(()),
        };
        Ok(Accepted::new(Arc::new(conn), key)
            .shared_subscriptions(false)
            .wildcard_subscriptions(true))
    }

    async fn connected(&self, conn: &Self::Identity, session: &SessionHandle, _present: bool) {
        // On a cluster, the device's connections on other nodes close.
        self.commands.session_started(
            conn.device.app_name(),
            &(
                conn.device.app_uid().to_string(),
                conn.device.device_name().to_string(),
            ),
        );
        register_commands(&self.commands, conn, session, false);
        tracing::debug!(
            app = conn.device.app_name(),
            device = conn.device.device_name(),
            "MQTT device connected"
        );
        self.connection_event(conn, true).await;
    }

    async fn publish(&self, conn: &Self::Identity, msg: Inbound) -> Result<(), PublishRefusal> {
        if let Some(rest) = msg.topic.strip_prefix("command/reply/") {
            let rest = rest.to_string();
            return self.reply(conn, &rest, msg).await;
        }
        let event = self.event_for(conn, msg).await?;
        self.append(conn, event).await
    }

    /// One log append for the whole batch (one hand-off to the log's writer, one fsync).
    /// Batches of a connection are processed concurrently but reach the log in packet order:
    /// each builds its events and starts its append under the connection's `order` lock
    /// (first come, first served, and batches start in packet order), and lets the next batch
    /// in as soon as its events have entered the log's order — before they are durable. The
    /// lock is held across an await only for gateway lookups that miss the cache and for
    /// command replies (a reply is handled on its own, after the events before it are durable).
    async fn publish_batch(
        &self,
        conn: &Self::Identity,
        messages: Vec<Inbound>,
    ) -> Vec<Result<(), PublishRefusal>> {
        let order = conn.order.lock().await;
        let mut results = Vec::with_capacity(messages.len());
        let mut events = Vec::with_capacity(messages.len());
        let mut slots = Vec::with_capacity(messages.len());
        for msg in messages {
            if msg.topic.starts_with("command/reply/") {
                if !events.is_empty() {
                    self.append_events(conn, std::mem::take(&mut events), &slots, &mut results)
                        .await;
                    slots.clear();
                }
                results.push(self.publish(conn, msg).await);
                continue;
            }
            match self.event_for(conn, msg).await {
                Ok(event) => {
                    slots.push(results.len());
                    results.push(Ok(()));
                    events.push(event);
                }
                Err(refusal) => results.push(Err(refusal)),
            }
        }
        if events.is_empty() {
            return results;
        }
        let mut append = std::pin::pin!(self.log.append_batch(&conn.stream, events));
        // The first poll puts the events into the log's order (the `EventLog` contract).
        let first = std::future::poll_fn(|cx| Poll::Ready(append.as_mut().poll(cx))).await;
        drop(order);
        let outcomes = match first {
            Poll::Ready(outcomes) => outcomes,
            Poll::Pending => append.await,
        };
        Self::record_outcomes(conn, outcomes, &slots, &mut results);
        results
    }

    async fn subscribe(
        &self,
        conn: &Self::Identity,
        _session: &SessionHandle,
        req: &SubscribeRequest,
    ) -> Vec<Result<QoS, SubscribeRefusal>> {
        req.filters
            .iter()
            .map(|f| {
                if f.share_group.is_some() {
                    Err(SubscribeRefusal::SharedSubscriptionsNotSupported)
                } else if is_command_inbox(&f.filter) {
                    Ok(f.options.qos.min(QoS::AtLeastOnce))
                } else {
                    tracing::info!(app = conn.device.app_name(), device = conn.device.device_name(), filter = %f.filter, "subscription refused: devices subscribe to command/inbox/... only");
                    Err(SubscribeRefusal::TopicFilterInvalid)
                }
            })
            .collect()
    }

    /// A command inbox is stored in the session now: hand over what waits for the device.
    async fn subscribed(
        &self,
        conn: &Self::Identity,
        session: &SessionHandle,
        granted: &[Subscription],
    ) {
        if granted.iter().any(|s| is_command_inbox(&s.filter)) {
            // Only while still connected (`disconnected` clears the registration).
            register_commands(&self.commands, conn, session, true);
        }
    }

    async fn will(&self, conn: &Self::Identity, will: Inbound) {
        match self.event_for(conn, will).await {
            Ok(event) => {
                let _ = self.append(conn, event).await;
            }
            Err(e) => tracing::info!(
                app = conn.device.app_name(),
                device = conn.device.device_name(),
                "will not published: {e:?}"
            ),
        }
    }

    async fn disconnected(&self, conn: &Self::Identity, reason: &CloseReason) {
        tracing::debug!(
            app = conn.device.app_name(),
            device = conn.device.device_name(),
            ?reason,
            "MQTT device disconnected"
        );
        *conn.commands.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.connection_event(conn, false).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_inboxes() {
        assert!(is_command_inbox("command/inbox/#"));
        assert!(is_command_inbox("command/inbox//#"));
        assert!(is_command_inbox("command/inbox/dev-1/#"));
        assert!(!is_command_inbox("command/inbox/+/#"));
        assert!(!is_command_inbox("#"));
        assert!(!is_command_inbox("command/inbox"));
    }
}
