//! End-to-end tests of the change watch: server-sent events at `/api/registry/v1alpha1/watch`,
//! one CloudEvent per changed path, resumable from any revision, filtered by what the caller may
//! read.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{expect_error, Client, TestServer};
use futures::stream::BoxStream;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

const APPS: &str = "/api/registry/v1alpha1/apps";
const WATCH: &str = "/api/registry/v1alpha1/watch";
/// How long to wait for an event that must come.
const DEADLINE: Duration = Duration::from_secs(10);

/// One server-sent event.
#[derive(Debug, Default, Clone)]
struct Message {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// A minimal `text/event-stream` reader over a response body.
struct Sse {
    body: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

/// A registry change as delivered by the watch.
#[derive(Debug, Clone)]
struct Change {
    /// The SSE id.
    id: u64,
    /// `application` or `device`.
    kind: String,
    app: String,
    device: Option<String>,
    subject: String,
    /// `data.revision`.
    revision: u64,
    uid: String,
    event: Value,
}

impl Change {
    fn what(&self) -> (String, Option<String>, String) {
        (
            format!("{}/{}", self.kind, self.app),
            self.device.clone(),
            self.subject.clone(),
        )
    }
}

/// `(kind/app, device, subject)` of an expected change.
fn ev(
    kind: &str,
    app: &str,
    device: Option<&str>,
    subject: &str,
) -> (String, Option<String>, String) {
    (
        format!("{kind}/{app}"),
        device.map(str::to_string),
        subject.to_string(),
    )
}

impl Sse {
    /// Opens the watch with a query string (e.g. `?since=3`) and an optional `Last-Event-ID`.
    async fn open(c: &Client, query: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = c.request(reqwest::Method::GET, &format!("{WATCH}{query}"));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "opening the watch{query}");
        let ct = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(ct.starts_with("text/event-stream"), "content type {ct}");
        Sse {
            body: r.bytes_stream().map(|b| b.map(|b| b.to_vec())).boxed(),
            buf: Vec::new(),
        }
    }

    /// The next message; `None` when the stream ends.
    async fn next_message(&mut self) -> Option<Message> {
        let mut msg = Message::default();
        let mut has_fields = false;
        loop {
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let line = String::from_utf8(line).unwrap();
                if line.is_empty() {
                    if has_fields {
                        return Some(msg);
                    }
                    continue;
                }
                if line.starts_with(':') {
                    continue; // comment (keep-alive)
                }
                let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                has_fields = true;
                match field {
                    "id" => msg.id = Some(value.to_string()),
                    "event" => msg.event = Some(value.to_string()),
                    "data" => {
                        if !msg.data.is_empty() {
                            msg.data.push('\n');
                        }
                        msg.data.push_str(value);
                    }
                    _ => {}
                }
            }
            match self.body.next().await {
                Some(chunk) => self.buf.extend(chunk.unwrap()),
                None => return None,
            }
        }
    }

    /// The next change, which must arrive within the deadline.
    async fn next_change(&mut self) -> Change {
        let msg = tokio::time::timeout(DEADLINE, self.next_message())
            .await
            .expect("no change event within the deadline")
            .expect("the watch ended");
        assert_eq!(msg.event.as_deref(), Some("change"), "{msg:?}");
        let id: u64 = msg.id.as_deref().unwrap().parse().unwrap();
        let event: Value = serde_json::from_str(&msg.data).unwrap();
        assert_eq!(event["specversion"], "1.0", "{event}");
        assert_eq!(
            event["id"],
            id.to_string(),
            "CloudEvent id is the SSE id: {event}"
        );
        let ty = event["type"].as_str().unwrap();
        let kind = ty
            .strip_prefix("io.drogue.registry.change.")
            .unwrap_or_else(|| panic!("type {ty}"));
        assert!(kind == "application" || kind == "device", "type {ty}");
        let app = event["application"].as_str().unwrap().to_string();
        let device = event
            .get("device")
            .and_then(Value::as_str)
            .map(str::to_string);
        assert_eq!(kind == "device", device.is_some(), "{event}");
        let source = match &device {
            Some(d) => format!("drogue://{app}/{d}"),
            None => format!("drogue://{app}"),
        };
        let raw_source = event["source"].as_str().unwrap();
        assert_eq!(percent_decode(raw_source), source, "{event}");
        Change {
            id,
            kind: kind.to_string(),
            app,
            device,
            subject: event["subject"].as_str().unwrap().to_string(),
            revision: event["data"]["revision"].as_u64().unwrap(),
            uid: event["data"]["uid"].as_str().unwrap().to_string(),
            event,
        }
    }

    async fn changes(&mut self, n: usize) -> Vec<Change> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next_change().await);
        }
        out
    }
}

/// Decodes `%XX` escapes.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad escape in {s}")));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn assert_increasing(changes: &[Change]) {
    for w in changes.windows(2) {
        assert!(
            w[0].id < w[1].id,
            "ids not strictly increasing: {} then {}",
            w[0].id,
            w[1].id
        );
    }
}

fn whats(changes: &[Change]) -> Vec<(String, Option<String>, String)> {
    changes.iter().map(Change::what).collect()
}

/// The registry revision a list was read at.
async fn list_revision(c: &Client) -> u64 {
    let r = c.get(APPS).await;
    assert_eq!(r.status(), StatusCode::OK);
    let rev = r
        .headers()
        .get("drover-revision")
        .expect("lists carry drover-revision");
    rev.to_str().unwrap().parse().unwrap()
}

fn rv(res: &Value) -> u64 {
    res["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn uid(res: &Value) -> String {
    res["metadata"]["uid"].as_str().unwrap().to_string()
}

async fn put_ok(c: &Client, path: &str, body: Value) {
    let r = c.put(path, &body).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "PUT {path} {body}");
}

async fn delete_ok(c: &Client, path: &str) {
    let r = c.delete(path).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "DELETE {path}");
}

/// Creates app `app` with device `d1`, then updates the device's labels and `spec.core`:
/// four changes. Returns the app and the updated device.
async fn four_changes(c: &Client, app: &str) -> (Value, Value, Value) {
    let a = c.create_app(app).await;
    let d = c
        .create_device(app, json!({"metadata": {"name": "d1"}}))
        .await;
    put_ok(
        c,
        &format!("{APPS}/{app}/devices/d1"),
        json!({"metadata": {"name": "d1", "labels": {"room": "kitchen"}}, "spec": {"core": {"disabled": true}}}),
    )
    .await;
    let updated = c.get_json(&format!("{APPS}/{app}/devices/d1")).await;
    (a, d, updated)
}

#[tokio::test]
async fn changes_arrive_in_order() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let start = list_revision(&admin).await;
    let mut w = Sse::open(&admin, &format!("?since={start}"), None).await;

    let (app, created, updated) = four_changes(&admin, "w1").await;
    let cs = w.changes(4).await;
    assert_eq!(
        whats(&cs),
        [
            ev("application", "w1", None, "."),
            ev("device", "w1", Some("d1"), "."),
            ev("device", "w1", Some("d1"), ".metadata"),
            ev("device", "w1", Some("d1"), ".spec.core"),
        ]
    );
    assert!(
        cs[0].id > start,
        "first id {} after the list's revision {start}",
        cs[0].id
    );
    assert_increasing(&cs);
    for c in &cs {
        assert_eq!(
            c.event["datacontenttype"], "application/json",
            "{}",
            c.event
        );
        assert!(c.event["time"].is_string(), "{}", c.event);
    }
    assert_eq!(cs[0].uid, uid(&app));
    assert_eq!(cs[0].revision, rv(&app));
    assert_eq!(cs[1].uid, uid(&created));
    assert_eq!(cs[1].revision, rv(&created));
    assert_eq!(cs[2].uid, uid(&created));
    assert_eq!(
        cs[2].revision,
        rv(&updated),
        "data.revision is the resourceVersion after the change"
    );
    assert_eq!(cs[3].revision, rv(&updated));

    // Nothing else came in between: the next change is the next write.
    admin.create_app("w2").await;
    let next = w.next_change().await;
    assert_eq!(next.what(), ev("application", "w2", None, "."));
    assert!(next.id > cs[3].id);
    // A list taken now is at the revision of the last change.
    assert_eq!(list_revision(&admin).await, next.id);

    // A no-op update changes nothing and emits nothing.
    put_ok(
        &admin,
        &format!("{APPS}/w2"),
        json!({"metadata": {"name": "w2"}}),
    )
    .await;
    put_ok(
        &admin,
        &format!("{APPS}/w2"),
        json!({"metadata": {"name": "w2", "labels": {"a": "b"}}}),
    )
    .await;
    let c = w.next_change().await;
    assert_eq!(c.what(), ev("application", "w2", None, ".metadata"));
    assert_eq!(c.id, next.id + 1, "no event in between");
}

#[tokio::test]
async fn without_since_the_watch_starts_now() {
    let t = TestServer::start().await;
    let admin = t.admin();
    admin.create_app("before").await;
    let mut w = Sse::open(&admin, "", None).await;
    admin.create_app("after").await;
    let c = w.next_change().await;
    assert_eq!(c.what(), ev("application", "after", None, "."));

    // And from 0, everything.
    let mut all = Sse::open(&admin, "?since=0", None).await;
    let cs = all.changes(2).await;
    assert_eq!(
        whats(&cs),
        [
            ev("application", "before", None, "."),
            ev("application", "after", None, ".")
        ]
    );
    assert_eq!(cs[1].id, c.id);
}

#[tokio::test]
async fn resume_from_an_event_in_the_middle() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let start = list_revision(&admin).await;
    let mut w = Sse::open(&admin, &format!("?since={start}"), None).await;
    four_changes(&admin, "r1").await;
    let cs = w.changes(4).await;
    let mid = cs[1].id.to_string();

    let mut by_query = Sse::open(&admin, &format!("?since={mid}"), None).await;
    let mut by_header = Sse::open(&admin, "", Some(&mid)).await;
    // A reconnecting browser repeats the original URL: Last-Event-ID wins over it.
    let mut both = Sse::open(&admin, &format!("?since={start}"), Some(&mid)).await;
    admin.create_app("sentinel").await;
    let sentinel = w.next_change().await;

    for (name, s) in [
        ("since", &mut by_query),
        ("Last-Event-ID", &mut by_header),
        ("both", &mut both),
    ] {
        let got = s.changes(3).await;
        let ids: Vec<u64> = got.iter().map(|c| c.id).collect();
        assert_eq!(ids, [cs[2].id, cs[3].id, sentinel.id], "resume with {name}");
        assert_eq!(whats(&got[..2]), whats(&cs[2..]), "resume with {name}");
    }

    // Invalid positions are refused.
    let r = admin.get(&format!("{WATCH}?since=abc")).await;
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    let r = admin
        .request(reqwest::Method::GET, WATCH)
        .header("last-event-id", "x")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    let r = t.anonymous().get(WATCH).await;
    expect_error(r, StatusCode::UNAUTHORIZED, "AuthenticationError").await;
}

#[tokio::test]
async fn resume_across_a_restart() {
    let mut t = TestServer::start().await;
    let admin = t.admin();
    let start = list_revision(&admin).await;
    let mut w = Sse::open(&admin, &format!("?since={start}"), None).await;
    admin.create_app("r1").await;
    admin
        .create_device("r1", json!({"metadata": {"name": "d1"}}))
        .await;
    put_ok(
        &admin,
        &format!("{APPS}/r1"),
        json!({"metadata": {"name": "r1", "labels": {"a": "b"}}}),
    )
    .await;
    let first = w.next_change().await;
    assert_eq!(first.what(), ev("application", "r1", None, "."));

    t.restart().await;
    // The old stream ends with the server (it may still deliver what it had read).
    let mut rest = Vec::new();
    while let Some(m) = tokio::time::timeout(DEADLINE, w.next_message())
        .await
        .expect("the watch did not end on shutdown")
    {
        rest.push(m);
    }
    assert!(rest.len() <= 2, "{rest:?}");

    let admin = t.admin();
    admin.create_app("r2").await;
    let mut w = Sse::open(&admin, &format!("?since={}", first.id), None).await;
    let cs = w.changes(3).await;
    assert_eq!(
        whats(&cs),
        [
            ev("device", "r1", Some("d1"), "."),
            ev("application", "r1", None, ".metadata"),
            ev("application", "r2", None, "."),
        ]
    );
    assert!(cs[0].id > first.id);
    assert_increasing(&cs);
    for (m, c) in rest.iter().zip(&cs) {
        assert_eq!(
            m.id.as_deref(),
            Some(c.id.to_string().as_str()),
            "same ids before and after the restart"
        );
    }
    admin.create_app("r3").await;
    assert_eq!(
        w.next_change().await.what(),
        ev("application", "r3", None, ".")
    );
}

#[tokio::test]
async fn users_see_only_changes_of_apps_they_may_read() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let start = list_revision(&bob).await;
    let mut bw = Sse::open(&bob, &format!("?since={start}"), None).await;
    let mut aw = Sse::open(&alice, &format!("?since={start}"), None).await;

    alice.create_app("alice-app").await;
    alice
        .create_device("alice-app", json!({"metadata": {"name": "d1"}}))
        .await;
    bob.create_app("bob-app").await;
    alice.create_app("alice-2").await;

    let c = bw.next_change().await;
    assert_eq!(
        c.what(),
        ev("application", "bob-app", None, "."),
        "bob sees alice's changes"
    );
    let cs = aw.changes(3).await;
    assert_eq!(
        whats(&cs),
        [
            ev("application", "alice-app", None, "."),
            ev("device", "alice-app", Some("d1"), "."),
            ev("application", "alice-2", None, "."),
        ],
        "alice sees bob's changes"
    );

    // Once bob may read alice-app, he sees its changes.
    let r = alice
        .put(
            "/api/admin/v1alpha1/apps/alice-app/members",
            &json!({"members": {"bob": {"role": "reader"}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    put_ok(
        &alice,
        &format!("{APPS}/alice-app"),
        json!({"metadata": {"name": "alice-app", "labels": {"a": "b"}}}),
    )
    .await;
    let c = bw.next_change().await;
    assert_eq!(c.what(), ev("application", "alice-app", None, ".metadata"));

    // The administrator sees everything.
    let mut all = Sse::open(&t.admin(), &format!("?since={start}"), None).await;
    let cs = all.changes(5).await;
    let apps: Vec<&str> = cs.iter().map(|c| c.app.as_str()).collect();
    assert_eq!(
        apps,
        ["alice-app", "alice-app", "bob-app", "alice-2", "alice-app"]
    );
}

#[tokio::test]
async fn app_filter() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let start = list_revision(&admin).await;
    admin.create_app("f1").await;
    // The watch of an application starts once it exists, from any earlier revision.
    let mut w = Sse::open(&admin, &format!("?since={start}&app=f1"), None).await;

    admin.create_app("f2").await;
    admin
        .create_device("f2", json!({"metadata": {"name": "d1"}}))
        .await;
    admin
        .create_device("f1", json!({"metadata": {"name": "d1"}}))
        .await;
    put_ok(
        &admin,
        &format!("{APPS}/f2"),
        json!({"metadata": {"name": "f2", "labels": {"a": "b"}}}),
    )
    .await;
    put_ok(
        &admin,
        &format!("{APPS}/f1"),
        json!({"metadata": {"name": "f1", "labels": {"a": "b"}}}),
    )
    .await;

    let cs = w.changes(3).await;
    assert_eq!(
        whats(&cs),
        [
            ev("application", "f1", None, "."),
            ev("device", "f1", Some("d1"), "."),
            ev("application", "f1", None, ".metadata"),
        ]
    );
    assert_increasing(&cs);
}

/// A watch of an application that does not exist, or that the caller may not read, is a 404 like
/// every other call naming it (and the same 404 for both: no existence leak).
#[tokio::test]
async fn app_filter_of_an_unknown_or_unreadable_app_is_404() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    alice.create_app("private").await;

    let r = alice.get(&format!("{WATCH}?app=nope")).await;
    let unknown = expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = bob.get(&format!("{WATCH}?app=private&since=0")).await;
    let unreadable = expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    assert_eq!(
        unknown.replace("nope", "X"),
        unreadable.replace("private", "X"),
        "the same answer for unknown and unreadable"
    );
    let mut w = Sse::open(&alice, "?app=private&since=0", None).await;
    assert_eq!(
        w.next_change().await.what(),
        ev("application", "private", None, ".")
    );
}

#[tokio::test]
async fn cascading_delete_emits_device_then_app_events() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let app = admin.create_app("c1").await;
    let d2 = admin
        .create_device("c1", json!({"metadata": {"name": "d2"}}))
        .await;
    let d1 = admin
        .create_device("c1", json!({"metadata": {"name": "d1"}}))
        .await;
    let start = list_revision(&admin).await;
    let mut w = Sse::open(&admin, &format!("?since={start}"), None).await;

    delete_ok(&admin, &format!("{APPS}/c1")).await;
    let cs = w.changes(3).await;
    assert_increasing(&cs);
    let mut devices: Vec<(String, Option<String>, String)> = whats(&cs[..2]);
    devices.sort();
    assert_eq!(
        devices,
        [
            ev("device", "c1", Some("d1"), "."),
            ev("device", "c1", Some("d2"), ".")
        ]
    );
    for c in &cs[..2] {
        let expected = if c.device.as_deref() == Some("d1") {
            uid(&d1)
        } else {
            uid(&d2)
        };
        assert_eq!(c.uid, expected);
    }
    assert_eq!(cs[2].what(), ev("application", "c1", None, "."));
    assert_eq!(cs[2].uid, uid(&app));

    let r = admin.get(&format!("{APPS}/c1")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    admin.create_app("sentinel").await;
    assert_eq!(
        w.next_change().await.what(),
        ev("application", "sentinel", None, ".")
    );
}

#[tokio::test]
async fn finalizers_hold_deletes() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let app = admin
        .post(
            APPS,
            &json!({"metadata": {"name": "held", "finalizers": ["example.com/cleanup"]}}),
        )
        .await;
    assert_eq!(app.status(), StatusCode::CREATED);
    let start = list_revision(&admin).await;
    let mut w = Sse::open(&admin, &format!("?since={start}"), None).await;

    delete_ok(&admin, &format!("{APPS}/held")).await;
    let c = w.next_change().await;
    assert_eq!(c.what(), ev("application", "held", None, ".metadata"));
    let doc = admin.get_json(&format!("{APPS}/held")).await;
    assert!(doc["metadata"]["deletionTimestamp"].is_string(), "{doc}");

    // The controller removes its finalizer: the app goes.
    put_ok(
        &admin,
        &format!("{APPS}/held"),
        json!({"metadata": {"name": "held", "finalizers": []}}),
    )
    .await;
    let c = w.next_change().await;
    assert_eq!(c.what(), ev("application", "held", None, "."));
    let r = admin.get(&format!("{APPS}/held")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;

    // A device with a finalizer holds its app.
    admin.create_app("parent").await;
    admin
        .create_device(
            "parent",
            json!({"metadata": {"name": "d1", "finalizers": ["ctl"]}}),
        )
        .await;
    admin
        .create_device("parent", json!({"metadata": {"name": "d2"}}))
        .await;
    let cs = w.changes(3).await;
    assert_eq!(cs[0].what(), ev("application", "parent", None, "."));
    delete_ok(&admin, &format!("{APPS}/parent")).await;
    let cs = w.changes(3).await;
    assert_increasing(&cs);
    let mut devices = whats(&cs[..2]);
    devices.sort();
    assert_eq!(
        devices,
        [
            ev("device", "parent", Some("d1"), ".metadata"),
            ev("device", "parent", Some("d2"), ".")
        ]
    );
    assert_eq!(cs[2].what(), ev("application", "parent", None, ".metadata"));
    let doc = admin.get_json(&format!("{APPS}/parent")).await;
    assert!(doc["metadata"]["deletionTimestamp"].is_string(), "{doc}");

    put_ok(
        &admin,
        &format!("{APPS}/parent/devices/d1"),
        json!({"metadata": {"name": "d1", "finalizers": []}}),
    )
    .await;
    let cs = w.changes(2).await;
    assert_eq!(
        whats(&cs),
        [
            ev("device", "parent", Some("d1"), "."),
            ev("application", "parent", None, ".")
        ]
    );
    let r = admin.get(&format!("{APPS}/parent")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
}

/// CloudEvent `source` is compared as a string by consumers: RFC 3986 producers must not
/// percent-encode unreserved characters (`A-Z a-z 0-9 - . _ ~`), so `drogue://my-app/dev-1.a_b~c`
/// stays as it is, while reserved characters of device names are encoded.
#[tokio::test]
async fn change_event_source_encodes_only_what_it_must() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let start = list_revision(&admin).await;
    let mut w = Sse::open(&admin, &format!("?since={start}"), None).await;
    admin.create_app("my-app").await;
    admin
        .create_device("my-app", json!({"metadata": {"name": "dev-1.a_b~c"}}))
        .await;
    admin
        .create_device("my-app", json!({"metadata": {"name": "a/b c"}}))
        .await;
    let cs = w.changes(3).await;
    assert_eq!(cs[0].event["source"], "drogue://my-app");
    assert_eq!(cs[1].event["source"], "drogue://my-app/dev-1.a_b~c");
    assert_eq!(cs[2].event["source"], "drogue://my-app/a%2Fb%20c");
}
