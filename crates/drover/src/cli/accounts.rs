//! `drover token` and `drover user`: your access tokens, and the users of the server (system
//! administrators only), through `/api/tokens/v1alpha1` and `/api/admin/v1alpha1/users`.

use reqwest::Method;
use serde_json::{json, Value};

use super::client::{items, seg, Api};
use super::grammar::{TokenCmd, UserCmd};
use super::output::{age, done, print_list, yes_no, Format};
use super::{Result, ADMIN, TOKENS};

/// A string field of a list item, empty if absent.
fn field(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or("").to_string()
}

/// `delete`: the item at `path` deleted, said as `<what> <name> deleted`.
async fn delete(api: &Api, format: Format, path: &str, what: &str, name: &str) -> Result<()> {
    api.delete(path).await?;
    done(
        format,
        &json!({"deleted": name}),
        &format!("{what} {name} deleted"),
    )
}

pub async fn token(api: &Api, format: Format, cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Create { description } => {
            let mut req = api.request(Method::POST, TOKENS);
            if let Some(d) = &description {
                req = req.query(&[("description", d)]);
            }
            let v = api.send(req).await?.body;
            let text = format!(
                "Token {} created; it is shown only this once:\n{}",
                v["prefix"].as_str().unwrap_or("?"),
                v["token"].as_str().unwrap_or("")
            );
            done(format, &v, &text)
        }
        TokenCmd::List => {
            let tokens = items(api.get(TOKENS).await?);
            print_list(format, tokens, &["PREFIX", "AGE", "DESCRIPTION"], |t| {
                vec![
                    field(t, "prefix"),
                    age(t["created"].as_str()),
                    field(t, "description"),
                ]
            })
        }
        TokenCmd::Delete { prefix } => {
            let path = format!("{TOKENS}/{}", seg(&prefix));
            delete(api, format, &path, "token", &prefix).await
        }
    }
}

pub async fn user(api: &Api, format: Format, cmd: UserCmd) -> Result<()> {
    match cmd {
        UserCmd::Create { name, admin } => {
            let body = json!({"name": name, "admin": admin});
            let v = api.post(&format!("{ADMIN}/users"), &body).await?;
            let text = format!(
                "user {name} created; its access token is shown only this once:\n{name}:{}",
                v["token"].as_str().unwrap_or("")
            );
            done(format, &v, &text)
        }
        UserCmd::List => {
            let users = items(api.get(&format!("{ADMIN}/users")).await?);
            print_list(format, users, &["NAME", "AGE", "ADMIN"], |u| {
                vec![
                    field(u, "name"),
                    age(u["created"].as_str()),
                    yes_no(u["admin"].as_bool() == Some(true)),
                ]
            })
        }
        UserCmd::Delete { name } => {
            let path = format!("{ADMIN}/users/{}", seg(&name));
            delete(api, format, &path, "user", &name).await
        }
    }
}
