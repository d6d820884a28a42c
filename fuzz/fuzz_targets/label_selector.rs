//! Label selectors (query parameter `labels`): whatever parses prints back to a selector that
//! parses to the same thing, and matching never panics.
#![no_main]

use std::collections::BTreeMap;
use std::str::FromStr;

use drover_model::Selector;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, Vec<(String, String)>)| {
    let (text, labels) = input;
    let Ok(selector) = Selector::from_str(text) else {
        return;
    };
    let printed = selector.to_string();
    let again = Selector::from_str(&printed)
        .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which does not parse: {e:?}"));
    assert_eq!(selector, again, "{text:?} → {printed:?}");
    let labels: BTreeMap<String, String> = labels.into_iter().collect();
    assert_eq!(selector.matches(&labels), again.matches(&labels));
});
