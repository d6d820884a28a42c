//! SUBSCRIBE: which filters a user may have (parsing and authorization), and joining or opening
//! the consumer group a subscription reads from.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use drover_bus::StreamKey;
use drover_model::Resource;
use drover_mqtt::{QoS, SessionHandle, SubscribeRefusal, SubscribeRequest, SubscriptionRequest};
use drover_registry::RegistryError;

use super::dispatch::{self, lock, Member};
use super::session::{leave, session_subs, stop_all, SharedKey, SubEntry, SubKey};
use super::topic::{self, FilterError};
use super::{ContentMode, IntegrationClient, IntegrationPolicy};

/// The applications a SUBSCRIBE names, each looked up once.
type Apps = HashMap<String, Result<Resource, RegistryError>>;

/// One authorized filter of a SUBSCRIBE: what the subscription is.
struct Plan {
    /// The filter as the client wrote it (for the logs).
    shown: String,
    key: SubKey,
    shared: Option<SharedKey>,
    stream: StreamKey,
    channel: Option<String>,
    qos: QoS,
    mode: ContentMode,
}

impl IntegrationPolicy {
    /// Answers each filter of a SUBSCRIBE.
    pub(super) async fn subscribe_all(
        &self,
        client: &IntegrationClient,
        session: &SessionHandle,
        req: &SubscribeRequest,
    ) -> Vec<Result<QoS, SubscribeRefusal>> {
        let mode = match ContentMode::from_user_properties(&req.user_properties) {
            Ok(mode) => mode,
            Err(value) => {
                tracing::info!(user = client.principal.name(), client_id = %client.client_id, "MQTT integration: subscription refused: unknown content-mode '{value}' (use 'binary' or 'structured')");
                return vec![Err(SubscribeRefusal::ImplementationSpecific); req.filters.len()];
            }
        };
        // Each application is looked up once per SUBSCRIBE, however many filters name it (and
        // the filters are few: the session layer caps them, see `MqttConfig`).
        let mut apps = HashMap::new();
        let mut results = Vec::with_capacity(req.filters.len());
        for f in &req.filters {
            results.push(
                self.subscribe_one(client, session, f, mode, &mut apps)
                    .await,
            );
        }
        results
    }

    async fn subscribe_one(
        &self,
        client: &IntegrationClient,
        session: &SessionHandle,
        f: &SubscriptionRequest,
        mode: ContentMode,
        apps: &mut Apps,
    ) -> Result<QoS, SubscribeRefusal> {
        let user = client.principal.name();
        let client_id = &client.client_id;
        let plan = self.plan(client, f, mode, apps).await?;
        let shown = plan.shown.clone();
        if self.unchanged(session, &plan).await {
            tracing::debug!(user, %client_id, filter = %shown, "MQTT integration: unchanged re-subscription");
            return Ok(plan.qos);
        }
        let opened = self.open_consumer(client, session, &plan).await?;
        let member = Member {
            session: session.clone(),
            rank_key: format!("{}\u{0}{}", session.key(), plan.key.filter),
            topic: plan.key.filter.clone(),
            qos: plan.qos,
            mode,
            online: session.is_connected(),
        };
        let qos = plan.qos;
        if self.install(session, plan, opened, member).await {
            tracing::info!(user, %client_id, filter = %shown, qos = qos.level(), ?mode, persistent = client.persistent, "MQTT integration: subscribed");
            Ok(qos)
        } else {
            // The shared group's stream ended between looking and joining.
            tracing::info!(user, %client_id, filter = %shown, "MQTT integration: subscription refused: the application's stream ended");
            Err(SubscribeRefusal::ImplementationSpecific)
        }
    }

    /// Parses a filter and checks that the user may read its application.
    async fn plan(
        &self,
        client: &IntegrationClient,
        f: &SubscriptionRequest,
        mode: ContentMode,
        apps: &mut Apps,
    ) -> Result<Plan, SubscribeRefusal> {
        let user = client.principal.name();
        let client_id = &client.client_id;
        let shown = match &f.share_group {
            Some(g) => format!("$share/{g}/{}", f.filter),
            None => f.filter.to_string(),
        };
        let target = topic::parse(&f.filter).map_err(|e| match e {
            FilterError::Wildcard => {
                tracing::info!(user, %client_id, filter = %shown, "MQTT integration: subscription refused: wildcards are not supported; subscribe to app/<application>[/<channel>]");
                SubscribeRefusal::WildcardsNotSupported
            }
            FilterError::Foreign(why) => {
                tracing::info!(user, %client_id, filter = %shown, "MQTT integration: subscription refused: {why}");
                SubscribeRefusal::TopicFilterInvalid
            }
        })?;
        let looked_up = match apps.get(&target.app) {
            Some(answer) => answer.clone(),
            None => {
                let answer = self.registry.get_app(&client.principal, &target.app).await;
                apps.insert(target.app.clone(), answer.clone());
                answer
            }
        };
        let app = match looked_up {
            Ok(app) => app,
            Err(e @ (RegistryError::Unavailable(_) | RegistryError::Internal(_))) => {
                tracing::warn!(user, %client_id, filter = %shown, "MQTT integration: subscription refused: registry unavailable: {e}");
                return Err(SubscribeRefusal::ImplementationSpecific);
            }
            Err(e) => {
                // Not there, or not readable by this user: the same answer for both.
                tracing::info!(user, %client_id, filter = %shown, "MQTT integration: subscription refused: application '{}' does not exist or the user may not read it ({e})", target.app);
                return Err(SubscribeRefusal::NotAuthorized);
            }
        };
        let stream = StreamKey::new(app.metadata.name.clone(), app.metadata.uid.clone());
        let shared = f.share_group.as_ref().map(|g| SharedKey {
            app_uid: stream.app_uid.clone(),
            group: g.to_string(),
            channel: target.channel.clone(),
        });
        Ok(Plan {
            shown,
            key: SubKey {
                share_group: f.share_group.clone(),
                filter: f.filter.clone(),
            },
            shared,
            stream,
            channel: target.channel,
            qos: f.options.qos.min(QoS::AtLeastOnce),
            mode,
        })
    }

    /// Whether the session has this subscription already, unchanged (a resuming client): it
    /// keeps its consumer.
    async fn unchanged(&self, session: &SessionHandle, plan: &Plan) -> bool {
        let mut to_stop = Vec::new();
        let unchanged = {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            let subs = session_subs(&mut st.sessions, &mut st.shared, session, &mut to_stop);
            subs.subs.get(&plan.key).is_some_and(|e| {
                e.qos == plan.qos
                    && e.mode == plan.mode
                    && e.app_uid == plan.stream.app_uid
                    && !e.group.is_finished()
            })
        };
        stop_all(to_stop).await;
        unchanged
    }

    /// Opens a consumer for the subscription, unless there is a shared group to join (`None`).
    async fn open_consumer(
        &self,
        client: &IntegrationClient,
        session: &SessionHandle,
        plan: &Plan,
    ) -> Result<Option<dispatch::Opened>, SubscribeRefusal> {
        let join_existing = plan.shared.as_ref().is_some_and(|k| {
            lock(&self.state)
                .shared
                .get(k)
                .is_some_and(|g| !g.is_finished())
        });
        if join_existing {
            return Ok(None);
        }
        let (durable, label) = match &plan.shared {
            Some(k) => (
                Some(topic::shared_group(
                    &plan.stream.app,
                    &k.group,
                    k.channel.as_deref(),
                )),
                plan.shown.clone(),
            ),
            None => (
                client
                    .persistent
                    .then(|| topic::personal_group(session.key(), &plan.key.filter)),
                format!("{} {}", session.key(), plan.key.filter),
            ),
        };
        let link = match (&self.group_peers, &durable) {
            (Some(peers), Some(name)) => Some(peers.join(&plan.stream, name)),
            _ => None,
        };
        dispatch::open(
            self.log.clone(),
            plan.stream.clone(),
            durable,
            plan.channel.clone(),
            self.tuning(),
            label,
            link,
        )
        .await
        .map(Some)
        .map_err(|e| {
            tracing::warn!(user = client.principal.name(), client_id = %client.client_id, filter = %plan.shown, "MQTT integration: subscription refused: cannot open the application's stream: {e}");
            SubscribeRefusal::ImplementationSpecific
        })
    }

    /// Makes `member` a member of the subscription's group (the shared group, or the consumer
    /// `opened`), replacing the session's earlier subscription with the same filter. `false`:
    /// the shared group ended meanwhile and nothing was opened.
    async fn install(
        &self,
        session: &SessionHandle,
        plan: Plan,
        opened: Option<dispatch::Opened>,
        member: Member,
    ) -> bool {
        let mut to_stop = Vec::new();
        let installed = {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            let subs = session_subs(&mut st.sessions, &mut st.shared, session, &mut to_stop);
            if let Some(old) = subs.subs.remove(&plan.key) {
                leave(&mut st.shared, old, &mut to_stop);
            }
            let group = match &plan.shared {
                Some(k) => match st.shared.get(k).filter(|g| !g.is_finished()) {
                    Some(g) => Some(g.clone()),
                    None => opened.map(|o| {
                        let g = o.start();
                        st.shared.insert(k.clone(), g.clone());
                        g
                    }),
                },
                None => opened.map(dispatch::Opened::start),
            };
            group.map(|group: Arc<dispatch::Group>| {
                let id = self.next_member.fetch_add(1, Ordering::Relaxed);
                group.add(id, member);
                subs.subs.insert(
                    plan.key,
                    SubEntry {
                        group,
                        member: id,
                        shared: plan.shared,
                        qos: plan.qos,
                        mode: plan.mode,
                        app_uid: plan.stream.app_uid,
                        app: plan.stream.app,
                    },
                );
            })
        };
        stop_all(to_stop).await;
        installed.is_some()
    }
}
