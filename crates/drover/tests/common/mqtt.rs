//! Driving a rumqttc client in tests: wait for an event, subscribe, publish with QoS 1, see a
//! refusal.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};

/// Polls `el` until `f` picks something out of an event (panics after 10 s or on an error).
pub async fn until<T>(el: &mut EventLoop, mut f: impl FnMut(&Event) -> Option<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(t) = f(&el.poll().await.unwrap()) {
                return t;
            }
        }
    })
    .await
    .expect("within 10 s")
}

/// The next PUBLISH whose topic starts with `prefix`.
pub async fn publish_on(el: &mut EventLoop, prefix: &str) -> rumqttc::Publish {
    until(el, |e| match e {
        Event::Incoming(Packet::Publish(p)) if p.topic.starts_with(prefix) => Some(p.clone()),
        _ => None,
    })
    .await
}

/// Subscribes to each filter at QoS 1, one SUBSCRIBE each, asserting it is granted.
pub async fn subscribe_all(c: &AsyncClient, el: &mut EventLoop, filters: &[&str]) {
    for f in filters {
        c.subscribe(*f, QoS::AtLeastOnce).await.unwrap();
        let codes = until(el, |e| match e {
            Event::Incoming(Packet::SubAck(s)) => Some(s.return_codes.clone()),
            _ => None,
        })
        .await;
        assert!(
            matches!(codes[..], [rumqttc::SubscribeReasonCode::Success(_)]),
            "{f}: {codes:?}"
        );
    }
}

/// Publishes at QoS 1 and waits for the PUBACK.
pub async fn published(c: &AsyncClient, el: &mut EventLoop, topic: &str, payload: &str) {
    c.publish(topic, QoS::AtLeastOnce, false, payload.to_string())
        .await
        .unwrap();
    until(el, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
    })
    .await;
}

/// The error that ends the connection of `el` (panics when it connects or nothing ends it
/// within 10 s).
pub async fn refusal(el: &mut EventLoop) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match el.poll().await {
                Err(e) => return e.to_string(),
                Ok(Event::Incoming(Packet::ConnAck(a)))
                    if a.code == rumqttc::ConnectReturnCode::Success =>
                {
                    panic!("connected")
                }
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("refused within 10 s")
}

/// Whether the MQTT connection of `el` ends (an error from the event loop) within `within`.
pub async fn closes(el: &mut EventLoop, within: Duration) -> bool {
    tokio::time::timeout(within, async { while el.poll().await.is_ok() {} })
        .await
        .is_ok()
}

/// MQTTS options for a device authenticated by a client certificate (`cert` PEM, `key` PEM),
/// trusting the server certificate's CA in `ca_file`.
pub fn mqtts_with_certificate(
    ca_file: &std::path::Path,
    port: u16,
    cert: &str,
    key: &str,
) -> rumqttc::MqttOptions {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let mut o = rumqttc::MqttOptions::new("cert-device", "localhost", port);
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(config)),
    ));
    o
}
