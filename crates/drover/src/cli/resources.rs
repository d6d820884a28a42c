//! The verbs applications and devices share — create, get, list, delete, label, edit — written
//! once over a [`Kind`], which knows a kind's API paths, table columns and how messages name it;
//! and the read-modify-write (with the `resourceVersion` read, a 409 explained) that `label` and
//! every `set` command use.

use serde_json::{json, Map, Value};

use super::client::{items, seg, Api};
use super::edit;
use super::output::{age, done, labels, list, print_doc, print_list, yes_no, Format};
use super::{CliError, Result, REGISTRY};

/// Which kind of resource a verb acts on.
#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    /// An application.
    App,
    /// A device of the application `app`.
    Device { app: &'a str },
}

impl Kind<'_> {
    /// Where `list` reads and `create` posts.
    fn collection(self) -> String {
        match self {
            Kind::App => format!("{REGISTRY}/apps"),
            Kind::Device { app } => format!("{REGISTRY}/apps/{}/devices", seg(app)),
        }
    }

    /// The API path of the resource `name`.
    pub fn path(self, name: &str) -> String {
        format!("{}/{}", self.collection(), seg(name))
    }

    /// How messages name the resource: `app app1`, `device dev1`.
    pub fn what(self, name: &str) -> String {
        match self {
            Kind::App => format!("app {name}"),
            Kind::Device { .. } => format!("device {name}"),
        }
    }

    /// `app app1 created`, `device dev1 created in app app1`.
    fn created(self, name: &str) -> String {
        match self {
            Kind::App => format!("app {name} created"),
            Kind::Device { app } => format!("device {name} created in app {app}"),
        }
    }

    /// `app app1 deleted`, `device dev1 deleted from app app1`.
    fn deleted(self, name: &str) -> String {
        match self {
            Kind::App => format!("app {name} deleted"),
            Kind::Device { app } => format!("device {name} deleted from app {app}"),
        }
    }

    /// `edit`'s messages and temporary file.
    fn edit_target<'p>(self, path: &'p str, name: &str) -> edit::Target<'p> {
        let (again, file_stem) = match self {
            Kind::App => (format!("drover app edit {name}"), format!("app-{name}")),
            Kind::Device { app } => (
                format!("drover device edit {name} --app {app}"),
                format!("device-{app}-{name}"),
            ),
        };
        edit::Target {
            path,
            what: self.what(name),
            again,
            file_stem,
        }
    }

    fn headers(self) -> &'static [&'static str] {
        match self {
            Kind::App => &["NAME", "AGE", "LABELS"],
            Kind::Device { .. } => &["NAME", "AGE", "ALIASES", "DISABLED", "LABELS"],
        }
    }

    /// A table row under [`Kind::headers`].
    fn row(self, r: &Value) -> Vec<String> {
        let m = &r["metadata"];
        let mut row = vec![
            m["name"].as_str().unwrap_or("").to_string(),
            age(m["creationTimestamp"].as_str()),
        ];
        if let Kind::Device { .. } = self {
            row.push(list(&r["spec"]["alias"]));
            row.push(yes_no(
                r["spec"]["core"]["disabled"].as_bool() == Some(true),
            ));
        }
        row.push(labels(&m["labels"]));
        row
    }
}

/// The shared verbs, for resources of one kind, printed in one format.
pub struct Resources<'a> {
    pub api: &'a Api,
    pub format: Format,
    pub kind: Kind<'a>,
}

impl Resources<'_> {
    /// `create NAME [--label k=v]… [--spec JSON]`.
    pub async fn create(&self, name: &str, labels: &[String], spec: Option<Value>) -> Result<()> {
        let body = new_resource(name, labels, spec)?;
        let res = self.api.post(&self.kind.collection(), &body).await?;
        done(self.format, &res, &self.kind.created(name))
    }

    /// `get NAME`: a one-row table, or the resource as JSON or YAML.
    pub async fn get(&self, name: &str) -> Result<()> {
        let res = self.api.get(&self.kind.path(name)).await?;
        match self.format {
            Format::Table => self.show(vec![res]),
            f => print_doc(&res, f),
        }
    }

    /// `list [--selector S]`.
    pub async fn list(&self, selector: Option<String>) -> Result<()> {
        let reply = self
            .api
            .get(&list_path(self.kind.collection(), selector))
            .await?;
        self.show(items(reply))
    }

    fn show(&self, resources: Vec<Value>) -> Result<()> {
        let kind = self.kind;
        print_list(self.format, resources, kind.headers(), |r| kind.row(r))
    }

    /// `delete NAME`.
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.api.delete(&self.kind.path(name)).await?;
        done(
            self.format,
            &json!({"deleted": name}),
            &self.kind.deleted(name),
        )
    }

    /// `label NAME k=v k2-…`.
    pub async fn label(&self, name: &str, labels: &[String]) -> Result<()> {
        let res = self.modify(name, |res| apply_labels(res, labels)).await?;
        done(
            self.format,
            &res,
            &format!("{} labeled", self.kind.what(name)),
        )
    }

    /// `edit NAME`: the resource as YAML in the user's editor.
    pub async fn edit(&self, name: &str) -> Result<()> {
        let path = self.kind.path(name);
        edit::edit(self.api, self.format, self.kind.edit_target(&path, name)).await
    }

    /// Reads the resource, lets `change` change it and writes it back with the resourceVersion
    /// read. Returns the resource as stored.
    pub async fn modify(
        &self,
        name: &str,
        change: impl FnOnce(&mut Value) -> Result<()>,
    ) -> Result<Value> {
        let path = self.kind.path(name);
        let mut res = self.api.get(&path).await?;
        change(&mut res)?;
        update(self.api, &path, &self.kind.what(name), &res).await
    }
}

/// The `--spec` of `create`, parsed.
pub fn parse_spec(spec: Option<String>) -> Result<Option<Value>> {
    spec.map(|s| {
        serde_json::from_str::<Value>(&s)
            .map_err(|e| CliError::Usage(format!("--spec is not valid JSON: {e}")))
    })
    .transpose()
}

/// The resource's `spec`, made an object if it is not one.
pub fn spec_mut(res: &mut Value) -> Result<&mut Map<String, Value>> {
    res.as_object_mut()
        .map(|r| object_in(r, "spec"))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| CliError::Other("the server returned no resource object".into()))
}

/// The value of `key` in `map`, made an (empty) object if it is absent or not an object.
pub fn object_in<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Value {
    let v = map.entry(key).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    v
}

/// Parses `k=v` labels for creation.
fn parse_labels(items: &[String]) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for l in items {
        let Some((k, v)) = l.split_once('=') else {
            return Err(CliError::Usage(format!("label {l:?} is not key=value")));
        };
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(m)
}

/// Applies `k=v` (set) and `k-` (remove) to a resource's labels.
fn apply_labels(res: &mut Value, items: &[String]) -> Result<()> {
    let meta = res
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| CliError::Other("the server returned no metadata".into()))?;
    let Some(labels) = object_in(meta, "labels").as_object_mut() else {
        return Ok(());
    };
    for l in items {
        if let Some((k, v)) = l.split_once('=') {
            labels.insert(k.to_string(), Value::String(v.to_string()));
        } else if let Some(k) = l.strip_suffix('-') {
            labels.remove(k);
        } else {
            return Err(CliError::Usage(format!(
                "label {l:?} is neither key=value nor key-"
            )));
        }
    }
    Ok(())
}

fn new_resource(name: &str, labels: &[String], spec: Option<Value>) -> Result<Value> {
    let mut meta = Map::new();
    meta.insert("name".into(), Value::String(name.to_string()));
    let l = parse_labels(labels)?;
    if !l.is_empty() {
        meta.insert("labels".into(), Value::Object(l));
    }
    let mut body = json!({ "metadata": meta });
    if let Some(s) = spec {
        body["spec"] = s;
    }
    Ok(body)
}

/// PUT, then the stored resource (the API answers 204, so it is read again).
pub async fn put_and_read(api: &Api, path: &str, res: &Value) -> Result<Value> {
    let body = api.put(path, res).await?;
    if body.is_null() {
        api.get(path).await
    } else {
        Ok(body)
    }
}

/// PUT with the resourceVersion read; a 409 explained. Returns the stored resource.
pub async fn update(api: &Api, path: &str, what: &str, res: &Value) -> Result<Value> {
    put_and_read(api, path, res).await.map_err(|e| match e {
        CliError::Conflict(m) => CliError::Conflict(format!(
            "{what} was changed by someone else since you read it; run the command again ({m})"
        )),
        e => e,
    })
}

fn list_path(base: String, selector: Option<String>) -> String {
    match selector {
        Some(s) => format!(
            "{base}?labels={}",
            url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
        ),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kinds_name_their_paths_and_messages() {
        let dev = Kind::Device { app: "a b" };
        assert_eq!(
            dev.path("d/1"),
            "/api/registry/v1alpha1/apps/a%20b/devices/d%2F1"
        );
        assert_eq!(Kind::App.path("a"), "/api/registry/v1alpha1/apps/a");
        assert_eq!(dev.created("d"), "device d created in app a b");
        assert_eq!(Kind::App.deleted("a"), "app a deleted");
        let t = dev.edit_target("/p", "d");
        assert_eq!(t.again, "drover device edit d --app a b");
        assert_eq!(t.file_stem, "device-a b-d");
    }

    #[test]
    fn labels_are_set_and_removed() {
        let mut res = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        apply_labels(&mut res, &["a=3".into(), "b-".into(), "c=".into()]).unwrap();
        assert_eq!(res["metadata"]["labels"], json!({"a": "3", "c": ""}));
        let mut res = json!({"metadata": {"labels": 5}});
        apply_labels(&mut res, &["x=y".into()]).unwrap();
        assert_eq!(res["metadata"]["labels"], json!({"x": "y"}));
        assert!(matches!(
            apply_labels(&mut res, &["nope".into()]),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            apply_labels(&mut json!({}), &["x=y".into()]),
            Err(CliError::Other(_))
        ));
    }
}
