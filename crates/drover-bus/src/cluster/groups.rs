//! Consumer groups across nodes over NATS ([`NatsGroups`], the cluster's
//! [`GroupPeers`](crate::groups::GroupPeers)); the rules a group follows are in
//! [`crate::groups`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::Client;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;

use super::token;
use crate::groups::{GroupLink, GroupPeers, View};
use crate::{EventLog, Offset, StreamKey};

/// How often a node taking part in a group says so.
const GROUP_HEARTBEAT: Duration = Duration::from_millis(250);
/// A node not heard of for this long has left the group.
const GROUP_EXPIRY: Duration = Duration::from_millis(1500);

/// Consumer groups across nodes over NATS (see [`crate::groups`]).
///
/// A node with online members of a group publishes a heartbeat on
/// `<prefix>.grp.<app uid>.<group>` every 250 ms, with whether it takes part, its view's epoch
/// and the prefix of the stream it acknowledged under that view; every participant derives the
/// view from the heartbeats it heard within 1.5 s. A node answers at once when it sees another
/// come or go, so views converge within a round trip. The view's leader commits the minimum of
/// the points every node of the view reported under it.
pub struct NatsGroups {
    client: Client,
    prefix: String,
    node: String,
    log: Arc<dyn EventLog>,
}

impl NatsGroups {
    pub fn new(
        client: Client,
        prefix: impl Into<String>,
        node: impl Into<String>,
        log: Arc<dyn EventLog>,
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
    seen: Instant,
    epoch: u64,
    point: Option<u64>,
}

struct GroupState {
    client: Client,
    subject: String,
    me: String,
    stream: StreamKey,
    group: String,
    log: Arc<dyn EventLog>,
    active: AtomicBool,
    view: watch::Sender<View>,
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
            active: self.active.load(Ordering::Relaxed),
            epoch,
            point: mine.filter(|(e, _)| *e == epoch).map(|(_, p)| p),
        }
    }

    /// Recomputes the view from the live peers; true if it changed.
    fn recompute(&self) -> bool {
        let now = Instant::now();
        let mut nodes: Vec<String> = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.retain(|_, p| now.duration_since(p.seen) < GROUP_EXPIRY);
            peers.keys().cloned().collect()
        };
        if self.active.load(Ordering::Relaxed) {
            nodes.push(self.me.clone());
        }
        let view = View::of(self.me.clone(), nodes);
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

    /// Notes another node's heartbeat; true if the view changed.
    fn heard(&self, hb: Heartbeat) -> bool {
        if hb.node == self.me {
            return false;
        }
        {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            if hb.active {
                let peer = Peer {
                    seen: Instant::now(),
                    epoch: hb.epoch,
                    point: hb.point,
                };
                peers.insert(hb.node, peer);
            } else {
                peers.remove(&hb.node);
            }
        }
        self.recompute()
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
                    // A node appeared or left: answer at once, so that views converge within
                    // a round trip rather than a heartbeat period.
                    if self.heard(hb) && self.active.load(Ordering::Relaxed) {
                        self.publish().await;
                    }
                }
                _ = tick.tick() => {
                    self.recompute();
                    if self.active.load(Ordering::Relaxed) {
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
        s.active.store(false, Ordering::Relaxed);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { s.publish().await });
        }
    }
}

#[async_trait]
impl GroupLink for NatsGroupLink {
    fn view(&self) -> watch::Receiver<View> {
        self.state.view.subscribe()
    }

    fn set_active(&self, active: bool) {
        let was = self.state.active.swap(active, Ordering::Relaxed);
        if was != active {
            self.state.changed.notify_one();
        }
    }

    async fn report(&self, epoch: u64, point: Offset) -> crate::Result<()> {
        *self.state.mine.lock().unwrap_or_else(|e| e.into_inner()) = Some((epoch, point));
        self.state.maybe_commit().await
    }
}

impl GroupPeers for NatsGroups {
    fn join(&self, stream: &StreamKey, group: &str) -> Box<dyn GroupLink> {
        let subject = format!(
            "{}.grp.{}.{}",
            self.prefix,
            token(&stream.app_uid),
            token(group)
        );
        let (view, _) = watch::channel(View::of(self.node.clone(), Vec::new()));
        let state = Arc::new(GroupState {
            client: self.client.clone(),
            subject,
            me: self.node.clone(),
            stream: stream.clone(),
            group: group.to_string(),
            log: self.log.clone(),
            active: AtomicBool::new(false),
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
