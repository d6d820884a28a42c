//! The types settings have: how each is read from text (file, environment, flag) and shown by
//! `--print-config`, and the checks settings share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A type a setting can have.
pub trait SettingValue: Sized {
    /// Reads the value from its text form; `""` is the empty value (none, for optional ones).
    fn parse(text: &str) -> Result<Self, String>;
    /// The value as `--print-config` shows it (`None`: not shown).
    fn show(&self) -> Option<toml::Value>;
}

macro_rules! number {
    ($($t:ty),*) => {$(
        impl SettingValue for $t {
            fn parse(text: &str) -> Result<Self, String> {
                text.trim()
                    .parse()
                    .map_err(|_| format!("expected a whole number from 0 to {}", <$t>::MAX))
            }
            fn show(&self) -> Option<toml::Value> {
                Some(match i64::try_from(*self) {
                    Ok(n) => toml::Value::Integer(n),
                    Err(_) => toml::Value::String(self.to_string()),
                })
            }
        }
    )*};
}
number!(u16, u32, u64, usize);

impl SettingValue for bool {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err("expected true or false".into()),
        }
    }
    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::Boolean(*self))
    }
}

impl SettingValue for String {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.clone()))
    }
}

impl SettingValue for PathBuf {
    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(PathBuf::from(text))
    }
    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.display().to_string()))
    }
}

impl SettingValue for SocketAddr {
    fn parse(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| "expected IP:PORT such as 0.0.0.0:8011".into())
    }
    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

/// A span of time: `500ms`, `10s`, `2m`, `1h`, or a number of seconds.
impl SettingValue for Duration {
    fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let bad =
            || format!("expected a duration such as 500ms, 10s, 2m or 1h (or seconds), not '{t}'");
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let d = match unit.trim() {
            "" | "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        Ok(d)
    }
    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(show_duration(*self)))
    }
}

/// `90s` as `90s`, `1500ms` as `1500ms`, `3600s` as `1h`.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// An optional setting: empty text is `None`.
impl<T: SettingValue> SettingValue for Option<T> {
    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            Ok(None)
        } else {
            T::parse(text).map(Some)
        }
    }
    fn show(&self) -> Option<toml::Value> {
        self.as_ref().and_then(T::show)
    }
}

/// How a setting's text becomes its value and how `--print-config` shows it: [`Plain`] for
/// most, or a special form.
pub trait Codec<T> {
    /// Whether the value is a secret (never echoed).
    const SECRET: bool = false;
    fn parse(text: &str) -> Result<T, String>;
    fn show(value: &T) -> Option<toml::Value>;
}

/// The type's own form ([`SettingValue`]).
pub struct Plain;

impl<T: SettingValue> Codec<T> for Plain {
    fn parse(text: &str) -> Result<T, String> {
        T::parse(text)
    }
    fn show(value: &T) -> Option<toml::Value> {
        value.show()
    }
}

/// A listener address, or `off` (`None`).
pub struct Listen;

impl Codec<Option<SocketAddr>> for Listen {
    fn parse(text: &str) -> Result<Option<SocketAddr>, String> {
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| "expected IP:PORT such as 0.0.0.0:8088, or off".into())
    }
    fn show(value: &Option<SocketAddr>) -> Option<toml::Value> {
        Some(toml::Value::String(match value {
            Some(a) => a.to_string(),
            None => "off".into(),
        }))
    }
}

/// A secret (token, password): shown as `<redacted>`.
pub struct Hidden;

impl Codec<Option<String>> for Hidden {
    const SECRET: bool = true;
    fn parse(text: &str) -> Result<Option<String>, String> {
        Ok(Some(text.to_string()).filter(|t| !t.is_empty()))
    }
    fn show(value: &Option<String>) -> Option<toml::Value> {
        value
            .as_ref()
            .map(|_| toml::Value::String("<redacted>".into()))
    }
}

/// The outbound address policy's allow-list: comma-separated (a TOML array in the file) CIDRs,
/// addresses and host names.
pub struct AllowList;

impl Codec<Vec<drover_integrations::outbound::AllowEntry>> for AllowList {
    fn parse(text: &str) -> Result<Vec<drover_integrations::outbound::AllowEntry>, String> {
        drover_integrations::outbound::OutboundPolicy::parse_list(text).map_err(|e| e.to_string())
    }
    fn show(value: &Vec<drover_integrations::outbound::AllowEntry>) -> Option<toml::Value> {
        Some(toml::Value::Array(
            value
                .iter()
                .map(|e| toml::Value::String(e.to_string()))
                .collect(),
        ))
    }
}

/// A URL (or several, separated by commas) that may carry a password or token: shown through
/// [`drover_model::redact_url`].
pub struct UrlWithPassword;

impl Codec<Option<String>> for UrlWithPassword {
    fn parse(text: &str) -> Result<Option<String>, String> {
        Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
    }
    fn show(value: &Option<String>) -> Option<toml::Value> {
        value
            .as_deref()
            .map(|u| toml::Value::String(drover_model::redact_url(u)))
    }
}

/// A comma-separated list (TOML files may use an array).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct List(pub Vec<String>);

impl SettingValue for List {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(List(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        ))
    }
    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::Array(
            self.0.iter().cloned().map(toml::Value::String).collect(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Checks shared by settings: `fn(&T) -> Result<(), String>`, the problem in words.

/// No check beyond the type.
pub fn any<T>(_: &T) -> Result<(), String> {
    Ok(())
}

/// A number at least `MIN`.
pub fn at_least<const MIN: u64, T: Copy + Into<u64>>(v: &T) -> Result<(), String> {
    if (*v).into() < MIN {
        return Err(format!("must be at least {MIN}"));
    }
    Ok(())
}

/// A number from `MIN` to `MAX`.
pub fn between<const MIN: u64, const MAX: u64, T: Copy + Into<u64>>(v: &T) -> Result<(), String> {
    let v = (*v).into();
    if !(MIN..=MAX).contains(&v) {
        return Err(format!("must be {MIN} to {MAX}"));
    }
    Ok(())
}

/// A `usize` at least `MIN`.
pub fn at_least_usize<const MIN: usize>(v: &usize) -> Result<(), String> {
    if *v < MIN {
        return Err(format!("must be at least {MIN}"));
    }
    Ok(())
}

/// A duration from `MIN_MS` to `MAX_S` seconds.
pub fn duration_between<const MIN_MS: u64, const MAX_S: u64>(d: &Duration) -> Result<(), String> {
    if *d < Duration::from_millis(MIN_MS) || *d > Duration::from_secs(MAX_S) {
        return Err(format!(
            "must be from {} to {}",
            show_duration(Duration::from_millis(MIN_MS)),
            show_duration(Duration::from_secs(MAX_S))
        ));
    }
    Ok(())
}

/// An http(s) URL with a host.
pub fn http_url(v: &Option<String>) -> Result<(), String> {
    match v {
        Some(u)
            if !url::Url::parse(u)
                .map(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some())
                .unwrap_or(false) =>
        {
            Err("expected an http(s) URL".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("10").unwrap(), Duration::from_secs(10));
        assert_eq!(Duration::parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(
            Duration::parse("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(Duration::parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(Duration::parse("1h").unwrap(), Duration::from_secs(3600));
        assert!(Duration::parse("ten").is_err());
        assert!(Duration::parse("10 parsecs").is_err());
        assert!(Duration::parse("-1s").is_err());
        for d in ["250ms", "10s", "2m", "1h", "90s"] {
            assert_eq!(show_duration(Duration::parse(d).unwrap()), d);
        }
    }

    #[test]
    fn listeners_lists_and_urls() {
        assert_eq!(Listen::parse("OFF").unwrap(), None);
        assert!(<Listen as Codec<_>>::parse("nope").is_err());
        assert_eq!(
            List::parse(" a, b ,,c").unwrap(),
            List(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            UrlWithPassword::show(&Some("nats://a:pw@n1:4222, nats://n2:4222".into())),
            Some(toml::Value::String(
                "nats://a:***@n1:4222,nats://n2:4222".into()
            ))
        );
        assert_eq!(
            Hidden::show(&Some("x".into())),
            Some(toml::Value::String("<redacted>".into()))
        );
    }
}
