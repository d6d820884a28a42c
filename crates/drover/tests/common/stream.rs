//! Reading an application's event stream in tests: the WebSocket integration, as an
//! administrator.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::{TestServer, ADMIN_TOKEN};

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a test waits for an event.
pub const WAIT: Duration = Duration::from_secs(10);

/// The stream of `app` (with `?from=earliest` and the like in `query`, if given).
pub async fn open(t: &TestServer, app: &str, query: &str) -> Ws {
    let sep = if query.is_empty() { "" } else { "&" };
    let url = format!(
        "{}?username=admin&api_key={ADMIN_TOKEN}{sep}{query}",
        t.ws_url(app)
    );
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next event (panics when none comes within [`WAIT`] or the stream closes).
pub async fn next_event(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no event within 10 s")
            .expect("the stream ended")
            .unwrap()
        {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// The next event of type `ty`, skipping others.
pub async fn next_of_type(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let ev = next_event(ws).await;
        if ev["type"] == ty {
            return ev;
        }
    }
}
