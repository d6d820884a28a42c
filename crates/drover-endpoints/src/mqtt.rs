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
//!   queued commands are handed over; the twin topics (`twin`); anything else is refused.
//! - Twins: `$twin/get`, `$twin/reported`, `$twin/desired`, `$twin/current` (see `twin`).
//! - Transports: the MQTT and MQTTS listeners, and WebSocket on the HTTP(S) device listeners
//!   (`websocket`).
//! - Connection changes become `io.drogue.connection.v1` events; a will becomes an event when
//!   the connection ends without a clean DISCONNECT.

mod commands;
mod connect;
mod iothub;
mod publish;
mod topic;
mod twin;
pub mod websocket;

use std::sync::Arc;

use drover_auth::device::{AuthenticatedDevice, DeviceAuthenticator};
use drover_bus::commands::{CommandRouter, SinkRegistration};
use drover_bus::{EventLog, StreamKey};
use drover_model::spec::MqttDialect;
use drover_model::Resource;
use drover_mqtt::{
    Accepted, CloseReason, ConnectRequest, Inbound, Policy, PublishRefusal, QoS, Refusal,
    SessionHandle, SubscribeRefusal, SubscribeRequest, Subscription,
};
use drover_registry::DeviceTwins;

/// Who is connected.
pub struct DeviceConnection {
    pub device: AuthenticatedDevice,
    pub dialect: MqttDialect,
    /// The IoT hub an Azure SDK device named (it speaks Azure's dialect, see `iothub`).
    pub azure: Option<String>,
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

/// The device endpoint's MQTT policy.
pub struct DevicePolicy {
    auth: Arc<DeviceAuthenticator>,
    log: Arc<dyn EventLog>,
    commands: Arc<CommandRouter>,
    twins: Arc<dyn DeviceTwins>,
    instance: String,
}

impl DevicePolicy {
    pub fn new(
        auth: Arc<DeviceAuthenticator>,
        log: Arc<dyn EventLog>,
        commands: Arc<CommandRouter>,
        twins: Arc<dyn DeviceTwins>,
        instance: String,
    ) -> Self {
        Self {
            auth,
            log,
            commands,
            twins,
            instance,
        }
    }
}

impl Policy for DevicePolicy {
    type Identity = Arc<DeviceConnection>;

    async fn connect(&self, req: &ConnectRequest) -> Result<Accepted<Self::Identity>, Refusal> {
        self.accept(req).await
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
        commands::register_commands(&self.commands, conn, session, false);
        tracing::debug!(
            app = conn.device.app_name(),
            device = conn.device.device_name(),
            "MQTT device connected"
        );
        self.connection_event(conn, true).await;
    }

    async fn publish(&self, conn: &Self::Identity, msg: Inbound) -> Result<(), PublishRefusal> {
        self.publish_one(conn, msg).await
    }

    /// One log append for the whole batch, in packet order (see `publish_in_order`).
    async fn publish_batch(
        &self,
        conn: &Self::Identity,
        messages: Vec<Inbound>,
    ) -> Vec<Result<(), PublishRefusal>> {
        self.publish_in_order(conn, messages).await
    }

    async fn subscribe(
        &self,
        conn: &Self::Identity,
        _session: &SessionHandle,
        req: &SubscribeRequest,
    ) -> Vec<Result<QoS, SubscribeRefusal>> {
        if conn.azure.is_some() {
            return iothub::subscribe(conn, req);
        }
        req.filters
            .iter()
            .map(|f| {
                if f.share_group.is_some() {
                    Err(SubscribeRefusal::SharedSubscriptionsNotSupported)
                } else if topic::is_command_inbox(&f.filter) {
                    Ok(f.options.qos.min(QoS::AtLeastOnce))
                } else if twin::is_twin_filter(&f.filter) {
                    Ok(twin::twin_qos(f.options.qos))
                } else {
                    tracing::info!(app = conn.device.app_name(), device = conn.device.device_name(), filter = %f.filter, "subscription refused: devices subscribe to command/inbox/... and $twin/... only");
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
        if granted
            .iter()
            .any(|s| topic::is_command_inbox(&s.filter) || conn.azure.is_some())
        {
            // Only while still connected (`disconnected` clears the registration).
            commands::register_commands(&self.commands, conn, session, true);
        }
        if conn.azure.is_none() && granted.iter().any(|s| twin::is_twin_filter(&s.filter)) {
            // The whole twin first, then the changes: a device that was offline catches up.
            let _ = self.send_current_twin(conn).await;
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
