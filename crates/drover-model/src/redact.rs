//! Keeping secrets out of what Drover shows: logs, `--print-config`, `Debug` output, error
//! messages.
//!
//! One rule for every URL Drover is given (the PostgreSQL registry, the NATS servers, …), here
//! because both the libraries (`drover-bus` shows its NATS URL) and the binary (configuration)
//! need it, and a pure function of a string needs no crate of its own.

/// What a secret is replaced by.
const HIDDEN: &str = "***";

/// Schemes whose URLs take a lone user name as a secret token (`nats://<token>@host`, the NATS
/// convention).
const TOKEN_SCHEMES: &[&str] = &["nats", "tls", "ws", "wss"];

/// `url`, or several separated by commas, with the secrets in each replaced by `***`:
///
/// - a password: `postgres://drover:s3cret@db/drover` → `postgres://drover:***@db/drover`;
/// - a user name without a password where it is a token (NATS: `nats://t0ken@host` →
///   `nats://***@host`); elsewhere a lone user name is kept (`postgres://drover@db`);
/// - several URLs are redacted each, trimmed and joined with `,` (`nats://a:pw@n1, nats://n2`
///   → `nats://a:***@n1,nats://n2`).
///
/// The rule is textual, so it never fails and needs no valid URL: whatever stands before the
/// last `@` of a part's authority (after an optional `scheme://`, up to the first `/`, `?` or
/// `#`) is user information, also without a scheme (`user:pw@host:4222`, which the NATS client
/// accepts). An input that is no URL at all and has no `@` comes back as it was (trimmed).
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|part| redact_one(part.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one(part: &str) -> String {
    let (scheme, rest) = match part.find("://") {
        Some(i) => (&part[..i], &part[i + 3..]),
        None => ("", part),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return part.to_owned();
    };
    let (userinfo, host_and_more) = (&rest[..at], &rest[at..]);
    let shown = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:{HIDDEN}"),
        None if scheme.is_empty()
            || TOKEN_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme)) =>
        {
            HIDDEN.to_owned()
        }
        None => userinfo.to_owned(),
    };
    let head = &part[..part.len() - rest.len()];
    format!("{head}{shown}{host_and_more}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("postgres://drover:s3cret@db:5432/drover?sslmode=require"),
            "postgres://drover:***@db:5432/drover?sslmode=require"
        );
        assert_eq!(
            redact_url("nats://u:p@ss:w@rd@h:4222"),
            "nats://u:***@h:4222",
            "everything up to the last @ of the authority"
        );
        assert_eq!(redact_url("nats://u:@h"), "nats://u:***@h");
        assert_eq!(
            redact_url("postgres://u:pw@h/db?note=a@b"),
            "postgres://u:***@h/db?note=a@b",
            "an @ after the authority is no user information"
        );
    }

    #[test]
    fn lone_user_names_are_hidden_where_they_are_tokens() {
        assert_eq!(redact_url("nats://t0ken@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("TLS://t0ken@h"), "TLS://***@h");
        assert_eq!(
            redact_url("t0ken@h:4222"),
            "***@h:4222",
            "no scheme: unsure, hidden"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
    }

    #[test]
    fn several_urls_are_redacted_each() {
        assert_eq!(
            redact_url("nats://a:pw@n1:4222, nats://n2:4222 ,nats://tok@n3"),
            "nats://a:***@n1:4222,nats://n2:4222,nats://***@n3"
        );
        assert_eq!(redact_url("n1:4222,n2:4222"), "n1:4222,n2:4222");
    }

    #[test]
    fn unparsable_input_is_redacted_all_the_same() {
        assert_eq!(redact_url(""), "");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("nats://[::1"), "nats://[::1");
        assert_eq!(redact_url("nats://u:pw@[::1"), "nats://u:***@[::1");
        assert_eq!(redact_url("::pw@"), ":***@");
        assert_eq!(redact_url("://@"), "://***@");
        assert_eq!(redact_url("%zz://u:p@h"), "%zz://u:***@h");
    }

    proptest! {
        /// Whatever the input, a password given in it never comes out.
        #[test]
        fn passwords_never_show(
            scheme in "(nats|postgres|tls|[a-z]{1,6})",
            user in "[a-zA-Z0-9._-]{0,10}",
            password in "[a-zA-Z0-9._~!$&'()*+;=-]{1,16}",
            host in "[a-z0-9.-]{1,12}(:[0-9]{1,5})?",
            tail in "(/[a-z0-9@]{0,8})?",
            others in proptest::collection::vec("[ -+--~]{0,20}", 0..3),
        ) {
            let secret = format!("{password}SECRET");
            let one = format!("{scheme}://{user}:{secret}@{host}{tail}");
            let mut all = others.clone();
            all.insert(others.len() / 2, one);
            let shown = redact_url(&all.join(","));
            prop_assert!(!shown.contains("SECRET"), "{}", shown);
        }
    }
}
