//! The subscription filters the MQTT integration serves, and the names of its consumer groups.

use sha2::{Digest, Sha256};

/// Prefixes that name an application's stream: `app/<app>`, `a/<app>`, `application/<app>`.
pub(crate) const PREFIXES: [&str; 3] = ["app", "a", "application"];

/// What a subscription filter asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The application's name.
    pub(crate) app: String,
    /// Only this channel's events (`app/<app>/<channel>`; the channel may contain `/`).
    pub(crate) channel: Option<String>,
}

/// Why a filter is not one the integration serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterError {
    /// `+` or `#` anywhere in the filter.
    Wildcard,
    /// Not `app/<app>[/<channel>]` (or one of its aliases); says what is wrong.
    Foreign(&'static str),
}

/// Parses a topic filter (without any `$share/<group>/` prefix).
pub(crate) fn parse(filter: &str) -> Result<Target, FilterError> {
    if filter.contains(['+', '#']) {
        return Err(FilterError::Wildcard);
    }
    let Some((prefix, rest)) = filter.split_once('/') else {
        return Err(FilterError::Foreign(
            "expected app/<application>[/<channel>]",
        ));
    };
    if prefix == "command" {
        return Err(FilterError::Foreign(
            "commands are not available on the integration yet; subscribe to app/<application>[/<channel>]",
        ));
    }
    if !PREFIXES.contains(&prefix) {
        return Err(FilterError::Foreign(
            "expected app/<application>[/<channel>] (or a/..., application/...)",
        ));
    }
    let (app, channel) = match rest.split_once('/') {
        Some((app, channel)) => (app, Some(channel)),
        None => (rest, None),
    };
    if app.is_empty() {
        return Err(FilterError::Foreign("empty application name"));
    }
    if channel.is_some_and(str::is_empty) {
        return Err(FilterError::Foreign("empty channel name"));
    }
    Ok(Target {
        app: app.to_string(),
        channel: channel.map(str::to_string),
    })
}

/// Longest consumer group name the event log takes (the embedded log's limit).
const MAX_GROUP_NAME: usize = 200;

/// `name` if the event log takes it as a group name, else `<prefix>#<hash of name>`.
fn group_name(prefix: &str, name: String) -> String {
    if name.len() <= MAX_GROUP_NAME && !name.chars().any(char::is_control) {
        return name;
    }
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}#{hex}")
}

/// The durable group of a non-shared subscription in a persistent session:
/// `mqtt:<session key>/<filter>` (the session key is `<user>/<client id>`).
pub(crate) fn personal_group(session_key: &str, filter: &str) -> String {
    group_name("mqtt", format!("mqtt:{session_key}/{filter}"))
}

/// The durable group of a shared subscription: `mqtt-share:<app>:<group>`, with `/<channel>`
/// appended when narrowed to a channel (group names cannot contain `/`).
pub(crate) fn shared_group(app: &str, group: &str, channel: Option<&str>) -> String {
    let name = match channel {
        Some(c) => format!("mqtt-share:{app}:{group}/{c}"),
        None => format!("mqtt-share:{app}:{group}"),
    };
    group_name("mqtt-share", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(app: &str, channel: Option<&str>) -> Result<Target, FilterError> {
        Ok(Target {
            app: app.into(),
            channel: channel.map(Into::into),
        })
    }

    #[test]
    fn filters() {
        assert_eq!(parse("app/my-app"), t("my-app", None));
        assert_eq!(parse("a/my-app"), t("my-app", None));
        assert_eq!(parse("application/my-app"), t("my-app", None));
        assert_eq!(
            parse("app/my-app/telemetry"),
            t("my-app", Some("telemetry"))
        );
        assert_eq!(parse("app/x/a/b"), t("x", Some("a/b")));
        assert_eq!(parse("app/+"), Err(FilterError::Wildcard));
        assert_eq!(parse("#"), Err(FilterError::Wildcard));
        assert_eq!(parse("app/x/#"), Err(FilterError::Wildcard));
        assert!(matches!(parse("command/x"), Err(FilterError::Foreign(_))));
        assert!(matches!(parse("app"), Err(FilterError::Foreign(_))));
        assert!(matches!(parse("app/"), Err(FilterError::Foreign(_))));
        assert!(matches!(parse("app//c"), Err(FilterError::Foreign(_))));
        assert!(matches!(parse("app/x/"), Err(FilterError::Foreign(_))));
        assert!(matches!(parse("apps/x"), Err(FilterError::Foreign(_))));
    }

    #[test]
    fn group_names() {
        assert_eq!(personal_group("alice/c1", "app/x"), "mqtt:alice/c1/app/x");
        assert_eq!(shared_group("x", "g", None), "mqtt-share:x:g");
        assert_eq!(shared_group("x", "g", Some("t")), "mqtt-share:x:g/t");
        let long = personal_group("alice/c1", &"x".repeat(300));
        assert!(long.starts_with("mqtt#") && long.len() < MAX_GROUP_NAME);
        assert_ne!(long, personal_group("alice/c2", &"x".repeat(300)));
        assert!(personal_group("alice/c\u{1}", "app/x").starts_with("mqtt#"));
    }
}
