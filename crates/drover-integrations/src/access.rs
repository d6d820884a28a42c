//! Access of long-lived application sessions (WebSocket streams, MQTT integration
//! connections): checked again whenever the registry says access may have been taken away
//! (`UserDirectory::access_changes`: a token or user deleted, members changed, ownership
//! moved), on every node, so a session whose user lost access ends within moments of the change.

use std::sync::Arc;

use drover_auth::user::{AuthenticatedUser, UserAuthError, UserAuthenticator, RECHECK_RETRY};
use drover_model::{Permission, Principal};
use drover_registry::{AccessReader, RegistryError};
use tokio::sync::watch;

/// Why a session must end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Revoked {
    /// The credential the session was opened with is gone (token deleted, user deleted).
    #[error("access revoked: {0}")]
    Credential(String),
    /// The user may no longer read the application.
    #[error("access revoked: user '{user}' may no longer read application '{app}'")]
    Application { user: String, app: String },
}

/// The registry could not answer a re-check; the session goes on and the check is repeated.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot check access now: {0}")]
pub struct Unanswered(#[source] drover_model::error::Reason);

/// What re-checks a session's access.
#[derive(Clone)]
pub struct AccessCheck {
    users: Arc<UserAuthenticator>,
    registry: Arc<dyn AccessReader>,
}

impl std::fmt::Debug for AccessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessCheck").finish_non_exhaustive()
    }
}

impl AccessCheck {
    pub fn new(users: Arc<UserAuthenticator>, registry: Arc<dyn AccessReader>) -> Self {
        AccessCheck { users, registry }
    }

    /// Moves whenever access may have been taken away.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.users.access_changes()
    }

    /// The user's principal now, if their credential still holds.
    pub async fn principal(&self, user: &AuthenticatedUser) -> Result<Principal, CheckError> {
        match self.users.recheck(user).await {
            Ok(p) => Ok(p),
            Err(UserAuthError::Unavailable(m)) => Err(CheckError::Unanswered(Unanswered(m))),
            Err(e) => Err(CheckError::Revoked(Revoked::Credential(e.to_string()))),
        }
    }

    /// Whether `principal` may still read `app`.
    pub async fn may_read(&self, principal: &Principal, app: &str) -> Result<(), CheckError> {
        match self
            .registry
            .authorize(principal, app, Permission::Read)
            .await
        {
            Ok(_) | Err(RegistryError::Forbidden(_)) => Ok(()),
            Err(RegistryError::NotFound(_)) => Err(CheckError::Revoked(Revoked::Application {
                user: principal.name().to_string(),
                app: app.to_string(),
            })),
            Err(e) => Err(CheckError::Unanswered(Unanswered(e.into_reason()))),
        }
    }

    /// Whether `user` may still read `app`.
    pub async fn check(&self, user: &AuthenticatedUser, app: &str) -> Result<(), CheckError> {
        let principal = self.principal(user).await?;
        self.may_read(&principal, app).await
    }

    /// Resolves once `user` may no longer read `app` (checked whenever access changes; while the
    /// registry cannot answer, every [`RECHECK_RETRY`]). Never resolves if nothing is revoked.
    pub async fn revoked(&self, user: &AuthenticatedUser, app: &str) -> Revoked {
        let mut changes = self.changes();
        changes.mark_unchanged();
        loop {
            if changes.changed().await.is_err() {
                // The registry is gone (shutdown): nothing more to watch.
                std::future::pending::<()>().await;
            }
            loop {
                match self.check(user, app).await {
                    Ok(()) => break,
                    Err(CheckError::Revoked(r)) => return r,
                    Err(CheckError::Unanswered(e)) => {
                        tracing::warn!(user = user.name(), app, "{e}; checking again shortly");
                        tokio::time::sleep(RECHECK_RETRY).await;
                    }
                }
            }
        }
    }
}

/// The outcome of a failed check.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Revoked(Revoked),
    #[error(transparent)]
    Unanswered(Unanswered),
}
