//! The bus's errors. Each keeps its cause: a [`Reason`] says what was being done and holds the
//! error that made it fail (an I/O error, a NATS error), reachable through
//! [`std::error::Error::source`]. As elsewhere in Drover (and in async-nats), an error's
//! `Display` also shows its cause's message, so that a log line or a protocol answer made of
//! `{e}` says everything on one line.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// Why an operation failed: what was being done (or what is wrong), and the error behind it,
/// if there is one. Cheap to clone (a failed batch answers every append in it with the same
/// reason).
#[derive(Clone)]
pub struct Reason {
    what: String,
    source: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

impl Reason {
    /// A condition that no other error caused (a limit, a check, a state).
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            source: None,
        }
    }

    /// `what` failed because of `source`.
    pub fn caused_by(what: impl Into<String>, source: impl Error + Send + Sync + 'static) -> Self {
        Self {
            what: what.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// What was being done, without the cause.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The same reason (the same cause) with what was being done said otherwise.
    pub(crate) fn reworded(&self, what: impl FnOnce(&str) -> String) -> Self {
        Self {
            what: what(&self.what),
            source: self.source.clone(),
        }
    }
}

impl From<String> for Reason {
    fn from(what: String) -> Self {
        Self::new(what)
    }
}

impl From<&str> for Reason {
    fn from(what: &str) -> Self {
        Self::new(what)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Reason");
        d.field("what", &self.what);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl Error for Reason {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

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
