//! `drover app` and `drover device`: each verb of the grammar handed to the shared resource verbs
//! (`resources`), and each kind's own `set` commands — an application's trust anchors
//! (`certs`), a device's password, gateways, aliases, disabled flag and certificates.

use serde_json::{json, Map, Value};

use super::certs;
use super::client::Api;
use super::grammar::{AppCmd, AppSetCmd, DeviceCmd, SetCmd};
use super::output::{done, Format};
use super::resources::{object_in, parse_spec, spec_mut, Kind, Resources};
use super::Result;

pub async fn app(api: &Api, format: Format, cmd: AppCmd) -> Result<()> {
    let r = Resources {
        api,
        format,
        kind: Kind::App,
    };
    match cmd {
        AppCmd::Create { name, labels, spec } => r.create(&name, &labels, parse_spec(spec)?).await,
        AppCmd::Get { name } => r.get(&name).await,
        AppCmd::List { selector } => r.list(selector).await,
        AppCmd::Delete { name } => r.delete(&name).await,
        AppCmd::Label(l) => r.label(&l.name, &l.labels).await,
        AppCmd::Edit { name } => r.edit(&name).await,
        AppCmd::Set(AppSetCmd::TrustAnchor {
            app,
            files,
            add,
            clear,
        }) => certs::set_trust_anchors(&r, &app, &files, add, clear).await,
    }
}

pub async fn device(api: &Api, format: Format, app: &str, cmd: DeviceCmd) -> Result<()> {
    let r = Resources {
        api,
        format,
        kind: Kind::Device { app },
    };
    match cmd {
        DeviceCmd::Create {
            name,
            labels,
            password,
            spec,
        } => {
            let spec = with_password(parse_spec(spec)?, password);
            r.create(&name, &labels, spec).await
        }
        DeviceCmd::Get { name } => r.get(&name).await,
        DeviceCmd::List { selector } => r.list(selector).await,
        DeviceCmd::Delete { name } => r.delete(&name).await,
        DeviceCmd::Label(l) => r.label(&l.name, &l.labels).await,
        DeviceCmd::Edit { name } => r.edit(&name).await,
        DeviceCmd::Set(SetCmd::Cert {
            device,
            files,
            subjects,
            clear,
        }) => certs::set_device_cert(&r, app, &device, &files, &subjects, clear).await,
        DeviceCmd::Set(set) => set_spec(&r, set).await,
    }
}

/// `device create --password`: the spec given (or an empty one) with the password as the
/// device's one credential.
fn with_password(spec: Option<Value>, password: Option<String>) -> Option<Value> {
    let Some(p) = password else {
        return spec;
    };
    let mut spec = spec.filter(Value::is_object).unwrap_or_else(|| json!({}));
    spec["authentication"] = json!({"credentials": [{"pass": p}]});
    Some(spec)
}

/// `device set password|gateway|alias|disabled`: one part of the device's spec, read, changed and
/// written back.
async fn set_spec(r: &Resources<'_>, set: SetCmd) -> Result<()> {
    let (name, what) = match &set {
        SetCmd::Password { device, .. } => (device.clone(), "password"),
        SetCmd::Gateway { device, .. } => (device.clone(), "gateways"),
        SetCmd::Alias { device, .. } => (device.clone(), "aliases"),
        SetCmd::Disabled { device, .. } => (device.clone(), "disabled"),
        // Handled by `device`, with the application's trust anchors.
        SetCmd::Cert { device, .. } => (device.clone(), "certificates"),
    };
    let res = r
        .modify(&name, |res| {
            change_spec(spec_mut(res)?, set);
            Ok(())
        })
        .await?;
    done(r.format, &res, &format!("device {name}: {what} set"))
}

fn change_spec(spec: &mut Map<String, Value>, set: SetCmd) {
    match set {
        SetCmd::Password {
            password, username, ..
        } => {
            // Other kinds of credentials (none today besides passwords) stay.
            let mut creds: Vec<Value> = spec
                .get("authentication")
                .and_then(|a| a["credentials"].as_array())
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.get("pass").is_none() && c.get("user").is_none())
                .collect();
            creds.push(match username {
                Some(u) => json!({"user": {"username": u, "password": password}}),
                None => json!({"pass": password}),
            });
            object_in(spec, "authentication")["credentials"] = Value::Array(creds);
        }
        SetCmd::Gateway { gateways, .. } => {
            set_or_remove(
                spec,
                "gatewaySelector",
                &gateways,
                |g| json!({"matchNames": g}),
            );
        }
        SetCmd::Alias { aliases, .. } => set_or_remove(spec, "alias", &aliases, |a| json!(a)),
        SetCmd::Disabled { disabled, .. } => {
            object_in(spec, "core")["disabled"] = Value::Bool(disabled);
        }
        SetCmd::Cert { .. } => {}
    }
}

/// `key` set to `value(list)`, or removed when the list is empty.
fn set_or_remove(
    spec: &mut Map<String, Value>,
    key: &str,
    list: &[String],
    value: impl Fn(&[String]) -> Value,
) {
    if list.is_empty() {
        spec.remove(key);
    } else {
        spec.insert(key.into(), value(list));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_password_goes_into_the_spec() {
        let creds = json!({"authentication": {"credentials": [{"pass": "p"}]}});
        assert_eq!(with_password(None, Some("p".into())), Some(creds.clone()));
        assert_eq!(with_password(Some(json!(5)), Some("p".into())), Some(creds));
        assert_eq!(
            with_password(Some(json!({"alias": ["x"]})), Some("p".into())),
            Some(json!({"alias": ["x"], "authentication": {"credentials": [{"pass": "p"}]}}))
        );
        assert_eq!(with_password(Some(json!(5)), None), Some(json!(5)));
        assert_eq!(with_password(None, None), None);
    }

    #[test]
    fn set_password_keeps_other_credentials() {
        let mut spec = json!({"authentication": {"credentials": [{"pass": "old"}, {"cert": {}}]}})
            .as_object()
            .cloned()
            .unwrap_or_default();
        change_spec(
            &mut spec,
            SetCmd::Password {
                device: "d".into(),
                password: "new".into(),
                username: Some("u".into()),
            },
        );
        assert_eq!(
            Value::Object(spec),
            json!({"authentication": {"credentials": [{"cert": {}}, {"user": {"username": "u", "password": "new"}}]}})
        );
    }
}
