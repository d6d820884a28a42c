//! Users of the management API and their access tokens: the system administrator's bootstrap,
//! users, tokens, and the principal a token or a single-sign-on name stands for.

use drover_model::Principal;

use super::access::require_admin;
use super::{tables, Backend, SqlRegistry, ADMIN_USER};
use crate::sql::{Fallible, Sql};
use crate::{AdminBootstrap, CreatedToken, RegistryError, Result, TokenInfo, User};
use tables::NewToken;

pub(super) async fn bootstrap_admin<B: Backend>(
    reg: &SqlRegistry<B>,
    configured: Option<&str>,
) -> Result<AdminBootstrap> {
    reg.retry(move || async move {
        let mut w = reg.begin_write().await?;
        tables::insert_user(&mut w.tx, ADMIN_USER, true, true, w.now).await?;
        let result = if let Some(token) = configured {
            tables::delete_configured_tokens(&mut w.tx, ADMIN_USER, token).await?;
            let prefix = drover_auth::token::parse(token).unwrap_or("configured");
            tables::insert_token(
                &mut w.tx,
                NewToken {
                    user: ADMIN_USER,
                    token,
                    prefix,
                    description: Some("configured (DROVER_ADMIN_TOKEN)"),
                    configured: true,
                },
            )
            .await?;
            AdminBootstrap::Configured
        } else if tables::count_tokens(&mut w.tx, ADMIN_USER).await? == 0 {
            let t = new_token(&mut w.tx, ADMIN_USER, Some("generated at first start")).await?;
            AdminBootstrap::Generated(t.token)
        } else {
            AdminBootstrap::Existing
        };
        w.commit().await?;
        Ok(result)
    })
    .await
}

pub(super) async fn create_user<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    name: &str,
    admin: bool,
) -> Result<(User, CreatedToken)> {
    require_admin(who)?;
    drover_model::names::validate_user_name(name)?;
    reg.retry(move || async move {
        let mut w = reg.begin_write().await?;
        if tables::user_exists(&mut w.tx, name).await? {
            return Err(RegistryError::Conflict(format!("user '{name}' already exists")).into());
        }
        let created = w.now;
        tables::insert_user(&mut w.tx, name, admin, false, created).await?;
        let t = new_token(&mut w.tx, name, Some("initial token")).await?;
        w.commit().await?;
        Ok((
            User {
                name: name.to_string(),
                admin,
                created,
            },
            t,
        ))
    })
    .await
}

/// A new access token of `user`, stored (only its hash) in the transaction.
async fn new_token(
    tx: &mut impl Sql,
    user: &str,
    description: Option<&str>,
) -> Fallible<CreatedToken> {
    let t = drover_auth::token::generate();
    tables::insert_token(
        tx,
        NewToken {
            user,
            token: &t.token,
            prefix: &t.prefix,
            description,
            configured: false,
        },
    )
    .await?;
    Ok(CreatedToken {
        prefix: t.prefix,
        token: t.token,
    })
}

pub(super) async fn list_users<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
) -> Result<Vec<User>> {
    require_admin(who)?;
    Ok(tables::users(&mut reg.backend.pool()).await?)
}

pub(super) async fn delete_user<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    name: &str,
) -> Result<()> {
    require_admin(who)?;
    if name == ADMIN_USER {
        return Err(RegistryError::BadRequest(format!(
            "the system administrator '{ADMIN_USER}' cannot be deleted"
        )));
    }
    reg.retry(move || async move {
        let mut w = reg.begin_write().await?;
        if !tables::delete_user(&mut w.tx, name).await? {
            return Err(RegistryError::NotFound(format!("user '{name}' not found")).into());
        }
        w.revokes = true;
        // Apps the user owned stay, owned by nobody (only system administrators reach them);
        // memberships and pending transfers to the user end, so a new user of the same name
        // inherits nothing.
        for app in tables::apps_of_user(&mut w.tx, name).await? {
            let Some(mut row) = tables::load_app(&mut w.tx, &app).await? else {
                continue;
            };
            let mut changed = false;
            if row.owner.as_deref() == Some(name) {
                row.owner = None;
                changed = true;
            }
            if row.transfer_to.as_deref() == Some(name) {
                row.transfer_to = None;
                changed = true;
            }
            if row.members.remove(name).is_some() {
                row.members_version = uuid::Uuid::new_v4().to_string();
                changed = true;
            }
            if changed {
                w.save_app(&row).await?;
            }
        }
        w.commit().await
    })
    .await
}

pub(super) async fn create_token<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    description: Option<&str>,
) -> Result<CreatedToken> {
    if description.is_some_and(|d| d.len() > 256) {
        return Err(RegistryError::BadRequest(
            "token description is longer than 256 bytes".into(),
        ));
    }
    reg.retry(move || async move {
        let mut w = reg.begin_write().await?;
        // Users known only through single sign-on get their user record with their first
        // token.
        tables::insert_user(&mut w.tx, who.name(), false, false, w.now).await?;
        let t = new_token(&mut w.tx, who.name(), description).await?;
        w.commit().await?;
        Ok(t)
    })
    .await
}

pub(super) async fn list_tokens<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
) -> Result<Vec<TokenInfo>> {
    Ok(tables::tokens(&mut reg.backend.pool(), who.name()).await?)
}

pub(super) async fn delete_token<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    prefix: &str,
) -> Result<()> {
    reg.retry(move || async move {
        let mut w = reg.begin_write().await?;
        if who.name() == ADMIN_USER
            && tables::count_tokens(&mut w.tx, ADMIN_USER).await? == 1
            && tables::tokens(&mut w.tx, ADMIN_USER)
                .await?
                .iter()
                .any(|t| t.prefix == prefix)
        {
            return Err(RegistryError::Conflict(format!(
                "token '{prefix}' is the last access token of the system administrator '{ADMIN_USER}': create another one first (POST /api/tokens/v1alpha1), or the installation can only be recovered by restarting with DROVER_ADMIN_TOKEN"
            ))
            .into());
        }
        if !tables::delete_token(&mut w.tx, who.name(), prefix).await? {
            return Err(RegistryError::NotFound(format!("token '{prefix}' not found")).into());
        }
        w.revokes = true;
        w.commit().await
    })
    .await
}

pub(super) async fn authenticate_token<B: Backend>(
    reg: &SqlRegistry<B>,
    user: &str,
    token: &str,
) -> Result<Principal> {
    match tables::token_owner(&mut reg.backend.pool(), token).await? {
        Some((owner, admin)) if owner == user => Ok(if admin {
            Principal::SystemAdmin(owner)
        } else {
            Principal::User(owner)
        }),
        _ => Err(RegistryError::Unauthorized(format!(
            "invalid access token for user '{user}'"
        ))),
    }
}

pub(super) async fn principal_for<B: Backend>(
    reg: &SqlRegistry<B>,
    user: &str,
) -> Result<Principal> {
    let admin = tables::user_admin(&mut reg.backend.pool(), user).await?;
    Ok(if admin == Some(true) {
        Principal::SystemAdmin(user.to_string())
    } else {
        Principal::User(user.to_string())
    })
}
