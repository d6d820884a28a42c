//! User authentication, the one implementation used by the management API, the WebSocket
//! integration and the MQTT integration: an access token (`user` + `drg_…`) or, with single
//! sign-on, a Bearer JWT becomes a [`Principal`].
//!
//! The registry is reached through [`UserDirectory`] (implemented by the registry crate), so this
//! module knows no storage. Every attempt goes through the [`Throttle`] (a locked-out source is
//! refused unchecked; a failed attempt's answer may wait). A long-lived session keeps its
//! [`AuthenticatedUser`] and asks [`UserAuthenticator::recheck`] whenever
//! [`UserDirectory::access_changes`] moves, so a deleted token or user ends it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use drover_model::error::Reason;
use drover_model::Principal;
use tokio::sync::watch;

use crate::device::DirectoryError;
use crate::throttle::{Throttle, Throttled};
use crate::OidcValidator;

/// Reads the registry for user authentication.
#[async_trait]
pub trait UserDirectory: Send + Sync + 'static {
    /// The owner of the access token stored under `token_hash` ([`crate::token::hash`]) and
    /// whether they are a system administrator.
    async fn token_owner(&self, token_hash: &str)
        -> Result<Option<(String, bool)>, DirectoryError>;
    /// Whether `user` is registered as a system administrator (users known only through single
    /// sign-on need no record: `None`).
    async fn user_admin(&self, user: &str) -> Result<Option<bool>, DirectoryError>;
    /// Moves (on every node of a cluster) whenever a commit may have taken access away from
    /// someone: a token or user deleted, members changed, ownership moved, an application
    /// deleted.
    fn access_changes(&self) -> watch::Receiver<u64>;
}

/// A credential a user presented.
#[derive(Clone, PartialEq, Eq)]
pub enum UserCredential {
    /// User name and access token.
    Token { user: String, token: String },
    /// A Bearer JWT of the configured issuer.
    Bearer(String),
}

impl std::fmt::Debug for UserCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserCredential::Token { user, .. } => f
                .debug_struct("Token")
                .field("user", user)
                .finish_non_exhaustive(),
            UserCredential::Bearer(_) => f.write_str("Bearer(..)"),
        }
    }
}

/// How a session was authenticated, kept to check it again later (no secret is kept: a token
/// by its hash).
#[derive(Clone, PartialEq, Eq)]
enum Proof {
    Token { hash: String },
    SingleSignOn,
}

/// An authenticated user, as a session keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    pub principal: Principal,
    proof: Proof,
}

impl std::fmt::Debug for AuthenticatedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticatedUser")
            .field("principal", &self.principal)
            .field("sso", &(self.proof == Proof::SingleSignOn))
            .finish()
    }
}

impl AuthenticatedUser {
    pub fn name(&self) -> &str {
        self.principal.name()
    }
}

/// Why user authentication failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UserAuthError {
    /// The credential is not valid; the message says why (log it, and it may be shown: it
    /// names nothing the caller did not send).
    #[error("{0}")]
    Invalid(String),
    /// A Bearer JWT, but single sign-on is not configured.
    #[error("Bearer tokens are accepted only when single sign-on (oidc.issuer_url) is configured; use '<user>:<access token>'")]
    NoSingleSignOn,
    /// Too many failures from this source: refused unchecked.
    #[error(transparent)]
    Throttled(#[from] Throttled),
    /// The registry or the identity provider cannot answer now (retry); the reason keeps the
    /// cause.
    #[error("{0}")]
    Unavailable(#[source] Reason),
}

/// The user directory could not answer.
fn unavailable(e: DirectoryError) -> UserAuthError {
    UserAuthError::Unavailable(Reason::caused_by("user directory unavailable", e.0))
}

/// Authenticates users (see the [module docs](self)).
pub struct UserAuthenticator {
    directory: Arc<dyn UserDirectory>,
    oidc: Option<OidcValidator>,
    throttle: Arc<Throttle>,
}

impl std::fmt::Debug for UserAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserAuthenticator")
            .field("oidc", &self.oidc.is_some())
            .finish_non_exhaustive()
    }
}

impl UserAuthenticator {
    pub fn new(
        directory: Arc<dyn UserDirectory>,
        oidc: Option<OidcValidator>,
        throttle: Arc<Throttle>,
    ) -> Self {
        UserAuthenticator {
            directory,
            oidc,
            throttle,
        }
    }

    /// Whether Bearer JWTs are accepted.
    pub fn single_sign_on(&self) -> bool {
        self.oidc.is_some()
    }

    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// Moves whenever access may have been taken away (see [`UserDirectory::access_changes`]).
    pub fn access_changes(&self) -> watch::Receiver<u64> {
        self.directory.access_changes()
    }

    /// Who presents `credential` from `source`?
    pub async fn authenticate(
        &self,
        credential: &UserCredential,
        source: IpAddr,
    ) -> Result<AuthenticatedUser, UserAuthError> {
        self.throttle.check(source)?;
        let (identity, outcome) = match credential {
            UserCredential::Token { user, token } => {
                (format!("user:{user}"), self.token(user, token).await)
            }
            UserCredential::Bearer(jwt) => ("user:<bearer>".to_string(), self.bearer(jwt).await),
        };
        match outcome {
            Ok(user) => {
                self.throttle.succeeded(source, &identity);
                Ok(user)
            }
            Err(e @ UserAuthError::Invalid(_)) => {
                let wait = self.throttle.failed(source, &identity);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn token(&self, user: &str, token: &str) -> Result<AuthenticatedUser, UserAuthError> {
        if user.is_empty() || token.is_empty() {
            return Err(UserAuthError::Invalid(
                "credentials need a user name and an access token".into(),
            ));
        }
        let hash = crate::token::hash(token);
        match self.directory.token_owner(&hash).await {
            Ok(Some((owner, admin))) if owner == user => Ok(AuthenticatedUser {
                principal: principal(owner, admin),
                proof: Proof::Token { hash },
            }),
            Ok(_) => Err(UserAuthError::Invalid(format!(
                "invalid access token for user '{user}'"
            ))),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn bearer(&self, jwt: &str) -> Result<AuthenticatedUser, UserAuthError> {
        let Some(oidc) = &self.oidc else {
            return Err(UserAuthError::NoSingleSignOn);
        };
        let user = oidc.validate(jwt).await.map_err(|e| {
            if e.is_unavailable() {
                UserAuthError::Unavailable(Reason::caused_by(
                    "single sign-on issuer unavailable",
                    e,
                ))
            } else {
                UserAuthError::Invalid(format!("invalid bearer token: {e}"))
            }
        })?;
        let admin = self
            .directory
            .user_admin(&user)
            .await
            .map_err(unavailable)?;
        Ok(AuthenticatedUser {
            principal: principal(user, admin == Some(true)),
            proof: Proof::SingleSignOn,
        })
    }

    /// Checks a session's authentication again: its token still exists (users deleted lose
    /// their tokens) and the user's administrator status as it is now. Single sign-on sessions
    /// keep their user (the identity provider decides who exists) with the administrator status
    /// of now.
    pub async fn recheck(&self, user: &AuthenticatedUser) -> Result<Principal, UserAuthError> {
        let name = user.principal.name();
        match &user.proof {
            Proof::Token { hash } => match self.directory.token_owner(hash).await {
                Ok(Some((owner, admin))) if owner == name => Ok(principal(owner, admin)),
                Ok(_) => Err(UserAuthError::Invalid(format!(
                    "the access token of user '{name}' was deleted"
                ))),
                Err(e) => Err(unavailable(e)),
            },
            Proof::SingleSignOn => match self.directory.user_admin(name).await {
                Ok(admin) => Ok(principal(name.to_string(), admin == Some(true))),
                Err(e) => Err(unavailable(e)),
            },
        }
    }
}

fn principal(name: String, admin: bool) -> Principal {
    if admin {
        Principal::SystemAdmin(name)
    } else {
        Principal::User(name)
    }
}

/// How long a session waits before checking again when the registry could not answer a
/// re-check (it keeps running meanwhile: an outage of the registry ends no session).
pub const RECHECK_RETRY: Duration = Duration::from_secs(1);
