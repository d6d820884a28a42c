//! Commands between the nodes of a cluster, over NATS ([`NatsPeers`], the cluster's [`Peers`]
//! of a [`CommandRouter`]). The shared queue's operations are in the `queue` submodule.
//!
//! - **Where a device is**: a node with a command sink for a device (its connection, a gateway's,
//!   an HTTP long poll) subscribes to the device's subject `<prefix>.cmd.dev.<app uid>.<device>`.
//!   A node sending a command it cannot deliver itself makes a NATS request on the subjects of
//!   the device and its gateways in turn; the node holding the sink answers `ok` or `refused`;
//!   nobody subscribed means "not connected anywhere" (NATS' no-responders status).
//! - **Shared queue**: a command with a time to live that no node took is stored in the JetStream
//!   stream `<PREFIX>_COMMANDS`, one copy per possible taker (the device and each gateway), at
//!   most `max_queue_per_device` per subject (the stream refuses more: queue full). Whoever
//!   delivers a copy first claims the command id in the stream `<PREFIX>_COMMAND_CLAIMS` (a
//!   publish that expects the id's subject to be empty), so a command is delivered once though it
//!   has several copies. A node that gains a sink reads its
//!   subject's queue; the sending node pokes the subjects after queueing, so a device connecting
//!   meanwhile is not missed. The queuing node claims the command when its time to live ends and,
//!   if nobody delivered it, reports it expired.
//! - **Replies**: a command carries the name of the node whose caller waits; the node that
//!   delivered it forwards the device's reply to `<prefix>.cmd.reply.<node>`.
//! - **Takeover**: a device connecting to a node publishes on `<prefix>.cmd.takeover...`; the
//!   other nodes close their connections of the device.
//!
//! Names (device names are free text) are base64url-encoded into subject tokens; command
//! metadata travels as base64url JSON in one header, the payload as the message body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{Client, HeaderMap};
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::token;
use crate::commands::{Command, CommandError, CommandRouter, DeviceKey, Outcome, Peers, Reply};
use crate::Reason;

mod queue;

/// Settings of a node's command routing over NATS.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Subject prefix (lower case) and stream/bucket prefix (its upper case); one per cluster.
    pub prefix: String,
    /// This node's name; unique in the cluster.
    pub node: String,
    /// How long a node holding a device's sink may take to answer.
    pub request_timeout: Duration,
    /// The longest time to live of a queued command (the shared queue's retention).
    pub max_ttl: Duration,
    /// Queued commands per device (and per gateway).
    pub max_queue_per_device: i64,
    /// Replicas of the shared queue's stream and claims bucket.
    pub replicas: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            prefix: "drover".into(),
            node: "drover-0".into(),
            request_timeout: Duration::from_secs(2),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            max_queue_per_device: 50,
            replicas: 1,
        }
    }
}

/// Closes a device's connections on this node when it connected elsewhere: `(app, device)`.
pub type TakeoverHandler = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Why command routing over NATS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot set up command routing over NATS: creating the stream {stream}: {source}")]
    Stream {
        stream: String,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    #[error("cannot set up command routing over NATS: subscribing to {subject}: {source}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
    #[error("cannot set up command routing over NATS: {0}")]
    Flush(#[source] async_nats::client::FlushError),
}

/// What travels with a command between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    id: String,
    app: String,
    app_uid: String,
    device: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    expects_reply: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply_to: Option<String>,
    /// The device and the gateways it may be reached through.
    responders: Vec<String>,
    /// Unix milliseconds after which a queued command is void.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<i64>,
}

impl Meta {
    fn command(&self, payload: Bytes) -> Command {
        Command {
            id: self.id.clone(),
            app: self.app.clone(),
            app_uid: self.app_uid.clone(),
            device: self.device.clone(),
            name: self.name.clone(),
            payload,
            content_type: self.content_type.clone(),
            expects_reply: self.expects_reply,
        }
    }
}

/// A reply forwarded to the node where the caller waits.
#[derive(Debug, Serialize, Deserialize)]
struct ReplyMeta {
    id: String,
    app_uid: String,
    responder: String,
    status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Takeover {
    node: String,
    app: String,
    device: String,
}

const META: &str = "Drover-Meta";
const OP: &str = "Drover-Op";
const OP_DRAIN: &str = "drain";
const ACCEPTED: &[u8] = b"ok";
/// The claim of a command a device received.
const DELIVERED: &[u8] = b"delivered";
const REFUSED: &[u8] = b"refused";

fn encode_header<T: Serialize>(value: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

fn decode_header<T: serde::de::DeserializeOwned>(headers: Option<&HeaderMap>) -> Option<T> {
    let raw = headers?.get(META)?;
    let bytes = URL_SAFE_NO_PAD.decode(raw.as_str()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One subscribed device: pokes to hand its queue over, and the request to stop.
#[derive(Default)]
struct KeyTask {
    drain: Notify,
    stop: Notify,
    finished: std::sync::atomic::AtomicBool,
}

struct Inner {
    client: Client,
    queue: stream::Stream,
    claims: stream::Stream,
    js: jetstream::Context,
    config: ClusterConfig,
    router: Weak<CommandRouter>,
    takeover: TakeoverHandler,
    /// Wanted subscriptions (true) and unsubscriptions (false) not yet applied.
    pending: Mutex<HashMap<DeviceKey, bool>>,
    changed: Notify,
}

/// A node's link to the other nodes (see the module documentation).
pub struct NatsPeers {
    inner: Arc<Inner>,
    tasks: Vec<AbortHandle>,
}

impl Drop for NatsPeers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl NatsPeers {
    /// Sets up the shared queue and starts serving the router's devices to the cluster.
    pub async fn start(
        client: Client,
        config: ClusterConfig,
        router: &Arc<CommandRouter>,
        takeover: TakeoverHandler,
    ) -> Result<Arc<Self>, ClusterError> {
        let js = jetstream::new(client.clone());
        let (queue, claims) = queue::create_streams(&js, &config).await?;
        let subscribe = |subject: String| {
            let client = client.clone();
            async move {
                client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|source| ClusterError::Subscribe { subject, source })
            }
        };
        let takeovers = subscribe(format!("{}.cmd.takeover.>", config.prefix)).await?;
        let replies = subscribe(format!(
            "{}.cmd.reply.{}",
            config.prefix,
            token(&config.node)
        ))
        .await?;
        client.flush().await.map_err(ClusterError::Flush)?;
        let inner = Arc::new(Inner {
            client,
            queue,
            claims,
            js,
            config,
            router: Arc::downgrade(router),
            takeover,
            pending: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        });
        let tasks = vec![
            tokio::spawn(inner.clone().follow_takeovers(takeovers)).abort_handle(),
            tokio::spawn(inner.clone().take_replies(replies)).abort_handle(),
            tokio::spawn(inner.clone().reconcile()).abort_handle(),
        ];
        let peers = Arc::new(Self { inner, tasks });
        router.set_peers(peers.clone());
        Ok(peers)
    }
}

impl Inner {
    fn dev_subject(&self, key: &DeviceKey) -> String {
        format!(
            "{}.cmd.dev.{}.{}",
            self.config.prefix,
            token(&key.0),
            token(&key.1)
        )
    }

    /// Asks the nodes holding a sink for one of `targets` (the device, then its gateways) to
    /// take the command; true once one did. Nobody subscribed, a refusal or no answer in time
    /// moves on to the next target.
    async fn request(
        &self,
        command: &Command,
        targets: &[DeviceKey],
        meta: &Meta,
    ) -> Result<bool, CommandError> {
        let mut headers = HeaderMap::new();
        headers.insert(META, encode_header(meta).as_str());
        for key in targets {
            let request = self.client.request_with_headers(
                self.dev_subject(key),
                headers.clone(),
                command.payload.clone(),
            );
            match tokio::time::timeout(self.config.request_timeout, request).await {
                Ok(Ok(answer)) if answer.payload.as_ref() == ACCEPTED => return Ok(true),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => match e.kind() {
                    async_nats::RequestErrorKind::NoResponders
                    | async_nats::RequestErrorKind::TimedOut => {}
                    _ => {
                        return Err(CommandError::Unavailable(Reason::caused_by(
                            format!("asking the nodes for device '{}'", key.1),
                            e,
                        )))
                    }
                },
                Err(_) => tracing::warn!(
                    device = %key.1,
                    "the node holding the device's connection did not answer in time"
                ),
            }
        }
        Ok(false)
    }

    /// Closes this node's connections of devices that connected to another node.
    async fn follow_takeovers(self: Arc<Self>, mut takeovers: async_nats::Subscriber) {
        while let Some(msg) = takeovers.next().await {
            let Some(t) = decode_header::<Takeover>(msg.headers.as_ref()) else {
                continue;
            };
            if t.node != self.config.node {
                (self.takeover)(&t.app, &t.device);
            }
        }
    }

    /// Hands replies that other nodes forwarded to the router, whose callers wait for them.
    async fn take_replies(self: Arc<Self>, mut replies: async_nats::Subscriber) {
        while let Some(msg) = replies.next().await {
            let Some(m) = decode_header::<ReplyMeta>(msg.headers.as_ref()) else {
                continue;
            };
            let Some(router) = self.router.upgrade() else {
                return;
            };
            let reply = Reply {
                status: m.status,
                payload: msg.payload,
                content_type: m.content_type,
            };
            if let Err(e) = router.reply(&m.app_uid, &m.responder, &m.id, reply) {
                tracing::debug!("reply from another node not taken: {e}");
            }
        }
    }

    /// Applies wanted subscription changes, one task per subscribed device; a new sink for a
    /// device already subscribed gets the queue handed over again.
    async fn reconcile(self: Arc<Self>) {
        let mut subscribed: HashMap<DeviceKey, Arc<KeyTask>> = HashMap::new();
        loop {
            let batch =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
            if batch.is_empty() {
                self.changed.notified().await;
                continue;
            }
            subscribed.retain(|_, t| !t.finished.load(std::sync::atomic::Ordering::Acquire));
            for (key, present) in batch {
                match (present, subscribed.get(&key)) {
                    (true, None) => {
                        let task = Arc::new(KeyTask::default());
                        tokio::spawn(self.clone().serve(key.clone(), task.clone()));
                        subscribed.insert(key, task);
                    }
                    (true, Some(task)) => task.drain.notify_one(),
                    (false, Some(_)) => {
                        // Stopped, not aborted: a hand-over in progress (claimed, not yet
                        // delivered or released) must finish, or the command would be lost.
                        if let Some(task) = subscribed.remove(&key) {
                            task.stop.notify_one();
                        }
                    }
                    (false, None) => {}
                }
            }
        }
    }

    /// Serves one device's subject: commands from other nodes, and pokes (from the subject or
    /// from a new local sink) to read its queue.
    async fn serve(self: Arc<Self>, key: DeviceKey, task: Arc<KeyTask>) {
        self.serve_until_stopped(&key, &task).await;
        task.finished
            .store(true, std::sync::atomic::Ordering::Release);
    }

    async fn serve_until_stopped(&self, key: &DeviceKey, task: &KeyTask) {
        let key = key.clone();
        let subject = self.dev_subject(&key);
        let mut sub = loop {
            match self.client.subscribe(subject.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!("cannot subscribe to {subject}: {e}; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = task.stop.notified() => return,
                    }
                }
            }
        };
        // The subscription is in place before the queue is read: a command queued later is
        // announced by a poke this subscription receives.
        let _ = self.client.flush().await;
        self.drain(&key).await;
        loop {
            // Only waiting is interrupted by a stop; a hand-over or an answer runs to its end.
            let msg = tokio::select! {
                m = sub.next() => match m {
                    Some(m) => m,
                    None => return,
                },
                _ = task.drain.notified() => {
                    self.drain(&key).await;
                    continue;
                }
                _ = task.stop.notified() => return,
            };
            let drain = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(OP))
                .is_some_and(|v| v.as_str() == OP_DRAIN);
            if drain {
                self.drain(&key).await;
                continue;
            }
            self.answer(&key, msg).await;
        }
    }

    /// Takes a command another node sent for `key`'s sink, and answers whether it was taken.
    async fn answer(&self, key: &DeviceKey, msg: async_nats::Message) {
        let accepted = match (
            decode_header::<Meta>(msg.headers.as_ref()),
            self.router.upgrade(),
        ) {
            (Some(m), Some(router)) => router.accept_remote(
                &m.command(msg.payload.clone()),
                key,
                m.responders.clone(),
                m.reply_to.as_deref(),
            ),
            _ => false,
        };
        if let Some(reply) = msg.reply {
            let answer = if accepted { ACCEPTED } else { REFUSED };
            if let Err(e) = self.client.publish(reply, Bytes::from_static(answer)).await {
                tracing::warn!("cannot answer a command request: {e}");
            }
        }
    }
}

#[async_trait]
impl Peers for NatsPeers {
    fn interest(&self, key: &DeviceKey, present: bool) {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), present);
        self.inner.changed.notify_one();
    }

    fn claim(&self, app: &str, key: &DeviceKey) {
        let i = self.inner.clone();
        let subject = format!(
            "{}.cmd.takeover.{}.{}",
            i.config.prefix,
            token(&key.0),
            token(&key.1)
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            META,
            encode_header(&Takeover {
                node: i.config.node.clone(),
                app: app.to_string(),
                device: key.1.clone(),
            })
            .as_str(),
        );
        tokio::spawn(async move {
            if let Err(e) = i
                .client
                .publish_with_headers(subject, headers, Bytes::new())
                .await
            {
                tracing::warn!("cannot announce a device's connection to the cluster: {e}");
            }
        });
    }

    async fn send(
        &self,
        command: &Command,
        targets: &[DeviceKey],
        ttl: Option<Duration>,
        reply_to: Option<&str>,
    ) -> Result<Outcome, CommandError> {
        let i = &self.inner;
        let meta = Meta {
            id: command.id.clone(),
            app: command.app.clone(),
            app_uid: command.app_uid.clone(),
            device: command.device.clone(),
            name: command.name.clone(),
            content_type: command.content_type.clone(),
            expects_reply: command.expects_reply,
            reply_to: reply_to.map(str::to_string),
            responders: targets.iter().map(|k| k.1.clone()).collect(),
            expires_ms: None,
        };
        if i.request(command, targets, &meta).await? {
            return Ok(Outcome::Delivered);
        }
        let Some(ttl) = ttl else {
            return Err(CommandError::Unreachable(command.device.clone()));
        };
        i.enqueue(command, targets, meta, ttl).await
    }

    fn reply(&self, node: &str, app_uid: &str, responder: &str, command_id: &str, reply: Reply) {
        let i = self.inner.clone();
        let subject = format!("{}.cmd.reply.{}", i.config.prefix, token(node));
        let mut headers = HeaderMap::new();
        headers.insert(
            META,
            encode_header(&ReplyMeta {
                id: command_id.to_string(),
                app_uid: app_uid.to_string(),
                responder: responder.to_string(),
                status: reply.status,
                content_type: reply.content_type,
            })
            .as_str(),
        );
        tokio::spawn(async move {
            if let Err(e) = i
                .client
                .publish_with_headers(subject, headers, reply.payload)
                .await
            {
                tracing::warn!("cannot forward a command reply to node: {e}");
            }
        });
    }

    fn node(&self) -> &str {
        &self.inner.config.node
    }
}
