//! Command routing, cloud to device: who can take a command for a device right now (its own
//! connection, a gateway's, an HTTP request waiting in `ct`), the bounded per-device queue of
//! commands with a time to live, and the correlation of replies with waiting callers.
//!
//! In process, bounded, no I/O: endpoints register [`CommandSink`]s for the devices they serve;
//! the API sends through [`CommandRouter::route`]. On a cluster the router is given [`Peers`]
//! (the NATS implementation is [`crate::cluster`]): what no local sink takes is offered to the
//! other nodes, queues are shared, replies travel back to the node whose caller waits, and a
//! device connecting here closes its connections on other nodes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::Reason;

/// A command for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Unique id; also the request id replies refer to.
    pub id: String,
    pub app: String,
    pub app_uid: String,
    pub device: String,
    pub name: String,
    pub payload: Bytes,
    pub content_type: Option<String>,
    /// A caller waits for the device's reply.
    pub expects_reply: bool,
}

/// A device's reply to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub payload: Bytes,
    pub content_type: Option<String>,
}

/// Identifies a device's commands: `(application uid, device name)`.
pub type DeviceKey = (String, String);

/// Why a sink could not take a command now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkRefusal {
    /// The connection does not subscribe to the command's topic.
    NotSubscribed,
    /// The connection's queue is full.
    Full,
    /// The connection is gone.
    Gone,
}

/// Something that hands commands to a device: an MQTT session, a waiting HTTP request.
pub trait CommandSink: Send + Sync {
    /// Takes the command, or says why not. `for_device` is the device the command is for (the
    /// sink's own device, or one behind the gateway it serves).
    fn deliver(&self, command: &Command) -> Result<(), SinkRefusal>;
}

/// What happened to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handed to a connection of the device or of one of its gateways.
    Delivered,
    /// Queued until the device can be reached, at most until its time to live ends.
    Queued,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CommandError {
    #[error("device '{0}' is not connected and no time to live was given: nothing can take the command now")]
    Unreachable(String),
    #[error("the command queue of device '{0}' is full ({1} commands wait): retry later")]
    QueueFull(String, usize),
    #[error("too many callers wait for replies ({0}): retry later")]
    TooManyWaiting(usize),
    #[error("command routing between nodes is unavailable: {0}")]
    Unavailable(#[source] Reason),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("no command '{0}' is waiting for a reply (unknown, answered or timed out)")]
    Unknown(String),
    #[error("command '{0}' was not sent to device '{1}'")]
    NotYours(String, String),
}

/// Limits of the router.
#[derive(Debug, Clone, Copy)]
pub struct RouterConfig {
    /// Commands waiting per device (beyond: [`CommandError::QueueFull`]).
    pub max_queue_per_device: usize,
    /// Callers waiting for replies at once.
    pub max_waiting: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            max_queue_per_device: 50,
            max_waiting: 10_000,
        }
    }
}

struct Queued {
    command: Command,
    expires: Instant,
    /// Keys whose sinks may take it: the device and its gateways.
    targets: Vec<DeviceKey>,
}

struct Waiting {
    reply: oneshot::Sender<Reply>,
    /// Devices allowed to reply: the device and the gateways it was sent through.
    responders: Vec<String>,
    app_uid: String,
}

/// A sink with its registration id.
type RegisteredSink = (u64, Arc<dyn CommandSink>);

/// A command delivered here for a caller on another node, whose reply goes back there.
struct RemoteWaiting {
    node: String,
    responders: Vec<String>,
    app_uid: String,
    since: Instant,
}

/// How long a reply to a command from another node is accepted (longer than any API timeout).
const REMOTE_REPLY_WINDOW: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
struct State {
    next_sink: u64,
    sinks: HashMap<DeviceKey, Vec<RegisteredSink>>,
    queues: HashMap<DeviceKey, VecDeque<Queued>>,
    waiting: HashMap<String, Waiting>,
    remote_waiting: HashMap<String, RemoteWaiting>,
    /// Commands of shared queues whose time to live ended (found by [`Peers`]), to report.
    expired: Vec<Command>,
}

/// The other nodes of a cluster, as the router sees them.
#[async_trait]
pub trait Peers: Send + Sync + 'static {
    /// A sink for `key` was registered here (`true`: its queue should be handed over), or the
    /// last one went away (`false`). Called under the router's lock (so in the order the
    /// changes happened): must not block nor call the router.
    fn interest(&self, key: &DeviceKey, present: bool);
    /// A device connected here: the other nodes close their connections of it.
    fn claim(&self, app: &str, key: &DeviceKey);
    /// Offers a command no local sink took to the other nodes; with a `ttl` and no taker,
    /// queues it where every node finds it.
    async fn send(
        &self,
        command: &Command,
        targets: &[DeviceKey],
        ttl: Option<Duration>,
        reply_to: Option<&str>,
    ) -> Result<Outcome, CommandError>;
    /// Hands a device's reply to `node`, where a caller waits for it.
    fn reply(&self, node: &str, app_uid: &str, responder: &str, command_id: &str, reply: Reply);
    /// This node's name among its peers.
    fn node(&self) -> &str;
}

/// Routes commands to the connections that can take them.
pub struct CommandRouter {
    config: RouterConfig,
    state: Mutex<State>,
    peers: OnceLock<Arc<dyn Peers>>,
}

/// Keeps a sink registered; dropping it unregisters the sink.
pub struct SinkRegistration {
    router: Weak<CommandRouter>,
    key: DeviceKey,
    id: u64,
}

impl Drop for SinkRegistration {
    fn drop(&mut self) {
        if let Some(router) = self.router.upgrade() {
            let mut s = router.lock();
            let mut gone = false;
            if let Some(list) = s.sinks.get_mut(&self.key) {
                list.retain(|(id, _)| *id != self.id);
                if list.is_empty() {
                    s.sinks.remove(&self.key);
                    gone = true;
                }
            }
            // Told under the lock, so interest changes of one key reach the peers in order.
            if gone {
                if let Some(p) = router.peers.get() {
                    p.interest(&self.key, false);
                }
            }
        }
    }
}

impl CommandRouter {
    pub fn new(config: RouterConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: Mutex::new(State::default()),
            peers: OnceLock::new(),
        })
    }

    /// Makes this router one node of a cluster (once, before devices connect).
    pub fn set_peers(&self, peers: Arc<dyn Peers>) {
        if self.peers.set(peers).is_err() {
            tracing::warn!("the command router already has peers");
        }
    }

    /// A device connected to this node: on a cluster, its connections on other nodes close.
    pub fn session_started(&self, app: &str, key: &DeviceKey) {
        if let Some(p) = self.peers.get() {
            p.claim(app, key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a sink for `key` (a device, or a gateway — gateways are asked for the devices
    /// behind them), and hands it the commands queued for that key, oldest first.
    pub fn register(
        self: &Arc<Self>,
        key: DeviceKey,
        sink: Arc<dyn CommandSink>,
    ) -> SinkRegistration {
        let mut s = self.lock();
        s.next_sink += 1;
        let id = s.next_sink;
        s.sinks
            .entry(key.clone())
            .or_default()
            .push((id, sink.clone()));
        // Every new sink: the peers subscribe for the key if needed and hand over the shared
        // queue (a sink that refused before — not yet subscribed — may take it now).
        if let Some(p) = self.peers.get() {
            p.interest(&key, true);
        }
        // Hand over what waits for this key: the device's own queue, and the queues of devices
        // this key (a gateway) may take commands for.
        let now = Instant::now();
        let keys: Vec<DeviceKey> = s
            .queues
            .iter()
            .filter(|(_, q)| q.front().is_some_and(|c| c.targets.contains(&key)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            let Some(queue) = s.queues.get_mut(&k) else {
                continue;
            };
            while let Some(q) = queue.front() {
                if q.expires <= now || !q.targets.contains(&key) {
                    // Expired ones are reported by `expire`; leave them for it.
                    break;
                }
                match sink.deliver(&q.command) {
                    Ok(()) => {
                        queue.pop_front();
                    }
                    Err(_) => break,
                }
            }
            if queue.is_empty() {
                s.queues.remove(&k);
            }
        }
        SinkRegistration {
            router: Arc::downgrade(self),
            key,
            id,
        }
    }

    /// Starts waiting for the reply to `command` (call before [`send`](Self::send)).
    /// `responders`: the device and the gateways the command may go through.
    pub fn expect_reply(
        &self,
        command: &Command,
        responders: Vec<String>,
    ) -> Result<oneshot::Receiver<Reply>, CommandError> {
        let mut s = self.lock();
        if s.waiting.len() >= self.config.max_waiting {
            return Err(CommandError::TooManyWaiting(s.waiting.len()));
        }
        let (tx, rx) = oneshot::channel();
        s.waiting.insert(
            command.id.clone(),
            Waiting {
                reply: tx,
                responders,
                app_uid: command.app_uid.clone(),
            },
        );
        Ok(rx)
    }

    /// Stops waiting for a reply (the caller gave up).
    pub fn forget(&self, command_id: &str) {
        self.lock().waiting.remove(command_id);
    }

    /// Sends `command`: to the first of `targets` (the device, then its gateways, as keys)
    /// that has a sink taking it; else, with a `ttl`, queues it for the device; else fails.
    pub fn send(
        &self,
        command: Command,
        targets: &[DeviceKey],
        ttl: Option<Duration>,
    ) -> Result<Outcome, CommandError> {
        let mut s = self.lock();
        for key in targets {
            if let Some(list) = s.sinks.get(key) {
                // The newest connection first.
                for (_, sink) in list.iter().rev() {
                    if sink.deliver(&command).is_ok() {
                        return Ok(Outcome::Delivered);
                    }
                }
            }
        }
        let Some(ttl) = ttl else {
            return Err(CommandError::Unreachable(command.device.clone()));
        };
        let key = (command.app_uid.clone(), command.device.clone());
        let queue = s.queues.entry(key).or_default();
        if queue.len() >= self.config.max_queue_per_device {
            return Err(CommandError::QueueFull(command.device.clone(), queue.len()));
        }
        queue.push_back(Queued {
            command,
            expires: Instant::now() + ttl,
            targets: targets.to_vec(),
        });
        Ok(Outcome::Queued)
    }

    /// Sends `command` wherever the device can be reached: a sink on this node (the device,
    /// then its gateways), else — on a cluster — a sink on another node or the shared queue,
    /// else this node's queue (with a `ttl`), else fails.
    pub async fn route(
        &self,
        command: Command,
        targets: &[DeviceKey],
        ttl: Option<Duration>,
    ) -> Result<Outcome, CommandError> {
        let Some(peers) = self.peers.get() else {
            return self.send(command, targets, ttl);
        };
        if self.deliver_local(&command, targets) {
            return Ok(Outcome::Delivered);
        }
        let reply_to = command.expects_reply.then(|| peers.node().to_string());
        peers
            .send(&command, targets, ttl, reply_to.as_deref())
            .await
    }

    /// Hands `command` to a sink on this node for one of `targets`; true if one took it.
    fn deliver_local(&self, command: &Command, targets: &[DeviceKey]) -> bool {
        let s = self.lock();
        targets.iter().any(|key| {
            s.sinks.get(key).is_some_and(|list| {
                list.iter()
                    .rev()
                    .any(|(_, sink)| sink.deliver(command).is_ok())
            })
        })
    }

    /// A command from another node (or a shared queue) for `key`: delivered to a sink here, or
    /// refused. When a caller on `reply_to` waits, the device's reply is forwarded there.
    pub fn accept_remote(
        &self,
        command: &Command,
        key: &DeviceKey,
        responders: Vec<String>,
        reply_to: Option<&str>,
    ) -> bool {
        if !self.deliver_local(command, std::slice::from_ref(key)) {
            return false;
        }
        if let (true, Some(node)) = (command.expects_reply, reply_to) {
            let mut s = self.lock();
            let now = Instant::now();
            s.remote_waiting
                .retain(|_, w| now.duration_since(w.since) < REMOTE_REPLY_WINDOW);
            if s.remote_waiting.len() < self.config.max_waiting {
                s.remote_waiting.insert(
                    command.id.clone(),
                    RemoteWaiting {
                        node: node.to_string(),
                        responders,
                        app_uid: command.app_uid.clone(),
                        since: now,
                    },
                );
            }
        }
        true
    }

    /// Records commands of a shared queue that expired undelivered, for [`expire`](Self::expire).
    pub fn report_expired(&self, command: Command) {
        let mut s = self.lock();
        if s.expired.len() < self.config.max_waiting {
            s.expired.push(command);
        }
    }

    /// A device's reply to command `command_id`. `responder` is the device (or gateway) that
    /// replied, of application `app_uid`.
    pub fn reply(
        &self,
        app_uid: &str,
        responder: &str,
        command_id: &str,
        reply: Reply,
    ) -> Result<(), ReplyError> {
        let mut s = self.lock();
        if !s.waiting.contains_key(command_id) {
            let Some(w) = s.remote_waiting.get(command_id) else {
                return Err(ReplyError::Unknown(command_id.to_string()));
            };
            if w.app_uid != app_uid || !w.responders.iter().any(|r| r == responder) {
                return Err(ReplyError::NotYours(
                    command_id.to_string(),
                    responder.to_string(),
                ));
            }
            let Some(w) = s.remote_waiting.remove(command_id) else {
                return Err(ReplyError::Unknown(command_id.to_string()));
            };
            drop(s);
            if let Some(p) = self.peers.get() {
                p.reply(&w.node, app_uid, responder, command_id, reply);
            }
            return Ok(());
        }
        let Some(w) = s.waiting.get(command_id) else {
            return Err(ReplyError::Unknown(command_id.to_string()));
        };
        if w.app_uid != app_uid || !w.responders.iter().any(|r| r == responder) {
            return Err(ReplyError::NotYours(
                command_id.to_string(),
                responder.to_string(),
            ));
        }
        let w = s
            .waiting
            .remove(command_id)
            .ok_or_else(|| ReplyError::Unknown(command_id.to_string()))?;
        w.reply
            .send(reply)
            .map_err(|_| ReplyError::Unknown(command_id.to_string()))
    }

    /// Removes queued commands whose time to live ended; returns them (to report).
    pub fn expire(&self, now: Instant) -> Vec<Command> {
        let mut s = self.lock();
        let mut expired = std::mem::take(&mut s.expired);
        s.queues.retain(|_, q| {
            q.retain(|c| {
                if c.expires <= now {
                    expired.push(c.command.clone());
                    false
                } else {
                    true
                }
            });
            !q.is_empty()
        });
        expired
    }

    /// Commands queued for a device.
    pub fn queued(&self, key: &DeviceKey) -> usize {
        self.lock().queues.get(key).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests;
