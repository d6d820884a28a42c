//! Every statement the registry runs, once for both stores. Each function reads or writes one
//! table's rows; the rules about what to write are in the parent module.

use chrono::{DateTime, Utc};
use drover_model::{Kind, Members, Reason, Resource};

use crate::sql::{Arg, Fallible, Fields, Sql};
use crate::{Change, RegistryError, TokenInfo, User};

mod rows;

pub use rows::{
    all_device_names, all_tokens, all_trust_anchor_subjects, counts, insert_name_row,
    insert_stored_app, insert_stored_device, insert_token_row, stored_apps, stored_devices,
    NameRow, StoredApp, StoredDevice, TokenRow,
};

/// An application's row: the document plus what lives outside it.
pub struct AppRow {
    pub doc: Resource,
    pub owner: Option<String>,
    pub transfer_to: Option<String>,
    pub members: Members,
    pub members_version: String,
}

/// Each row of the result, as `read` reads it.
async fn map_rows<S: Sql, T>(
    db: &mut S,
    sql: &'static str,
    args: &[Arg<'_>],
    read: impl Fn(&S::Row) -> Fallible<T>,
) -> Fallible<Vec<T>> {
    db.rows(sql, args).await?.iter().map(read).collect()
}

/// The first row of the result, if any, as `read` reads it.
async fn map_row<S: Sql, T>(
    db: &mut S,
    sql: &'static str,
    args: &[Arg<'_>],
    read: impl Fn(&S::Row) -> Fallible<T>,
) -> Fallible<Option<T>> {
    db.row(sql, args).await?.as_ref().map(read).transpose()
}

/// The JSON documents in the first column of the result.
async fn docs(db: &mut impl Sql, sql: &'static str, args: &[Arg<'_>]) -> Fallible<Vec<Resource>> {
    map_rows(db, sql, args, |r| r.json(0)).await
}

async fn doc(db: &mut impl Sql, sql: &'static str, args: &[Arg<'_>]) -> Fallible<Option<Resource>> {
    map_row(db, sql, args, |r| r.json(0)).await
}

/// The number in the first column of a one-row result.
async fn number(db: &mut impl Sql, sql: &'static str, args: &[Arg<'_>]) -> Fallible<u64> {
    let n = map_row(db, sql, args, |r| r.uint(0)).await?;
    n.ok_or_else(|| RegistryError::Internal(Reason::new(format!("no result from '{sql}'"))).into())
}

/// A counter of the `meta` row, read by `sql` (which may also lock the row).
pub async fn meta(db: &mut impl Sql, sql: &'static str) -> Fallible<u64> {
    number(db, sql, &[]).await
}

pub const REVISION: &str = "SELECT revision FROM meta WHERE id = 1";

pub async fn set_revision(db: &mut impl Sql, revision: u64) -> Fallible<()> {
    db.exec(
        "UPDATE meta SET revision = $1 WHERE id = 1",
        &[revision.into()],
    )
    .await?;
    Ok(())
}

pub const ACCESS: &str = "SELECT access FROM meta WHERE id = 1";

/// Moves the access counter (in a write transaction, which holds the `meta` row) and returns it.
pub async fn bump_access(db: &mut impl Sql) -> Fallible<u64> {
    db.exec("UPDATE meta SET access = access + 1 WHERE id = 1", &[])
        .await?;
    meta(db, ACCESS).await
}

pub async fn compacted(db: &mut impl Sql) -> Fallible<u64> {
    meta(db, "SELECT compacted FROM meta WHERE id = 1").await
}

pub async fn set_compacted(db: &mut impl Sql, revision: u64) -> Fallible<()> {
    db.exec(
        "UPDATE meta SET compacted = $1 WHERE id = 1",
        &[revision.into()],
    )
    .await?;
    Ok(())
}

// applications

pub async fn load_app(db: &mut impl Sql, name: &str) -> Fallible<Option<AppRow>> {
    let sql = "SELECT doc, owner, transfer_to, members, members_version FROM apps WHERE name = $1";
    map_row(db, sql, &[name.into()], |r| {
        Ok(AppRow {
            doc: r.json(0)?,
            owner: r.opt_text(1)?,
            transfer_to: r.opt_text(2)?,
            members: r.json(3)?,
            members_version: r.text(4)?,
        })
    })
    .await
}

/// Every application's document, owner and members, by name.
pub async fn all_apps(db: &mut impl Sql) -> Fallible<Vec<(Resource, Option<String>, Members)>> {
    with_access(
        db,
        "SELECT doc, owner, members FROM apps ORDER BY name",
        |r| r.json(0),
    )
    .await
}

/// Every application's name, owner and members.
pub async fn app_access(db: &mut impl Sql) -> Fallible<Vec<(String, Option<String>, Members)>> {
    with_access(
        db,
        "SELECT name, owner, members FROM apps ORDER BY name",
        |r| r.text(0),
    )
    .await
}

/// Rows of (something, owner, members).
async fn with_access<S: Sql, T>(
    db: &mut S,
    sql: &'static str,
    first: impl Fn(&S::Row) -> Fallible<T>,
) -> Fallible<Vec<(T, Option<String>, Members)>> {
    map_rows(db, sql, &[], |r| {
        Ok((first(r)?, r.opt_text(1)?, r.json(2)?))
    })
    .await
}

/// Names of the applications `user` owns, is to receive or is (maybe) a member of.
pub async fn apps_of_user(db: &mut impl Sql, user: &str) -> Fallible<Vec<String>> {
    let quoted = serde_json::to_string(user)
        .map_err(|e| RegistryError::internal("cannot quote user name", e))?;
    let pattern = format!("%{quoted}%");
    let sql = "SELECT name FROM apps WHERE owner = $1 OR transfer_to = $1 OR CAST(members AS TEXT) LIKE $2";
    map_rows(db, sql, &[user.into(), pattern.as_str().into()], |r| {
        r.text(0)
    })
    .await
}

pub async fn save_app(
    db: &mut impl Sql,
    row: &AppRow,
    trust_anchor_subjects: &[String],
) -> Fallible<()> {
    let name = &row.doc.metadata.name;
    db.exec(
        "INSERT INTO apps (name, uid, owner, transfer_to, members, members_version, doc) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT(name) DO UPDATE SET uid = excluded.uid, owner = excluded.owner, transfer_to = excluded.transfer_to,
         members = excluded.members, members_version = excluded.members_version, doc = excluded.doc",
        &[
            name.into(),
            (&row.doc.metadata.uid).into(),
            row.owner.as_deref().into(),
            row.transfer_to.as_deref().into(),
            Arg::json(&row.members)?,
            (&row.members_version).into(),
            Arg::json(&row.doc)?,
        ],
    )
    .await?;
    index_trust_anchors(db, name, trust_anchor_subjects).await
}

pub async fn delete_app(db: &mut impl Sql, name: &str) -> Fallible<()> {
    for sql in [
        "DELETE FROM apps WHERE name = $1",
        "DELETE FROM revocations WHERE app = $1",
        "DELETE FROM enrollments WHERE app = $1",
        "DELETE FROM registrations WHERE app = $1",
    ] {
        db.exec(sql, &[name.into()]).await?;
    }
    super::webhooks::delete_of_app(db, name).await?;
    index_trust_anchors(db, name, &[]).await
}

/// Replaces the application's entries in the trust-anchor index.
async fn index_trust_anchors(db: &mut impl Sql, app: &str, subjects: &[String]) -> Fallible<()> {
    db.exec(
        "DELETE FROM trust_anchor_subjects WHERE app = $1",
        &[app.into()],
    )
    .await?;
    for subject in subjects {
        insert_trust_anchor_subject(db, app, subject).await?;
    }
    Ok(())
}

pub async fn insert_trust_anchor_subject(
    db: &mut impl Sql,
    app: &str,
    subject: &str,
) -> Fallible<()> {
    db.exec(
        "INSERT INTO trust_anchor_subjects (app, subject) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[app.into(), subject.into()],
    )
    .await?;
    Ok(())
}

pub async fn apps_by_trust_anchor(db: &mut impl Sql, subject: &str) -> Fallible<Vec<Resource>> {
    docs(
        db,
        "SELECT a.doc FROM trust_anchor_subjects t JOIN apps a ON a.name = t.app WHERE t.subject = $1 ORDER BY a.name",
        &[subject.into()],
    )
    .await
}

// devices

pub async fn load_device(db: &mut impl Sql, app: &str, name: &str) -> Fallible<Option<Resource>> {
    doc(
        db,
        "SELECT doc FROM devices WHERE app = $1 AND name = $2",
        &[app.into(), name.into()],
    )
    .await
}

/// The device found in `app` by a name of this kind (`id`: name or alias; `username`).
pub async fn device_by_name(
    db: &mut impl Sql,
    app: &str,
    kind: &str,
    value: &str,
) -> Fallible<Option<Resource>> {
    doc(
        db,
        "SELECT d.doc FROM device_names n JOIN devices d ON d.app = n.app AND d.name = n.device
         WHERE n.app = $1 AND n.kind = $2 AND n.value = $3",
        &[app.into(), kind.into(), value.into()],
    )
    .await
}

/// The device other than `except` that holds a name of this kind in `app`.
pub async fn name_holder(
    db: &mut impl Sql,
    app: &str,
    (kind, value): (&str, &str),
    except: &str,
) -> Fallible<Option<String>> {
    let sql = "SELECT device FROM device_names WHERE app = $1 AND kind = $2 AND value = $3 AND device != $4";
    let args = [app.into(), kind.into(), value.into(), except.into()];
    map_row(db, sql, &args, |r| r.text(0)).await
}

/// Stores a device and replaces the names it is found by.
pub async fn save_device(
    db: &mut impl Sql,
    app: &str,
    dev: &Resource,
    names: &[(&'static str, String)],
) -> Fallible<()> {
    let name = &dev.metadata.name;
    db.exec(
        "DELETE FROM device_names WHERE app = $1 AND device = $2",
        &[app.into(), name.into()],
    )
    .await?;
    for (kind, value) in names {
        insert_device_name(db, app, kind, value, name).await?;
    }
    db.exec(
        "INSERT INTO devices (app, name, uid, doc) VALUES ($1, $2, $3, $4)
         ON CONFLICT(app, name) DO UPDATE SET uid = excluded.uid, doc = excluded.doc",
        &[
            app.into(),
            name.into(),
            (&dev.metadata.uid).into(),
            Arg::json(dev)?,
        ],
    )
    .await?;
    Ok(())
}

pub async fn delete_device(db: &mut impl Sql, app: &str, name: &str) -> Fallible<()> {
    // Its certificates are revoked (and stay listed in the CRL).
    db.exec(
        "UPDATE certificates SET revoked = $3 WHERE app = $1 AND device = $2 AND revoked IS NULL",
        &[app.into(), name.into(), chrono::Utc::now().into()],
    )
    .await?;
    for sql in [
        "DELETE FROM devices WHERE app = $1 AND name = $2",
        "DELETE FROM device_names WHERE app = $1 AND device = $2",
        // The twin goes with its device (its outbox rows stay: those changes happened).
        "DELETE FROM twins WHERE app = $1 AND device = $2",
    ] {
        db.exec(sql, &[app.into(), name.into()]).await?;
    }
    Ok(())
}

pub async fn all_devices(db: &mut impl Sql, app: &str) -> Fallible<Vec<Resource>> {
    docs(
        db,
        "SELECT doc FROM devices WHERE app = $1 ORDER BY name",
        &[app.into()],
    )
    .await
}

pub async fn count_devices(db: &mut impl Sql, app: &str) -> Fallible<u64> {
    number(
        db,
        "SELECT COUNT(*) FROM devices WHERE app = $1",
        &[app.into()],
    )
    .await
}

// users and tokens

/// Creates the user; an existing one becomes a system administrator when `admin` and `promote`,
/// else stays as it is. Returns whether the user is new.
pub async fn insert_user(
    db: &mut impl Sql,
    name: &str,
    admin: bool,
    promote: bool,
    created: DateTime<Utc>,
) -> Fallible<bool> {
    let sql = if promote {
        "INSERT INTO users (name, admin, created) VALUES ($1, $2, $3) ON CONFLICT(name) DO UPDATE SET admin = excluded.admin"
    } else {
        "INSERT INTO users (name, admin, created) VALUES ($1, $2, $3) ON CONFLICT(name) DO NOTHING"
    };
    let n = db
        .exec(sql, &[name.into(), admin.into(), created.into()])
        .await?;
    Ok(n > 0)
}

pub async fn user_exists(db: &mut impl Sql, name: &str) -> Fallible<bool> {
    Ok(user_admin(db, name).await?.is_some())
}

/// Whether the user is a system administrator, if it exists.
pub async fn user_admin(db: &mut impl Sql, name: &str) -> Fallible<Option<bool>> {
    let sql = "SELECT admin FROM users WHERE name = $1";
    map_row(db, sql, &[name.into()], |r| r.flag(0)).await
}

pub async fn users(db: &mut impl Sql) -> Fallible<Vec<User>> {
    let sql = "SELECT name, admin, created FROM users ORDER BY name";
    map_rows(db, sql, &[], |r| {
        Ok(User {
            name: r.text(0)?,
            admin: r.flag(1)?,
            created: r.time(2)?,
        })
    })
    .await
}

/// Deletes the user and its tokens; returns whether there was one.
pub async fn delete_user(db: &mut impl Sql, name: &str) -> Fallible<bool> {
    let n = db
        .exec("DELETE FROM users WHERE name = $1", &[name.into()])
        .await?;
    db.exec("DELETE FROM tokens WHERE user_name = $1", &[name.into()])
        .await?;
    Ok(n > 0)
}

pub struct NewToken<'a> {
    pub user: &'a str,
    pub token: &'a str,
    pub prefix: &'a str,
    pub description: Option<&'a str>,
    /// Set by the operator's configuration (replaced when the configuration changes).
    pub configured: bool,
}

pub async fn insert_token(db: &mut impl Sql, t: NewToken<'_>) -> Fallible<()> {
    let hash = drover_auth::token::hash(t.token);
    db.exec(
        "INSERT INTO tokens (hash, prefix, user_name, created, description, configured) VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            hash.as_str().into(),
            t.prefix.into(),
            t.user.into(),
            Utc::now().into(),
            t.description.into(),
            t.configured.into(),
        ],
    )
    .await?;
    Ok(())
}

/// Removes the configured tokens of `user`, and any token equal to `token`.
pub async fn delete_configured_tokens(db: &mut impl Sql, user: &str, token: &str) -> Fallible<()> {
    db.exec(
        "DELETE FROM tokens WHERE user_name = $1 AND configured = $2",
        &[user.into(), true.into()],
    )
    .await?;
    let hash = drover_auth::token::hash(token);
    db.exec(
        "DELETE FROM tokens WHERE hash = $1",
        &[hash.as_str().into()],
    )
    .await?;
    Ok(())
}

pub async fn count_tokens(db: &mut impl Sql, user: &str) -> Fallible<u64> {
    number(
        db,
        "SELECT COUNT(*) FROM tokens WHERE user_name = $1",
        &[user.into()],
    )
    .await
}

pub async fn tokens(db: &mut impl Sql, user: &str) -> Fallible<Vec<TokenInfo>> {
    let sql = "SELECT prefix, created, description FROM tokens WHERE user_name = $1 ORDER BY created, prefix";
    map_rows(db, sql, &[user.into()], |r| {
        Ok(TokenInfo {
            prefix: r.text(0)?,
            created: r.time(1)?,
            description: r.opt_text(2)?,
        })
    })
    .await
}

/// Deletes a token of `user`; returns whether there was one.
pub async fn delete_token(db: &mut impl Sql, user: &str, prefix: &str) -> Fallible<bool> {
    let n = db
        .exec(
            "DELETE FROM tokens WHERE user_name = $1 AND prefix = $2",
            &[user.into(), prefix.into()],
        )
        .await?;
    Ok(n > 0)
}

/// The owner of the token and whether it is a system administrator.
pub async fn token_owner(db: &mut impl Sql, token: &str) -> Fallible<Option<(String, bool)>> {
    token_owner_by_hash(db, &drover_auth::token::hash(token)).await
}

/// The owner of the token stored under `hash`, and whether they are an administrator.
pub async fn token_owner_by_hash(
    db: &mut impl Sql,
    hash: &str,
) -> Fallible<Option<(String, bool)>> {
    let sql = "SELECT t.user_name, u.admin FROM tokens t JOIN users u ON u.name = t.user_name WHERE t.hash = $1";
    map_row(db, sql, &[hash.into()], |r| Ok((r.text(0)?, r.flag(1)?))).await
}

// the outbox

pub async fn insert_change(db: &mut impl Sql, c: &Change) -> Fallible<()> {
    db.exec(
        "INSERT INTO changes (revision, kind, app, device, uid, path, resource_version, time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            c.revision.into(),
            c.kind.as_str().into(),
            (&c.application).into(),
            c.device.as_deref().into(),
            (&c.uid).into(),
            (&c.path).into(),
            c.resource_version.into(),
            c.time.into(),
        ],
    )
    .await?;
    Ok(())
}

pub async fn changes_since(db: &mut impl Sql, since: u64, limit: usize) -> Fallible<Vec<Change>> {
    let sql = "SELECT revision, kind, app, device, uid, path, resource_version, time FROM changes WHERE revision > $1 ORDER BY revision LIMIT $2";
    map_rows(db, sql, &[since.into(), (limit as u64).into()], |r| {
        let kind = r.text(1)?;
        Ok(Change {
            revision: r.uint(0)?,
            kind: Kind::from_str_opt(&kind).ok_or_else(|| {
                RegistryError::Internal(Reason::new(format!("unknown change kind '{kind}'")))
            })?,
            application: r.text(2)?,
            device: r.opt_text(3)?,
            uid: r.text(4)?,
            path: r.text(5)?,
            resource_version: r.uint(6)?,
            time: r.time(7)?,
        })
    })
    .await
}

/// The last revision of a change event older than `before`.
pub async fn last_change_before(db: &mut impl Sql, before: DateTime<Utc>) -> Fallible<Option<u64>> {
    let sql = "SELECT MAX(revision) FROM changes WHERE time < $1";
    let last = map_row(db, sql, &[before.into()], |r| r.opt_int(0)).await?;
    Ok(last.flatten().map(|v| u64::try_from(v).unwrap_or_default()))
}

/// Deletes the change events up to `revision`; returns how many went.
pub async fn delete_changes(db: &mut impl Sql, revision: u64) -> Fallible<u64> {
    db.exec(
        "DELETE FROM changes WHERE revision <= $1",
        &[revision.into()],
    )
    .await
}

async fn insert_device_name(
    db: &mut impl Sql,
    app: &str,
    kind: &str,
    value: &str,
    device: &str,
) -> Fallible<()> {
    db.exec(
        "INSERT INTO device_names (app, kind, value, device) VALUES ($1, $2, $3, $4)",
        &[app.into(), kind.into(), value.into(), device.into()],
    )
    .await?;
    Ok(())
}
