//! The dispatcher task of one consumer group (see the parent module for the rules): it reads
//! the stream, hands each record to the member that owns its device, keeps what is outstanding,
//! hands records again when their device moves, commits the acknowledged prefix, rewinds after
//! a failure, and ends sessions that lag too far behind.

use super::*;

/// A record handed out and not yet acknowledged.
pub(super) struct Held {
    record: Record,
    /// The member and hand-out number of the latest delivery; `None` when it failed.
    holder: Option<(u64, u64)>,
}

/// A record waiting for room in its member's session queue.
pub(super) struct Blocked {
    offset: Offset,
    member: u64,
    message: OutboundMessage,
}

/// The outcome of one delivery.
pub(super) struct Ack {
    offset: Offset,
    member: u64,
    seq: u64,
    result: Result<ReasonCode, DeliveryError>,
}

pub(super) type AckFuture = Pin<Box<dyn Future<Output = Ack> + Send>>;

/// What a read brought.
pub(super) enum ReadOutcome {
    Records(Vec<Record>),
    /// The stream was deleted or the log closed.
    Ended,
}

pub(super) type ReadFuture = Pin<Box<dyn Future<Output = (Box<dyn Consumer>, ReadOutcome)> + Send>>;

/// Waits for the read in flight, if any (else forever).
async fn read_done(read: &mut Option<ReadFuture>) -> (Box<dyn Consumer>, ReadOutcome) {
    match read {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

pub(super) struct Dispatcher {
    pub(super) group: Arc<Group>,
    pub(super) log: Arc<dyn EventLog>,
    /// Name of the durable group, if the group commits.
    pub(super) durable: Option<String>,
    pub(super) channel: Option<String>,
    pub(super) tuning: Tuning,
    /// The consumer, while no read is in flight.
    pub(super) reader: Option<Box<dyn Consumer>>,
    /// The read in flight; it owns the consumer and is kept across loop iterations (a
    /// cancelled read would lose the work done).
    pub(super) read: Option<ReadFuture>,
    /// A consumer that is never read: [`Consumer::end`] for the lag.
    pub(super) probe: Box<dyn Consumer>,
    /// Where to reopen the consumer after a read error: after the last record read.
    pub(super) resume: StartFrom,
    pub(super) buffer: VecDeque<Record>,
    pub(super) outstanding: BTreeMap<Offset, Held>,
    pub(super) redispatch: BTreeSet<Offset>,
    pub(super) acks: FuturesUnordered<AckFuture>,
    /// Every record up to this offset was taken from `buffer` (handed out or skipped).
    pub(super) handled: Offset,
    pub(super) committed: Offset,
    pub(super) commit_failing: bool,
    /// The membership version `members` was copied at.
    pub(super) version: Option<u64>,
    pub(super) members: BTreeMap<u64, Member>,
    /// Members that get events now, in id order.
    pub(super) online: Vec<u64>,
    /// Members found offline by a failed publish since the last membership change.
    pub(super) offline_seen: HashSet<u64>,
    pub(super) next_seq: u64,
    pub(super) blocked: Option<Blocked>,
    pub(super) last_lag: Option<u64>,
    /// A delivery failed or a member was found offline: [`Dispatcher::rebuild`] before the next
    /// hand-out (once, however many failed).
    pub(super) stale: bool,
    /// On a cluster: this node's part in the group, and the view it works under.
    pub(super) link: Option<Box<dyn GroupLink>>,
    pub(super) views: Option<tokio::sync::watch::Receiver<View>>,
    pub(super) view: Option<View>,
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
    pub(super) async fn run(mut self) {
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
