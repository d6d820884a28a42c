//! Command routing between the nodes of a cluster, over NATS ([`NatsPeers`], the cluster's
//! [`Peers`] of a [`CommandRouter`]).
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

use crate::commands::{Command, CommandError, CommandRouter, DeviceKey, Outcome, Peers, Reply};

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

#[derive(Debug, thiserror::Error)]
#[error("cannot set up command routing over NATS: {0}")]
pub struct ClusterError(String);

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

fn token(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s.as_bytes())
}

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
        let upper = config
            .prefix
            .to_uppercase()
            .replace(['.', '*', '>', ' '], "_");
        let queue = js
            .get_or_create_stream(stream::Config {
                name: format!("{upper}_COMMANDS"),
                description: Some("Drover: commands queued for devices".into()),
                subjects: vec![format!("{}.cmd.queue.>", config.prefix)],
                max_messages_per_subject: config.max_queue_per_device,
                discard: stream::DiscardPolicy::New,
                discard_new_per_subject: true,
                max_age: config.max_ttl,
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                allow_direct: true,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError(format!("command queue stream: {e}")))?;
        let claims = js
            .get_or_create_stream(stream::Config {
                name: format!("{upper}_COMMAND_CLAIMS"),
                description: Some("Drover: which node delivered a queued command".into()),
                subjects: vec![format!("{}.cmd.claim.>", config.prefix)],
                max_messages_per_subject: 1,
                max_age: config.max_ttl,
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError(format!("command claims stream: {e}")))?;
        let mut takeovers = client
            .subscribe(format!("{}.cmd.takeover.>", config.prefix))
            .await
            .map_err(|e| ClusterError(e.to_string()))?;
        let mut replies = client
            .subscribe(format!(
                "{}.cmd.reply.{}",
                config.prefix,
                token(&config.node)
            ))
            .await
            .map_err(|e| ClusterError(e.to_string()))?;
        client
            .flush()
            .await
            .map_err(|e| ClusterError(e.to_string()))?;
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
        let mut tasks = Vec::new();
        let i = inner.clone();
        tasks.push(
            tokio::spawn(async move {
                while let Some(msg) = takeovers.next().await {
                    let Some(t) = decode_header::<Takeover>(msg.headers.as_ref()) else {
                        continue;
                    };
                    if t.node != i.config.node {
                        (i.takeover)(&t.app, &t.device);
                    }
                }
            })
            .abort_handle(),
        );
        let i = inner.clone();
        tasks.push(
            tokio::spawn(async move {
                while let Some(msg) = replies.next().await {
                    let Some(m) = decode_header::<ReplyMeta>(msg.headers.as_ref()) else {
                        continue;
                    };
                    let Some(router) = i.router.upgrade() else {
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
            })
            .abort_handle(),
        );
        let i = inner.clone();
        tasks.push(tokio::spawn(i.reconcile()).abort_handle());
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

    fn queue_subject(&self, key: &DeviceKey) -> String {
        format!(
            "{}.cmd.queue.{}.{}",
            self.config.prefix,
            token(&key.0),
            token(&key.1)
        )
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
            let accepted = match (
                decode_header::<Meta>(msg.headers.as_ref()),
                self.router.upgrade(),
            ) {
                (Some(m), Some(router)) => router.accept_remote(
                    &m.command(msg.payload.clone()),
                    &key,
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

    fn claim_subject(&self, id: &str) -> String {
        format!("{}.cmd.claim.{}", self.config.prefix, token(id))
    }

    /// Claims a command id: true if this node is the first.
    async fn claim(&self, id: &str) -> Result<bool, String> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
        let ack = self
            .js
            .publish_with_headers(
                self.claim_subject(id),
                headers,
                Bytes::from(self.config.node.clone()),
            )
            .await
            .map_err(|e| e.to_string())?
            .await;
        match ack {
            Ok(_) => Ok(true),
            Err(e) if e.to_string().contains("wrong last sequence") => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Records that a claimed command reached a device (its other copies are garbage).
    async fn mark_delivered(&self, id: &str) {
        let sent = self
            .js
            .publish(self.claim_subject(id), Bytes::from_static(DELIVERED))
            .await;
        if let Err(e) = sent {
            tracing::warn!("cannot record a queued command as delivered: {e}");
        }
    }

    /// Whether a claimed command was delivered (else it is being handed over, or unknown).
    async fn delivered(&self, id: &str) -> bool {
        match self
            .claims
            .get_last_raw_message_by_subject(&self.claim_subject(id))
            .await
        {
            Ok(m) => m.payload.as_ref() == DELIVERED,
            // Claimed a moment ago and released since: not delivered.
            Err(_) => false,
        }
    }

    /// Gives a claim up (the sink could not take the command after all).
    async fn unclaim(&self, id: &str) {
        if let Err(e) = self.claims.purge().filter(self.claim_subject(id)).await {
            tracing::warn!("cannot release the claim of a queued command: {e}");
        }
    }

    /// Delivers what the shared queue holds for `key` to this node's sink, oldest first.
    async fn drain(&self, key: &DeviceKey) {
        let Some(router) = self.router.upgrade() else {
            return;
        };
        let subject = self.queue_subject(key);
        let mut seq = 1;
        loop {
            let msg = match self
                .queue
                .direct_get_next_for_subject(subject.clone(), Some(seq))
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => return,
                Err(e) => {
                    tracing::warn!("cannot read the command queue of device '{}': {e}", key.1);
                    return;
                }
            };
            seq = msg.sequence + 1;
            let Some(meta) = decode_header::<Meta>(Some(&msg.headers)) else {
                let _ = self.queue.delete_message(msg.sequence).await;
                continue;
            };
            let command = meta.command(msg.payload.clone());
            let expired = meta.expires_ms.is_some_and(|t| t <= now_ms());
            match self.claim(&meta.id).await {
                Ok(true) if expired => router.report_expired(command),
                Ok(true) => {
                    let taken = router.accept_remote(
                        &command,
                        key,
                        meta.responders.clone(),
                        meta.reply_to.as_deref(),
                    );
                    if !taken {
                        // The sink cannot take it now: leave it queued for the next time.
                        self.unclaim(&meta.id).await;
                        return;
                    }
                    self.mark_delivered(&meta.id).await;
                }
                Ok(false) => {
                    if !self.delivered(&meta.id).await {
                        // Someone is handing it over right now (and may give it back): keep
                        // this copy, and the order — a later command must not overtake it.
                        return;
                    }
                    // Delivered through another copy: this one goes.
                }
                Err(e) => {
                    tracing::warn!("cannot claim a queued command: {e}");
                    return;
                }
            }
            let _ = self.queue.delete_message(msg.sequence).await;
        }
    }

    /// When a queued command's time to live ends: if nobody delivered it, report it expired.
    async fn expire_later(self: Arc<Self>, command: Command, copies: Vec<u64>, ttl: Duration) {
        tokio::time::sleep(ttl).await;
        match self.claim(&command.id).await {
            Ok(true) => {
                if let Some(router) = self.router.upgrade() {
                    router.report_expired(command);
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("cannot settle an expired command: {e}");
                return;
            }
        }
        for seq in copies {
            let _ = self.queue.delete_message(seq).await;
        }
    }
}

fn is_queue_full(e: &impl std::fmt::Display) -> bool {
    e.to_string().contains("maximum messages per subject")
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
        let mut meta = Meta {
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
        let mut headers = HeaderMap::new();
        headers.insert(META, encode_header(&meta).as_str());
        for key in targets {
            let request = i.client.request_with_headers(
                i.dev_subject(key),
                headers.clone(),
                command.payload.clone(),
            );
            match tokio::time::timeout(i.config.request_timeout, request).await {
                Ok(Ok(answer)) if answer.payload.as_ref() == ACCEPTED => {
                    return Ok(Outcome::Delivered)
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => match e.kind() {
                    async_nats::RequestErrorKind::NoResponders
                    | async_nats::RequestErrorKind::TimedOut => {}
                    _ => return Err(CommandError::Unavailable(e.to_string())),
                },
                Err(_) => tracing::warn!(
                    device = %key.1,
                    "the node holding the device's connection did not answer in time"
                ),
            }
        }
        let Some(ttl) = ttl else {
            return Err(CommandError::Unreachable(command.device.clone()));
        };
        let ttl = ttl.min(i.config.max_ttl);
        meta.expires_ms = Some(now_ms() + ttl.as_millis() as i64);
        let js = &i.js;
        let mut copies = Vec::new();
        for (n, key) in targets.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert(META, encode_header(&meta).as_str());
            headers.insert("Nats-Msg-Id", format!("{}.{n}", command.id).as_str());
            let ack = match js
                .publish_with_headers(i.queue_subject(key), headers, command.payload.clone())
                .await
            {
                Ok(f) => f.await,
                Err(e) => return Err(CommandError::Unavailable(e.to_string())),
            };
            match ack {
                Ok(a) => copies.push(a.sequence),
                // The device's own queue decides; a gateway's full queue only skips that copy.
                Err(e) if is_queue_full(&e) && n == 0 => {
                    return Err(CommandError::QueueFull(
                        command.device.clone(),
                        i.config.max_queue_per_device as usize,
                    ))
                }
                Err(e) if is_queue_full(&e) => {}
                Err(e) => return Err(CommandError::Unavailable(e.to_string())),
            }
        }
        let mut poke = HeaderMap::new();
        poke.insert(OP, OP_DRAIN);
        for key in targets {
            if let Err(e) = i
                .client
                .publish_with_headers(i.dev_subject(key), poke.clone(), Bytes::new())
                .await
            {
                tracing::warn!("cannot announce a queued command: {e}");
            }
        }
        tokio::spawn(i.clone().expire_later(command.clone(), copies, ttl));
        Ok(Outcome::Queued)
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

/// How often a node taking part in a group says so.
const GROUP_HEARTBEAT: Duration = Duration::from_millis(250);
/// A node not heard of for this long has left the group.
const GROUP_EXPIRY: Duration = Duration::from_millis(1500);

/// Consumer groups across nodes over NATS (see [`crate::groups`]): a node with online members of
/// a group publishes a heartbeat on `<prefix>.grp.<app uid>.<group>` with its view and its
/// acknowledged prefix; every participant derives the view from the heartbeats it hears.
pub struct NatsGroups {
    client: Client,
    prefix: String,
    node: String,
    log: Arc<dyn crate::EventLog>,
}

impl NatsGroups {
    pub fn new(
        client: Client,
        prefix: impl Into<String>,
        node: impl Into<String>,
        log: Arc<dyn crate::EventLog>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            prefix: prefix.into(),
            node: node.into(),
            log,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Heartbeat {
    node: String,
    active: bool,
    epoch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    point: Option<u64>,
}

struct Peer {
    seen: std::time::Instant,
    epoch: u64,
    point: Option<u64>,
}

struct GroupState {
    client: Client,
    subject: String,
    me: String,
    stream: crate::StreamKey,
    group: String,
    log: Arc<dyn crate::EventLog>,
    active: std::sync::atomic::AtomicBool,
    view: tokio::sync::watch::Sender<crate::groups::View>,
    /// This node's last report: (epoch, point).
    mine: Mutex<Option<(u64, u64)>>,
    peers: Mutex<HashMap<String, Peer>>,
    /// The last offset this node committed (commits are serialized).
    committed: tokio::sync::Mutex<u64>,
    changed: Notify,
}

impl GroupState {
    fn heartbeat(&self) -> Heartbeat {
        let epoch = self.view.borrow().epoch;
        let mine = *self.mine.lock().unwrap_or_else(|e| e.into_inner());
        Heartbeat {
            node: self.me.clone(),
            active: self.active.load(std::sync::atomic::Ordering::Relaxed),
            epoch,
            point: mine.filter(|(e, _)| *e == epoch).map(|(_, p)| p),
        }
    }

    /// Recomputes the view from the live peers; true if it changed.
    fn recompute(&self) -> bool {
        let now = std::time::Instant::now();
        let mut nodes: Vec<String> = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.retain(|_, p| now.duration_since(p.seen) < GROUP_EXPIRY);
            peers.keys().cloned().collect()
        };
        if self.active.load(std::sync::atomic::Ordering::Relaxed) {
            nodes.push(self.me.clone());
        }
        let view = crate::groups::View::of(self.me.clone(), nodes);
        self.view.send_if_modified(|v| {
            if v.nodes != view.nodes {
                *v = view;
                true
            } else {
                false
            }
        })
    }

    /// Commits the group's offset if this node leads the view and every node reported under it.
    async fn maybe_commit(&self) -> crate::Result<()> {
        let view = self.view.borrow().clone();
        if view.leader() != Some(self.me.as_str()) {
            return Ok(());
        }
        let Some((epoch, mut point)) = *self.mine.lock().unwrap_or_else(|e| e.into_inner()) else {
            return Ok(());
        };
        if epoch != view.epoch {
            return Ok(());
        }
        {
            let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            for n in view.nodes.iter().filter(|n| **n != self.me) {
                match peers.get(n) {
                    Some(Peer {
                        epoch,
                        point: Some(p),
                        ..
                    }) if *epoch == view.epoch => point = point.min(*p),
                    _ => return Ok(()),
                }
            }
        }
        let mut committed = self.committed.lock().await;
        if point > *committed {
            self.log.commit(&self.stream, &self.group, point).await?;
            *committed = point;
        }
        Ok(())
    }

    async fn run(self: Arc<Self>) {
        let mut sub = loop {
            match self.client.subscribe(self.subject.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!("cannot subscribe to {}: {e}; retrying", self.subject);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let mut tick = tokio::time::interval(GROUP_HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = sub.next() => {
                    let Some(msg) = msg else { return };
                    let Ok(hb) = serde_json::from_slice::<Heartbeat>(&msg.payload) else {
                        continue;
                    };
                    if hb.node == self.me {
                        continue;
                    }
                    {
                        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
                        if hb.active {
                            peers.insert(hb.node, Peer {
                                seen: std::time::Instant::now(),
                                epoch: hb.epoch,
                                point: hb.point,
                            });
                        } else {
                            peers.remove(&hb.node);
                        }
                    }
                    // A node appeared or left: answer at once, so that views converge within
                    // a round trip rather than a heartbeat period.
                    if self.recompute() && self.active.load(std::sync::atomic::Ordering::Relaxed) {
                        self.publish().await;
                    }
                }
                _ = tick.tick() => {
                    self.recompute();
                    if self.active.load(std::sync::atomic::Ordering::Relaxed) {
                        self.publish().await;
                    }
                }
                _ = self.changed.notified() => {
                    // Activity changed: tell the others at once.
                    self.recompute();
                    self.publish().await;
                }
            }
            if let Err(e) = self.maybe_commit().await {
                tracing::warn!(group = %self.group, "cannot commit the group's offset: {e}");
            }
        }
    }

    async fn publish(&self) {
        let hb = self.heartbeat();
        let payload = Bytes::from(serde_json::to_vec(&hb).unwrap_or_default());
        if let Err(e) = self.client.publish(self.subject.clone(), payload).await {
            tracing::debug!("cannot publish a group heartbeat: {e}");
        }
    }
}

struct NatsGroupLink {
    state: Arc<GroupState>,
    task: AbortHandle,
}

impl Drop for NatsGroupLink {
    fn drop(&mut self) {
        self.task.abort();
        // Leave at once rather than by expiry.
        let s = self.state.clone();
        s.active.store(false, std::sync::atomic::Ordering::Relaxed);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { s.publish().await });
        }
    }
}

#[async_trait]
impl crate::groups::GroupLink for NatsGroupLink {
    fn view(&self) -> tokio::sync::watch::Receiver<crate::groups::View> {
        self.state.view.subscribe()
    }

    fn set_active(&self, active: bool) {
        let was = self
            .state
            .active
            .swap(active, std::sync::atomic::Ordering::Relaxed);
        if was != active {
            self.state.changed.notify_one();
        }
    }

    async fn report(&self, epoch: u64, point: crate::Offset) -> crate::Result<()> {
        *self.state.mine.lock().unwrap_or_else(|e| e.into_inner()) = Some((epoch, point));
        self.state.maybe_commit().await
    }
}

impl crate::groups::GroupPeers for NatsGroups {
    fn join(&self, stream: &crate::StreamKey, group: &str) -> Box<dyn crate::groups::GroupLink> {
        let subject = format!(
            "{}.grp.{}.{}",
            self.prefix,
            token(&stream.app_uid),
            token(group)
        );
        let (view, _) =
            tokio::sync::watch::channel(crate::groups::View::of(self.node.clone(), Vec::new()));
        let state = Arc::new(GroupState {
            client: self.client.clone(),
            subject,
            me: self.node.clone(),
            stream: stream.clone(),
            group: group.to_string(),
            log: self.log.clone(),
            active: std::sync::atomic::AtomicBool::new(false),
            view,
            mine: Mutex::new(None),
            peers: Mutex::new(HashMap::new()),
            committed: tokio::sync::Mutex::new(0),
            changed: Notify::new(),
        });
        let task = tokio::spawn(state.clone().run()).abort_handle();
        Box::new(NatsGroupLink { state, task })
    }
}
