//! One subscription's delivery: reads the application's stream from the subscription's
//! committed offset, sends the matching events in order (one request at a time, so per device
//! and overall in stream order), retries failed requests with exponential back-off and jitter,
//! gives up on a request after its retry budget (a dead letter per event) and commits each
//! offset once its event was delivered or given up.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use drover_bus::{Consumer, EventLog, Record, StartFrom, StreamKey};
use drover_model::webhook::{DeadLetter, StartAt, SIGNATURE_HEADER};
use drover_registry::{StoredWebhook, WebhookProgress, WebhookStore};
use reqwest::{Method, StatusCode};
use tokio_util::sync::CancellationToken;

use super::format::{self, Body};
use super::{group, DeliveryError};
use crate::eventgrid;
use crate::outbound::{OutboundClient, OutboundError};

/// Records read from the log at once (what a subscription holds in memory, at most).
const READ_BATCH: usize = 100;
/// Most of a sink's answer that is read (the rest is dropped with the connection).
const MAX_ANSWER: usize = 64 * 1024;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How often counters are written while all goes well.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Pause after the log or the registry failed.
const BACKEND_PAUSE: Duration = Duration::from_secs(1);

/// What a subscription's delivery needs.
pub(super) struct Delivery {
    pub store: Arc<dyn WebhookStore>,
    pub log: Arc<dyn EventLog>,
    pub client: OutboundClient,
    pub sub: StoredWebhook,
    pub cancel: CancellationToken,
}

/// Why a request failed.
struct Failure {
    message: String,
    /// Trying again cannot help (a 4xx such as 400 or 413, a redirect, a refused address).
    permanent: bool,
    /// The sink asked to wait this long (429, 503).
    retry_after: Option<Duration>,
}

impl Failure {
    fn from_outbound(e: OutboundError) -> Self {
        let permanent = !matches!(e, OutboundError::Transport(ref t) if !t.is_builder());
        Self {
            message: e.to_string(),
            permanent,
            retry_after: None,
        }
    }
}

/// Counters and state not yet written to the registry.
#[derive(Default)]
struct Report {
    pending: WebhookProgress,
    last: Option<Instant>,
}

impl Delivery {
    fn key(&self) -> StreamKey {
        StreamKey::new(
            self.sub.webhook.metadata.application.clone(),
            self.sub.app_uid.clone(),
        )
    }

    fn uid(&self) -> &str {
        &self.sub.webhook.metadata.uid
    }

    /// Delivers until cancelled, the subscription is gone or the stream is deleted.
    pub async fn run(self) -> Result<(), DeliveryError> {
        let key = self.key();
        let group = group(self.uid());
        let Some(mut consumer) = self.open(&key, &group).await? else {
            return Ok(());
        };
        let mut report = Report::default();
        let validate = self.sub.webhook.spec.validation_handshake && !self.sub.validated;
        if validate && !self.handshake(&mut report).await? {
            return Ok(());
        }
        let mut queue: VecDeque<Record> = VecDeque::with_capacity(READ_BATCH);
        loop {
            if queue.is_empty() {
                self.flush(&mut report, true).await?;
                let batch = tokio::select! {
                    _ = self.cancel.cancelled() => return Ok(()),
                    b = consumer.next_batch(READ_BATCH) => b,
                };
                match batch {
                    Ok(b) if b.is_empty() => return Ok(()), // stream deleted, log closed
                    Ok(b) => queue.extend(b),
                    Err(e) => {
                        tracing::warn!(webhook = %self.sub.webhook.metadata.name, app = %key.app,
                            error = %drover_model::error::chain(&e), "webhook: cannot read the event stream; will retry");
                        self.pause().await;
                        return Err(DeliveryError::Log(e));
                    }
                }
            }
            // The next request: up to maxEvents matching records; others are skipped.
            let spec = &self.sub.webhook.spec;
            let mut records = Vec::new();
            let mut last = 0;
            while records.len() < spec.max_events as usize {
                let Some(r) = queue.pop_front() else { break };
                last = r.offset;
                if spec.matches(&r.event) {
                    records.push(r);
                }
            }
            if !records.is_empty() && !self.deliver(&records, &mut report).await? {
                return Ok(()); // cancelled: nothing committed, the next holder sends again
            }
            if let Err(e) = self.log.commit(&key, &group, last).await {
                tracing::warn!(webhook = %self.sub.webhook.metadata.name, app = %key.app,
                    error = %drover_model::error::chain(&e), "webhook: cannot commit; will retry");
                return Err(DeliveryError::Log(e));
            }
            self.flush(&mut report, false).await?;
        }
    }

    /// The consumer, from the committed offset (or where the spec says a new subscription
    /// starts). `None` when cancelled.
    async fn open(
        &self,
        key: &StreamKey,
        group: &str,
    ) -> Result<Option<Box<dyn Consumer>>, DeliveryError> {
        let from = match self
            .log
            .committed(key, group)
            .await
            .map_err(DeliveryError::Log)?
        {
            Some(o) => StartFrom::After(o),
            None => match self.sub.webhook.spec.start_at {
                StartAt::Now => StartFrom::Latest,
                StartAt::Earliest => StartFrom::Earliest,
            },
        };
        tokio::select! {
            _ = self.cancel.cancelled() => Ok(None),
            c = self.log.consume(key, from) => c.map(Some).map_err(DeliveryError::Log),
        }
    }

    async fn pause(&self) {
        tokio::select! {
            _ = self.cancel.cancelled() => {}
            _ = tokio::time::sleep(BACKEND_PAUSE) => {}
        }
    }

    /// Sends one request until it succeeds or its budget is spent (then its events become dead
    /// letters). Returns false when cancelled first.
    async fn deliver(
        &self,
        records: &[Record],
        report: &mut Report,
    ) -> Result<bool, DeliveryError> {
        let spec = &self.sub.webhook.spec;
        let body = format::body(spec, records);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = tokio::select! {
                // Cancelled mid-request: nothing committed, the next holder sends it again.
                _ = self.cancel.cancelled() => return Ok(false),
                sent = self.send(&body) => sent,
            };
            let failure = match sent {
                Ok(_) => {
                    report.pending.delivered += records.len() as u64;
                    report.pending.delivered_at = Some(Utc::now());
                    report.pending.retrying = 0;
                    return Ok(true);
                }
                Err(f) => f,
            };
            let name = &self.sub.webhook.metadata.name;
            report.pending.error = Some((failure.message.clone(), Utc::now()));
            if failure.permanent || attempt >= spec.retry.max_attempts {
                tracing::warn!(webhook = %name, app = %self.sub.webhook.metadata.application,
                    attempts = attempt, error = %failure.message, events = records.len(),
                    "webhook: giving up; events dead-lettered");
                for r in records {
                    self.dead_letter(r, &failure.message, attempt).await?;
                }
                report.pending.failed += records.len() as u64;
                report.pending.retrying = 0;
                self.flush(report, true).await?;
                return Ok(true);
            }
            report.pending.retrying = attempt;
            self.flush(report, true).await?;
            let delay = failure
                .retry_after
                .map(|d| d.min(MAX_RETRY_AFTER))
                .unwrap_or_else(|| {
                    backoff(
                        spec.retry.initial_delay_ms,
                        spec.retry.max_delay_ms,
                        attempt,
                    )
                });
            tracing::debug!(webhook = %name, attempt, ?delay, error = %failure.message, "webhook: will retry");
            tokio::select! {
                _ = self.cancel.cancelled() => return Ok(false),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn dead_letter(
        &self,
        r: &Record,
        error: &str,
        attempts: u32,
    ) -> Result<(), DeliveryError> {
        let letter = DeadLetter {
            seq: 0,
            offset: r.offset,
            event_id: r.event.id.clone(),
            event_type: r.event.ty.clone(),
            device: r.event.device.clone(),
            event: crate::cloudevent::to_json(&r.event),
            error: error.to_string(),
            attempts,
            time: Utc::now(),
        };
        self.store
            .add_dead_letter(self.uid(), &self.sub.webhook.metadata.application, &letter)
            .await
            .map_err(DeliveryError::Registry)
    }

    /// One request; the sink's answer (up to [`MAX_ANSWER`] bytes) when it is 2xx.
    async fn send(&self, body: &Body) -> Result<Vec<u8>, Failure> {
        let spec = &self.sub.webhook.spec;
        let mut req = self
            .client
            .request(Method::POST, &spec.url)
            .map_err(Failure::from_outbound)?
            .timeout(Duration::from_secs(spec.timeout_seconds));
        for (k, v) in &spec.headers {
            req = req.header(k, v);
        }
        if let Some(ct) = &body.content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        for (k, v) in &body.headers {
            req = req.header(k, v);
        }
        if let Some(secret) = &spec.secret {
            req = req.header(SIGNATURE_HEADER, format::signature(secret, &body.bytes));
        }
        let mut resp = self
            .client
            .send(req.body(body.bytes.clone()))
            .await
            .map_err(Failure::from_outbound)?;
        let status = resp.status();
        let mut answer = Vec::new();
        while answer.len() < MAX_ANSWER {
            match resp.chunk().await {
                Ok(Some(c)) => answer.extend_from_slice(&c),
                Ok(None) => break,
                Err(e) if status.is_success() => {
                    // The answer broke off: the sink took the request.
                    tracing::debug!(error = %e, "webhook: answer broke off");
                    break;
                }
                Err(_) => break,
            }
        }
        if status.is_success() {
            return Ok(answer);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        Err(Failure {
            message: format!("{} answered {status}", spec.url),
            permanent: permanent(status),
            retry_after: retry_after.filter(|_| {
                matches!(
                    status,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                )
            }),
        })
    }

    /// The Event Grid handshake, retried as deliveries are (a refused handshake is retried
    /// too: the sink may not be ready). Returns false when cancelled first.
    async fn handshake(&self, report: &mut Report) -> Result<bool, DeliveryError> {
        let spec = &self.sub.webhook.spec;
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            let code = uuid::Uuid::new_v4().to_string();
            let body = Body {
                bytes: eventgrid::validation_request(&self.sub.webhook.metadata.application, &code),
                content_type: Some(eventgrid::CONTENT_TYPE.into()),
                headers: vec![(
                    eventgrid::EVENT_TYPE_HEADER.into(),
                    eventgrid::VALIDATION.into(),
                )],
            };
            let sent = tokio::select! {
                _ = self.cancel.cancelled() => return Ok(false),
                sent = self.send(&body) => sent,
            };
            let error = match sent {
                Ok(answer) if eventgrid::validation_answered(&answer, &code) => {
                    report.pending.validated = true;
                    report.pending.retrying = 0;
                    self.flush(report, true).await?;
                    tracing::info!(webhook = %self.sub.webhook.metadata.name,
                        app = %self.sub.webhook.metadata.application, "webhook: validation handshake done");
                    return Ok(true);
                }
                Ok(_) => format!(
                    "validation handshake: {} did not answer with the validationResponse",
                    spec.url
                ),
                Err(f) => format!("validation handshake: {}", f.message),
            };
            report.pending.error = Some((error, Utc::now()));
            report.pending.retrying = attempt;
            self.flush(report, true).await?;
            let n = attempt.min(spec.retry.max_attempts);
            let delay = backoff(spec.retry.initial_delay_ms, spec.retry.max_delay_ms, n);
            tokio::select! {
                _ = self.cancel.cancelled() => return Ok(false),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Writes the pending counters, if any, when `now` or when they have waited
    /// [`REPORT_EVERY`]. (`retrying` changes only with an error or a delivery.)
    async fn flush(&self, report: &mut Report, now: bool) -> Result<(), DeliveryError> {
        let due = now || report.last.is_none_or(|t| t.elapsed() >= REPORT_EVERY);
        let p = &report.pending;
        let empty = p.delivered == 0 && p.failed == 0 && p.error.is_none() && !p.validated;
        if !due || empty {
            return Ok(());
        }
        let progress = std::mem::take(&mut report.pending);
        report.pending.retrying = progress.retrying;
        report.last = Some(Instant::now());
        match self
            .store
            .record_webhook_progress(self.uid(), &progress)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(DeliveryError::Gone),
            Err(e) => {
                // Counters are best effort: keep them for the next report.
                report.pending.delivered += progress.delivered;
                report.pending.failed += progress.failed;
                report.pending.validated |= progress.validated;
                tracing::debug!(error = %e, "webhook: progress not recorded");
                Ok(())
            }
        }
    }
}

/// Statuses that no retry can turn into a success.
fn permanent(status: StatusCode) -> bool {
    status.is_redirection()
        || matches!(
            status.as_u16(),
            400 | 405 | 410 | 411 | 413 | 414 | 415 | 422 | 431 | 501 | 505
        )
}

/// The delay before attempt `attempt + 1`: `initial · 2^(attempt-1)`, at most `max`, less a
/// random part of up to half (jitter: senders that failed together do not retry together).
pub(super) fn backoff(initial_ms: u64, max_ms: u64, attempt: u32) -> Duration {
    let exp = initial_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(32));
    let full = exp.min(max_ms);
    let jitter = rand::random::<f64>() * 0.5;
    Duration::from_millis(full - (full as f64 * jitter) as u64)
}

/// A `Retry-After` value: seconds, or an HTTP date.
fn retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    let wait = at.with_timezone(&Utc) - Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for _ in 0..100 {
            let d = backoff(100, 1000, 1).as_millis();
            assert!((50..=100).contains(&d), "{d}");
            let d = backoff(100, 1000, 3).as_millis();
            assert!((200..=400).contains(&d), "{d}");
            let d = backoff(100, 1000, 40).as_millis();
            assert!((500..=1000).contains(&d), "{d}");
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
        assert!(permanent(StatusCode::BAD_REQUEST));
        assert!(!permanent(StatusCode::TOO_MANY_REQUESTS));
        assert!(!permanent(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!permanent(StatusCode::NOT_FOUND));
    }
}
