//! Clients of the nodes: MQTT devices and WebSocket consumers.

use std::time::Duration;

use crate::node::{Node, TOKEN, WAIT};
use futures::StreamExt;
use rumqttc::{Event, Packet, QoS};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A v3.1.1 device connection; `filter` subscribed when given. Returns the CONNACK's code.
pub(crate) async fn mqtt_device(
    node: &Node,
    client_id: &str,
    password: &str,
    filter: Option<&str>,
) -> (
    rumqttc::AsyncClient,
    rumqttc::EventLoop,
    rumqttc::ConnectReturnCode,
) {
    let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", node.mqtt_port);
    o.set_credentials("dev1@app", password);
    o.set_keep_alive(Duration::from_secs(30));
    let (c, mut el) = rumqttc::AsyncClient::new(o, 10);
    let code = tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => return a.code,
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return code,
                Err(e) => panic!("MQTT connect failed: {e}"),
            }
        }
    })
    .await
    .expect("CONNACK within the deadline");
    if let (Some(f), rumqttc::ConnectReturnCode::Success) = (filter, code) {
        c.subscribe(f, QoS::AtLeastOnce).await.unwrap();
        next(&mut el, |e| {
            matches!(e, Event::Incoming(Packet::SubAck(_))).then_some(())
        })
        .await;
    }
    (c, el, code)
}

pub(crate) async fn next<T>(
    el: &mut rumqttc::EventLoop,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(e) => {
                    if let Some(t) = f(&e) {
                        return t;
                    }
                }
                Err(e) => panic!("MQTT connection failed: {e}"),
            }
        }
    })
    .await
    .expect("MQTT event within the deadline")
}

/// Waits until the connection is closed by the server.
pub(crate) async fn closed(el: &mut rumqttc::EventLoop) {
    tokio::time::timeout(WAIT, async {
        loop {
            if el.poll().await.is_err() {
                return;
            }
        }
    })
    .await
    .expect("the connection to be closed within the deadline")
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the WebSocket integration of `app` on `node` as the administrator.
pub(crate) async fn ws_open(node: &Node, query: &str) -> Ws {
    let mut req = format!(
        "{}{}app{query}",
        node.api.replacen("http", "ws", 1),
        drover_api::WS_PATH
    )
    .into_client_request()
    .unwrap();
    req.headers_mut()
        .insert("authorization", basic("admin", TOKEN).parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// The next event of a WebSocket consumer.
pub(crate) async fn ws_event(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an event within the deadline")
            .expect("the stream goes on")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

pub(crate) fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}
