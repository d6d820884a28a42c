//! Topic names, topic filters, shared subscriptions and matching (MQTT 5 §4.7, §4.8.2).

/// What is wrong with a topic name or filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Topic names and filters must be at least one character long.
    #[error("empty topic")]
    Empty,
    /// Longer than the 65535 bytes a UTF-8 string can carry.
    #[error("topic longer than 65535 bytes")]
    TooLong,
    /// U+0000 is not allowed.
    #[error("topic contains U+0000")]
    Nul,
    /// A topic name contains `+` or `#`.
    #[error("wildcard in topic name")]
    WildcardInName,
    /// `#` not alone in the last level, or `+` not alone in its level.
    #[error("misplaced wildcard in topic filter")]
    MisplacedWildcard,
    /// `$share/<group>/<filter>` with an empty or invalid group, or without a filter.
    #[error("invalid shared subscription")]
    InvalidShare,
}

const MAX_LEN: usize = 65535;

/// Checks a topic name (as used in PUBLISH): non-empty, at most 65535 bytes, no U+0000, no
/// wildcards.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_LEN {
        return Err(TopicError::TooLong);
    }
    for b in topic.bytes() {
        match b {
            b'+' | b'#' => return Err(TopicError::WildcardInName),
            0 => return Err(TopicError::Nul),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a topic filter (without `$share/` prefix): non-empty, at most 65535 bytes, no U+0000,
/// `+` only as a whole level, `#` only as the whole last level.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    if filter.len() > MAX_LEN {
        return Err(TopicError::TooLong);
    }
    if filter.as_bytes().contains(&0) {
        return Err(TopicError::Nul);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "+" => {}
            "#" if last => {}
            _ if level.contains(['+', '#']) => return Err(TopicError::MisplacedWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// Whether a (valid) filter contains a wildcard.
pub fn has_wildcards(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// Splits `$share/<group>/<filter>` into `(Some(group), filter)`; any other filter into
/// `(None, filter)`. Validates the group (non-empty, no `/`, `+` or `#`) and the filter.
pub fn parse_subscription(raw: &str) -> Result<(Option<&str>, &str), TopicError> {
    if let Some(rest) = raw.strip_prefix("$share/") {
        let (group, filter) = rest.split_once('/').ok_or(TopicError::InvalidShare)?;
        if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
            return Err(TopicError::InvalidShare);
        }
        validate_topic_filter(filter)?;
        Ok((Some(group), filter))
    } else if raw == "$share" {
        Err(TopicError::InvalidShare)
    } else {
        validate_topic_filter(raw)?;
        Ok((None, raw))
    }
}

/// Whether `topic` (a topic name) matches `filter` (a topic filter without `$share/` prefix),
/// with MQTT wildcard semantics: `+` matches exactly one level (possibly empty), `#` matches the
/// parent level and any number of child levels, and topics starting with `$` are not matched by
/// filters starting with a wildcard.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matching_examples_from_the_spec() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "sport/tennis"));
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(!matches("#", "$SYS/broker"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches("command/inbox//#", "command/inbox//reboot"));
        assert!(matches("command/inbox/#", "command/inbox//reboot"));
        assert!(!matches("command/inbox/+/#", "command"));
    }

    #[test]
    fn filter_validation() {
        for ok in [
            "#",
            "+",
            "a/+/b",
            "a/#",
            "+/+",
            "/",
            "//",
            "a//#",
            "sport/tennis/#",
        ] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+", "+a/b", "#/", "a/b#", "\0"] {
            assert!(validate_topic_filter(bad).is_err(), "{bad}");
        }
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::Nul));
        assert_eq!(validate_topic_name("/"), Ok(()));
    }

    #[test]
    fn shared_subscriptions() {
        assert_eq!(
            parse_subscription("$share/g/app/a1"),
            Ok((Some("g"), "app/a1"))
        );
        assert_eq!(parse_subscription("$share/g/#"), Ok((Some("g"), "#")));
        assert_eq!(parse_subscription("app/a1"), Ok((None, "app/a1")));
        assert_eq!(
            parse_subscription("$share/g"),
            Err(TopicError::InvalidShare)
        );
        assert_eq!(
            parse_subscription("$share//a"),
            Err(TopicError::InvalidShare)
        );
        assert_eq!(
            parse_subscription("$share/g+/a"),
            Err(TopicError::InvalidShare)
        );
        assert_eq!(
            parse_subscription("$share/g/"),
            Err(TopicError::InvalidShare)
        );
        assert_eq!(parse_subscription("$share"), Err(TopicError::InvalidShare));
        assert_eq!(
            parse_subscription("$share/g/a#"),
            Err(TopicError::MisplacedWildcard)
        );
        // `$sharex/...` is an ordinary filter.
        assert_eq!(parse_subscription("$sharex/g"), Ok((None, "$sharex/g")));
    }

    /// Independent, recursive definition of matching used as the oracle.
    fn reference(filter: &[&str], topic: &[&str]) -> bool {
        match (filter.first(), topic.first()) {
            (Some(&"#"), _) => true,
            (Some(&"+"), Some(_)) => reference(&filter[1..], &topic[1..]),
            (Some(f), Some(t)) => f == t && reference(&filter[1..], &topic[1..]),
            (None, None) => true,
            _ => false,
        }
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[ab$]{1,2}"]
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5)
            .prop_map(|l| l.join("/"))
            .prop_filter("topics are not empty", |t| !t.is_empty())
    }

    fn filter() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop_oneof![level(), Just("+".to_string())], 1..5),
            any::<bool>(),
        )
            .prop_map(|(mut l, hash)| {
                if hash {
                    l.push("#".to_string());
                }
                l.join("/")
            })
            .prop_filter("filters are not empty", |f| !f.is_empty())
    }

    proptest! {
        #[test]
        fn matches_agrees_with_reference(f in filter(), t in topic()) {
            prop_assert_eq!(validate_topic_filter(&f), Ok(()));
            prop_assert_eq!(validate_topic_name(&t), Ok(()));
            let fl: Vec<&str> = f.split('/').collect();
            let tl: Vec<&str> = t.split('/').collect();
            let dollar_guard = t.starts_with('$') && (f.starts_with('+') || f.starts_with('#'));
            prop_assert_eq!(matches(&f, &t), !dollar_guard && reference(&fl, &tl));
        }

        #[test]
        fn a_topic_matches_itself_and_its_generalisations(t in topic(), i in 0usize..5) {
            prop_assert!(matches(&t, &t));
            let levels: Vec<&str> = t.split('/').collect();
            let i = i % levels.len();
            // Replace one level by `+`.
            let mut plus = levels.clone();
            plus[i] = "+";
            let plus = plus.join("/");
            prop_assert_eq!(matches(&plus, &t), !(i == 0 && t.starts_with('$')));
            // Cut after level i and append `#`.
            let mut hash: Vec<&str> = levels[..i].to_vec();
            hash.push("#");
            let hash = hash.join("/");
            prop_assert_eq!(matches(&hash, &t), !(i == 0 && t.starts_with('$')));
        }

        #[test]
        fn validation_never_panics(s in "\\PC{0,12}") {
            let _ = validate_topic_filter(&s);
            let _ = validate_topic_name(&s);
            let _ = parse_subscription(&s);
            let _ = matches(&s, &s);
        }

        #[test]
        fn valid_names_are_valid_filters(t in topic()) {
            prop_assert_eq!(validate_topic_filter(&t), Ok(()));
            prop_assert!(!has_wildcards(&t));
        }
    }
}
