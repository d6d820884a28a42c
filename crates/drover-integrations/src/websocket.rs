//! The WebSocket integration: an application's events, one structured JSON CloudEvent per text
//! frame. A named group resumes from its committed offset; without a group (or with a new one)
//! the stream starts live, unless the client asks for everything retained.
//!
//! Events are read from the durable log in batches of [`BATCH`] and sent at the client's pace:
//! a slow client lags on the log, which costs the server nothing per client, so a client
//! replaying a long history (`from=earliest`, a group resuming) is never cut off for lag. What a
//! client can hold on the server is its socket and this task: a client that does not take a
//! frame for [`StreamOptions::send_timeout`] is disconnected (1008 "client not reading"). An
//! application that prefers being disconnected to falling behind a *live* stream may set
//! [`StreamOptions::max_lag`] (streams opened live only; off by default). The stream ends when the
//! user loses access to the application (1008 "access revoked: ..."), when the application is
//! deleted (1001) or the server shuts down (1001).

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use drover_bus::{Consumer, EventLog, StartFrom, StreamKey};
use futures::{SinkExt, StreamExt};

use crate::cloudevent;

/// Close code for a live consumer that fell too far behind, a client that does not read, and a
/// user whose access was revoked (1008: policy violation).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code when the application was deleted or the server stops (1001: going away).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code when the event log failed (1011: internal error).
pub const CLOSE_ERROR: u16 = 1011;

/// What the client asked for.
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// Consumer group: resume from its committed offset.
    pub group: Option<String>,
    /// Start with the oldest retained event (when there is no committed offset).
    pub from_earliest: bool,
    /// Only events of this channel.
    pub channel: Option<String>,
    /// A stream opened live (no group offset, not from the earliest event) is disconnected when
    /// this many events behind the end of the stream (0: never).
    pub max_lag: u64,
    /// A client that does not take a frame for this long is disconnected.
    pub send_timeout: std::time::Duration,
}

impl StreamOptions {
    /// Whether the stream starts live: no group offset and not from the earliest event.
    fn starts_live(&self, committed: Option<drover_bus::Offset>) -> bool {
        committed.is_none() && !self.from_earliest
    }
}

/// Events read from the log per batch (bounds memory per client).
pub const BATCH: usize = 100;

type Sink = futures::stream::SplitSink<WebSocket, Message>;

/// Sends the close frame, unless the client does not take it within a second (a client that
/// does not read gets the connection closed without one).
async fn close(sink: &mut Sink, code: u16, reason: String) {
    tracing::debug!(code, %reason, "closing websocket");
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sink.send(frame)).await;
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A consumer as [`open`] opened it.
pub struct Opened {
    consumer: Box<dyn Consumer>,
    /// Whether the lag limit applies (the stream started live).
    live: bool,
}

/// Opens the consumer a client asked for. Done before the WebSocket handshake completes, so
/// "live" means every event appended after the client got its `101 Switching Protocols`.
pub async fn open(
    log: &dyn EventLog,
    stream: &StreamKey,
    opts: &StreamOptions,
) -> drover_bus::Result<Opened> {
    let committed = match &opts.group {
        Some(group) => log.committed(stream, group).await?,
        None => None,
    };
    let start = match committed {
        Some(offset) => StartFrom::After(offset),
        None if opts.from_earliest => StartFrom::Earliest,
        None => StartFrom::Latest,
    };
    tracing::debug!(app = %stream.app, group = ?opts.group, ?start, "websocket consumer opened");
    Ok(Opened {
        consumer: log.consume(stream, start).await?,
        live: opts.starts_live(committed),
    })
}

/// Streams the consumer's events to the client until it goes away, the application is deleted,
/// `revoked` resolves (the user lost access: its text is the close reason), or the server shuts
/// down (`shutdown` turns true).
pub async fn serve(
    socket: WebSocket,
    opened: Opened,
    log: Arc<dyn EventLog>,
    stream: StreamKey,
    opts: StreamOptions,
    revoked: impl std::future::Future<Output = String> + Send,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let Opened { mut consumer, live } = opened;
    let (mut sink, mut incoming) = socket.split();
    // Clients may send anything (drg sends token refreshes); only their going away matters. A
    // separate task watches for it, so reading the log is never interrupted half-way.
    let (gone_tx, mut gone) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        while let Some(Ok(msg)) = incoming.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
        let _ = gone_tx.send(());
    });
    let _watcher = AbortOnDrop(watcher);
    let mut revoked = std::pin::pin!(revoked);
    let ended = loop {
        let batch = tokio::select! {
            b = consumer.next_batch(BATCH) => b,
            _ = &mut gone => return,
            reason = &mut revoked => {
                tracing::info!(app = %stream.app, group = ?opts.group, "closing websocket stream: {reason}");
                break Some((CLOSE_POLICY, reason));
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break Some((CLOSE_GOING_AWAY, "server shutting down".into())),
        };
        let batch = match batch {
            Ok(b) if b.is_empty() => {
                break Some((
                    CLOSE_GOING_AWAY,
                    format!("application '{}' was deleted", stream.app),
                ))
            }
            Ok(b) => b,
            Err(e) => break Some((CLOSE_ERROR, format!("event log unavailable: {e}"))),
        };
        match send_batch(&mut sink, &mut *consumer, batch, &opts, live).await {
            Sent::All(last) => commit(&*log, &stream, &opts, last).await,
            Sent::Stopped { last, close } => {
                commit(&*log, &stream, &opts, last).await;
                break close;
            }
        }
    };
    if let Some((code, reason)) = ended {
        close(&mut sink, code, reason).await;
    }
}

/// How sending a batch ended.
enum Sent {
    /// Every event was sent; the offset of the last one read.
    All(drover_bus::Offset),
    /// Stopped early: the last offset sent (0: none), and how to close (`None`: the client is
    /// gone).
    Stopped {
        last: drover_bus::Offset,
        close: Option<(u16, String)>,
    },
}

async fn send_batch(
    sink: &mut Sink,
    consumer: &mut dyn Consumer,
    batch: Vec<drover_bus::Record>,
    opts: &StreamOptions,
    live: bool,
) -> Sent {
    let mut last = 0;
    for record in batch {
        let lag = consumer.end().saturating_sub(record.offset);
        if live && opts.max_lag > 0 && lag > opts.max_lag {
            tracing::info!(group = ?opts.group, lag, "disconnecting a live websocket consumer that fell behind");
            return Sent::Stopped {
                last,
                close: Some((
                    CLOSE_POLICY,
                    format!(
                        "consumer too slow: {lag} events behind the live stream (limit {})",
                        opts.max_lag
                    ),
                )),
            };
        }
        if opts
            .channel
            .as_ref()
            .is_none_or(|c| *c == record.event.channel)
        {
            let text = cloudevent::to_json(&record.event).to_string();
            match tokio::time::timeout(opts.send_timeout, sink.send(Message::Text(text.into())))
                .await
            {
                Ok(Ok(())) => {}
                // Gone: what was not sent is not committed, the group gets it again.
                Ok(Err(_)) => return Sent::Stopped { last, close: None },
                Err(_) => {
                    tracing::info!(group = ?opts.group, "disconnecting a websocket client that does not read");
                    return Sent::Stopped {
                        last,
                        close: Some((
                            CLOSE_POLICY,
                            format!(
                                "client not reading: no frame taken for {} s",
                                opts.send_timeout.as_secs()
                            ),
                        )),
                    };
                }
            }
        }
        last = record.offset;
    }
    Sent::All(last)
}

/// Commits a group's offset (nothing without a group or before the first event).
async fn commit(
    log: &dyn EventLog,
    stream: &StreamKey,
    opts: &StreamOptions,
    last: drover_bus::Offset,
) {
    if let (Some(g), true) = (&opts.group, last > 0) {
        if let Err(e) = log.commit(stream, g, last).await {
            tracing::warn!(app = %stream.app, group = %g, "cannot commit websocket group offset: {e}");
        }
    }
}
