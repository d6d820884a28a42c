//! SUBSCRIBE and UNSUBSCRIBE: the crate's own checks and limits, the policy's decision, the
//! session's subscriptions, SUBACK and UNSUBACK.

use std::future::Future;
use std::num::NonZeroU16;
use std::pin::Pin;

use bytes::BytesMut;
use bytestring::ByteString;

use super::{Conn, State};
use crate::policy::Policy;
use crate::reason::{ReasonCode, SubscribeRefusal};
use crate::session::Session;
use crate::topic;
use crate::types::{
    QoS, SubscribeRequest, Subscription, SubscriptionOptions, SubscriptionRequest, UserProperty,
};

/// A SUBSCRIBE or UNSUBSCRIBE the policy is working on, and what it leaves to answer.
pub(super) type ControlFuture<'a> = Pin<Box<dyn Future<Output = ControlDone> + Send + 'a>>;

pub(super) enum ControlDone {
    /// The granted subscriptions are stored in the session (and the policy told) already.
    Subscribed {
        packet_id: NonZeroU16,
        codes: Vec<ReasonCode>,
        /// Filters the policy refused (or gave no answer for), for the log.
        refused: Vec<(ByteString, ReasonCode)>,
    },
    Unsubscribed {
        packet_id: NonZeroU16,
        codes: Vec<ReasonCode>,
    },
}

/// Per filter of a SUBSCRIBE: refused by the crate (with its code), or the index of its
/// request to the policy.
type Precheck = Vec<Result<usize, ReasonCode>>;

impl<P: Policy> Conn<'_, P> {
    /// Starts a SUBSCRIBE: the crate's checks now, the policy's decision in the future.
    pub(super) fn subscribe(
        &self,
        st: &State<'_>,
        packet_id: NonZeroU16,
        filters: Vec<(ByteString, SubscriptionOptions)>,
        user_properties: Vec<UserProperty>,
    ) -> ControlFuture<'_> {
        let (pre, request) = st.prepare_subscribe(&filters, user_properties, &self.session);
        let raw: Vec<ByteString> = filters.into_iter().map(|(f, _)| f).collect();
        let policy = self.server.policy();
        Box::pin(async move {
            let results = if request.filters.is_empty() {
                Vec::new()
            } else {
                policy
                    .subscribe(&self.identity, &self.handle, &request)
                    .await
            };
            let (codes, granted, refused) = decide(pre, raw, &results, &request);
            if !granted.is_empty() {
                self.session.add_subscriptions(granted.clone());
                policy
                    .subscribed(&self.identity, &self.handle, &granted)
                    .await;
            }
            ControlDone::Subscribed {
                packet_id,
                codes,
                refused,
            }
        })
    }

    /// Starts an UNSUBSCRIBE: the session forgets the subscriptions now, the policy is told in
    /// the future.
    pub(super) fn unsubscribe(
        &self,
        packet_id: NonZeroU16,
        filters: Vec<ByteString>,
    ) -> ControlFuture<'_> {
        let parsed: Vec<Option<(Option<&str>, &str)>> = filters
            .iter()
            .map(|f| topic::parse_subscription(f).ok())
            .collect();
        let which: Vec<(Option<&str>, &str)> = parsed.iter().flatten().copied().collect();
        let mut removed = self.session.remove_subscriptions(&which).into_iter();
        let mut gone = Vec::new();
        let codes: Vec<ReasonCode> = parsed
            .iter()
            .map(|p| match p {
                None => ReasonCode::TOPIC_FILTER_INVALID,
                Some(_) => match removed.next().flatten() {
                    Some(sub) => {
                        gone.push(sub);
                        ReasonCode::SUCCESS
                    }
                    None => ReasonCode::NO_SUBSCRIPTION_EXISTED,
                },
            })
            .collect();
        let policy = self.server.policy();
        Box::pin(async move {
            if !gone.is_empty() {
                policy
                    .unsubscribed(&self.identity, &self.handle, &gone)
                    .await;
            }
            ControlDone::Unsubscribed { packet_id, codes }
        })
    }
}

/// The SUBACK codes, the subscriptions granted and the filters the policy refused, from the
/// crate's checks and the policy's answers.
fn decide(
    pre: Precheck,
    raw: Vec<ByteString>,
    results: &[Result<QoS, SubscribeRefusal>],
    request: &SubscribeRequest,
) -> (
    Vec<ReasonCode>,
    Vec<Subscription>,
    Vec<(ByteString, ReasonCode)>,
) {
    let mut codes = Vec::with_capacity(pre.len());
    let mut granted = Vec::new();
    let mut refused = Vec::new();
    for (p, raw) in pre.into_iter().zip(raw) {
        let code = match p {
            // Refused by the crate, and logged then.
            Err(code) => code,
            Ok(i) => match (results.get(i), request.filters.get(i)) {
                (Some(Ok(qos)), Some(req)) => {
                    let qos = (*qos).min(QoS::AtLeastOnce);
                    granted.push(Subscription {
                        filter: req.filter.clone(),
                        share_group: req.share_group.clone(),
                        qos,
                        options: req.options,
                        user_properties: request.user_properties.clone(),
                    });
                    ReasonCode(qos.level())
                }
                (Some(Err(refusal)), _) => {
                    refused.push((raw, refusal.reason_code()));
                    refusal.reason_code()
                }
                _ => {
                    refused.push((raw, ReasonCode::UNSPECIFIED_ERROR));
                    ReasonCode::UNSPECIFIED_ERROR
                }
            },
        };
        codes.push(code);
    }
    (codes, granted, refused)
}

impl State<'_> {
    /// Splits a SUBSCRIBE into what the crate refuses by itself and what the policy decides.
    /// The limits (filters per SUBSCRIBE, subscriptions per session, filter length) are applied
    /// here, before the policy sees anything, so a flood of filters costs no policy work.
    fn prepare_subscribe(
        &self,
        filters: &[(ByteString, SubscriptionOptions)],
        user_properties: Vec<UserProperty>,
        session: &Session,
    ) -> (Precheck, SubscribeRequest) {
        let cfg = self.cfg;
        let considered = filters.len().min(cfg.max_filters_per_subscribe);
        let mut request = SubscribeRequest {
            filters: Vec::with_capacity(considered),
            user_properties,
        };
        if filters.len() > considered {
            tracing::info!(peer = %self.peer, client_id = %self.client_id, "SUBSCRIBE with {} filters: the {} after the first {considered} refused with Quota exceeded (max_filters_per_subscribe)", filters.len(), filters.len() - considered);
        }
        let mut held = session.subscription_count();
        let mut over_quota = 0usize;
        let pre = filters
            .iter()
            .enumerate()
            .map(|(i, (raw, options))| {
                if i >= considered {
                    return Err(ReasonCode::QUOTA_EXCEEDED);
                }
                let (group, filter) = self.check_filter(raw)?;
                let repeated = request
                    .filters
                    .iter()
                    .any(|r| r.filter == filter && r.share_group.as_deref() == group);
                if !repeated && !session.has_subscription(group, filter) {
                    if held >= cfg.max_subscriptions {
                        over_quota += 1;
                        return Err(ReasonCode::QUOTA_EXCEEDED);
                    }
                    held += 1;
                }
                request.filters.push(SubscriptionRequest {
                    filter: raw.slice_ref(filter),
                    share_group: group.map(|g| raw.slice_ref(g)),
                    options: *options,
                });
                Ok(request.filters.len() - 1)
            })
            .collect();
        if over_quota > 0 {
            tracing::info!(peer = %self.peer, client_id = %self.client_id, "refused {over_quota} subscription(s) with Quota exceeded: the session holds the most allowed ({}, max_subscriptions)", cfg.max_subscriptions);
        }
        (pre, request)
    }

    /// A filter's share group and filter, if the crate accepts it (logs why not).
    fn check_filter<'r>(
        &self,
        raw: &'r ByteString,
    ) -> Result<(Option<&'r str>, &'r str), ReasonCode> {
        let cfg = self.cfg;
        if raw.len() > cfg.max_topic_length {
            tracing::info!(peer = %self.peer, client_id = %self.client_id, "refused subscription: filter of {} bytes is longer than {} (max_topic_length)", raw.len(), cfg.max_topic_length);
            return Err(ReasonCode::TOPIC_FILTER_INVALID);
        }
        let (group, filter) = match topic::parse_subscription(raw) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::info!(peer = %self.peer, client_id = %self.client_id, "refused subscription {:?}: {e}", &**raw);
                return Err(ReasonCode::TOPIC_FILTER_INVALID);
            }
        };
        if group.is_some() && !self.shared {
            tracing::info!(peer = %self.peer, client_id = %self.client_id, "refused subscription {:?}: shared subscriptions not available", &**raw);
            return Err(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED);
        }
        if !self.wildcards && topic::has_wildcards(filter) {
            tracing::info!(peer = %self.peer, client_id = %self.client_id, "refused subscription {:?}: wildcards not available", &**raw);
            return Err(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED);
        }
        Ok((group, filter))
    }

    pub(super) fn control_done(&mut self, done: ControlDone, wbuf: &mut BytesMut) {
        match done {
            ControlDone::Subscribed {
                packet_id,
                codes,
                refused,
            } => {
                for (filter, code) in &refused {
                    tracing::info!(peer = %self.peer, client_id = %self.client_id, "refused subscription {:?}: policy said {code}", &**filter);
                }
                self.codec.encode_suback(packet_id, &codes, wbuf);
            }
            ControlDone::Unsubscribed { packet_id, codes } => {
                self.codec.encode_unsuback(packet_id, &codes, wbuf);
            }
        }
    }
}
