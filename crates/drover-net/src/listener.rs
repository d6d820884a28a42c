//! The accept loop: cap, TLS handshake, a task and a span per connection, graceful stop.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::stream::{Peer, Stream, TlsInfo};

/// Connections a listener serves at once unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Connections over the cap that are answered with a refusal at once, per listener; further
/// ones are closed without an answer.
pub const MAX_REFUSING: usize = 64;
/// Pause after a failed `accept` (e.g. out of file descriptors), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning about refused connections per listener in this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// An accepted connection, after its TLS handshake when the listener has TLS.
#[derive(Debug)]
pub struct Connection {
    pub stream: Stream,
    pub peer: Peer,
}

/// What a protocol does with the connections of a [`Listener`].
pub trait Handler: Send + Sync + 'static {
    /// Serves one connection until it ends. `stop` is cancelled when the listener stops: end
    /// the connection gracefully (finish requests, tell the client), soon.
    fn serve(
        self: Arc<Self>,
        conn: Connection,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send;

    /// Answers a connection that arrived while `limit` connections were open with the
    /// protocol's refusal, then closes it. It should not take long: at most [`MAX_REFUSING`]
    /// refusals run at once.
    fn refuse(self: Arc<Self>, conn: Connection, limit: usize) -> impl Future<Output = ()> + Send;
}

/// A bound TCP listener with its name (for logs), its cap and, optionally, TLS.
pub struct Listener {
    tcp: TcpListener,
    name: &'static str,
    max_connections: usize,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name)
            .field("addr", &self.tcp.local_addr().ok())
            .field("max_connections", &self.max_connections)
            .field("tls", &self.tls.is_some())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl Listener {
    /// A plain TCP listener named `name` in logs, with [`DEFAULT_MAX_CONNECTIONS`].
    pub fn new(tcp: TcpListener, name: &'static str) -> Listener {
        Listener {
            tcp,
            name,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// At most `n` connections open at once (at least 1).
    pub fn max_connections(mut self, n: usize) -> Listener {
        self.max_connections = n.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// Every connection starts with a TLS handshake with `acceptor`.
    pub fn tls(mut self, acceptor: TlsAcceptor) -> Listener {
        self.tls = Some(acceptor);
        self
    }

    /// How long a TLS handshake may take (default 10 s); slower clients are closed.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Listener {
        self.handshake_timeout = timeout;
        self
    }

    /// The listener's name in logs.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The cap on open connections.
    pub fn limit(&self) -> usize {
        self.max_connections
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts connections and hands each to `handler` in a task of its own until `shutdown`
    /// resolves; then stops accepting, cancels the connections' `stop` token and returns once
    /// every connection task has ended. Dropping the returned future aborts them.
    pub async fn serve<H: Handler>(self, handler: H, shutdown: impl Future<Output = ()> + Send) {
        let Listener {
            tcp,
            name,
            max_connections,
            tls,
            handshake_timeout,
        } = self;
        let handler = Arc::new(handler);
        let opener = Opener {
            tls,
            handshake_timeout,
        };
        let slots = Arc::new(Semaphore::new(max_connections));
        let refusals = Arc::new(Semaphore::new(MAX_REFUSING));
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut refused = RefusalLog::default();
        let mut shutdown = pin!(shutdown);
        loop {
            let (socket, addr) = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            tracing::error!(listener = name, "a connection task panicked");
                        }
                    }
                    continue;
                }
                accepted = tcp.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(listener = name, error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            if let Err(e) = socket.set_nodelay(true) {
                tracing::debug!(listener = name, peer = %addr, error = %e, "cannot set TCP_NODELAY");
            }
            let span = tracing::info_span!("connection", listener = name, peer = %addr);
            let (handler, opener) = (handler.clone(), opener.clone());
            match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let stop = stop.clone();
                    tasks.spawn(
                        async move {
                            if let Some(conn) = opener.open(socket, addr, Some(slot)).await {
                                handler.serve(conn, stop).await;
                            }
                        }
                        .instrument(span),
                    );
                }
                Err(_) => {
                    refused.note(name, max_connections);
                    // Refusals are answered by a bounded number of tasks; the rest are closed.
                    if let Ok(permit) = refusals.clone().try_acquire_owned() {
                        tasks.spawn(
                            async move {
                                if let Some(conn) = opener.open(socket, addr, None).await {
                                    handler.refuse(conn, max_connections).await;
                                }
                                drop(permit);
                            }
                            .instrument(span),
                        );
                    }
                }
            }
        }
        drop(tcp);
        stop.cancel();
        while tasks.join_next().await.is_some() {}
    }
}

/// Turns an accepted socket into a [`Connection`]: the TLS handshake, when there is TLS.
#[derive(Clone)]
struct Opener {
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
}

impl Opener {
    async fn open(
        &self,
        socket: TcpStream,
        addr: SocketAddr,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Option<Connection> {
        let Some(acceptor) = &self.tls else {
            return Some(Connection {
                stream: Stream::tcp(socket, slot),
                peer: Peer { addr, tls: None },
            });
        };
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(socket)).await {
            Ok(Ok(tls)) => {
                let info = TlsInfo::of(tls.get_ref().1);
                Some(Connection {
                    stream: Stream::tls(tls, slot),
                    peer: Peer {
                        addr,
                        tls: Some(Arc::new(info)),
                    },
                })
            }
            Ok(Err(e)) => {
                tracing::debug!("TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                tracing::debug!(
                    "TLS handshake not complete within {:?}; closed",
                    self.handshake_timeout
                );
                None
            }
        }
    }
}

/// Counts refused connections and warns about them at most every [`REFUSAL_LOG_INTERVAL`].
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    since: u64,
}

impl RefusalLog {
    fn note(&mut self, listener: &'static str, limit: usize) {
        self.since += 1;
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_INTERVAL)
        {
            tracing::warn!(
                listener,
                limit,
                refused = self.since,
                "refusing connections: {limit} connections are open, the listener's limit"
            );
            self.last = Some(now);
            self.since = 0;
        }
    }
}
