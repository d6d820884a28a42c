//! MQTT on Drover's listeners (`drover-net`): the accept loop, its connection cap and TLS are
//! `drover-net`'s; a connection over the cap is answered CONNACK "Server busy".

use std::future::Future;
use std::sync::Arc;

use drover_net::{Connection, Handler, Listener, Peer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::policy::Policy;
use crate::server::{serve_connection, MqttServer};
use crate::types::ConnectionInfo;

/// Serves MQTT on `listener` (plain or TLS, with its connection cap) until `shutdown` resolves
/// or [`MqttServer::shutdown`] is called; then stops accepting, shuts the server down, and
/// returns once every connection has closed (see [`MqttServer::closed`]).
///
/// A TLS listener's handshake runs in the connection's own task; the client certificate chain
/// and server name reach the policy in [`ConnectionInfo`]. A connection arriving while the
/// listener's cap of connections is open gets CONNACK 0x89 Server busy (MQTT 3: 3 Server
/// unavailable) once it sent its CONNECT.
pub async fn serve<P: Policy>(
    listener: Listener,
    server: Arc<MqttServer<P>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let stop = {
        let server = server.clone();
        async move {
            tokio::select! {
                _ = shutdown => {}
                _ = server.shutdown_requested() => {}
            }
            // Connections end themselves on the server's shutdown (DISCONNECT 0x8B).
            server.shutdown();
        }
    };
    listener.serve(MqttHandler(server.clone()), stop).await;
    server.closed().await;
}

/// Accepts plain TCP connections on `listener`: [`serve`] with `drover-net`'s default cap.
pub async fn serve_tcp<P: Policy>(
    listener: TcpListener,
    server: Arc<MqttServer<P>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve(Listener::new(listener, "MQTT"), server, shutdown).await;
}

/// Accepts TLS connections on `listener` like [`serve_tcp`] (handshake within 10 s).
pub async fn serve_tls<P: Policy>(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    server: Arc<MqttServer<P>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve(
        Listener::new(listener, "MQTT over TLS").tls(acceptor),
        server,
        shutdown,
    )
    .await;
}

struct MqttHandler<P: Policy>(Arc<MqttServer<P>>);

fn connection_info(peer: &Peer) -> ConnectionInfo {
    let mut info = ConnectionInfo::new(peer.addr);
    if let Some(tls) = &peer.tls {
        if let Some(chain) = &tls.client_certificates {
            info = info.with_client_certificates(chain.as_ref().clone());
        }
        if let Some(name) = &tls.server_name {
            info = info.with_server_name(name.clone());
        }
    }
    info
}

impl<P: Policy> Handler for MqttHandler<P> {
    async fn serve(self: Arc<Self>, conn: Connection, _stop: CancellationToken) {
        // The server's own shutdown (called when the listener stops) ends the connection.
        serve_connection(conn.stream, connection_info(&conn.peer), self.0.clone()).await;
    }

    async fn refuse(self: Arc<Self>, conn: Connection, limit: usize) {
        let info = connection_info(&conn.peer);
        crate::handshake::refuse_busy(conn.stream, info, &self.0, limit).await;
    }
}
