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

/// A record handed out and not yet acknowledged.
struct Held {
    record: Record,
    /// The member and hand-out number of the latest delivery; `None` when it failed.
    holder: Option<(u64, u64)>,
}

/// A record waiting for room in its member's session queue.
struct Blocked {
    offset: Offset,
    member: u64,
    message: OutboundMessage,
}

/// The outcome of one delivery.
struct Ack {
    offset: Offset,
    member: u64,
    seq: u64,
    result: Result<ReasonCode, DeliveryError>,
}

type AckFuture = Pin<Box<dyn Future<Output = Ack> + Send>>;

/// What a read brought.
enum ReadOutcome {
    Records(Vec<Record>),
    /// The stream was deleted or the log closed.
    Ended,
}

type ReadFuture = Pin<Box<dyn Future<Output = (Box<dyn Consumer>, ReadOutcome)> + Send>>;

/// Waits for the read in flight, if any (else forever).
async fn read_done(read: &mut Option<ReadFuture>) -> (Box<dyn Consumer>, ReadOutcome) {
    match read {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

struct Dispatcher {
    group: Arc<Group>,
    log: Arc<dyn EventLog>,
    /// Name of the durable group, if the group commits.
    durable: Option<String>,
    channel: Option<String>,
    tuning: Tuning,
    /// The consumer, while no read is in flight.
    reader: Option<Box<dyn Consumer>>,
    /// The read in flight; it owns the consumer and is kept across loop iterations (a
    /// cancelled read would lose the work done).
    read: Option<ReadFuture>,
    /// A consumer that is never read: [`Consumer::end`] for the lag.
    probe: Box<dyn Consumer>,
    /// Where to reopen the consumer after a read error: after the last record read.
    resume: StartFrom,
    buffer: VecDeque<Record>,
    outstanding: BTreeMap<Offset, Held>,
    redispatch: BTreeSet<Offset>,
    acks: FuturesUnordered<AckFuture>,
    /// Every record up to this offset was taken from `buffer` (handed out or skipped).
    handled: Offset,
    committed: Offset,
    commit_failing: bool,
    /// The membership version `members` was copied at.
    version: Option<u64>,
    members: BTreeMap<u64, Member>,
    /// Members that get events now, in id order.
    online: Vec<u64>,
    /// Members found offline by a failed publish since the last membership change.
    offline_seen: HashSet<u64>,
    next_seq: u64,
    blocked: Option<Blocked>,
    last_lag: Option<u64>,
    /// A delivery failed or a member was found offline: [`Dispatcher::rebuild`] before the next
    /// hand-out (once, however many failed).
    stale: bool,
    /// On a cluster: this node's part in the group, and the view it works under.
    link: Option<Box<dyn GroupLink>>,
    views: Option<tokio::sync::watch::Receiver<View>>,
    view: Option<View>,
}

/// Waits for the group's view to change (forever without a link).
async fn view_changed(views: &mut Option<tokio::sync::watch::Receiver<View>>) {
    match views {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

/// The member that gets `device`'s events: the online member whose rank key has the highest
/// rendezvous weight for the device.
fn owner(online: &[u64], members: &BTreeMap<u64, Member>, device: &str) -> Option<u64> {
    let rank_key = |id: &u64| members.get(id).map_or("", |m| m.rank_key.as_str());
    rendezvous::owner(online.iter().map(|id| (*id, rank_key(id))), device)
}

impl Dispatcher {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(self.tuning.lag_check_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if self.group.stop.is_cancelled() {
                break;
            }
            self.refresh();
            let candidate = self.candidate();
            match candidate {
                Some((offset, member)) => {
                    let same = self
                        .blocked
                        .as_ref()
                        .is_some_and(|b| b.offset == offset && b.member == member);
                    if !same && self.try_hand_out(offset, member) {
                        continue;
                    }
                }
                None => self.blocked = None,
            }
            let publish = self.blocked.as_ref().and_then(|b| {
                let m = self.members.get(&b.member)?;
                Some((b.offset, b.member, m.session.clone(), b.message.clone()))
            });
            let blocked = publish.is_some();
            let publish = async move {
                match publish {
                    Some((offset, member, session, message)) => {
                        (offset, member, session.publish(message).await)
                    }
                    None => std::future::pending().await,
                }
            };
            // Commit before waiting (not after every record of a burst).
            self.commit().await;
            if candidate.is_none()
                && self.buffer.is_empty()
                && self.redispatch.is_empty()
                && !self.online.is_empty()
            {
                self.start_read();
            }
            tokio::select! {
                _ = self.group.stop.cancelled() => break,
                _ = self.group.changed.notified() => {}
                Some(ack) = self.acks.next(), if !self.acks.is_empty() => {
                    self.on_ack(ack);
                    while let Some(Some(ack)) = self.acks.next().now_or_never() {
                        self.on_ack(ack);
                    }
                }
                (offset, member, result) = publish, if blocked => match result {
                    Ok(delivery) => self.handed_out(offset, member, delivery),
                    Err(e) => self.publish_failed(offset, member, e),
                },
                (consumer, outcome) = read_done(&mut self.read), if self.read.is_some() => {
                    self.read = None;
                    self.reader = Some(consumer);
                    match outcome {
                        ReadOutcome::Records(records) => {
                            if let Some(last) = records.last() {
                                self.resume = StartFrom::After(last.offset);
                            }
                            self.buffer.extend(records);
                        }
                        ReadOutcome::Ended => {
                            tracing::info!("MQTT integration: the application's stream ended (application deleted or event log closed); delivery stopped");
                            break;
                        }
                    }
                }
                _ = tick.tick(), if self.tuning.max_lag > 0 => self.check_lag(),
                _ = view_changed(&mut self.views) => self.rewind().await,
            }
        }
        self.commit().await;
        self.group.finished.store(true, Ordering::Release);
    }

    /// Starts reading the next batch, unless a read is in flight. Read errors are retried
    /// (reopening the consumer) with a growing pause, inside the read.
    fn start_read(&mut self) {
        let Some(mut consumer) = self.reader.take() else {
            return;
        };
        let (log, stream, resume) = (self.log.clone(), self.group.stream.clone(), self.resume);
        let max = self.tuning.read_batch;
        self.read = Some(Box::pin(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                match consumer.next_batch(max).await {
                    Ok(records) if records.is_empty() => return (consumer, ReadOutcome::Ended),
                    Ok(records) => return (consumer, ReadOutcome::Records(records)),
                    Err(BusError::Closed) => return (consumer, ReadOutcome::Ended),
                    Err(e) => {
                        tracing::warn!("MQTT integration: cannot read the application's stream: {e}; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        match log.consume(&stream, resume).await {
                            Ok(c) => consumer = c,
                            Err(e) => tracing::warn!(
                                "MQTT integration: cannot reopen the application's stream: {e}"
                            ),
                        }
                    }
                }
            }
        }));
    }

    /// Takes the latest membership, if it changed.
    fn refresh(&mut self) {
        let (version, members) = {
            let m = lock(&self.group.membership);
            if Some(m.version) == self.version {
                drop(m);
                if std::mem::take(&mut self.stale) {
                    self.rebuild();
                }
                return;
            }
            (m.version, m.members.clone())
        };
        self.stale = false;
        self.version = Some(version);
        self.members = members;
        self.offline_seen.clear();
        self.rebuild();
    }

    /// Recomputes the online members, and which outstanding records must be handed out again
    /// because their device now belongs to a member that does not hold them.
    fn rebuild(&mut self) {
        self.online = self
            .members
            .iter()
            .filter(|(id, m)| {
                m.online && m.session.is_connected() && !self.offline_seen.contains(id)
            })
            .map(|(id, _)| *id)
            .collect();
        if let Some(link) = &self.link {
            // Only a node with online members takes part in the group's view.
            link.set_active(!self.online.is_empty());
        }
        for (offset, held) in &self.outstanding {
            let owner = owner(&self.online, &self.members, &held.record.event.device);
            if owner.is_none() {
                // Nobody to give it to: it stays where it is until someone comes online.
                continue;
            }
            if held.holder.map(|(m, _)| m) == owner {
                self.redispatch.remove(offset);
            } else {
                self.redispatch.insert(*offset);
            }
        }
    }

    /// The next record to hand out, and to whom: records to hand out again first (in offset
    /// order), then new ones. Skips (and counts as handled) records of other channels.
    fn candidate(&mut self) -> Option<(Offset, u64)> {
        if self.online.is_empty() {
            return None;
        }
        while let Some(&offset) = self.redispatch.first() {
            match self.outstanding.get(&offset) {
                Some(held) => {
                    return owner(&self.online, &self.members, &held.record.event.device)
                        .map(|m| (offset, m))
                }
                None => {
                    self.redispatch.remove(&offset);
                }
            }
        }
        while let Some(front) = self.buffer.front() {
            let other_node = self
                .view
                .as_ref()
                .is_some_and(|v| !v.owns(&front.event.device));
            if other_node
                || self
                    .channel
                    .as_ref()
                    .is_some_and(|c| *c != front.event.channel)
            {
                self.handled = front.offset;
                self.buffer.pop_front();
                continue;
            }
            return owner(&self.online, &self.members, &front.event.device)
                .map(|m| (front.offset, m));
        }
        None
    }

    /// The record at `offset` (outstanding or at the front of the buffer).
    fn record(&self, offset: Offset) -> Option<&Record> {
        if self.redispatch.contains(&offset) {
            self.outstanding.get(&offset).map(|h| &h.record)
        } else {
            self.buffer.front().filter(|r| r.offset == offset)
        }
    }

    /// Hands a record to its member if its session queue has room; returns whether anything
    /// moved (false: blocked, waiting for room).
    fn try_hand_out(&mut self, offset: Offset, member: u64) -> bool {
        self.blocked = None;
        let (Some(record), Some(m)) = (self.record(offset), self.members.get(&member)) else {
            return true;
        };
        let msg = message::encode(&record.event, &m.topic, m.qos, m.mode);
        match m.session.try_publish(msg) {
            Ok(delivery) => {
                self.handed_out(offset, member, delivery);
                true
            }
            Err(TryPublishError::Full(message)) => {
                self.blocked = Some(Blocked {
                    offset,
                    member,
                    message: *message,
                });
                false
            }
            Err(TryPublishError::Publish(e)) => {
                self.publish_failed(offset, member, e);
                true
            }
        }
    }

    fn handed_out(&mut self, offset: Offset, member: u64, delivery: Delivery) {
        self.blocked = None;
        let qos1 = self
            .members
            .get(&member)
            .is_some_and(|m| m.qos != QoS::AtMostOnce);
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.redispatch.remove(&offset) {
            if !qos1 {
                self.outstanding.remove(&offset);
            } else if let Some(held) = self.outstanding.get_mut(&offset) {
                held.holder = Some((member, seq));
            }
        } else {
            let Some(record) = self.buffer.pop_front() else {
                return;
            };
            self.handled = record.offset;
            if qos1 {
                self.outstanding.insert(
                    offset,
                    Held {
                        record,
                        holder: Some((member, seq)),
                    },
                );
            }
        }
        if qos1 {
            self.acks.push(Box::pin(async move {
                Ack {
                    offset,
                    member,
                    seq,
                    result: delivery.acknowledged().await,
                }
            }));
        }
    }

    fn publish_failed(&mut self, offset: Offset, member: u64, e: PublishError) {
        self.blocked = None;
        match e {
            PublishError::SessionEnded(_) | PublishError::Offline(_) => {
                // The membership update is on its way; until then, leave the member out.
                self.offline_seen.insert(member);
                self.stale = true;
            }
            PublishError::Invalid { reason, .. } => {
                tracing::warn!(
                    offset,
                    "MQTT integration: event cannot be sent over MQTT ({reason}); skipped"
                );
                if self.redispatch.remove(&offset) {
                    self.outstanding.remove(&offset);
                } else if self.buffer.front().is_some_and(|r| r.offset == offset) {
                    self.buffer.pop_front();
                    self.handled = offset;
                }
            }
        }
    }

    fn on_ack(&mut self, ack: Ack) {
        let Some(held) = self.outstanding.get_mut(&ack.offset) else {
            return; // acknowledged before (e.g. by an earlier holder)
        };
        let current = held.holder == Some((ack.member, ack.seq));
        match ack.result {
            // Any member's PUBACK (whatever its reason code) means the event arrived.
            Ok(_) => {
                self.outstanding.remove(&ack.offset);
                self.redispatch.remove(&ack.offset);
            }
            Err(DeliveryError::SessionEnded) => {
                if current {
                    held.holder = None;
                }
                self.stale = true;
            }
            Err(e) => {
                if current {
                    tracing::warn!(
                        offset = ack.offset,
                        "MQTT integration: event not delivered: {e}; skipped"
                    );
                    self.outstanding.remove(&ack.offset);
                    self.redispatch.remove(&ack.offset);
                }
            }
        }
    }

    /// Commits the acknowledged prefix, if it grew.
    async fn commit(&mut self) {
        let Some(name) = &self.durable else {
            return;
        };
        let point = match self.outstanding.first_key_value() {
            Some((oldest, _)) => oldest.saturating_sub(1),
            None => self.handled,
        };
        if point <= self.committed {
            return;
        }
        let result = match (&self.link, &self.view) {
            (Some(link), Some(view)) => link.report(view.epoch, point).await,
            // On a cluster, nothing is committed before the first view.
            (Some(_), None) => return,
            (None, _) => self.log.commit(&self.group.stream, name, point).await,
        };
        match result {
            Ok(()) => {
                self.committed = point;
                self.commit_failing = false;
            }
            Err(e) => {
                if !self.commit_failing {
                    tracing::warn!(group = %name, "MQTT integration: cannot commit offset {point}: {e}");
                }
                self.commit_failing = true;
            }
        }
    }

    /// The group's view changed (nodes came or went): start over from the committed offset
    /// under the new view. Events after it may reach members twice; none is skipped.
    async fn rewind(&mut self) {
        let Some(view) = self.views.as_mut().map(|rx| rx.borrow_and_update().clone()) else {
            return;
        };
        let name = self.durable.clone().unwrap_or_default();
        let from = match self.log.committed(&self.group.stream, &name).await {
            Ok(c) => c.unwrap_or(self.committed),
            Err(e) => {
                tracing::warn!("MQTT integration: cannot read the group's offset after a change of nodes: {e}; keeping the position");
                self.view = Some(view);
                return;
            }
        };
        match self
            .log
            .consume(&self.group.stream, StartFrom::After(from))
            .await
        {
            Ok(consumer) => {
                self.read = None;
                self.reader = Some(consumer);
            }
            Err(e) => {
                tracing::warn!(
                    "MQTT integration: cannot reopen the stream after a change of nodes: {e}"
                );
                self.view = Some(view);
                return;
            }
        }
        tracing::info!(
            nodes = ?view.nodes,
            from,
            "MQTT integration: the nodes of the group changed; delivering again from the committed offset"
        );
        self.resume = StartFrom::After(from);
        self.buffer.clear();
        self.blocked = None;
        // Unacknowledged events of devices now another node's are that node's to deliver.
        self.outstanding
            .retain(|_, h| view.owns(&h.record.event.device));
        self.redispatch.retain(|o| self.outstanding.contains_key(o));
        self.handled = from;
        self.committed = from;
        self.view = Some(view);
    }

    /// Disconnects the member that holds delivery up when the group is more than `max_lag`
    /// events behind the end of the stream and did not catch up since the previous check.
    fn check_lag(&mut self) {
        let lag = self.probe.end().saturating_sub(self.handled);
        let not_catching_up = self.last_lag.is_some_and(|previous| lag >= previous);
        self.last_lag = Some(lag);
        if lag <= self.tuning.max_lag || !not_catching_up {
            return;
        }
        let Some(member) = self
            .blocked
            .as_ref()
            .and_then(|b| self.members.get(&b.member))
        else {
            return;
        };
        tracing::info!(
            session = member.session.key(),
            lag,
            max_lag = self.tuning.max_lag,
            "MQTT integration: disconnecting a consumer {lag} events behind the end of the stream (limit {}) that does not catch up (0x97 Quota exceeded)",
            self.tuning.max_lag
        );
        member.session.disconnect(ReasonCode::QUOTA_EXCEEDED);
        self.last_lag = None;
    }
}
