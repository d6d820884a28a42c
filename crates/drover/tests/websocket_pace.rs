//! The WebSocket integration reads at the client's pace: a replay of a stream longer than the
//! lag limit is delivered whole; the lag limit applies to streams opened live only; a client
//! that stops reading is disconnected after the send timeout.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(30);

async fn start(ws_max_lag: u64, ws_send_timeout: Duration) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config = drover::Config {
        ws_max_lag,
        ws_send_timeout,
        ..common::config(dir.path())
    };
    let mut t = TestServer::start_with(config).await;
    t.dir = Some(dir);
    let admin = t.admin();
    admin.create_app("app").await;
    admin
        .create_device(
            "app",
            json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}}),
        )
        .await;
    t
}

async fn send(t: &TestServer, body: String) {
    let r = t
        .http
        .post(format!("{}/v1/telemetry", t.http_base))
        .basic_auth("dev1@app", Some("secret"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

async fn ws(t: &TestServer, query: &str) -> Ws {
    let url = format!(
        "{}?username=admin&api_key={}{query}",
        t.ws_url("app"),
        common::ADMIN_TOKEN
    );
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Reads until the stream ends: the events' `n`, and the close frame if there was one.
async fn read_all(ws: &mut Ws, expect: usize) -> (Vec<i64>, Option<(u16, String)>) {
    let mut seen = Vec::new();
    let close = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let ev: Value = serde_json::from_str(t.as_str()).unwrap();
                    seen.push(ev["data"]["n"].as_i64().unwrap());
                    if seen.len() == expect {
                        return None;
                    }
                }
                Some(Ok(Message::Close(Some(f)))) => {
                    return Some((u16::from(f.code), f.reason.to_string()))
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the stream neither ended nor delivered everything in time");
    (seen, close)
}

/// The attack: `from=earliest` on a stream longer than the lag limit used to be closed at once
/// with "consumer too slow". A replay reads from disk at the client's pace and is never cut off.
#[tokio::test]
async fn a_replay_longer_than_the_lag_limit_is_delivered_whole() {
    let t = start(5, Duration::from_secs(30)).await;
    for n in 0..40 {
        send(&t, format!("{{\"n\":{n}}}")).await;
    }
    let mut replay = ws(&t, "&from=earliest").await;
    let (seen, close) = read_all(&mut replay, 40).await;
    assert_eq!(close, None);
    assert_eq!(seen, (0..40).collect::<Vec<_>>());
    // A consumer group that resumes is a replay too.
    let mut group = ws(&t, "&from=earliest&group_id=g").await;
    let (seen, _) = read_all(&mut group, 40).await;
    assert_eq!(seen.len(), 40);
}

/// About 20 MB of events: more than loopback sockets buffer, so a client that does not read
/// makes the server wait on the socket.
async fn flood(t: &TestServer) -> usize {
    let pad = "x".repeat(100 * 1024);
    let n = 200;
    for i in 0..n {
        send(t, format!("{{\"n\":{i},\"pad\":\"{pad}\"}}")).await;
    }
    n
}

/// A stream opened live that falls further behind than `ws_max_lag` is closed (1008).
#[tokio::test]
async fn a_live_stream_falling_behind_the_limit_is_closed() {
    let t = start(5, Duration::from_secs(60)).await;
    let mut live = ws(&t, "").await;
    let n = flood(&t).await;
    let (seen, close) = read_all(&mut live, n).await;
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("too slow"), "{reason}");
    assert!(seen.len() < n);
}

/// A client that takes no frame for `ws_send_timeout` is disconnected: it holds the server's
/// socket and task, nothing else.
#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected() {
    let t = start(0, Duration::from_secs(1)).await;
    let mut idle = ws(&t, "").await;
    let n = flood(&t).await;
    // The server waits on the full socket for the send timeout, then gives up. (The close frame
    // itself may not fit into the full socket: the connection then just ends.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (seen, close) = read_all(&mut idle, n).await;
    assert!(
        seen.len() < n,
        "every event was delivered to a client that did not read"
    );
    if let Some((code, reason)) = close {
        assert_eq!(code, 1008);
        assert!(reason.contains("not reading"), "{reason}");
    }
}
