//! The shared command queue: commands with a time to live that no node could deliver wait in
//! the JetStream stream `<PREFIX>_COMMANDS` (one copy per possible taker) until a node with a
//! sink for the device or a gateway claims and delivers one copy, or their time to live ends
//! (the protocol is described in the parent module, `cluster::commands`).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;

use super::{
    decode_header, encode_header, now_ms, token, ClusterConfig, ClusterError, Inner, Meta,
    DELIVERED, META, OP, OP_DRAIN,
};
use crate::commands::{Command, CommandError, DeviceKey, Outcome};
use crate::Reason;

/// Creates (or finds) the queue's stream and the stream of claims.
pub(super) async fn create_streams(
    js: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<(stream::Stream, stream::Stream), ClusterError> {
    let upper = config
        .prefix
        .to_uppercase()
        .replace(['.', '*', '>', ' '], "_");
    let create = |config: stream::Config| async move {
        let name = config.name.clone();
        js.get_or_create_stream(config)
            .await
            .map_err(|source| ClusterError::Stream {
                stream: name,
                source,
            })
    };
    let queue = create(stream::Config {
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
    .await?;
    let claims = create(stream::Config {
        name: format!("{upper}_COMMAND_CLAIMS"),
        description: Some("Drover: which node delivered a queued command".into()),
        subjects: vec![format!("{}.cmd.claim.>", config.prefix)],
        max_messages_per_subject: 1,
        max_age: config.max_ttl,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        ..Default::default()
    })
    .await?;
    Ok((queue, claims))
}

/// Whether JetStream refused a copy because its subject (a device's queue) is full.
fn is_queue_full(e: &PublishError) -> bool {
    e.to_string().contains("maximum messages per subject")
}

impl Inner {
    fn queue_subject(&self, key: &DeviceKey) -> String {
        format!(
            "{}.cmd.queue.{}.{}",
            self.config.prefix,
            token(&key.0),
            token(&key.1)
        )
    }

    /// Queues a copy of the command for each target (the device's own queue decides whether
    /// there is room; a gateway's full queue only skips that copy), pokes the targets' nodes
    /// and settles the command when its time to live ends.
    pub(super) async fn enqueue(
        self: &Arc<Self>,
        command: &Command,
        targets: &[DeviceKey],
        mut meta: Meta,
        ttl: Duration,
    ) -> Result<Outcome, CommandError> {
        let ttl = ttl.min(self.config.max_ttl);
        meta.expires_ms = Some(now_ms() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let unavailable = |e: PublishError| {
            CommandError::Unavailable(Reason::caused_by(
                format!("queueing command '{}'", command.id),
                e,
            ))
        };
        let mut copies = Vec::new();
        for (n, key) in targets.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert(META, encode_header(&meta).as_str());
            headers.insert("Nats-Msg-Id", format!("{}.{n}", command.id).as_str());
            let ack = self
                .js
                .publish_with_headers(self.queue_subject(key), headers, command.payload.clone())
                .await
                .map_err(unavailable)?
                .await;
            match ack {
                Ok(a) => copies.push(a.sequence),
                Err(e) if is_queue_full(&e) && n == 0 => {
                    return Err(CommandError::QueueFull(
                        command.device.clone(),
                        usize::try_from(self.config.max_queue_per_device).unwrap_or(usize::MAX),
                    ))
                }
                Err(e) if is_queue_full(&e) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        let mut poke = HeaderMap::new();
        poke.insert(OP, OP_DRAIN);
        for key in targets {
            if let Err(e) = self
                .client
                .publish_with_headers(self.dev_subject(key), poke.clone(), Bytes::new())
                .await
            {
                tracing::warn!("cannot announce a queued command: {e}");
            }
        }
        tokio::spawn(self.clone().expire_later(command.clone(), copies, ttl));
        Ok(Outcome::Queued)
    }

    fn claim_subject(&self, id: &str) -> String {
        format!("{}.cmd.claim.{}", self.config.prefix, token(id))
    }

    /// Claims a command id: true if this node is the first (the claim's subject was empty).
    async fn claim(&self, id: &str) -> Result<bool, PublishError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
        let ack = self
            .js
            .publish_with_headers(
                self.claim_subject(id),
                headers,
                Bytes::from(self.config.node.clone()),
            )
            .await?
            .await;
        match ack {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(false),
            Err(e) => Err(e),
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
    pub(super) async fn drain(&self, key: &DeviceKey) {
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
