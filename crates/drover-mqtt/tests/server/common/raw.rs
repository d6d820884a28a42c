//! A raw MQTT client built on the codec, and the packets it sends.

use std::net::SocketAddr;

use super::server::WAIT;
use bytes::{Bytes, BytesMut};
use rmqtt_codec::{v3, v5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

/// A raw client: writes any bytes, decodes what the server sends with the codec.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    v3: v3::Codec,
    v5: v5::Codec,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Raw {
            stream,
            buf: BytesMut::new(),
            v3: v3::Codec::new(0),
            v5: v5::Codec::new(0, 0),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    pub async fn send_v5(&mut self, packet: impl Into<v5::Packet>) {
        let mut b = BytesMut::new();
        self.v5.encode(packet.into(), &mut b).expect("encode v5");
        self.send(&b).await;
    }

    pub async fn send_v3(&mut self, packet: v3::Packet) {
        let mut b = BytesMut::new();
        self.v3.encode(packet, &mut b).expect("encode v3");
        self.send(&b).await;
    }

    /// Next v5 packet; `None` once the server closed the connection.
    pub async fn recv_v5(&mut self) -> Option<v5::Packet> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some((p, _)) = self
                    .v5
                    .decode(&mut self.buf)
                    .expect("server sends valid v5")
                {
                    return Some(p);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("packet or close within deadline")
    }

    pub async fn recv_v3(&mut self) -> Option<v3::Packet> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some((p, _)) = self
                    .v3
                    .decode(&mut self.buf)
                    .expect("server sends valid v3")
                {
                    return Some(p);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("packet or close within deadline")
    }

    /// Reads until the server closes; panics if it sends anything but `allowed` bytes.
    pub async fn expect_closed(&mut self) {
        tokio::time::timeout(WAIT, async {
            let mut b = [0u8; 256];
            loop {
                match self.stream.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("server closes the connection");
    }

    /// Sends an MQTT 5 CONNECT and returns the CONNACK.
    pub async fn connect_v5(&mut self, connect: v5::Connect) -> v5::ConnectAck {
        self.send_v5(connect).await;
        match self.recv_v5().await {
            Some(v5::Packet::ConnectAck(ack)) => *ack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn connect_v3(&mut self, connect: v3::Connect) -> v3::ConnectAck {
        self.send_v3(v3::Packet::Connect(Box::new(connect))).await;
        match self.recv_v3().await {
            Some(v3::Packet::ConnectAck(ack)) => ack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

pub fn v5_connect(client_id: &str) -> v5::Connect {
    v5::Connect {
        client_id: client_id.into(),
        clean_start: true,
        keep_alive: 30,
        ..Default::default()
    }
}

pub fn v3_connect(client_id: &str) -> v3::Connect {
    v3::Connect {
        client_id: client_id.into(),
        clean_session: true,
        keep_alive: 30,
        ..Default::default()
    }
}

pub fn pid(n: u16) -> std::num::NonZeroU16 {
    std::num::NonZeroU16::new(n).expect("non-zero")
}

/// A v5 PUBLISH.
pub fn v5_publish(topic: &str, qos: u8, packet_id: u16, payload: &'static [u8]) -> v5::Packet {
    v5::Packet::Publish(Box::new(rmqtt_codec::types::Publish {
        dup: false,
        retain: false,
        qos: qos.try_into().expect("qos"),
        topic: topic.into(),
        packet_id: std::num::NonZeroU16::new(packet_id),
        payload: Bytes::from_static(payload),
        properties: Some(v5::PublishProperties::default()),
    }))
}

pub fn v3_publish(topic: &str, qos: u8, packet_id: u16, payload: &'static [u8]) -> v3::Packet {
    v3::Packet::Publish(Box::new(rmqtt_codec::types::Publish {
        dup: false,
        retain: false,
        qos: qos.try_into().expect("qos"),
        topic: topic.into(),
        packet_id: std::num::NonZeroU16::new(packet_id),
        payload: Bytes::from_static(payload),
        properties: None,
    }))
}

/// The reason code of a server DISCONNECT, or panics.
pub async fn expect_disconnect(raw: &mut Raw) -> u8 {
    match raw.recv_v5().await {
        Some(v5::Packet::Disconnect(d)) => {
            let code = u8::from(d.reason_code);
            raw.expect_closed().await;
            code
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}
