//! How Drover's streams, groups and tombstones are named in JetStream.
//!
//! ```text
//! stream   <PREFIX>_EV_<uid>          subject  <prefix>.ev.<uid>
//! bucket   <PREFIX>_groups            key      <uid>.<group>     value: the offset, decimal
//! bucket   <PREFIX>_deleted           key      <uid>             value: the application's name
//! ```
//!
//! `<prefix>` is the configured prefix as it is, `<PREFIX>` the same in upper case — the
//! convention of the cluster's command routing (`drover.cmd...` subjects, `DROVER_COMMANDS`).
//!
//! Uids and group names (valid by the rules of [`crate::key`]) are escaped so that every name is valid and no two inputs share one:
//! in a uid `_` becomes `__` and `.` becomes `_d` (uids hold letters, digits, `-`, `_` and
//! `.`); in a group name every byte other than an ASCII letter, digit or `-` becomes `_` and
//! two upper-case hex digits. Neither escaped form contains a `.`, so `<uid>.>` matches
//! exactly the groups of one stream.

use crate::{BusError, Result};

/// Longest prefix.
const MAX_PREFIX: usize = 32;

/// Prefixes: 1 to 32 ASCII letters, digits, `-` and `_`.
pub(crate) fn check_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(BusError::Invalid(format!(
            "JetStream prefix {prefix:?} must be 1 to {MAX_PREFIX} ASCII letters, digits, '-' or '_'"
        ).into()))
    }
}

fn escape_uid(uid: &str) -> String {
    let mut out = String::with_capacity(uid.len() + 4);
    for c in uid.chars() {
        match c {
            '_' => out.push_str("__"),
            '.' => out.push_str("_d"),
            c => out.push(c),
        }
    }
    out
}

fn escape_group(group: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(group.len());
    for &b in group.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push('_');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// The names under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// For subjects.
    prefix: String,
    /// For streams and buckets.
    upper: String,
}

impl Names {
    /// `prefix` must have passed [`check_prefix`].
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            upper: prefix.to_ascii_uppercase(),
        }
    }

    /// The JetStream stream holding the events of the application with this (valid) uid.
    pub(crate) fn stream(&self, uid: &str) -> String {
        format!("{}_EV_{}", self.upper, escape_uid(uid))
    }

    /// The subject the events of the application with this uid are published on.
    pub(crate) fn subject(&self, uid: &str) -> String {
        format!("{}.ev.{}", self.prefix, escape_uid(uid))
    }

    /// The key-value bucket of committed group offsets.
    pub(crate) fn groups_bucket(&self) -> String {
        format!("{}_groups", self.upper)
    }

    /// The key-value bucket of deleted streams' uids.
    pub(crate) fn tombstones_bucket(&self) -> String {
        format!("{}_deleted", self.upper)
    }

    /// The key of a group's committed offset.
    pub(crate) fn group_key(&self, uid: &str, group: &str) -> String {
        format!("{}.{}", escape_uid(uid), escape_group(group))
    }

    /// The subject filter matching every group key of a stream, in the groups bucket's stream.
    pub(crate) fn groups_filter(&self, uid: &str) -> String {
        format!("$KV.{}.{}.>", self.groups_bucket(), escape_uid(uid))
    }

    /// The key of a stream's tombstone.
    pub(crate) fn tombstone_key(&self, uid: &str) -> String {
        escape_uid(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StreamKey;
    use proptest::prelude::*;

    fn valid_key(key: &str) -> bool {
        !key.is_empty()
            && !key.starts_with('.')
            && !key.ends_with('.')
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    fn valid_stream_name(name: &str) -> bool {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| !b.is_ascii_whitespace() && !b"./\\*>".contains(&b))
    }

    #[test]
    fn names() {
        let n = Names::new("drover");
        let uid = "3f1a8e4c-0000-4000-8000-000000000001";
        assert_eq!(n.stream(uid), format!("DROVER_EV_{uid}"));
        assert_eq!(n.subject(uid), format!("drover.ev.{uid}"));
        assert_eq!(n.groups_bucket(), "DROVER_groups");
        assert_eq!(n.tombstones_bucket(), "DROVER_deleted");
        assert_eq!(n.stream("a.b_c"), "DROVER_EV_a_db__c");
        assert_eq!(n.group_key("u", "my group/1"), "u.my_20group_2F1");
        assert_eq!(n.groups_filter("u.1"), "$KV.DROVER_groups.u_d1.>");
        assert_eq!(n.tombstone_key("u"), "u");
    }

    #[test]
    fn checks() {
        for bad in ["", "a.b", "a b", "a*", &"P".repeat(33)] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(check_prefix("DROVER_test-1").is_ok());
    }

    proptest! {
        #[test]
        fn escaped_names_are_valid_and_distinct(
            a in "[A-Za-z0-9_.-]{1,20}",
            b in "[A-Za-z0-9_.-]{1,20}",
            g in any::<String>(),
            h in any::<String>(),
        ) {
            let n = Names::new("P");
            prop_assume!(StreamKey::check_uid(&a).is_ok() && StreamKey::check_uid(&b).is_ok());
            prop_assert!(valid_stream_name(&n.stream(&a)));
            prop_assert!(valid_key(&n.tombstone_key(&a)));
            prop_assert!(!n.tombstone_key(&a).contains('.'));
            if !g.is_empty() {
                prop_assert!(valid_key(&n.group_key(&a, &g)));
            }
            prop_assert_eq!(a == b, n.stream(&a) == n.stream(&b));
            prop_assert_eq!(a == b, n.subject(&a) == n.subject(&b));
            prop_assert_eq!(g == h, n.group_key(&a, &g) == n.group_key(&a, &h));
            // The groups of one stream never match another's filter.
            if a != b && !g.is_empty() {
                let key = n.group_key(&b, &g);
                let filter = n.groups_filter(&a);
                let prefix = filter.trim_start_matches("$KV.P_groups.").trim_end_matches('>');
                prop_assert!(!key.starts_with(prefix));
            }
        }
    }
}
