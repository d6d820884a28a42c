//! Delivery: one dispatcher task per consumer group reads the application's stream once and
//! hands each event to one member's MQTT session, committing the group's offset as the
//! acknowledgements come in.
//!
//! A non-shared subscription is a group with one member; a shared subscription
//! (`$share/<group>/...`) a group with one member per subscribed session. Devices are assigned to
//! the *online* members by rendezvous hashing (`drover_bus::rendezvous`: the highest weight of
//! member key and device name), so a device's events go to one member at a time and a
//! membership change moves only the devices of the members that came or went.
//!
//! State per group: the records read but not yet handed out (`buffer`, one log batch at most),
//! the records handed out and not yet acknowledged (`outstanding`, bounded by the members'
//! session queues and windows), and the offsets of outstanding records that must be handed out
//! again because their device now belongs to another member (`redispatch`). The committed offset
//! is the end of the acknowledged prefix: one below the oldest outstanding record, or everything
//! taken from the log when nothing is outstanding.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use drover_bus::groups::{GroupLink, View};
use drover_bus::rendezvous;
use drover_bus::{BusError, Consumer, EventLog, Offset, Record, StartFrom, StreamKey};
use drover_mqtt::{
    ByteString, Delivery, DeliveryError, OutboundMessage, PublishError, QoS, ReasonCode,
    SessionHandle, TryPublishError,
};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::message::{self, ContentMode};

mod dispatcher;

use dispatcher::Dispatcher;

/// How long stopping a group waits for its task to finish.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// Longest pause between attempts to read a failing stream.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Settings a dispatcher needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    pub(crate) max_lag: u64,
    pub(crate) lag_check_interval: Duration,
    pub(crate) read_batch: usize,
}

/// One subscription of one session in a group.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub(crate) session: SessionHandle,
    /// What devices are hashed against: stable across reconnects (session key and filter).
    pub(crate) rank_key: String,
    /// Topic the events are published on (the filter, without `$share/<group>/`).
    pub(crate) topic: ByteString,
    pub(crate) qos: QoS,
    pub(crate) mode: ContentMode,
    /// Whether the session has a connection (only online members get events).
    pub(crate) online: bool,
}

#[derive(Default)]
struct Membership {
    version: u64,
    members: BTreeMap<u64, Member>,
}

/// A consumer group: its members (changed by the policy) and its dispatcher task.
pub(crate) struct Group {
    /// For logs: the subscription, or the shared group.
    pub(crate) label: String,
    pub(crate) stream: StreamKey,
    membership: Mutex<Membership>,
    changed: Notify,
    stop: CancellationToken,
    finished: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Group {
    fn modify(&self, f: impl FnOnce(&mut BTreeMap<u64, Member>) -> bool) {
        let changed = {
            let mut m = lock(&self.membership);
            let changed = f(&mut m.members);
            if changed {
                m.version += 1;
            }
            changed
        };
        if changed {
            self.changed.notify_one();
        }
    }

    /// Adds (or replaces) a member.
    pub(crate) fn add(&self, id: u64, member: Member) {
        self.modify(|m| {
            m.insert(id, member);
            true
        });
    }

    /// Removes a member; returns how many remain.
    pub(crate) fn remove(&self, id: u64) -> usize {
        let mut left = 0;
        self.modify(|m| {
            let removed = m.remove(&id).is_some();
            left = m.len();
            removed
        });
        left
    }

    /// Marks a member's session connected or not.
    pub(crate) fn set_online(&self, id: u64, online: bool) {
        self.modify(|m| match m.get_mut(&id) {
            Some(member) if member.online != online => {
                member.online = online;
                true
            }
            _ => false,
        });
    }

    /// Whether the dispatcher stopped (the stream ended, or the group was stopped).
    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Stops the dispatcher and waits (briefly) until it has committed what was acknowledged.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        let task = lock(&self.task).take();
        if let Some(task) = task {
            if tokio::time::timeout(STOP_WAIT, task).await.is_err() {
                tracing::warn!(app = %self.stream.app, consumer = %self.label, "MQTT integration consumer did not stop within {STOP_WAIT:?}");
            }
        }
    }
}

/// A group whose consumer is open, ready to [`start`](Opened::start).
pub(crate) struct Opened {
    dispatcher: Dispatcher,
}

impl Opened {
    /// Spawns the dispatcher.
    pub(crate) fn start(self) -> Arc<Group> {
        let group = self.dispatcher.group.clone();
        let span = tracing::info_span!("mqtt-integration", app = %group.stream.app, consumer = %group.label);
        let task = tokio::spawn(self.dispatcher.run().instrument(span));
        *lock(&group.task) = Some(task);
        group
    }
}

/// Opens a group's consumer: a durable group resumes after its committed offset (or starts live
/// and commits its starting point, so that it is durable from its first subscription on); a
/// group without a name starts live and never commits.
///
/// With a `link` (a durable group on a cluster), the group's work is split with the other nodes
/// that run it: this node hands out only the events of the devices its view gives it, rewinds
/// to the committed offset when the view changes, and commits through the link.
pub(crate) async fn open(
    log: Arc<dyn EventLog>,
    stream: StreamKey,
    durable: Option<String>,
    channel: Option<String>,
    tuning: Tuning,
    label: String,
    link: Option<Box<dyn GroupLink>>,
) -> Result<Opened, BusError> {
    // Never read: it tells where the stream ends (for the lag), and where "live" starts.
    let probe = log.consume(&stream, StartFrom::Latest).await?;
    let end = probe.end();
    let start = match &durable {
        Some(name) => match log.committed(&stream, name).await? {
            Some(committed) => committed,
            None => {
                log.commit(&stream, name, end).await?;
                end
            }
        },
        None => end,
    };
    let consumer = log.consume(&stream, StartFrom::After(start)).await?;
    let views = link.as_ref().map(|l| l.view());
    tracing::debug!(app = %stream.app, consumer = %label, group = ?durable, after = start, "MQTT integration consumer opened");
    let group = Arc::new(Group {
        label,
        stream,
        membership: Mutex::new(Membership::default()),
        changed: Notify::new(),
        stop: CancellationToken::new(),
        finished: AtomicBool::new(false),
        task: Mutex::new(None),
    });
    Ok(Opened {
        dispatcher: Dispatcher {
            group,
            log,
            durable,
            channel,
            tuning,
            reader: Some(consumer),
            read: None,
            probe,
            resume: StartFrom::After(start),
            buffer: VecDeque::new(),
            outstanding: BTreeMap::new(),
            redispatch: BTreeSet::new(),
            acks: FuturesUnordered::new(),
            handled: start,
            committed: start,
            commit_failing: false,
            version: None,
            members: BTreeMap::new(),
            online: Vec::new(),
            offline_seen: HashSet::new(),
            next_seq: 0,
            blocked: None,
            last_lag: None,
            stale: false,
            view: views.as_ref().map(|rx| rx.borrow().clone()),
            views,
            link,
        },
    })
}
