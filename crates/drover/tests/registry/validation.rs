//! What the server refuses: malformed and trailing documents, invalid spec sections (unknown
//! ones round-trip), oversized bodies, unknown routes, and bad input it must survive.

use crate::common;
use crate::common::{expect_error, Client, TestServer};
use crate::helpers::{
    app_path, apps, assert_gone, device_path, devices, generation, names, put_ok, API,
};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

/// Sends `body` as-is with a JSON content type.
async fn send_raw(c: &Client, method: Method, path: &str, body: &str) -> Response {
    c.request(method, path)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn malformed_documents_are_refused() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;

    let bad: &[(Value, &str)] = &[
        (json!({"metadata": {"nmae": "x"}}), "nmae"),
        (json!({"metadata": {"name": "x"}, "sepc": {}}), "sepc"),
        (
            json!({"metadata": {"name": "x", "labels": ["a", "b"]}}),
            "labels",
        ),
        (
            json!({"metadata": {"name": "x", "generation": "1"}}),
            "generation",
        ),
        (
            json!({"metadata": {"name": "x", "labels": {"bad key": "v"}}}),
            "bad key",
        ),
        (
            json!({"metadata": {"name": "x", "labels": {"k": "has space"}}}),
            "label",
        ),
        (
            json!({"metadata": {"name": "x", "finalizers": [""]}}),
            "finalizer",
        ),
        (json!({"metadata": {"name": "x"}, "spec": []}), "spec"),
        (json!([]), "invalid"),
    ];
    for (body, needle) in bad {
        for path in [apps(), devices("app")] {
            let r = c.post(&path, body).await;
            let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
            assert!(
                msg.contains(needle),
                "POST {path} {body}: message should mention {needle:?}: {msg}"
            );
        }
        // Same on update.
        let mut body = body.clone();
        if body["metadata"].is_object() && body["metadata"].get("name").is_some() {
            body["metadata"]["name"] = json!("app");
        }
        let r = c.put(&app_path("app"), &body).await;
        expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    }

    for path in [apps(), devices("app"), app_path("app")] {
        let method = if path == app_path("app") {
            Method::PUT
        } else {
            Method::POST
        };
        let r = send_raw(&c, method.clone(), &path, "{\"metadata\": {\"name\": ").await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(msg.contains("malformed JSON"), "{method} {path}: {msg}");
        let r = c.request(method.clone(), &path).send().await.unwrap();
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(msg.contains("empty"), "{method} {path}: {msg}");
    }

    // Nothing was created or changed.
    assert_eq!(names(&c, &apps(), &[]).await, ["app"]);
    assert_eq!(names(&c, &devices("app"), &[]).await, Vec::<String>::new());
    assert_eq!(generation(&c.get_json(&app_path("app")).await), 1);
}

#[tokio::test]
async fn trailing_data_after_the_json_document_is_refused() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    let before = c.get_json(&app_path("app")).await;
    let cases = [
        (
            Method::POST,
            apps(),
            "{\"metadata\": {\"name\": \"x\"}} trailing",
        ),
        (Method::POST, apps(), "{\"metadata\": {\"name\": \"y\"}}{}"),
        (
            Method::POST,
            devices("app"),
            "{\"metadata\": {\"name\": \"x\"}} trailing",
        ),
        (
            Method::PUT,
            app_path("app"),
            "{\"metadata\": {\"name\": \"app\", \"labels\": {\"k\": \"v\"}}} ]",
        ),
    ];
    for (method, path, body) in cases {
        let r = send_raw(&c, method.clone(), &path, body).await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(
            msg.contains("malformed JSON"),
            "{method} {path} {body:?}: {msg}"
        );
    }
    assert_eq!(names(&c, &apps(), &[]).await, ["app"]);
    assert_eq!(names(&c, &devices("app"), &[]).await, Vec::<String>::new());
    assert_eq!(c.get_json(&app_path("app")).await, before);
}

#[tokio::test]
async fn typed_spec_sections_are_validated() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    c.create_device("app", json!({"metadata": {"name": "dev"}}))
        .await;
    let before = c.get_json(&device_path("app", "dev")).await;

    let cases: &[(Value, &str)] = &[
        (json!({"core": {"disabled": "yes"}}), "spec.core.disabled"),
        (
            json!({"authentication": {"credentials": [{"pass": {"md5": "x"}}]}}),
            "spec.authentication",
        ),
        (
            json!({"credentials": {"credentials": [{"pass": {"md5": "x"}}]}}),
            "spec.credentials",
        ),
        (json!({"alias": "notalist"}), "spec.alias"),
        (json!({"alias": [""]}), "spec.alias"),
        (json!({"mqtt": {"dialect": {"type": "nope"}}}), "spec.mqtt"),
        (
            json!({"authentication": {"credentials": [{"pass": {"sha512": "notahash"}}]}}),
            "sha512",
        ),
        (
            json!({"authentication": {"credentials": [{"pass": {"bcrypt": "notahash"}}]}}),
            "bcrypt",
        ),
        (
            json!({"authentication": {"credentials": [{"pass": ""}]}}),
            "spec.authentication",
        ),
        (
            json!({"authentication": {"credentials": [{"user": {"username": "", "password": "p"}}]}}),
            "username",
        ),
        (
            json!({"gatewaySelector": {"matchNames": "gw"}}),
            "spec.gatewaySelector",
        ),
    ];
    for (i, (spec, needle)) in cases.iter().enumerate() {
        let r = c
            .post(
                &devices("app"),
                &json!({"metadata": {"name": format!("bad-{i}")}, "spec": spec}),
            )
            .await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(
            msg.contains(needle),
            "create with spec {spec}: message should mention {needle:?}: {msg}"
        );
        let r = c
            .put(
                &device_path("app", "dev"),
                &json!({"metadata": {"name": "dev"}, "spec": spec}),
            )
            .await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(
            msg.contains(needle),
            "update with spec {spec}: message should mention {needle:?}: {msg}"
        );
    }
    assert_eq!(names(&c, &devices("app"), &[]).await, ["dev"]);
    assert_eq!(c.get_json(&device_path("app", "dev")).await, before);

    // Apps: the sections they share with devices.
    for (spec, needle) in [
        (json!({"core": {"disabled": "yes"}}), "spec.core.disabled"),
        (json!({"mqtt": {"dialect": {"type": "nope"}}}), "spec.mqtt"),
        (
            json!({"trustAnchors": {"anchors": "x"}}),
            "spec.trustAnchors",
        ),
    ] {
        let r = c
            .post(
                &apps(),
                &json!({"metadata": {"name": "bad-app"}, "spec": spec}),
            )
            .await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(msg.contains(needle), "app spec {spec}: {msg}");
        let r = c
            .put(
                &app_path("app"),
                &json!({"metadata": {"name": "app"}, "spec": spec}),
            )
            .await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(msg.contains(needle), "app update spec {spec}: {msg}");
    }
    assert_gone(&c, &app_path("bad-app")).await;

    // Valid typed sections are accepted as sent.
    let good = json!({
        "core": {"disabled": true},
        "mqtt": {"dialect": {"type": "plainTopic", "devicePrefix": true}},
        "alias": ["a1", "CN=Device 1,O=Example"],
        "gatewaySelector": {"matchNames": ["gw1"]},
        "commands": {"commands": [{"external": {"type": null, "url": "http://lns.example.com:1/cmd", "method": "POST", "headers": {}}}]},
    });
    let d = c
        .create_device("app", json!({"metadata": {"name": "good"}, "spec": good}))
        .await;
    assert_eq!(d["spec"], good);
    let r = c.post(&apps(), &json!({"metadata": {"name": "good-app"}, "spec": {"mqtt": {"dialect": {"type": "drogue/v1"}}, "core": {"disabled": false}}})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn unknown_spec_sections_round_trip() {
    let t = TestServer::start().await;
    let c = t.admin();
    let spec = json!({
        "custom": {"nested": [1, 2.5, {"b": null, "s": "text"}], "flag": true},
        "x-vendor": "plain string",
        "empty": {},
    });
    let r = c
        .post(
            &apps(),
            &json!({"metadata": {"name": "app"}, "spec": spec, "status": {"custom": {"a": [1]}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let app = c.get_json(&app_path("app")).await;
    assert_eq!(app["spec"], spec);
    assert_eq!(app["status"], json!({"custom": {"a": [1]}}));

    let d = c
        .create_device("app", json!({"metadata": {"name": "dev"}, "spec": spec}))
        .await;
    assert_eq!(d["spec"], spec);
    assert_eq!(c.get_json(&device_path("app", "dev")).await["spec"], spec);

    // Alongside known sections (an unknown key in a known section's neighbour stays too).
    let mut spec2 = spec.clone();
    spec2["gatewaySelector"] = json!({"matchNames": ["gw"]});
    put_ok(
        &c,
        &device_path("app", "dev"),
        &json!({"metadata": {"name": "dev"}, "spec": spec2}),
    )
    .await;
    assert_eq!(c.get_json(&device_path("app", "dev")).await["spec"], spec2);
}

#[tokio::test]
async fn oversized_bodies_and_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestServer::start_with(drover::Config {
        api_body_limit: 1024,
        ..common::config(dir.path())
    })
    .await;
    let c = t.admin();

    let big = json!({"metadata": {"name": "big", "annotations": {"k": "x".repeat(2048)}}});
    let r = c.post(&apps(), &big).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "PayloadTooLarge", "{body}");
    assert!(!body["message"].as_str().unwrap().is_empty());
    assert_gone(&c, &app_path("big")).await;

    // Small bodies still pass under the limit.
    c.create_app("small").await;
    let r = c
        .put(
            &app_path("small"),
            &json!({"metadata": {"name": "small", "annotations": {"k": "x".repeat(2048)}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = c
        .post(
            &devices("small"),
            &json!({"metadata": {"name": "d", "annotations": {"k": "x".repeat(2048)}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        names(&c, &devices("small"), &[]).await,
        Vec::<String>::new()
    );
    // Command payloads too, with the same JSON error.
    let r = c
        .request(
            Method::POST,
            "/api/command/v1alpha1/apps/small/devices/d?command=set",
        )
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"], "PayloadTooLarge", "command payload: {body}");

    // Unknown routes: JSON 404.
    for path in [
        format!("{API}/nope"),
        "/no/such/thing".to_string(),
        format!("{API}/apps/small/devices/d/extra"),
    ] {
        let msg = expect_error(c.get(&path).await, StatusCode::NOT_FOUND, "NotFound").await;
        assert!(!msg.is_empty(), "{path}");
    }

    // Still serving.
    let app = c.get_json(&app_path("small")).await;
    assert_eq!(app["metadata"]["name"], "small");
    assert_eq!(generation(&app), 1);
}

#[tokio::test]
async fn server_survives_bad_input() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    let garbage: &[&str] = &[
        "\u{0}\u{1}\u{2}",
        "null",
        "\"string\"",
        "{\"metadata\": null}",
        "[[[[[[[[[[[[[[[[[[[[",
        "{\"metadata\": {\"name\": \"\\ud800\"}}",
    ];
    for body in garbage {
        for (method, path) in [
            (Method::POST, apps()),
            (Method::POST, devices("app")),
            (Method::PUT, device_path("app", "x")),
        ] {
            let r = send_raw(&c, method.clone(), &path, body).await;
            let status = r.status();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path} {body:?}");
        }
    }
    let r = c.get(&format!("{}?labels=%FF%FE", devices("app"))).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_eq!(
        c.get_json(&app_path("app")).await["metadata"]["name"],
        "app"
    );
}
