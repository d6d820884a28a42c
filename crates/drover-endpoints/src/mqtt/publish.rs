//! PUBLISH → event: the channel and device a topic names (a gateway's devices authorized and
//! cached), the event built from the message, and appends that keep packet order.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use drover_bus::BusError;
use drover_model::event::{is_json, CONNECTION_TYPE};
use drover_model::Resource;
use drover_mqtt::{Inbound, PublishRefusal};

use super::{iothub, topic, twin, DeviceConnection, DevicePolicy, RETAIN_EXTENSION};
use crate::event::{detect_content_type, telemetry, Message};

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

impl DevicePolicy {
    /// A command reply, or an event appended on its own.
    pub(super) async fn publish_one(
        &self,
        conn: &DeviceConnection,
        msg: Inbound,
    ) -> Result<(), PublishRefusal> {
        if let Some(rest) = msg.topic.strip_prefix("command/reply/") {
            let rest = rest.to_string();
            return self.reply(conn, &rest, msg).await;
        }
        if conn.azure.is_some() && iothub::is_request(&msg.topic) {
            return self.iothub_request(conn, msg).await;
        }
        if twin::is_twin_topic(&msg.topic) {
            return self.twin_publish(conn, msg).await;
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
    pub(super) async fn publish_in_order(
        &self,
        conn: &DeviceConnection,
        messages: Vec<Inbound>,
    ) -> Vec<Result<(), PublishRefusal>> {
        let order = conn.order.lock().await;
        let mut results = Vec::with_capacity(messages.len());
        let mut events = Vec::with_capacity(messages.len());
        let mut slots = Vec::with_capacity(messages.len());
        for msg in messages {
            if msg.topic.starts_with("command/reply/")
                || twin::is_twin_topic(&msg.topic)
                || (conn.azure.is_some() && iothub::is_request(&msg.topic))
            {
                if !events.is_empty() {
                    self.append_events(conn, std::mem::take(&mut events), &slots, &mut results)
                        .await;
                    slots.clear();
                }
                results.push(self.publish_one(conn, msg).await);
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

    pub(super) async fn append(
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

    pub(super) async fn connection_event(&self, conn: &DeviceConnection, connected: bool) {
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

    pub(super) async fn event_for(
        &self,
        conn: &DeviceConnection,
        msg: Inbound,
    ) -> Result<drover_model::Event, PublishRefusal> {
        if conn.azure.is_some() {
            return self.iothub_event(conn, msg);
        }
        let (channel, target) = topic::route(&conn.dialect, &msg.topic)?;
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
