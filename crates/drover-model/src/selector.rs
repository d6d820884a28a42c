//! Label selectors as in Kubernetes: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`,
//! `!k`; a comma means AND.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::names::{is_selector_key, is_selector_value};
use crate::ValidationError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => !labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Equals(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::NotExists(k) => write!(f, "!{k}"),
        }
    }
}

/// A conjunction of requirements. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

fn err(input: &str, why: &str) -> ValidationError {
    ValidationError(format!("invalid label selector '{input}': {why}"))
}

/// Splits at commas that are not inside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, &'static str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => {
                depth += 1;
                if depth > 1 {
                    return Err("nested parentheses");
                }
            }
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ')'");
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("missing ')'");
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn key(input: &str, k: &str) -> Result<String, ValidationError> {
    let k = k.trim();
    if is_selector_key(k) {
        Ok(k.to_string())
    } else if k.is_empty() {
        Err(err(input, "missing label key"))
    } else {
        Err(err(input, &format!("'{k}' is not a valid label key")))
    }
}

fn value(input: &str, v: &str) -> Result<String, ValidationError> {
    let v = v.trim();
    if is_selector_value(v) {
        Ok(v.to_string())
    } else {
        Err(err(input, &format!("'{v}' is not a valid label value")))
    }
}

fn set(input: &str, rest: &str) -> Result<Vec<String>, ValidationError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            err(
                input,
                "expected a value list in parentheses, e.g. 'k in (a,b)'",
            )
        })?;
    let values = inner
        .split(',')
        .map(|v| value(input, v))
        .collect::<Result<Vec<_>, _>>()?;
    if values.iter().all(|v| v.is_empty()) {
        return Err(err(input, "empty value list"));
    }
    Ok(values)
}

/// Finds ` in ` / ` notin ` as a whole word after the key.
fn split_word<'a>(term: &'a str, word: &str) -> Option<(&'a str, &'a str)> {
    let t = term.trim_start();
    let key_end = t.find(|c: char| c.is_whitespace() || c == '(')?;
    let (k, rest) = t.split_at(key_end);
    let rest = rest.trim_start();
    let after = rest.strip_prefix(word)?;
    if after.starts_with(|c: char| c.is_whitespace() || c == '(') {
        Some((k, after))
    } else {
        None
    }
}

impl FromStr for Selector {
    type Err = ValidationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.trim().is_empty() {
            return Ok(Selector::default());
        }
        let terms = split_top(input).map_err(|e| err(input, e))?;
        let mut reqs = Vec::with_capacity(terms.len());
        for term in terms {
            let t = term.trim();
            if t.is_empty() {
                return Err(err(input, "empty requirement"));
            }
            let req = if let Some((k, rest)) = split_word(t, "notin") {
                Requirement::NotIn(key(input, k)?, set(input, rest)?)
            } else if let Some((k, rest)) = split_word(t, "in") {
                Requirement::In(key(input, k)?, set(input, rest)?)
            } else if let Some((k, v)) = t.split_once("!=") {
                Requirement::NotEquals(key(input, k)?, value(input, v)?)
            } else if let Some((k, v)) = t.split_once("==") {
                Requirement::Equals(key(input, k)?, value(input, v)?)
            } else if let Some((k, v)) = t.split_once('=') {
                Requirement::Equals(key(input, k)?, value(input, v)?)
            } else if let Some(k) = t.strip_prefix('!') {
                Requirement::NotExists(key(input, k)?)
            } else {
                Requirement::Exists(key(input, t)?)
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches() {
        let l = labels(&[("env", "prod"), ("tier", "web")]);
        let m = |s: &str| s.parse::<Selector>().unwrap().matches(&l);
        assert!(m("env=prod"));
        assert!(m("env==prod"));
        assert!(!m("env!=prod"));
        assert!(m("missing!=x"));
        assert!(m("env in (prod, dev)"));
        assert!(!m("env notin (prod,dev)"));
        assert!(m("missing notin (a)"));
        assert!(!m("missing in (a)"));
        assert!(m("env"));
        assert!(m("!missing"));
        assert!(!m("!env"));
        assert!(m("env=prod, tier in (web)"));
        assert!(!m("env=prod,tier=db"));
        assert!(m(""));
        // a key named like the operator still works
        let l2 = labels(&[("in", "x")]);
        assert!("in=x".parse::<Selector>().unwrap().matches(&l2));
        assert!("in".parse::<Selector>().unwrap().matches(&l2));
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "a=b,",
            ",",
            "a in b",
            "a in (b",
            "a in ()",
            "=b",
            "a b",
            "a=(b)",
            "!",
            "a in ((b))",
            "a)",
        ] {
            assert!(bad.parse::<Selector>().is_err(), "{bad}");
        }
        let e = "a in b".parse::<Selector>().unwrap_err().to_string();
        assert!(e.contains("invalid label selector 'a in b'"), "{e}");
    }

    fn arb_key() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9._/-]{0,10}".prop_filter("keyword", |k| k != "in" && k != "notin")
    }

    fn arb_req() -> impl Strategy<Value = Requirement> {
        let v = "[a-z0-9._-]{0,8}";
        let vs = prop::collection::vec("[a-z0-9._-]{1,8}", 1..4);
        prop_oneof![
            (arb_key(), v).prop_map(|(k, v)| Requirement::Equals(k, v)),
            (arb_key(), v).prop_map(|(k, v)| Requirement::NotEquals(k, v)),
            (arb_key(), vs.clone()).prop_map(|(k, v)| Requirement::In(k, v)),
            (arb_key(), vs).prop_map(|(k, v)| Requirement::NotIn(k, v)),
            arb_key().prop_map(Requirement::Exists),
            arb_key().prop_map(Requirement::NotExists),
        ]
    }

    proptest! {
        #[test]
        fn display_round_trips(reqs in prop::collection::vec(arb_req(), 1..5)) {
            let s = Selector(reqs);
            let parsed: Selector = s.to_string().parse().unwrap();
            prop_assert_eq!(parsed, s);
        }

        #[test]
        fn never_panics(input in ".{0,40}") {
            let _ = input.parse::<Selector>();
        }
    }
}
