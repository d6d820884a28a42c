//! The WebSocket integration: an application's events, one structured JSON CloudEvent per text
//! frame. A named group resumes from its committed offset; without a group (or with a new one)
//! the stream starts live, unless the client asks for everything retained. A slow client lags on
//! the durable log — it never slows ingestion — and is disconnected past a configurable lag.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use drover_bus::{Consumer, EventLog, StartFrom, StreamKey};
use futures::{SinkExt, StreamExt};

use crate::cloudevent;

/// Close code for a consumer that fell too far behind (1008: policy violation).
pub const CLOSE_LAGGING: u16 = 1008;
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
    /// Disconnect when this many events behind the end of the stream.
    pub max_lag: u64,
}

/// Events read from the log per batch (bounds memory per client).
const BATCH: usize = 100;

type Sink = futures::stream::SplitSink<WebSocket, Message>;

async fn close(sink: &mut Sink, code: u16, reason: String) {
    tracing::debug!(code, %reason, "closing websocket");
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens the consumer a client asked for. Done before the WebSocket handshake completes, so
/// "live" means every event appended after the client got its `101 Switching Protocols`.
pub async fn open(
    log: &dyn EventLog,
    stream: &StreamKey,
    opts: &StreamOptions,
) -> drover_bus::Result<Box<dyn Consumer>> {
    let start = match &opts.group {
        Some(group) => match log.committed(stream, group).await? {
            Some(offset) => StartFrom::After(offset),
            None if opts.from_earliest => StartFrom::Earliest,
            None => StartFrom::Latest,
        },
        None if opts.from_earliest => StartFrom::Earliest,
        None => StartFrom::Latest,
    };
    tracing::debug!(app = %stream.app, group = ?opts.group, ?start, "websocket consumer opened");
    log.consume(stream, start).await
}

/// Streams the consumer's events to the client until it goes away, the application is deleted,
/// or the server shuts down (`shutdown` turns true).
pub async fn serve(
    socket: WebSocket,
    mut consumer: Box<dyn Consumer>,
    log: Arc<dyn EventLog>,
    stream: StreamKey,
    opts: StreamOptions,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
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
    loop {
        let batch = tokio::select! {
            b = consumer.next_batch(BATCH) => b,
            _ = &mut gone => return,
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return close(&mut sink, CLOSE_GOING_AWAY, "server shutting down".into()).await,
        };
        let batch = match batch {
            Ok(b) if b.is_empty() => {
                return close(
                    &mut sink,
                    CLOSE_GOING_AWAY,
                    format!("application '{}' was deleted", stream.app),
                )
                .await
            }
            Ok(b) => b,
            Err(e) => {
                return close(
                    &mut sink,
                    CLOSE_ERROR,
                    format!("event log unavailable: {e}"),
                )
                .await
            }
        };
        let mut last = 0;
        for record in batch {
            let lag = consumer.end().saturating_sub(record.offset);
            if opts.max_lag > 0 && lag > opts.max_lag {
                tracing::info!(app = %stream.app, group = ?opts.group, lag, "disconnecting lagging websocket consumer");
                if let (Some(g), true) = (&opts.group, last > 0) {
                    let _ = log.commit(&stream, g, last).await;
                }
                return close(
                    &mut sink,
                    CLOSE_LAGGING,
                    format!(
                        "consumer too slow: {lag} events behind (limit {})",
                        opts.max_lag
                    ),
                )
                .await;
            }
            last = record.offset;
            if opts
                .channel
                .as_ref()
                .is_some_and(|c| *c != record.event.channel)
            {
                continue;
            }
            let text = cloudevent::to_json(&record.event).to_string();
            if sink.send(Message::Text(text.into())).await.is_err() {
                // Gone: what was not sent is not committed, the group gets it again.
                return;
            }
        }
        if let Some(g) = &opts.group {
            if let Err(e) = log.commit(&stream, g, last).await {
                tracing::warn!(app = %stream.app, group = %g, "cannot commit websocket group offset: {e}");
            }
        }
    }
}
