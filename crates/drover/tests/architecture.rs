//! The architecture is checked, not only described: the crate dependencies `cargo metadata`
//! reports must be exactly those ARCHITECTURE.md's layer table allows.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../ARCHITECTURE.md"
    ))
    .unwrap();
    let start = doc
        .find("<!-- layers:begin -->")
        .expect("layer table begins");
    let end = doc.find("<!-- layers:end -->").expect("layer table ends");
    let mut layers = BTreeMap::new();
    let mut lower = BTreeSet::new();
    for line in doc[start..end].lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_string();
        let deps: BTreeSet<String> = if cells[2].starts_with("every crate above") {
            lower.clone()
        } else {
            cells[2]
                .split(',')
                .map(|d| d.trim().trim_matches('`').to_string())
                .filter(|d| d.starts_with("drover"))
                .collect()
        };
        for d in &deps {
            assert!(
                lower.contains(d),
                "ARCHITECTURE.md: {name} depends on {d}, which is not in a lower row"
            );
        }
        lower.insert(name.clone());
        layers.insert(name, deps);
    }
    layers
}

fn actual() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                // Normal and build dependencies; tests may use anything.
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .map(|d| d["name"].as_str().unwrap().to_string())
                .filter(|n| n.starts_with("drover"))
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

#[test]
fn crate_dependencies_are_the_documented_layers() {
    let documented = documented();
    let actual = actual();
    let doc_names: BTreeSet<_> = documented.keys().collect();
    let crate_names: BTreeSet<_> = actual.keys().collect();
    assert_eq!(
        doc_names, crate_names,
        "ARCHITECTURE.md's layer table and the workspace name different crates"
    );
    for (name, deps) in &actual {
        let allowed = &documented[name];
        let forbidden: Vec<_> = deps.difference(allowed).collect();
        assert!(
            forbidden.is_empty(),
            "{name} depends on {forbidden:?}, which its layer may not use (ARCHITECTURE.md)"
        );
        let stale: Vec<_> = allowed.difference(deps).collect();
        assert!(
            stale.is_empty() || name == "drover",
            "ARCHITECTURE.md says {name} depends on {stale:?}, but it does not: update the table"
        );
    }
}
