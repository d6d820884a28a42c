//! A recording policy: what the server asked it, and the answers it gives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::server::WAIT;
use bytes::Bytes;
use drover_mqtt::{
    Accepted, CloseReason, ConnectRequest, Inbound, MessageProperties, Policy, ProtocolVersion,
    PublishRefusal, QoS, Refusal, SessionEndReason, SessionHandle, SubscribeRefusal,
    SubscribeRequest, Subscription, SubscriptionRequest,
};
use tokio::sync::{Notify, Semaphore};

/// What the policy saw.
#[derive(Clone, Debug)]
pub enum Ev {
    Connect {
        client_id: String,
        username: Option<String>,
        clean: bool,
        keep_alive: u16,
        protocol: ProtocolVersion,
        expiry: Duration,
        assigned: bool,
        user_properties: Vec<(String, String)>,
    },
    Connected {
        key: String,
        client_id: String,
        present: bool,
    },
    Publish {
        client_id: String,
        topic: String,
        payload: Bytes,
        qos: QoS,
        dup: bool,
        retain: bool,
        props: MessageProperties,
    },
    Published {
        client_id: String,
        topic: String,
    },
    Subscribe {
        client_id: String,
        filters: Vec<SubscriptionRequest>,
        user_properties: Vec<(String, String)>,
    },
    /// The `subscribed` hook: what the session holds by then.
    Subscribed {
        client_id: String,
        granted: Vec<Subscription>,
        held: Vec<Subscription>,
    },
    Unsubscribe {
        client_id: String,
        removed: Vec<Subscription>,
    },
    Will {
        client_id: String,
        topic: String,
        payload: Bytes,
    },
    Disconnected {
        client_id: String,
        reason: CloseReason,
    },
    SessionEnded {
        key: String,
        reason: SessionEndReason,
    },
}

#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<Ev>>,
    notify: Notify,
}

impl Recorder {
    pub fn push(&self, ev: Ev) {
        self.events.lock().expect("lock").push(ev);
        self.notify.notify_waiters();
    }

    pub fn all(&self) -> Vec<Ev> {
        self.events.lock().expect("lock").clone()
    }

    /// Waits (up to [`WAIT`]) for an event matching `pred` and returns it.
    pub async fn wait<T>(&self, what: &str, pred: impl Fn(&Ev) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = self.events.lock().expect("lock").iter().find_map(&pred) {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for {what}; events: {:#?}", self.all());
            }
        }
    }

    pub fn count(&self, pred: impl Fn(&Ev) -> bool) -> usize {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| pred(e))
            .count()
    }
}

/// Identity: the client id.
#[derive(Clone, Debug)]
pub struct Id {
    pub client_id: String,
}

/// Test policy. Conventions:
/// - username `bad` → bad credentials, `deny` → not authorized, `down` → server unavailable,
///   client id `invalid` → client id invalid; username `nowild` / `noshare` disable wildcard /
///   shared subscriptions; username `session:<key>` chooses the session key (else the client id).
/// - publish topics: `deny/…` not authorized, `quota/…` quota exceeded, `format/…` payload
///   format invalid, `gate/…` waits for [`TestPolicy::open_gate`], `slow/<ms>/…` sleeps.
/// - subscribe filters starting with `deny` are refused, `q0/…` granted QoS 0, others as asked.
pub struct TestPolicy {
    pub rec: Arc<Recorder>,
    pub gate: Arc<Semaphore>,
    pub handles: Mutex<HashMap<String, SessionHandle>>,
}

impl TestPolicy {
    pub fn open_gate(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

fn s(b: &bytestring::ByteString) -> String {
    b.to_string()
}

impl Policy for TestPolicy {
    type Identity = Id;

    async fn connect(&self, req: &ConnectRequest) -> Result<Accepted<Id>, Refusal> {
        let username = req.username.as_ref().map(s);
        self.rec.push(Ev::Connect {
            client_id: s(&req.client_id),
            username: username.clone(),
            clean: req.clean_start,
            keep_alive: req.keep_alive,
            protocol: req.protocol,
            expiry: req.session_expiry,
            assigned: req.client_id_assigned,
            user_properties: req
                .user_properties
                .iter()
                .map(|(k, v)| (s(k), s(v)))
                .collect(),
        });
        match username.as_deref() {
            Some("bad") => return Err(Refusal::BadCredentials),
            Some("deny") => return Err(Refusal::NotAuthorized),
            Some("down") => return Err(Refusal::ServerUnavailable),
            _ => {}
        }
        if &*req.client_id == "invalid" {
            return Err(Refusal::ClientIdInvalid);
        }
        let key = match username.as_deref().and_then(|u| u.strip_prefix("session:")) {
            Some(key) => key.to_string(),
            None => s(&req.client_id),
        };
        let mut accepted = Accepted::new(
            Id {
                client_id: s(&req.client_id),
            },
            key,
        );
        match username.as_deref() {
            Some("nowild") => accepted = accepted.wildcard_subscriptions(false),
            Some("noshare") => accepted = accepted.shared_subscriptions(false),
            _ => {}
        }
        Ok(accepted)
    }

    async fn connected(&self, id: &Id, session: &SessionHandle, present: bool) {
        self.handles
            .lock()
            .expect("lock")
            .insert(session.key().to_string(), session.clone());
        self.rec.push(Ev::Connected {
            key: session.key().to_string(),
            client_id: id.client_id.clone(),
            present,
        });
    }

    async fn publish(&self, id: &Id, m: Inbound) -> Result<(), PublishRefusal> {
        let topic = s(&m.topic);
        self.rec.push(Ev::Publish {
            client_id: id.client_id.clone(),
            topic: topic.clone(),
            payload: m.payload.clone(),
            qos: m.qos,
            dup: m.dup,
            retain: m.retain,
            props: m.properties.clone(),
        });
        let result = if topic.starts_with("deny/") {
            Err(PublishRefusal::NotAuthorized)
        } else if topic.starts_with("quota/") {
            Err(PublishRefusal::QuotaExceeded)
        } else if topic.starts_with("format/") {
            Err(PublishRefusal::PayloadFormatInvalid)
        } else if topic.starts_with("gate/") {
            let permit = self.gate.acquire().await.expect("gate");
            permit.forget();
            Ok(())
        } else if let Some(rest) = topic.strip_prefix("slow/") {
            let ms: u64 = rest
                .split('/')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(10);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        } else {
            Ok(())
        };
        self.rec.push(Ev::Published {
            client_id: id.client_id.clone(),
            topic,
        });
        result
    }

    async fn subscribe(
        &self,
        id: &Id,
        _session: &SessionHandle,
        req: &SubscribeRequest,
    ) -> Vec<Result<QoS, SubscribeRefusal>> {
        self.rec.push(Ev::Subscribe {
            client_id: id.client_id.clone(),
            filters: req.filters.clone(),
            user_properties: req
                .user_properties
                .iter()
                .map(|(k, v)| (s(k), s(v)))
                .collect(),
        });
        req.filters
            .iter()
            .map(|f| {
                if f.filter.starts_with("deny") {
                    Err(SubscribeRefusal::NotAuthorized)
                } else if f.filter.starts_with("q0/") {
                    Ok(QoS::AtMostOnce)
                } else {
                    Ok(f.options.qos)
                }
            })
            .collect()
    }

    async fn subscribed(&self, id: &Id, session: &SessionHandle, granted: &[Subscription]) {
        self.rec.push(Ev::Subscribed {
            client_id: id.client_id.clone(),
            granted: granted.to_vec(),
            held: session.subscriptions(),
        });
    }

    async fn unsubscribed(&self, id: &Id, _session: &SessionHandle, removed: &[Subscription]) {
        self.rec.push(Ev::Unsubscribe {
            client_id: id.client_id.clone(),
            removed: removed.to_vec(),
        });
    }

    async fn will(&self, id: &Id, will: Inbound) {
        self.rec.push(Ev::Will {
            client_id: id.client_id.clone(),
            topic: s(&will.topic),
            payload: will.payload,
        });
    }

    async fn disconnected(&self, id: &Id, reason: &CloseReason) {
        self.rec.push(Ev::Disconnected {
            client_id: id.client_id.clone(),
            reason: reason.clone(),
        });
    }

    async fn session_ended(&self, key: &str, reason: SessionEndReason) {
        self.rec.push(Ev::SessionEnded {
            key: key.to_string(),
            reason,
        });
    }
}
