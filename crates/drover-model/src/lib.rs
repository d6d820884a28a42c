//! Drover's domain model: the registry's resources (applications and devices with Kubernetes-style
//! metadata), the typed spec sections Drover understands, label selectors, roles, and validation;
//! the one rule that keeps secrets out of URLs Drover shows ([`redact_url`]); and [`Reason`], how
//! every crate's errors keep their cause.
//!
//! This crate owns *what things are*. It knows nothing of I/O, async runtimes, storage or wire
//! protocols; JSON (serde) is the representation resources have everywhere, so the types derive it.

pub mod error;
pub mod event;
pub mod names;
pub mod redact;
pub mod resource;
pub mod role;
pub mod selector;
pub mod spec;
pub mod twin;
pub mod webhook;

pub use error::Reason;
pub use event::Event;
pub use redact::redact_url;
pub use resource::{Kind, Metadata, MetadataInput, Resource, ResourceInput};
pub use role::{MemberEntry, Members, Permission, Principal, Role};
pub use selector::Selector;

/// A resource or request that breaks a rule of the model. The message names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

impl ValidationError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}
