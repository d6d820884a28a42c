//! The OpenAPI document (`/api/openapi.json`) against the server that serves it: every documented
//! operation is served and every required one documented; each operation documents the answers
//! it can give (and the server gives them: 401 without credentials, 429 from a locked-out
//! address, 400 for two credentials); names and paging carry their rules, and the server
//! enforces the documented bounds. `tests/interop/test_openapi.sh` fuzzes the rest with
//! schemathesis.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::{expect_error, Client, TestServer};
use reqwest::header::AUTHORIZATION;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

const APPS: &str = "/api/registry/v1alpha1/apps";

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// The operations that need no credentials.
const PUBLIC: [&str; 9] = [
    "get /.well-known/drogue-endpoints",
    "get /.well-known/drogue-version",
    "get /.well-known/openid-configuration",
    "get /api/certificates/v1alpha1/ca",
    "get /api/certificates/v1alpha1/crl",
    "get /api/sso/v1alpha1/authorize",
    "post /api/sso/v1alpha1/token",
    "get /health/live",
    "get /health/ready",
];

async fn openapi(t: &TestServer) -> Value {
    let r = t.anonymous().get("/api/openapi.json").await;
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(ct.starts_with("application/json"), "content type {ct}");
    let doc: Value = r.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "openapi version"
    );
    assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));
    doc
}

/// One documented operation.
struct Op<'a> {
    method: &'a str,
    path: &'a str,
    op: &'a Value,
}

impl Op<'_> {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Public operations say so with `security: []`; the others inherit the document's.
    fn secured(&self) -> bool {
        self.op
            .get("security")
            .is_none_or(|s| s.as_array().is_some_and(|a| !a.is_empty()))
    }

    fn response(&self, status: &str) -> Option<&Value> {
        self.op["responses"].get(status)
    }

    fn param(&self, name: &str) -> Option<&Value> {
        self.op["parameters"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)
    }

    /// A request for this operation, its path filled with `app` and `device`.
    fn request(&self, c: &Client, app: &str, device: &str) -> reqwest::RequestBuilder {
        let m = Method::from_bytes(self.method.to_uppercase().as_bytes()).unwrap();
        let mut req = c
            .request(m.clone(), &fill(self.path, app, device))
            .timeout(std::time::Duration::from_secs(10));
        if m == Method::POST || m == Method::PUT {
            req = req.json(&json!({}));
        }
        req
    }
}

fn operations(doc: &Value) -> Vec<Op<'_>> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                ops.push(Op { method, path, op });
            }
        }
    }
    ops
}

/// Fills `{param}` placeholders of an OpenAPI path.
fn fill(path: &str, app: &str, device: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                match &seg[1..seg.len() - 1] {
                    "app" => app,
                    "device" => device,
                    "name" => "oa-user",
                    "prefix" => "drg_zzzzzz",
                    _ => "x",
                }
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether a response came from the router's fallbacks (no route, or no such method).
async fn hit_fallback(r: Response) -> Option<String> {
    if r.status() == StatusCode::METHOD_NOT_ALLOWED {
        return Some("405".into());
    }
    if r.status() == StatusCode::NOT_FOUND {
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no such endpoint"))
        {
            return Some(body.to_string());
        }
    }
    None
}

#[tokio::test]
async fn openapi_lists_only_implemented_routes() {
    let t = TestServer::start().await;
    let doc = openapi(&t).await;
    let admin = t.admin();
    admin.create_app("oa-app").await;
    admin
        .create_device("oa-app", json!({"metadata": {"name": "oa-dev"}}))
        .await;
    t.user("oa-user").await;

    // The detector works: an unknown path and an unknown method are caught.
    let r = admin.get("/api/registry/v1alpha1/no-such-thing").await;
    assert!(hit_fallback(r).await.is_some(), "unknown path not detected");
    let r = admin.request(Method::PATCH, APPS).send().await.unwrap();
    assert!(
        hit_fallback(r).await.is_some(),
        "unknown method not detected"
    );

    let ops = operations(&doc);
    let mut bad = Vec::new();
    for op in &ops {
        // Headers are enough: the watch stream never ends.
        let r = op.request(&admin, "oa-app", "oa-dev").send().await.unwrap();
        assert_ne!(
            r.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}",
            op.name()
        );
        if let Some(why) = hit_fallback(r).await {
            bad.push(format!("{}: {why}", op.name()));
        }
    }
    assert!(
        ops.len() >= 20,
        "only {} operations in the document",
        ops.len()
    );
    assert!(bad.is_empty(), "documented but not served: {bad:#?}");
}

#[tokio::test]
async fn openapi_lists_required_routes() {
    let t = TestServer::start().await;
    let doc = openapi(&t).await;
    let required: &[(&str, &[&str])] = &[
        ("/api/registry/v1alpha1/apps", &["get", "post"]),
        (
            "/api/registry/v1alpha1/apps/{app}",
            &["get", "put", "delete"],
        ),
        (
            "/api/registry/v1alpha1/apps/{app}/devices",
            &["get", "post"],
        ),
        (
            "/api/registry/v1alpha1/apps/{app}/devices/{device}",
            &["get", "put", "delete"],
        ),
        ("/api/registry/v1alpha1/watch", &["get"]),
        ("/api/admin/v1alpha1/apps/{app}/members", &["get", "put"]),
        (
            "/api/admin/v1alpha1/apps/{app}/transfer-ownership",
            &["put", "delete"],
        ),
        ("/api/admin/v1alpha1/apps/{app}/accept-ownership", &["put"]),
        ("/api/admin/v1alpha1/user/whoami", &["get"]),
        ("/api/admin/v1alpha1/users", &["get", "post"]),
        ("/api/tokens/v1alpha1", &["get", "post"]),
        ("/api/tokens/v1alpha1/{prefix}", &["delete"]),
        ("/api/console/v1alpha1/info", &["get"]),
        ("/.well-known/drogue-endpoints", &["get"]),
        ("/.well-known/drogue-version", &["get"]),
        ("/.well-known/openid-configuration", &["get"]),
    ];
    let paths = doc["paths"].as_object().unwrap();
    let mut missing = Vec::new();
    for (path, methods) in required {
        for m in *methods {
            if paths.get(*path).and_then(|p| p.get(*m)).is_none() {
                missing.push(format!("{m} {path}"));
            }
        }
    }
    // Users are deleted by name, whatever the parameter is called.
    let user_delete = paths.iter().any(|(p, item)| {
        p.starts_with("/api/admin/v1alpha1/users/{") && item.get("delete").is_some()
    });
    if !user_delete {
        missing.push("delete /api/admin/v1alpha1/users/{name}".into());
    }
    assert!(
        missing.is_empty(),
        "missing from the OpenAPI document: {missing:#?}"
    );
}

/// Whether a response's JSON body is (or may be) an `ErrorInformation`.
fn has_error_body(response: &Value) -> bool {
    let schema = &response["content"]["application/json"]["schema"];
    let error = json!({"$ref": "#/components/schemas/ErrorInformation"});
    *schema == error
        || schema["oneOf"]
            .as_array()
            .is_some_and(|alts| alts.contains(&error))
}

#[tokio::test]
async fn every_operation_documents_the_answers_it_can_give() {
    let t = TestServer::start().await;
    let doc = openapi(&t).await;
    assert!(doc["security"].as_array().is_some_and(|s| !s.is_empty()));
    let mut problems = Vec::new();
    let mut public = BTreeSet::new();
    for op in operations(&doc) {
        let mut expect = vec!["503"];
        if op.secured() {
            expect.extend(["400", "401", "429"]);
        } else {
            public.insert(op.name());
            for status in ["401", "429"] {
                if op.response(status).is_some() {
                    problems.push(format!("{}: public, but documents {status}", op.name()));
                }
            }
        }
        if op.op.get("requestBody").is_some() {
            expect.extend(["400", "408", "413"]);
        }
        if op.op["parameters"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
        {
            expect.push("400");
        }
        for status in expect {
            match op.response(status) {
                None => problems.push(format!("{}: no {status}", op.name())),
                Some(r) if !has_error_body(r) => problems.push(format!(
                    "{}: {status} without an ErrorInformation body",
                    op.name()
                )),
                Some(_) => {}
            }
        }
        if op.secured() {
            let headers = [("401", "WWW-Authenticate"), ("429", "Retry-After")];
            for (status, header) in headers {
                if op
                    .response(status)
                    .and_then(|r| r["headers"].get(header))
                    .is_none()
                {
                    problems.push(format!("{}: {status} without {header}", op.name()));
                }
            }
        }
        // Every error answer says what its body is, and every answer what it means.
        for (status, r) in op.op["responses"].as_object().unwrap() {
            if r["description"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{}: {status} without a description", op.name()));
            }
            let error = status.starts_with('4') || status.starts_with('5');
            if error && status != "501" && !has_error_body(r) {
                problems.push(format!(
                    "{}: {status} without an ErrorInformation body",
                    op.name()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    let expected: BTreeSet<String> = PUBLIC.iter().map(|s| s.to_string()).collect();
    assert_eq!(public, expected, "the operations marked public");
}

#[tokio::test]
async fn secured_operations_refuse_what_the_document_says() {
    let t = TestServer::start().await;
    let doc = openapi(&t).await;
    let admin = t.admin();
    admin.create_app("oa-app").await;
    let anonymous = t.anonymous();
    let mut checked = 0;
    for op in operations(&doc) {
        let r = op
            .request(&anonymous, "oa-app", "oa-dev")
            .send()
            .await
            .unwrap();
        let status = r.status();
        if !op.secured() {
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{}: public", op.name());
            continue;
        }
        let (status, kind) = (status, r.json::<Value>().await.unwrap()["error"].clone());
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{} without credentials",
            op.name()
        );
        assert_eq!(kind, "AuthenticationError", "{}", op.name());
        // Two credentials: 400, whichever they are.
        let r = op
            .request(&admin, "oa-app", "oa-dev")
            .header(AUTHORIZATION, "Bearer x")
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} secured operations");
}

#[tokio::test]
async fn a_locked_out_address_gets_429_from_every_secured_operation() {
    let dir = tempfile::tempdir().unwrap();
    let config = drover::Config {
        auth_throttle: true,
        ..common::config(dir.path())
    };
    let mut t = TestServer::start_with(config).await;
    t.dir = Some(dir);
    let doc = openapi(&t).await;
    let guesser = t.client("admin", "drg_wrong");
    let mut checked = 0;
    for op in operations(&doc).iter().filter(|op| op.secured()) {
        // Guess until the address is locked out (again: a lockout ends on its own, and the
        // failure after it locks the address out for longer).
        let mut locked = None;
        for _ in 0..8 {
            let r = op.request(&guesser, "app", "dev").send().await.unwrap();
            if r.status() == StatusCode::TOO_MANY_REQUESTS {
                locked = Some(r);
                break;
            }
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{}", op.name());
        }
        let r = locked.unwrap_or_else(|| panic!("{}: never 429", op.name()));
        assert!(r.headers().contains_key("retry-after"), "{}", op.name());
        expect_error(r, StatusCode::TOO_MANY_REQUESTS, "TooManyRequests").await;
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} secured operations");
}

#[tokio::test]
async fn names_and_paging_carry_their_rules() {
    use drover_model::names::{MAX_APP_NAME, MAX_DEVICE_NAME, MAX_USER_NAME};
    let t = TestServer::start().await;
    let doc = openapi(&t).await;
    let mut problems = Vec::new();
    let mut counted = [0; 3];
    for op in operations(&doc) {
        for p in op.op["parameters"].as_array().into_iter().flatten() {
            let (name, schema) = (p["name"].as_str().unwrap(), &p["schema"]);
            let rule = match (name, p["in"].as_str().unwrap()) {
                ("app", _) => Some((drover_api::APP_NAME_PATTERN, MAX_APP_NAME, 0)),
                ("name", "path") | ("username", _) => {
                    Some((drover_api::USER_NAME_PATTERN, MAX_USER_NAME, 1))
                }
                ("device", _) => None,
                _ => continue,
            };
            let (pattern, max, i) =
                rule.map_or((None, MAX_DEVICE_NAME, 2), |(p, m, i)| (Some(p), m, i));
            counted[i] += 1;
            if schema.get("pattern").and_then(Value::as_str) != pattern {
                problems.push(format!(
                    "{}: {name} pattern {}",
                    op.name(),
                    schema["pattern"]
                ));
            }
            if schema["maxLength"] != json!(max) || schema["minLength"] != json!(1) {
                problems.push(format!("{}: {name} lengths {schema}", op.name()));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(counted.iter().all(|n| *n > 0), "names checked: {counted:?}");

    // Lists: the documented bounds are the enforced ones.
    let max = u64::from(drover_api::MAX_PAGE);
    let admin = t.admin();
    admin.create_app("oa-app").await;
    for path in [APPS.to_string(), format!("{APPS}/oa-app/devices")] {
        let op = &doc["paths"][path.replace("oa-app", "{app}")]["get"];
        let op = Op {
            method: "get",
            path: &path,
            op,
        };
        for bound in ["limit", "offset"] {
            let schema = &op.param(bound).unwrap()["schema"];
            assert_eq!(schema["minimum"], json!(0), "{path} {bound}");
            assert_eq!(schema["maximum"], json!(max), "{path} {bound}");
            let r = admin.get(&format!("{path}?{bound}={max}")).await;
            assert_eq!(r.status(), StatusCode::OK, "{path} {bound}={max}");
            for bad in [format!("{}", max + 1), "-1".into(), "x".into()] {
                let r = admin.get(&format!("{path}?{bound}={bad}")).await;
                let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
                assert!(msg.contains(bound), "{path} {bound}={bad}: {msg}");
            }
        }
        let labels = &op.param("labels").unwrap()["schema"];
        assert!(labels["pattern"].is_string(), "{path}: labels {labels}");
    }

    // Commands: the documented bounds of `timeout` and `ttl` are the command service's.
    let op = &doc["paths"]["/api/command/v1alpha1/apps/{app}/devices/{device}"]["post"];
    let op = Op {
        method: "post",
        path: "",
        op,
    };
    assert_eq!(op.param("command").unwrap()["required"], json!(true));
    for (param, max) in [
        ("timeout", drover_integrations::commands::MAX_TIMEOUT),
        ("ttl", drover_integrations::commands::MAX_TTL),
    ] {
        let schema = &op.param(param).unwrap()["schema"];
        assert_eq!(schema["minimum"], json!(1), "{param}");
        assert_eq!(schema["maximum"], json!(max), "{param}");
    }
}
