//! What names a stream ([`StreamKey`]) and a consumer group, and which names every backend
//! accepts: one rule, checked by both event logs (and by the embedded log's recovery for the
//! uids it finds on disk), so that a stream valid for one backend is valid for the other and
//! `drover migrate` can move every stream.

use crate::{BusError, Result};

/// Longest application uid.
pub const MAX_UID: usize = 128;
/// Longest consumer group name, in bytes.
pub const MAX_GROUP_NAME: usize = 200;
/// Uids no stream may have: the embedded log keeps its tombstones in a file of this name
/// beside the streams' directories.
const RESERVED_UIDS: &[&str] = &[crate::embedded::TOMBSTONES_FILE];

/// Identifies an application's stream. Keyed by the application's uid, so an application that
/// is deleted and created again under the same name gets a new, empty stream. The name is for
/// messages and descriptions only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub app: String,
    pub app_uid: String,
}

impl StreamKey {
    pub fn new(app: impl Into<String>, app_uid: impl Into<String>) -> Self {
        Self {
            app: app.into(),
            app_uid: app_uid.into(),
        }
    }

    /// Whether every backend can hold this stream: see [`check_uid`](Self::check_uid). Fails
    /// with [`BusError::Invalid`].
    pub fn check(&self) -> Result<()> {
        Self::check_uid(&self.app_uid)
    }

    /// The rule for uids (they name directories, JetStream streams and subjects): 1 to
    /// [`MAX_UID`] ASCII letters, digits, `-`, `_` and `.`, not starting with `.`, and not
    /// `deleted-streams`. Registry uids (UUIDs) always pass. Fails with [`BusError::Invalid`].
    pub fn check_uid(uid: &str) -> Result<()> {
        let ok = !uid.is_empty()
            && uid.len() <= MAX_UID
            && !uid.starts_with('.')
            && !RESERVED_UIDS.contains(&uid)
            && uid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(())
        } else {
            Err(BusError::Invalid(
                format!("invalid application uid {uid:?}").into(),
            ))
        }
    }
}

/// The rule for consumer group names (opaque to the log): not empty, at most
/// [`MAX_GROUP_NAME`] bytes, no control characters. Fails with [`BusError::Invalid`].
pub fn check_group(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > MAX_GROUP_NAME || group.chars().any(char::is_control) {
        return Err(BusError::Invalid(
            format!("invalid consumer group name {group:?}").into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uids() {
        for good in [
            "3f1a8e4c-0000-4000-8000-000000000001",
            "a",
            "a.b_c-1",
            "A..",
            &"x".repeat(MAX_UID),
        ] {
            assert!(StreamKey::check_uid(good).is_ok(), "{good:?}");
            assert!(StreamKey::new("app", good).check().is_ok(), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "a*",
            "a>",
            "ü",
            "a\n",
            "deleted-streams",
            &"x".repeat(MAX_UID + 1),
        ] {
            let refused = StreamKey::new("app", bad).check();
            assert!(
                matches!(&refused, Err(BusError::Invalid(m)) if m.to_string().contains("uid")),
                "{bad:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn groups() {
        for good in ["g", "my group/1", "ünïcode", &"g".repeat(MAX_GROUP_NAME)] {
            assert!(check_group(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "a\nb",
            "tab\t",
            "\u{7f}",
            &"g".repeat(MAX_GROUP_NAME + 1),
        ] {
            assert!(
                matches!(check_group(bad), Err(BusError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    proptest! {
        /// A valid uid never contains what a path or a NATS subject would split at.
        #[test]
        fn valid_uids_are_safe_names(uid in "[ -~]{0,140}") {
            if StreamKey::check_uid(&uid).is_ok() {
                prop_assert!(!uid.contains(['/', '\\', ' ', '*', '>']));
                prop_assert!(uid != "." && uid != "..");
                prop_assert!(uid.len() <= MAX_UID);
            }
        }
    }
}
