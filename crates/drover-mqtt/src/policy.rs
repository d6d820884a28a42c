//! The policy: everything that decides what MQTT traffic *means*, supplied by the user of the
//! crate.

use std::future::Future;

use crate::reason::{CloseReason, PublishRefusal, Refusal, SessionEndReason, SubscribeRefusal};
use crate::session::SessionHandle;
use crate::types::{ConnectRequest, Inbound, QoS, SubscribeRequest, Subscription};

/// A CONNECT the policy accepts.
#[derive(Clone, Debug)]
pub struct Accepted<I> {
    /// Whatever the policy needs to recognise the connection in later calls (e.g. the
    /// authenticated application and device).
    pub identity: I,
    /// Key of the session this connection belongs to. One live connection per key: a new
    /// connection with the same key takes the session over and closes the old one (e.g.
    /// `"app/device"` for devices, the client id for integration users).
    pub session_key: String,
    /// Overrides [`MqttConfig::wildcard_subscriptions`](crate::MqttConfig::wildcard_subscriptions)
    /// for this connection.
    pub wildcard_subscriptions: Option<bool>,
    /// Overrides [`MqttConfig::shared_subscriptions`](crate::MqttConfig::shared_subscriptions)
    /// for this connection.
    pub shared_subscriptions: Option<bool>,
}

impl<I> Accepted<I> {
    /// Accepts with `identity` into the session `session_key`.
    pub fn new(identity: I, session_key: impl Into<String>) -> Self {
        Accepted {
            identity,
            session_key: session_key.into(),
            wildcard_subscriptions: None,
            shared_subscriptions: None,
        }
    }

    /// Builder: whether wildcard subscriptions are available on this connection.
    pub fn wildcard_subscriptions(mut self, available: bool) -> Self {
        self.wildcard_subscriptions = Some(available);
        self
    }

    /// Builder: whether shared subscriptions are available on this connection.
    pub fn shared_subscriptions(mut self, available: bool) -> Self {
        self.shared_subscriptions = Some(available);
        self
    }
}

/// Decides what MQTT traffic means: authentication, what a PUBLISH does, what a SUBSCRIBE may do,
/// what to deliver. The crate calls it; it never calls the crate back except through
/// [`SessionHandle`].
///
/// The methods return `impl Future + Send` (write them as `async fn` in the impl); no boxing
/// happens per message. Calls for one connection are made by that connection's task, in order:
/// `connect` → `connected` → (`publish` | `subscribe` | `unsubscribe`)* → `will`? → `disconnected`.
/// The futures are dropped (cancelled) when the connection must close at once (protocol error,
/// keep-alive timeout, takeover, shutdown); a QoS 1 PUBLISH whose future was dropped was not
/// acknowledged, so the client sends it again.
pub trait Policy: Send + Sync + Sized + 'static {
    /// What `connect` learns about the client and every later call gets back.
    type Identity: Clone + Send + Sync + 'static;

    /// Authenticates and authorises a CONNECT. `Ok` sends a successful CONNACK (after any
    /// takeover of the session), `Err` sends the refusal's return/reason code and closes.
    fn connect(
        &self,
        request: &ConnectRequest,
    ) -> impl Future<Output = Result<Accepted<Self::Identity>, Refusal>> + Send;

    /// The connection is established: CONNACK was written. `session_present` tells whether the
    /// session (its subscriptions and queued QoS 1 messages) survived from an earlier
    /// connection; [`SessionHandle::subscriptions`] lists what it holds.
    fn connected(
        &self,
        _identity: &Self::Identity,
        _session: &SessionHandle,
        _session_present: bool,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// An inbound PUBLISH (QoS 0 or 1). For QoS 1 the PUBACK is sent only after this resolves
    /// `Ok`, so append durably before resolving.
    ///
    /// Calls are made in packet order. With
    /// [`MqttConfig::inbound_concurrency`](crate::MqttConfig::inbound_concurrency) above 1 several
    /// returned futures may be pending at once; each is first polled in packet order.
    fn publish(
        &self,
        identity: &Self::Identity,
        message: Inbound,
    ) -> impl Future<Output = Result<(), PublishRefusal>> + Send;

    /// Several PUBLISHes that arrived together on one connection (up to
    /// [`MqttConfig::inbound_concurrency`](crate::MqttConfig::inbound_concurrency)), in packet
    /// order: one result per message, in the same order (a missing result counts as
    /// [`PublishRefusal::Unspecified`]). The same contract as [`publish`](Self::publish) for
    /// each message — QoS 1 PUBACKs follow `Ok` — but a policy can make them durable together
    /// (one log append for the batch). The crate calls this instead of `publish`; several
    /// batches may be pending at once, each first polled in packet order.
    ///
    /// The default calls `publish` for each message and polls the futures together, each first
    /// polled in packet order.
    fn publish_batch(
        &self,
        identity: &Self::Identity,
        messages: Vec<Inbound>,
    ) -> impl Future<Output = Vec<Result<(), PublishRefusal>>> + Send {
        async move {
            let mut pending = crate::pipeline::Pipeline::new();
            for (i, message) in messages.into_iter().enumerate() {
                pending.push(self.publish(identity, message), i);
            }
            let mut results = Vec::with_capacity(pending.len());
            while !pending.is_empty() {
                let (_, result) = std::future::poll_fn(|cx| pending.poll_next(cx)).await;
                results.push(result);
            }
            results
        }
    }

    /// A SUBSCRIBE: one result per entry of `request.filters`, in the same order (missing
    /// entries count as refused with 0x80). A granted QoS above 1 is lowered to 1. Granted
    /// subscriptions are stored in the session after this returns, then
    /// [`subscribed`](Self::subscribed) is called, then SUBACK is sent. Filters the crate
    /// refuses by itself (limits of [`MqttConfig`](crate::MqttConfig), invalid filters,
    /// unavailable features) are not in `request`.
    ///
    /// The default refuses everything (Not authorized).
    fn subscribe(
        &self,
        _identity: &Self::Identity,
        _session: &SessionHandle,
        request: &SubscribeRequest,
    ) -> impl Future<Output = Vec<Result<QoS, SubscribeRefusal>>> + Send {
        let refused = vec![Err(SubscribeRefusal::NotAuthorized); request.filters.len()];
        async move { refused }
    }

    /// The subscriptions a SUBSCRIBE granted are stored in the session (so
    /// [`SessionHandle::subscription_qos`] finds them); SUBACK follows once this resolves. The
    /// place to start delivering what waits for the new subscriptions.
    fn subscribed(
        &self,
        _identity: &Self::Identity,
        _session: &SessionHandle,
        _granted: &[Subscription],
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Subscriptions removed from the session by an UNSUBSCRIBE (only those that existed),
    /// after they were removed.
    fn unsubscribed(
        &self,
        _identity: &Self::Identity,
        _session: &SessionHandle,
        _removed: &[Subscription],
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The connection's will, due because the connection ended without a normal DISCONNECT
    /// (see [`CloseReason::publishes_will`]); after the MQTT 5 Will Delay Interval, unless the
    /// session was resumed meanwhile.
    fn will(&self, _identity: &Self::Identity, _will: Inbound) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The connection ended (after `connected`). Called once per established connection; a
    /// taken-over connection's call completes before the new connection's CONNACK (bounded by
    /// [`MqttConfig::takeover_timeout`](crate::MqttConfig::takeover_timeout)).
    fn disconnected(
        &self,
        _identity: &Self::Identity,
        _reason: &CloseReason,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// A session's state was discarded (expired, clean start, closed without expiry): stop
    /// anything that delivers to it. Its [`SessionHandle`]s now refuse to publish.
    fn session_ended(
        &self,
        _session_key: &str,
        _reason: SessionEndReason,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
}
