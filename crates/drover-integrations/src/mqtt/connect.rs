//! CONNECT: a user's access token, or a Bearer JWT, as the password; per-user connection caps;
//! the session key.

use std::sync::Arc;

use drover_auth::user::{AuthenticatedUser, UserAuthError, UserCredential};
use drover_model::names::encode_segment;
use drover_mqtt::{Accepted, ConnectRequest, Refusal};

use super::{IntegrationClient, IntegrationPolicy};

impl IntegrationPolicy {
    /// Authenticates a CONNECT and builds the client's identity (see the module docs of
    /// [`super`]).
    pub(super) async fn accept(
        &self,
        req: &ConnectRequest,
    ) -> Result<Accepted<Arc<IntegrationClient>>, Refusal> {
        let user = self.authenticate(req).await?;
        let principal = user.principal.clone();
        let slot = match &self.connections {
            Some(limits) => match limits.acquire(principal.name()) {
                Ok(slot) => Some(slot),
                Err(e) => {
                    tracing::info!(peer = %req.connection.peer_addr, client_id = %req.client_id, "MQTT integration: CONNECT refused: {e}");
                    return Err(Refusal::QuotaExceeded);
                }
            },
            None => None,
        };
        let session_key = format!("{}/{}", encode_segment(principal.name()), req.client_id);
        tracing::debug!(peer = %req.connection.peer_addr, client_id = %req.client_id, user = principal.name(), "MQTT integration: client authenticated");
        let client = IntegrationClient {
            principal,
            user,
            _slot: slot,
            client_id: req.client_id.clone(),
            session_key: session_key.clone(),
            persistent: !req.session_expiry.is_zero(),
            protocol: req.protocol,
            session: std::sync::OnceLock::new(),
        };
        Ok(Accepted::new(Arc::new(client), session_key)
            .wildcard_subscriptions(false)
            .shared_subscriptions(true))
    }

    async fn authenticate(&self, req: &ConnectRequest) -> Result<AuthenticatedUser, Refusal> {
        let peer = req.connection.peer_addr;
        let client_id = &req.client_id;
        let Some(password) = req.password.as_ref() else {
            tracing::info!(%peer, %client_id, "MQTT integration: CONNECT refused: no password (send the user name and an access token, or a bearer token as the password)");
            return Err(Refusal::BadCredentials);
        };
        let Ok(password) = std::str::from_utf8(password) else {
            tracing::info!(%peer, %client_id, "MQTT integration: CONNECT refused: the password is not UTF-8");
            return Err(Refusal::BadCredentials);
        };
        let credential = if self.users.single_sign_on() && password.matches('.').count() == 2 {
            UserCredential::Bearer(password.to_string())
        } else {
            let Some(user) = req.username.as_deref().filter(|u| !u.is_empty()) else {
                tracing::info!(%peer, %client_id, "MQTT integration: CONNECT refused: no user name (send the user name and an access token)");
                return Err(Refusal::BadCredentials);
            };
            UserCredential::Token {
                user: user.to_string(),
                token: password.to_string(),
            }
        };
        match self.users.authenticate(&credential, peer.ip()).await {
            Ok(user) => Ok(user),
            Err(UserAuthError::Unavailable(e)) => {
                tracing::warn!(%peer, %client_id, "MQTT integration: CONNECT refused: {e}");
                Err(Refusal::ServerUnavailable)
            }
            Err(e) => {
                if let Some(held_back) = self.users.throttle().admit_log() {
                    tracing::info!(%peer, %client_id, ?credential, held_back, "MQTT integration: CONNECT refused: {e}");
                }
                Err(match e {
                    UserAuthError::Throttled(_) => Refusal::ConnectionRateExceeded,
                    _ => Refusal::BadCredentials,
                })
            }
        }
    }
}
