//! Sessions that lose their authorization end: every session's user and applications are
//! checked again whenever the registry's access counter moves.

use std::collections::HashMap;

use drover_auth::user::AuthenticatedUser;
use drover_model::Principal;
use drover_mqtt::MqttServer;

use super::dispatch::lock;
use super::IntegrationPolicy;
use crate::access::CheckError;

impl IntegrationPolicy {
    /// Checks every session's access again; ends those that lost it (their clients get
    /// DISCONNECT 0x87 Not authorized and start a new session when they come back). Returns
    /// whether some check could not be answered (to try again shortly).
    pub(super) async fn recheck_sessions(&self, server: &MqttServer<Self>) -> bool {
        let sessions: Vec<(String, AuthenticatedUser, Vec<String>)> = {
            let st = lock(&self.state);
            st.users
                .iter()
                .map(|(key, (user, _))| {
                    let mut apps: Vec<String> = st
                        .sessions
                        .get(key)
                        .map(|s| s.subs.values().map(|e| e.app.clone()).collect())
                        .unwrap_or_default();
                    apps.sort();
                    apps.dedup();
                    (key.clone(), user.clone(), apps)
                })
                .collect()
        };
        let mut principals: HashMap<String, Result<Principal, CheckError>> = HashMap::new();
        let mut unanswered = false;
        for (key, user, apps) in sessions {
            let id = format!("{user:?}");
            let principal = match principals.get(&id) {
                Some(p) => p.clone(),
                None => {
                    let p = self.access.principal(&user).await;
                    principals.insert(id, p.clone());
                    p
                }
            };
            let verdict = match principal {
                Ok(p) => {
                    let mut verdict = Ok(());
                    for app in &apps {
                        verdict = self.access.may_read(&p, app).await;
                        if verdict.is_err() {
                            break;
                        }
                    }
                    verdict
                }
                Err(e) => Err(e),
            };
            match verdict {
                Ok(()) => {}
                Err(CheckError::Unanswered(e)) => {
                    tracing::warn!(session = %key, "MQTT integration: {e}; checking again shortly");
                    unanswered = true;
                }
                Err(CheckError::Revoked(r)) => {
                    tracing::info!(session = %key, user = user.name(), "MQTT integration: ending the session: {r}");
                    server
                        .end_session(&key, drover_mqtt::ReasonCode::NOT_AUTHORIZED)
                        .await;
                }
            }
        }
        unanswered
    }
}

/// Follows the registry's access changes and ends the sessions whose user lost access (see
/// [`IntegrationPolicy::recheck_sessions`]); stops with the server.
pub(super) async fn watch_access(server: std::sync::Weak<MqttServer<IntegrationPolicy>>) {
    let mut changes = match server.upgrade() {
        Some(s) => s.policy().access.changes(),
        None => return,
    };
    changes.mark_unchanged();
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        loop {
            let Some(server) = server.upgrade() else {
                return;
            };
            if server.is_shutting_down() {
                return;
            }
            if !server.policy().recheck_sessions(&server).await {
                break;
            }
            drop(server);
            tokio::time::sleep(drover_auth::user::RECHECK_RETRY).await;
        }
    }
}
