//! `drover member` and `drover transfer`: an application's members and its ownership, through
//! `/api/admin/v1alpha1/apps/{app}/members|transfer-ownership|accept-ownership`.

use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::client::{seg, Api};
use super::grammar::{MemberCmd, Role, TransferCmd};
use super::output::{done, line, print_doc, print_table, Format};
use super::{CliError, Result, ADMIN};

/// The API's key for "every authenticated user".
const EVERYONE_KEY: &str = "";
/// How the CLI spells it (not a valid user name, so never ambiguous).
const EVERYONE: &str = "*";

fn user_key(u: &str) -> &str {
    if u == EVERYONE {
        EVERYONE_KEY
    } else {
        u
    }
}

fn user_label(k: &str) -> &str {
    if k == EVERYONE_KEY {
        EVERYONE
    } else {
        k
    }
}

fn members_path(app: &str) -> String {
    format!("{ADMIN}/apps/{}/members", seg(app))
}

/// Writes the members document back with the resourceVersion read; a 409 explained.
async fn put_members(api: &Api, app: &str, doc: &Value) -> Result<()> {
    api.put(&members_path(app), doc)
        .await
        .map(drop)
        .map_err(|e| match e {
            CliError::Conflict(m) => CliError::Conflict(format!(
                "the members of app {app} were changed by someone else since you read them; run the command again ({m})"
            )),
            e => e,
        })
}

fn members_mut(doc: &mut Value) -> Result<&mut Map<String, Value>> {
    if !doc["members"].is_object() {
        doc["members"] = json!({});
    }
    doc["members"]
        .as_object_mut()
        .ok_or_else(|| CliError::Other("the server returned no members object".into()))
}

pub async fn member(api: &Api, format: Format, cmd: MemberCmd) -> Result<()> {
    match cmd {
        MemberCmd::List { app } => {
            let doc = api.get(&members_path(&app)).await?;
            match format {
                Format::Table => {
                    let rows: Vec<Vec<String>> = doc["members"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(u, e)| {
                                    vec![
                                        user_label(u).to_string(),
                                        e["role"].as_str().unwrap_or("?").to_string(),
                                    ]
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    print_table(&["USER", "ROLE"], &rows)?;
                }
                f => print_doc(&doc, f)?,
            }
        }
        MemberCmd::Add { app, user, role } => {
            let mut doc = api.get(&members_path(&app)).await?;
            members_mut(&mut doc)?
                .insert(user_key(&user).to_string(), json!({"role": role.as_str()}));
            put_members(api, &app, &doc).await?;
            done(
                format,
                &json!({"app": app, "user": user, "role": role.as_str()}),
                &format!("{user} is now {} of app {app}", article(role)),
            )?;
        }
        MemberCmd::Remove { app, user } => {
            let mut doc = api.get(&members_path(&app)).await?;
            if members_mut(&mut doc)?.remove(user_key(&user)).is_none() {
                return Err(CliError::NotFound(format!(
                    "{user} is not a member of app {app}"
                )));
            }
            put_members(api, &app, &doc).await?;
            done(
                format,
                &json!({"app": app, "removed": user}),
                &format!("{user} is no longer a member of app {app}"),
            )?;
        }
    }
    Ok(())
}

fn article(role: Role) -> String {
    match role {
        Role::Admin => "an admin".into(),
        r => format!("a {}", r.as_str()),
    }
}

pub async fn transfer(api: &Api, format: Format, cmd: TransferCmd) -> Result<()> {
    let path = |app: &str, what: &str| format!("{ADMIN}/apps/{}/{what}", seg(app));
    match cmd {
        TransferCmd::Start { app, to } => {
            api.put(&path(&app, "transfer-ownership"), &json!({ "newUser": to }))
                .await?;
            done(
                format,
                &json!({"app": app, "newUser": to}),
                &format!(
                    "app {app} offered to {to}; they accept with `drover transfer accept {app}`"
                ),
            )?;
        }
        TransferCmd::Show { app } => {
            let reply = api
                .send(api.request(Method::GET, &path(&app, "transfer-ownership")))
                .await?;
            let pending = (reply.status != StatusCode::NO_CONTENT)
                .then(|| reply.body["newUser"].as_str().map(str::to_string))
                .flatten();
            match (format, pending) {
                (Format::Table, Some(u)) => line(&format!("app {app} is offered to {u}"))?,
                (Format::Table, None) => line(&format!("no transfer of app {app} is pending"))?,
                (f, u) => print_doc(&json!({"app": app, "newUser": u}), f)?,
            }
        }
        TransferCmd::Cancel { app } => {
            api.delete(&path(&app, "transfer-ownership")).await?;
            done(
                format,
                &json!({"app": app, "cancelled": true}),
                &format!("transfer of app {app} cancelled"),
            )?;
        }
        TransferCmd::Accept { app } => {
            // As drg: no body.
            api.send(api.request(Method::PUT, &path(&app, "accept-ownership")))
                .await?;
            done(
                format,
                &json!({"app": app, "accepted": true}),
                &format!("you now own app {app}"),
            )?;
        }
    }
    Ok(())
}
