//! What the client sends: decoding, the checks that need no policy (QoS, retain, topics and
//! aliases, Receive Maximum), answering PINGREQ and PUBACK, queueing the rest as [`Work`]; and
//! acknowledging inbound QoS 1 PUBLISHes once the policy is done with them.

use std::num::NonZeroU16;
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;

use super::{PublishMeta, State, Work};
use crate::reason::{CloseReason, PublishRefusal, ReasonCode};
use crate::session::{AckOutcome, Session};
use crate::topic;
use crate::types::{Inbound, QoS};
use crate::violation::Violation;
use crate::wire::{self, Incoming};

fn violation(v: Violation) -> CloseReason {
    CloseReason::ProtocolError(v)
}

impl State<'_> {
    /// Decodes and handles every complete packet in `rbuf`.
    pub(super) fn decode_available(
        &mut self,
        rbuf: &mut BytesMut,
        session: &Session,
        generation: u64,
        wbuf: &mut BytesMut,
    ) -> Result<(), CloseReason> {
        while !self.read_closed {
            match self.codec.decode(rbuf) {
                Ok(Some(packet)) => self.on_packet(packet, session, generation, wbuf)?,
                Ok(None) => break,
                Err(e) => return Err(violation(Violation::Undecodable(e))),
            }
        }
        Ok(())
    }

    /// Handles a decoded packet: answers what needs no policy, queues the rest.
    fn on_packet(
        &mut self,
        packet: Incoming,
        session: &Session,
        generation: u64,
        wbuf: &mut BytesMut,
    ) -> Result<(), CloseReason> {
        match packet {
            Incoming::Publish(p) => self.on_publish(*p),
            Incoming::PubAck { packet_id, reason } => {
                match session.ack(generation, packet_id, reason) {
                    AckOutcome::Acked => self.pump_needed = true,
                    AckOutcome::Unknown => {
                        tracing::debug!(peer = %self.peer, client_id = %self.client_id, "PUBACK for unknown packet id {packet_id}");
                    }
                }
                Ok(())
            }
            Incoming::Subscribe {
                packet_id,
                filters,
                user_properties,
                has_subscription_id,
            } => {
                if has_subscription_id {
                    return Err(violation(Violation::SubscriptionIdentifier));
                }
                if let Some((raw, _)) = filters
                    .iter()
                    .find(|(raw, o)| o.no_local && raw.starts_with("$share/"))
                {
                    return Err(violation(Violation::NoLocalOnShared(raw.clone())));
                }
                self.work.push_back(Work::Subscribe {
                    packet_id,
                    filters,
                    user_properties,
                });
                Ok(())
            }
            Incoming::Unsubscribe { packet_id, filters } => {
                self.work
                    .push_back(Work::Unsubscribe { packet_id, filters });
                Ok(())
            }
            Incoming::PingReq => {
                self.codec.encode_pingresp(wbuf);
                Ok(())
            }
            Incoming::Disconnect {
                reason,
                session_expiry,
            } => self.on_disconnect(reason, session_expiry, session, generation),
            Incoming::Unexpected(what) => Err(violation(Violation::UnexpectedPacket(what))),
        }
    }

    fn on_disconnect(
        &mut self,
        reason: ReasonCode,
        session_expiry: Option<u32>,
        session: &Session,
        generation: u64,
    ) -> Result<(), CloseReason> {
        if let Some(secs) = session_expiry {
            if self.expiry_zero_at_connect && secs != 0 {
                return Err(violation(Violation::ExpiryAfterZero));
            }
            let expiry = Duration::from_secs(u64::from(secs)).min(self.cfg.max_session_expiry);
            session.set_expiry(generation, expiry);
        }
        self.read_closed = true;
        self.work
            .push_back(Work::End(CloseReason::ClientDisconnect(reason)));
        Ok(())
    }

    fn on_publish(&mut self, p: rmqtt_codec::types::Publish) -> Result<(), CloseReason> {
        let rmqtt_codec::types::Publish {
            dup,
            retain,
            qos,
            topic,
            packet_id,
            payload,
            properties,
        } = p;
        let qos = QoS::from_codec(qos);
        if qos == QoS::ExactlyOnce {
            return Err(violation(Violation::Qos2Publish(topic)));
        }
        if retain && self.v5 {
            return Err(violation(Violation::RetainedPublish(topic)));
        }
        let (properties, alias, subscription_ids) = wire::publish_properties(properties);
        if subscription_ids {
            return Err(violation(Violation::PublishSubscriptionIdentifier));
        }
        let topic = match alias {
            None => topic,
            Some(alias) => self.resolve_alias(alias, topic)?,
        };
        self.check_topic(&topic)?;
        if qos == QoS::AtLeastOnce {
            self.qos1_unacked += 1;
            if self.qos1_unacked > usize::from(self.cfg.receive_maximum) {
                return Err(violation(Violation::ReceiveMaximumExceeded(
                    self.cfg.receive_maximum,
                )));
            }
        }
        self.work_bytes += payload.len();
        let message = Inbound {
            topic,
            payload,
            qos,
            dup,
            retain,
            properties,
        };
        self.work.push_back(Work::Publish { message, packet_id });
        Ok(())
    }

    /// The topic of a PUBLISH with a topic alias: sets the alias, or looks it up when the topic
    /// is empty.
    fn resolve_alias(
        &mut self,
        alias: NonZeroU16,
        topic: ByteString,
    ) -> Result<ByteString, CloseReason> {
        let max = self.cfg.topic_alias_maximum;
        if alias.get() > max {
            return Err(violation(Violation::TopicAliasAboveMaximum { alias, max }));
        }
        let slot = usize::from(alias.get() - 1);
        if self.aliases.len() <= slot {
            self.aliases.resize(usize::from(max), None);
        }
        if topic.is_empty() {
            match &self.aliases[slot] {
                Some(t) => Ok(t.clone()),
                None => Err(violation(Violation::UnknownTopicAlias(alias))),
            }
        } else {
            self.aliases[slot] = Some(topic.clone());
            Ok(topic)
        }
    }

    fn check_topic(&self, topic: &ByteString) -> Result<(), CloseReason> {
        if topic.is_empty() {
            return Err(violation(Violation::EmptyTopic));
        }
        if topic.len() > self.cfg.max_topic_length {
            return Err(violation(Violation::TopicTooLong {
                len: topic.len(),
                max: self.cfg.max_topic_length,
            }));
        }
        if let Err(source) = topic::validate_topic_name(topic) {
            return Err(violation(Violation::InvalidTopic {
                topic: topic.clone(),
                source,
            }));
        }
        Ok(())
    }

    /// A policy `publish` future resolved: acknowledge, refuse, or close.
    pub(super) fn publish_done(
        &mut self,
        meta: PublishMeta,
        result: Result<(), PublishRefusal>,
        wbuf: &mut BytesMut,
    ) -> Result<(), CloseReason> {
        let packet_id = match (meta.qos, meta.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => id,
            _ => {
                if let Err(refusal) = result {
                    tracing::info!(
                        peer = %self.peer, client_id = %self.client_id, topic = %meta.topic,
                        "refused QoS 0 PUBLISH, dropped: {:?} ({})", refusal, refusal.reason_code()
                    );
                }
                return Ok(());
            }
        };
        match result {
            Ok(()) => {
                self.qos1_unacked = self.qos1_unacked.saturating_sub(1);
                self.codec
                    .encode_puback(packet_id, ReasonCode::SUCCESS, wbuf);
                Ok(())
            }
            Err(refusal) => {
                tracing::info!(
                    peer = %self.peer, client_id = %self.client_id, topic = %meta.topic,
                    "refused QoS 1 PUBLISH: {:?} ({})", refusal, refusal.reason_code()
                );
                if self.v5 {
                    self.qos1_unacked = self.qos1_unacked.saturating_sub(1);
                    self.codec
                        .encode_puback(packet_id, refusal.reason_code(), wbuf);
                    Ok(())
                } else {
                    Err(CloseReason::PublishRefused(refusal))
                }
            }
        }
    }
}
