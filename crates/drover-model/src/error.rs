//! Errors that keep their cause, the same way in every crate: a [`Reason`] says what was being
//! done and holds the error that made it fail (an I/O error, a database or NATS error),
//! reachable through [`std::error::Error::source`]. As elsewhere in Drover (and in async-nats),
//! an error's `Display` also shows its cause's message, so that a log line or a protocol answer
//! made of `{e}` says everything on one line; [`chain`] prints an error with every cause not
//! already in its message, for where the outermost error does not show them.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// Why an operation failed: what was being done (or what is wrong), and the error behind it,
/// if there is one. Cheap to clone (a failed batch of the event log answers every append in it
/// with the same reason; the registry's errors are cloned to every waiter).
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
    pub fn reworded(&self, what: impl FnOnce(&str) -> String) -> Self {
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

/// An error and each of its causes whose message is not already in what precedes it, joined by
/// `: ` on one line (`copying the registry: cannot reach the database: connection refused`).
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_kept_and_shown_once() {
        let io = std::io::Error::other("disk full");
        let reason = Reason::caused_by("writing segment 1", io);
        assert_eq!(reason.to_string(), "writing segment 1: disk full");
        let cause = reason.source().expect("the cause");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(chain(&reason), "writing segment 1: disk full");
        let copy = reason.reworded(|w| format!("{w} (retried)"));
        assert_eq!(copy.to_string(), "writing segment 1 (retried): disk full");
        assert!(Reason::new("a limit").source().is_none());
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("copying the registry")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn chain_adds_the_causes_a_message_leaves_out() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(chain(&e), "copying the registry: connection refused");
    }
}
