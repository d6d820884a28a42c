//! Rendezvous (highest random weight) hashing: every key belongs to the member with the highest
//! [`weight`] of (member, key). Adding a member moves only the keys it now wins; removing one
//! moves only its own keys; with many keys each member gets about the same share.
//!
//! Used wherever Drover splits devices among takers: the nodes of a consumer group's view
//! ([`crate::groups::View::owns`]) and the online members of a group on one node (the MQTT
//! integration's dispatcher).
//!
//! The weight is FNV-1a (64 bit) over the member's bytes, a zero byte and the key's bytes,
//! followed by the SplitMix64 finaliser so that similar inputs spread. It is fixed here, not
//! taken from `std` (whose `DefaultHasher` may change between Rust releases and is seeded
//! randomly by `RandomState`): the nodes of a cluster must agree on every owner, also while a
//! rolling upgrade runs binaries built by different compilers. Changing it moves devices
//! between nodes for as long as old and new binaries run side by side; say so in the release
//! notes if it ever must change.

/// FNV-1a, 64 bit (offset basis and prime of the reference), without a final mix.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Fnv1a {
    pub const fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The plain FNV-1a value.
    pub const fn value(&self) -> u64 {
        self.0
    }

    /// The value through the SplitMix64 finaliser, so that inputs differing in a byte spread.
    pub const fn mixed(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

/// The weight of `member` for `key` (see the [module docs](self)).
pub fn weight(member: &str, key: &str) -> u64 {
    let mut h = Fnv1a::new();
    h.write(member.as_bytes());
    h.write(&[0]);
    h.write(key.as_bytes());
    h.mixed()
}

/// The candidate that owns `key`: the one whose member name has the highest [`weight`] for it.
/// Candidates are `(value, member name)`; of equal weights the greater name wins, so the
/// answer does not depend on the candidates' order. `None` if there are none.
pub fn owner<T, M: AsRef<str>>(
    candidates: impl IntoIterator<Item = (T, M)>,
    key: &str,
) -> Option<T> {
    candidates
        .into_iter()
        .map(|(value, member)| (weight(member.as_ref(), key), member, value))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.as_ref().cmp(b.1.as_ref())))
        .map(|(_, _, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owner_of(members: &[String], key: &str) -> Option<String> {
        owner(members.iter().map(|m| (m.clone(), m)), key)
    }

    #[test]
    fn the_function_is_fixed() {
        // FNV-1a reference values (draft-eastlake-fnv): a change here breaks agreement between
        // nodes running different builds.
        assert_eq!(Fnv1a::new().value(), 0xcbf2_9ce4_8422_2325);
        let mut h = Fnv1a::new();
        h.write(b"a");
        assert_eq!(h.value(), 0xaf63_dc4c_8601_ec8c);
        let mut h = Fnv1a::new();
        h.write(b"foobar");
        assert_eq!(h.value(), 0x8594_4171_f739_67e8);
        // The weight nodes of a cluster have agreed on since groups spanned nodes.
        assert_eq!(weight("node-a", "device-1"), 0xb47d_dbd5_a8cd_d4c7);
        assert_ne!(weight("node-a", "device-1"), weight("node-b", "device-1"));
        assert_ne!(weight("ab", "c"), weight("a", "bc"), "the separator counts");
    }

    #[test]
    fn no_candidates_no_owner_and_order_does_not_matter() {
        assert_eq!(owner(Vec::<(u8, &str)>::new(), "k"), None);
        assert_eq!(owner([(7, "only")], "k"), Some(7));
        let members = ["a", "b", "c", "d"];
        for k in 0..100 {
            let key = format!("k{k}");
            let forward = owner(members.iter().map(|m| (*m, *m)), &key);
            let backward = owner(members.iter().rev().map(|m| (*m, *m)), &key);
            assert_eq!(forward, backward);
        }
        // Equal names (equal weights): the result is still one of them.
        assert!(owner([(1, "x"), (2, "x")], "k").is_some());
    }

    #[test]
    fn keys_spread_evenly() {
        let members: Vec<String> = (0..5).map(|i| format!("node-{i}")).collect();
        let mut counts = [0usize; 5];
        let keys = 10_000;
        for k in 0..keys {
            let o = owner_of(&members, &format!("device-{k}")).expect("an owner");
            counts[members.iter().position(|m| *m == o).expect("a member")] += 1;
        }
        // 2000 expected each; a fair split stays well within ±15 %.
        assert!(
            counts.iter().all(|c| (1700..=2300).contains(c)),
            "spread: {counts:?}"
        );
    }

    proptest! {
        /// Adding a member moves only keys to it; removing it moves only its keys back.
        #[test]
        fn a_change_moves_only_the_changed_members_keys(
            members in proptest::collection::btree_set("[a-z0-9-]{1,12}", 1..8),
            added in "[a-z0-9-]{1,12}",
            keys in proptest::collection::vec("[ -~]{0,24}", 1..64),
        ) {
            prop_assume!(!members.contains(&added));
            let before: Vec<String> = members.iter().cloned().collect();
            let mut after = before.clone();
            after.push(added.clone());
            for key in &keys {
                let old = owner_of(&before, key).expect("an owner");
                let new = owner_of(&after, key).expect("an owner");
                prop_assert!(new == old || new == added, "{key:?}: {old} -> {new}");
            }
            // Removing any one member: only its keys move.
            for gone in &before {
                let rest: Vec<String> = before.iter().filter(|m| *m != gone).cloned().collect();
                for key in &keys {
                    let old = owner_of(&before, key).expect("an owner");
                    let new = owner_of(&rest, key);
                    if old != *gone {
                        prop_assert_eq!(new, Some(old));
                    }
                }
            }
        }

        /// Every member gets a fair share of many keys.
        #[test]
        fn shares_are_roughly_even(n in 2usize..6, salt in any::<u32>()) {
            let members: Vec<String> = (0..n).map(|i| format!("m{salt}-{i}")).collect();
            let keys = 3000;
            let mut counts = vec![0usize; n];
            for k in 0..keys {
                let o = owner_of(&members, &format!("{salt}/{k}")).expect("an owner");
                counts[members.iter().position(|m| *m == o).expect("a member")] += 1;
            }
            let fair = keys / n;
            prop_assert!(
                counts.iter().all(|c| *c * 10 >= fair * 7 && *c * 10 <= fair * 13),
                "spread of {} keys over {} members: {:?}", keys, n, counts
            );
        }
    }
}
