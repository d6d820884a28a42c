//! Naming rules for applications, devices, users, labels and finalizers.

use crate::ValidationError;

/// Longest device name, in bytes (contract: non-empty, <= 255 bytes).
pub const MAX_DEVICE_NAME: usize = 255;
/// Longest application name (a DNS label).
pub const MAX_APP_NAME: usize = 63;
/// Longest user name.
pub const MAX_USER_NAME: usize = 64;
/// Longest label or annotation key.
pub const MAX_KEY: usize = 253;
/// Longest label value.
pub const MAX_LABEL_VALUE: usize = 255;

/// Application names are lowercase DNS labels: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 chars.
pub fn validate_app_name(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_APP_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError(format!(
            "invalid application name '{}': must be a lowercase DNS label (a-z, 0-9 and '-', starting and ending with a letter or digit, at most {MAX_APP_NAME} characters)",
            truncate(name)
        )))
    }
}

/// Device names are non-empty and at most 255 bytes.
pub fn validate_device_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::new(
            "invalid device name: must not be empty",
        ));
    }
    if name.len() > MAX_DEVICE_NAME {
        return Err(ValidationError(format!(
            "invalid device name: {} bytes long, at most {MAX_DEVICE_NAME} allowed",
            name.len()
        )));
    }
    Ok(())
}

/// User names: 1..=64 characters of `A-Z a-z 0-9 . _ @ -` (no ':' so they fit HTTP Basic auth).
pub fn validate_user_name(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError(format!(
            "invalid user name '{}': use 1 to {MAX_USER_NAME} characters of letters, digits, '.', '_', '@' and '-'",
            truncate(name)
        )))
    }
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/')
}

fn is_value_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':')
}

/// Label and annotation keys: 1..=253 characters of `A-Z a-z 0-9 . _ - /`.
pub fn validate_key(what: &str, key: &str) -> Result<(), ValidationError> {
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(is_key_char) {
        return Err(ValidationError(format!(
            "invalid {what} key '{}': use 1 to {MAX_KEY} characters of letters, digits, '.', '_', '-' and '/'",
            truncate(key)
        )));
    }
    Ok(())
}

/// Label values: up to 255 characters of `A-Z a-z 0-9 . _ - / :` (so every value can be selected).
pub fn validate_label_value(key: &str, value: &str) -> Result<(), ValidationError> {
    if value.len() > MAX_LABEL_VALUE || !value.bytes().all(is_value_char) {
        return Err(ValidationError(format!(
            "invalid value for label '{key}': use up to {MAX_LABEL_VALUE} characters of letters, digits, '.', '_', '-', '/' and ':'"
        )));
    }
    Ok(())
}

pub(crate) fn is_selector_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_KEY && s.bytes().all(is_key_char)
}

pub(crate) fn is_selector_value(s: &str) -> bool {
    s.len() <= MAX_LABEL_VALUE && s.bytes().all(is_value_char)
}

/// Finalizers: 1..=253 characters of `A-Z a-z 0-9 . _ - /`.
pub fn validate_finalizer(f: &str) -> Result<(), ValidationError> {
    if f.is_empty() || f.len() > MAX_KEY || !f.bytes().all(is_key_char) {
        return Err(ValidationError(format!(
            "invalid finalizer '{}': use 1 to {MAX_KEY} characters of letters, digits, '.', '_', '-' and '/'",
            truncate(f)
        )));
    }
    Ok(())
}

/// Percent-encodes a URL path segment: everything but RFC 3986's unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), UTF-8 bytes included.
pub fn encode_segment(s: &str) -> String {
    encoded_segment(s).map(char::from).collect()
}

/// The bytes of [`encode_segment`]'s result (ASCII), for writers that do not want a `String`.
pub fn encoded_segment(s: &str) -> impl Iterator<Item = u8> + '_ {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    s.bytes().flat_map(|b| {
        let (bytes, n) = if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            ([b, 0, 0], 1)
        } else {
            (
                [b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]],
                3,
            )
        };
        bytes.into_iter().take(n)
    })
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 80 {
        let t: String = s.chars().take(80).collect();
        format!("{t}...")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        assert!(validate_app_name("my-app").is_ok());
        assert!(validate_app_name("a").is_ok());
        assert!(validate_app_name(&"a".repeat(63)).is_ok());
        for bad in ["", "-a", "a-", "My", "a_b", "a.b", &"a".repeat(64)] {
            assert!(validate_app_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn device_names() {
        assert!(validate_device_name("d/1 x").is_ok());
        assert!(validate_device_name(&"ä".repeat(127)).is_ok());
        assert!(validate_device_name(&"ä".repeat(128)).is_err());
        assert!(validate_device_name("").is_err());
    }

    #[test]
    fn segments() {
        assert_eq!(encode_segment("my-app_1.x~"), "my-app_1.x~");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_segment("ä"), "%C3%A4");
    }

    #[test]
    fn user_names() {
        assert!(validate_user_name("alice@example.com").is_ok());
        assert!(validate_user_name("a:b").is_err());
        assert!(validate_user_name("").is_err());
    }
}
