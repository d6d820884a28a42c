//! The bus's errors. Each keeps its cause: a [`Reason`] (drover-model's, shared by every crate)
//! says what was being done and holds the error that made it fail (an I/O error, a NATS error),
//! reachable through [`std::error::Error::source`]; an error's `Display` also shows its cause's
//! message.

use std::error::Error;

pub use drover_model::error::Reason;

/// What an [`EventLog`](crate::EventLog) operation failed with. The endpoints map it to their
/// protocols in one place each: `TooLarge` is HTTP 413 / MQTT 0x97, `Overloaded`,
/// `Unavailable` and `Closed` are HTTP 503 (MQTT 0x97 for `Overloaded`, 0x83 otherwise),
/// `Invalid` is HTTP 400.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// The log cannot take more right now (back-pressure); retry later.
    #[error("event log overloaded: {0}")]
    Overloaded(String),
    /// The event is larger than the log accepts.
    #[error("event too large: {0}")]
    TooLarge(String),
    /// Storage failed, or the backend cannot be reached; nothing was acknowledged.
    #[error("event log unavailable: {0}")]
    Unavailable(#[source] Reason),
    /// The log is shutting down.
    #[error("event log closed")]
    Closed,
    /// The request cannot be served as it is (a bad name, a deleted stream, an offset beyond
    /// the end, a bad configuration).
    #[error("invalid request: {0}")]
    Invalid(#[source] Reason),
}

impl BusError {
    /// [`BusError::Unavailable`]: `what` failed because of `source`.
    pub fn unavailable(
        what: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable(Reason::caused_by(what, source))
    }
}

pub type Result<T> = std::result::Result<T, BusError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_kept_and_shown() {
        let io = std::io::Error::other("disk full");
        let e = BusError::unavailable("writing segment 1", io);
        assert_eq!(
            e.to_string(),
            "event log unavailable: writing segment 1: disk full"
        );
        let reason = e.source().expect("a reason");
        assert_eq!(reason.to_string(), "writing segment 1: disk full");
        let cause = reason.source().expect("the cause");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(cause.to_string(), "disk full");

        let plain = BusError::Invalid("offset 9 is beyond the end of the stream (3)".into());
        assert_eq!(
            plain.to_string(),
            "invalid request: offset 9 is beyond the end of the stream (3)"
        );
        assert!(plain.source().and_then(Error::source).is_none());
        let copy = e.clone();
        assert_eq!(copy.to_string(), e.to_string());
    }
}
