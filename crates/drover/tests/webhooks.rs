//! Webhooks end to end, with real HTTP sinks (axum on port 0, allow-listed in the outbound
//! address policy): events arrive in order per device, exactly once after retries, dead letters
//! after the budget, a restart resumes without loss, signatures verify, Event Grid's schema and
//! handshake, access (another tenant gets 404) and bad specs (400); on two nodes (PostgreSQL
//! and NATS) each event is delivered once, and the other node takes over when the holder stops.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use common::{expect_error, Client, TestServer};
use drover_integrations::outbound::OutboundPolicy;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};

const APPS: &str = "/api/registry/v1alpha1/apps";

/// What a sink answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Answer {
    Ok,
    /// 500 for the next `n` requests, then Ok.
    FailTimes(u32),
    /// Always this status.
    Always(u16),
    /// Event Grid: answer the validation handshake, take events.
    Validate,
}

/// One request a sink received.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: bytes::Bytes,
    /// What the sink answered.
    status: u16,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone)]
struct Sink {
    url: String,
    answer: Arc<Mutex<Answer>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Sink {
    async fn start(answer: Answer) -> Sink {
        let answer = Arc::new(Mutex::new(answer));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (a, r) = (answer.clone(), received.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: bytes::Bytes| {
                let (a, r) = (a.clone(), r.clone());
                async move { answer_request(&a, &r, headers, body) }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}/hook", l.local_addr().unwrap().port());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        Sink {
            url,
            answer,
            received,
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The requests answered 2xx that carried events.
    fn delivered(&self) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .filter(|r| {
                r.headers
                    .get("aeg-event-type")
                    .is_none_or(|v| v == "Notification")
            })
            .collect()
    }

    /// Waits until `n` requests were taken (2xx) and returns them.
    async fn wait_delivered(&self, n: usize) -> Vec<Received> {
        wait_for(&format!("{n} deliveries to {}", self.url), || {
            let d = self.delivered();
            (d.len() >= n).then_some(d)
        })
        .await
    }
}

fn answer_request(
    answer: &Mutex<Answer>,
    received: &Mutex<Vec<Received>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let mut a = answer.lock().unwrap();
    let (status, reply): (u16, Value) = match *a {
        Answer::Ok => (200, json!({})),
        Answer::FailTimes(0) => {
            *a = Answer::Ok;
            (200, json!({}))
        }
        Answer::FailTimes(n) => {
            *a = Answer::FailTimes(n - 1);
            (500, json!({}))
        }
        Answer::Always(s) => (s, json!({})),
        Answer::Validate => {
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            if v[0]["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent" {
                (
                    200,
                    json!({"validationResponse": v[0]["data"]["validationCode"]}),
                )
            } else {
                (200, json!({}))
            }
        }
    };
    received.lock().unwrap().push(Received {
        headers,
        body,
        status,
    });
    (AxumStatus::from_u16(status).unwrap(), axum::Json(reply)).into_response()
}

/// Polls `f` every 50 ms for up to 20 s.
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..400 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A server whose outbound policy allows the loopback sinks.
async fn start() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestServer::start_with(config(dir.path())).await;
    t.dir = Some(dir);
    t
}

fn config(dir: &std::path::Path) -> drover::Config {
    let mut config = common::config(dir);
    config.outbound_allow = OutboundPolicy::parse_list("127.0.0.1").unwrap();
    config
}

fn hooks(app: &str) -> String {
    format!("{APPS}/{app}/webhooks")
}

/// The application `app` with the devices `dev1` and `dev2` (password `secret`).
async fn app_with_devices(c: &Client, app: &str) {
    c.create_app(app).await;
    for d in ["dev1", "dev2"] {
        c.create_device(
            app,
            json!({"metadata": {"name": d}, "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}}),
        )
        .await;
    }
}

async fn create_hook(c: &Client, app: &str, name: &str, spec: Value) -> Value {
    let r = c
        .post(
            &hooks(app),
            &json!({"metadata": {"name": name}, "spec": spec}),
        )
        .await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// Fast retries for tests.
fn quick_retries(attempts: u32) -> Value {
    json!({"maxAttempts": attempts, "initialDelayMs": 20, "maxDelayMs": 100})
}

/// Telemetry `{"n": n}` from `device` of `app` on `channel`.
async fn send(t: &TestServer, app: &str, device: &str, channel: &str, n: u32) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{device}@{app}:secret"));
    let r = reqwest::Client::new()
        .post(format!("{}/v1/{channel}", t.http_base))
        .header("authorization", format!("Basic {auth}"))
        .header("content-type", "application/json")
        .body(json!({"n": n}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// The `n` of each structured CloudEvent delivered, with its device.
fn numbers(delivered: &[Received]) -> Vec<(String, u64)> {
    delivered
        .iter()
        .map(|r| {
            let v = r.json();
            (
                v["device"].as_str().unwrap().to_string(),
                v["data"]["n"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn status(c: &Client, app: &str, name: &str) -> Value {
    c.get_json(&format!("{}/{name}/status", hooks(app))).await
}

#[tokio::test]
async fn events_arrive_in_order_per_device() {
    let t = start().await;
    let admin = t.admin();
    app_with_devices(&admin, "app").await;
    let sink = Sink::start(Answer::Ok).await;
    let binary = Sink::start(Answer::Ok).await;
    create_hook(&admin, "app", "all", json!({"url": sink.url})).await;
    create_hook(
        &admin,
        "app",
        "temps",
        json!({"url": binary.url, "mode": "binary", "subjects": ["temp*"], "types": ["io.drogue.event.v1"]}),
    )
    .await;
    for n in 0..20 {
        let device = if n % 2 == 0 { "dev1" } else { "dev2" };
        let channel = if n % 4 < 2 { "temperature" } else { "humidity" };
        send(&t, "app", device, channel, n).await;
    }
    let got = numbers(&sink.wait_delivered(20).await);
    assert_eq!(got.len(), 20, "{got:?}");
    for device in ["dev1", "dev2"] {
        let ns: Vec<u64> = got
            .iter()
            .filter(|(d, _)| d == device)
            .map(|(_, n)| *n)
            .collect();
        let mut sorted = ns.clone();
        sorted.sort_unstable();
        assert_eq!(ns, sorted, "{device} out of order");
        assert_eq!(ns.len(), 10);
    }
    let first = &sink.delivered()[0];
    assert_eq!(
        first.headers["content-type"],
        "application/cloudevents+json; charset=utf-8"
    );
    assert_eq!(first.json()["specversion"], "1.0");
    assert_eq!(first.json()["type"], "io.drogue.event.v1");

    // Binary mode, filtered: the data as the body, the attributes as ce- headers.
    let temps = binary.wait_delivered(10).await;
    assert_eq!(temps.len(), 10);
    for r in &temps {
        assert_eq!(r.headers["ce-subject"], "temperature");
        assert_eq!(r.headers["ce-specversion"], "1.0");
        assert_eq!(r.headers["content-type"], "application/json");
        assert!(r.json()["n"].as_u64().unwrap() % 4 < 2);
    }
    let s = wait_for_status(&admin, "app", "all", |s| s["delivered"] == 20).await;
    assert_eq!(s["failed"], 0);
    assert_eq!(s["lag"], 0, "{s}");
    assert_eq!(s["retrying"], 0);
}

/// Polls a subscription's status until `f` holds.
async fn wait_for_status(c: &Client, app: &str, name: &str, f: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let s = status(c, app, name).await;
        if f(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "status of {name} never matched: {}",
        status(c, app, name).await
    );
}

#[tokio::test]
async fn a_sink_that_fails_three_times_gets_everything_exactly_once() {
    let t = start().await;
    let admin = t.admin();
    app_with_devices(&admin, "app").await;
    let sink = Sink::start(Answer::FailTimes(3)).await;
    create_hook(
        &admin,
        "app",
        "flaky",
        json!({"url": sink.url, "retry": quick_retries(5)}),
    )
    .await;
    for n in 0..6 {
        send(&t, "app", "dev1", "t", n).await;
    }
    let got = numbers(&sink.wait_delivered(6).await);
    // Let anything extra arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_now = numbers(&sink.delivered());
    assert_eq!(got, got_now, "delivered again");
    assert_eq!(
        got.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
    let failed: Vec<_> = sink.all().into_iter().filter(|r| r.status == 500).collect();
    assert_eq!(failed.len(), 3);
    // The three failures were the first event, tried again.
    for r in &failed {
        assert_eq!(r.json()["data"]["n"], 0);
    }
    let s = wait_for_status(&admin, "app", "flaky", |s| s["delivered"] == 6).await;
    assert_eq!(s["failed"], 0);
    assert!(s["lastError"].as_str().unwrap().contains("500"), "{s}");
    let dead = admin
        .get_json(&format!("{}/flaky/dead-letters", hooks("app")))
        .await;
    assert_eq!(dead, json!([]));
}

#[tokio::test]
async fn a_sink_down_past_the_budget_gets_dead_letters() {
    let t = start().await;
    let admin = t.admin();
    app_with_devices(&admin, "app").await;
    let sink = Sink::start(Answer::Always(503)).await;
    let refusing = Sink::start(Answer::Always(400)).await;
    let bouncing = Sink::start(Answer::Always(307)).await;
    create_hook(
        &admin,
        "app",
        "down",
        json!({"url": sink.url, "retry": quick_retries(3)}),
    )
    .await;
    create_hook(
        &admin,
        "app",
        "refusing",
        json!({"url": refusing.url, "retry": quick_retries(5)}),
    )
    .await;
    create_hook(
        &admin,
        "app",
        "bouncing",
        json!({"url": bouncing.url, "retry": quick_retries(5)}),
    )
    .await;
    for n in 0..3 {
        send(&t, "app", "dev1", "t", n).await;
    }
    // Given up is handled: committed (no lag).
    let s = wait_for_status(&admin, "app", "down", |s| s["failed"] == 3 && s["lag"] == 0).await;
    assert_eq!(s["delivered"], 0);
    assert!(s["lastError"].as_str().unwrap().contains("503"), "{s}");
    let dead = admin
        .get_json(&format!("{}/down/dead-letters", hooks("app")))
        .await;
    let dead = dead.as_array().unwrap();
    assert_eq!(dead.len(), 3, "{dead:?}");
    for (i, d) in dead.iter().enumerate() {
        assert_eq!(d["attempts"], 3);
        assert_eq!(d["device"], "dev1");
        assert_eq!(d["eventType"], "io.drogue.event.v1");
        assert_eq!(d["event"]["data"]["n"], i);
        assert!(d["error"].as_str().unwrap().contains("503"), "{d}");
    }
    // 3 attempts per event.
    assert_eq!(sink.all().len(), 9);
    // Paging.
    let seq = dead[0]["seq"].as_u64().unwrap();
    let page = admin
        .get_json(&format!(
            "{}/down/dead-letters?after={seq}&limit=1",
            hooks("app")
        ))
        .await;
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["seq"], dead[1]["seq"]);

    // 400 cannot be fixed by retrying, nor a redirect (never followed): one attempt each.
    wait_for_status(&admin, "app", "refusing", |s| s["failed"] == 3).await;
    assert_eq!(refusing.all().len(), 3);
    wait_for_status(&admin, "app", "bouncing", |s| s["failed"] == 3).await;
    assert_eq!(bouncing.all().len(), 3);
    let dead = admin
        .get_json(&format!("{}/bouncing/dead-letters", hooks("app")))
        .await;
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed"),
        "{dead}"
    );
    assert_eq!(dead[0]["attempts"], 1);

    // Back up: delivery goes on with what follows.
    sink.set(Answer::Ok);
    send(&t, "app", "dev1", "t", 3).await;
    let got = numbers(&sink.wait_delivered(1).await);
    assert_eq!(got, vec![("dev1".to_string(), 3)]);
}

#[tokio::test]
async fn a_restart_resumes_without_loss() {
    let mut t = start().await;
    let admin = t.admin();
    app_with_devices(&admin, "app").await;
    let sink = Sink::start(Answer::Ok).await;
    create_hook(
        &admin,
        "app",
        "hook",
        json!({"url": sink.url, "retry": {"maxAttempts": 100, "initialDelayMs": 50, "maxDelayMs": 100}}),
    )
    .await;
    for n in 0..3 {
        send(&t, "app", "dev1", "t", n).await;
    }
    sink.wait_delivered(3).await;
    // Pending at the restart: the sink fails meanwhile.
    sink.set(Answer::Always(500));
    for n in 3..6 {
        send(&t, "app", "dev2", "t", n).await;
    }
    wait_for("a failed attempt", || {
        sink.all().iter().any(|r| r.status == 500).then_some(())
    })
    .await;
    let c = config(&t.data_dir);
    t.restart_with(c).await;
    sink.set(Answer::Ok);
    send(&t, "app", "dev1", "t", 6).await;
    let got = numbers(&sink.wait_delivered(7).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(numbers(&sink.delivered()), got, "delivered again");
    let ns: Vec<u64> = got.iter().map(|(_, n)| *n).collect();
    assert_eq!(ns, (0..7).collect::<Vec<_>>());
}

#[tokio::test]
async fn signatures_verify_and_the_secret_is_never_shown() {
    let t = start().await;
    let admin = t.admin();
    app_with_devices(&admin, "app").await;
    let sink = Sink::start(Answer::Ok).await;
    let secret = "a-secret-of-some-length";
    let created = create_hook(
        &admin,
        "app",
        "signed",
        json!({"url": sink.url, "secret": secret, "headers": {"Authorization": "Bearer abc", "X-Tenant": "t1"}}),
    )
    .await;
    assert_eq!(created["signed"], true);
    for shown in [
        created.clone(),
        admin.get_json(&format!("{}/signed", hooks("app"))).await,
        admin.get_json(&hooks("app")).await,
    ] {
        assert!(!shown.to_string().contains(secret), "{shown}");
    }
    send(&t, "app", "dev1", "t", 1).await;
    let r = &sink.wait_delivered(1).await[0];
    let sig = r.headers["x-drover-signature-256"].to_str().unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&r.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sig, format!("sha256={hex}"));
    assert_eq!(r.headers["authorization"], "Bearer abc");
    assert_eq!(r.headers["x-tenant"], "t1");
}

#[tokio::test]
async fn event_grid_schema_and_validation_handshake() {
    let t = start().await;
    let admin = t.admin();
    app_with_devices(&admin, "app").await;
    let sink = Sink::start(Answer::Validate).await;
    let deaf = Sink::start(Answer::Ok).await;
    let spec = |url: &str| {
        json!({"url": url, "schema": "eventgrid", "validationHandshake": true, "maxEvents": 10,
            "retry": quick_retries(3)})
    };
    create_hook(&admin, "app", "grid", spec(&sink.url)).await;
    create_hook(&admin, "app", "deaf", spec(&deaf.url)).await;
    wait_for_status(&admin, "app", "grid", |s| s["validated"] == true).await;
    for n in 0..3 {
        send(&t, "app", "dev1", "t", n).await;
    }
    let events: Vec<Value> = wait_for("3 events", || {
        let events: Vec<Value> = sink
            .delivered()
            .iter()
            .flat_map(|r| r.json().as_array().unwrap().clone())
            .collect();
        (events.len() >= 3).then_some(events)
    })
    .await;
    let first_request = &sink.all()[0];
    assert_eq!(
        first_request.headers["aeg-event-type"],
        "SubscriptionValidation"
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["eventType"], "Microsoft.Devices.DeviceTelemetry");
        assert_eq!(e["subject"], "devices/dev1");
        assert_eq!(e["topic"], "/drover/applications/app");
        assert_eq!(e["dataVersion"], "1");
        assert_eq!(e["metadataVersion"], "1");
        assert_eq!(e["data"]["body"]["n"], i);
        assert_eq!(
            e["data"]["systemProperties"]["iothub-connection-device-id"],
            "dev1"
        );
        assert!(e["id"].is_string() && e["eventTime"].is_string());
    }
    // A sink that does not answer the handshake gets no events.
    let s = wait_for_status(&admin, "app", "deaf", |s| {
        s["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("validation"))
    })
    .await;
    assert_eq!(s["validated"], false);
    assert_eq!(s["delivered"], 0);
    assert!(deaf
        .all()
        .iter()
        .all(|r| r.headers["aeg-event-type"] == "SubscriptionValidation"));
}

#[tokio::test]
async fn other_tenants_get_404_and_readers_may_not_write() {
    let t = start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let carol = t.user("carol").await;
    alice.create_app("alice-app").await;
    let r = alice
        .put(
            "/api/admin/v1alpha1/apps/alice-app/members",
            &json!({"members": {"carol": {"role": "reader"}}}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    let sink = Sink::start(Answer::Ok).await;
    create_hook(&alice, "alice-app", "h", json!({"url": sink.url})).await;
    let base = hooks("alice-app");
    for path in [
        base.clone(),
        format!("{base}/h"),
        format!("{base}/h/status"),
        format!("{base}/h/dead-letters"),
    ] {
        expect_error(bob.get(&path).await, StatusCode::NOT_FOUND, "NotFound").await;
        let r = carol.get(&path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    expect_error(
        bob.delete(&format!("{base}/h")).await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;
    let body = json!({"metadata": {"name": "x"}, "spec": {"url": sink.url}});
    expect_error(
        bob.post(&base, &body).await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;
    expect_error(
        carol.post(&base, &body).await,
        StatusCode::FORBIDDEN,
        "AuthenticationError",
    )
    .await;
    expect_error(
        carol.delete(&format!("{base}/h")).await,
        StatusCode::FORBIDDEN,
        "AuthenticationError",
    )
    .await;
    let r = alice.delete(&format!("{base}/h")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expect_error(
        alice.get(&format!("{base}/h")).await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;
}

#[tokio::test]
async fn bad_specs_are_refused() {
    let t = start().await;
    let admin = t.admin();
    admin.create_app("app").await;
    let base = hooks("app");
    let post = |name: &str, spec: Value| {
        let body = json!({"metadata": {"name": name}, "spec": spec});
        let admin = admin.clone();
        let base = base.clone();
        async move { admin.post(&base, &body).await }
    };
    for (spec, needle) in [
        (json!({"url": "ftp://example.com/"}), "spec.url"),
        (json!({"url": "not a url"}), "spec.url"),
        (json!({"url": "http://user:pw@example.com/"}), "user info"),
        (
            json!({"url": "http://10.0.0.1/hook"}),
            "outbound address policy",
        ),
        (
            json!({"url": "http://[::1]:1/hook"}),
            "outbound address policy",
        ),
        (
            json!({"url": "https://example.com/", "schema": "kafka"}),
            "schema",
        ),
        (
            json!({"url": "https://example.com/", "headers": {"ce-id": "x"}}),
            "spec.headers",
        ),
        (
            json!({"url": "https://example.com/", "secret": "short"}),
            "spec.secret",
        ),
        (
            json!({"url": "https://example.com/", "caPem": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"}),
            "spec.caPem",
        ),
        (
            json!({"url": "https://example.com/", "mode": "binary", "maxEvents": 2}),
            "spec.maxEvents",
        ),
        (
            json!({"url": format!("https://example.com/{}", "a".repeat(3000))}),
            "spec.url",
        ),
    ] {
        let r = post("h", spec.clone()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{spec}");
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(msg.contains(needle), "{spec}: {msg}");
    }
    let msg = expect_error(
        post("Bad_Name", json!({"url": "https://example.com/"})).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(msg.contains("webhook name"), "{msg}");
    // Unknown application; duplicates; the limit per application.
    let r = admin
        .post(
            &hooks("nope"),
            &json!({"metadata": {"name": "h"}, "spec": {"url": "https://example.com/"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for i in 0..20 {
        let r = post(&format!("h{i}"), json!({"url": "https://example.com/"})).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    expect_error(
        post("h0", json!({"url": "https://example.com/"})).await,
        StatusCode::CONFLICT,
        "Conflict",
    )
    .await;
    let msg = expect_error(
        post("h20", json!({"url": "https://example.com/"})).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(msg.contains("most it may have"), "{msg}");
    assert_eq!(admin.get_json(&base).await.as_array().unwrap().len(), 20);
}

/// A node of a two-node cluster on the test's schema and NATS prefix.
async fn node(name: &str, db: &str, schema: &str, nats: &str, prefix: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.instance = name.into();
    c.database_url = Some(db.into());
    c.database_schema = Some(schema.into());
    c.nats_url = Some(nats.into());
    c.nats_prefix = prefix.into();
    let mut t = TestServer::start_with(c).await;
    t.dir = Some(dir);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL and NATS: set DROVER_TEST_DATABASE_URL and DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn on_two_nodes_each_event_is_delivered_once() {
    let (db, nats) = common::backends::backends();
    let (schema, prefix) = (
        common::backends::unique("drover_wh"),
        common::backends::unique("wh"),
    );
    let _cleanup = common::backends::Cleanup {
        db: db.clone(),
        schema: schema.clone(),
        nats: nats.clone(),
        prefix: prefix.clone(),
    };
    let a = node("node-a", &db, &schema, &nats, &prefix).await;
    let b = node("node-b", &db, &schema, &nats, &prefix).await;
    let admin = a.admin();
    app_with_devices(&admin, "app").await;
    let sink = Sink::start(Answer::Ok).await;
    create_hook(&admin, "app", "hook", json!({"url": sink.url})).await;
    // Both nodes run a delivery; one holds the subscription.
    for n in 0..20 {
        let (t, device) = if n % 2 == 0 {
            (&a, "dev1")
        } else {
            (&b, "dev2")
        };
        send(t, "app", device, "t", n).await;
    }
    let got = numbers(&sink.wait_delivered(20).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(numbers(&sink.delivered()), got, "delivered again");
    let ns: Vec<u64> = got.iter().map(|(_, n)| *n).collect();
    assert_eq!(ns, (0..20).collect::<Vec<_>>());
    let s = wait_for_status(&b.admin(), "app", "hook", |s| s["delivered"] == 20).await;
    let holder = s["node"].as_str().unwrap().to_string();

    // The holder stops (giving the subscription up); the other node takes over where the
    // committed offset is, nothing lost, nothing twice.
    let (mut stopping, staying) = if holder.starts_with("node-b/") {
        (b, a)
    } else {
        (a, b)
    };
    stopping.server.take().unwrap().shutdown().await.unwrap();
    for n in 20..25 {
        send(&staying, "app", "dev1", "t", n).await;
    }
    let got = numbers(&sink.wait_delivered(25).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(numbers(&sink.delivered()), got, "delivered again");
    let ns: Vec<u64> = got.iter().map(|(_, n)| *n).collect();
    assert_eq!(ns, (0..25).collect::<Vec<_>>());
    let s = status(&staying.admin(), "app", "hook").await;
    assert!(
        s["node"].as_str().is_some_and(|n| n != holder),
        "{s} (was {holder})"
    );
}

/// An HTTPS sink with the server certificate the test server made for itself (issued by its
/// development CA, for localhost): one request per connection, answered 204; the bodies taken.
async fn https_sink(tls_dir: &std::path::Path) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(tls_dir.join("server.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(tls_dir.join("server-key.pem")).unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://localhost:{}/hook", l.local_addr().unwrap().port());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let taken = bodies.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            let (acceptor, taken) = (acceptor.clone(), taken.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate ends here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let n = tls.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse().unwrap())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break buf[end + 4..end + 4 + len].to_vec();
                    }
                };
                taken.lock().unwrap().push(body);
                let _ = tls
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, bodies)
}

#[tokio::test]
async fn https_with_a_given_ca_and_tls_failures_become_dead_letters() {
    let t = start().await;
    let admin = t.admin();
    app_with_devices(&admin, "app").await;
    let tls = t.data_dir.join("tls");
    let (url, bodies) = https_sink(&tls).await;
    let ca = std::fs::read_to_string(tls.join("ca.pem")).unwrap();
    create_hook(&admin, "app", "trusted", json!({"url": url, "caPem": ca})).await;
    create_hook(
        &admin,
        "app",
        "untrusted",
        json!({"url": url, "retry": quick_retries(2)}),
    )
    .await;
    // A CA is for https only.
    let r = admin
        .post(
            &hooks("app"),
            &json!({"metadata": {"name": "plain"}, "spec": {"url": "http://127.0.0.1:1/", "caPem": ca}}),
        )
        .await;
    let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    assert!(msg.contains("only for https"), "{msg}");
    for n in 0..2 {
        send(&t, "app", "dev1", "t", n).await;
    }
    wait_for_status(&admin, "app", "trusted", |s| s["delivered"] == 2).await;
    let got: Vec<Value> = bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1]["data"]["n"], 1);
    // Without the CA the certificate is not trusted: retried, then dead letters.
    wait_for_status(&admin, "app", "untrusted", |s| s["failed"] == 2).await;
    let dead = admin
        .get_json(&format!("{}/untrusted/dead-letters", hooks("app")))
        .await;
    let error = dead[0]["error"].as_str().unwrap().to_ascii_lowercase();
    assert!(error.contains("certificate"), "{error}");
    assert_eq!(dead[0]["attempts"], 2);
}
