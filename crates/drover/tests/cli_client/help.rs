//! Completions and examples in every help text.

use crate::helpers::{drover, ok};

#[tokio::test]
async fn completions_and_examples_in_every_help() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for shell in ["bash", "zsh", "fish"] {
        let o = ok(d, &["completions", shell]).await;
        assert!(o.stdout.len() > 1000, "{shell}: {}", o.stdout);
        for word in ["stream", "member", "transfer", "trust-anchor"] {
            assert!(o.stdout.contains(word), "{shell} completions lack {word}");
        }
    }
    assert_eq!(drover(d, &["completions", "tcsh"]).await.code, 2);

    // Walk every command from the top: each one's --help shows examples.
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let o = ok(d, &args).await;
        assert!(
            o.stdout.contains("Example"),
            "drover {args:?} has no examples:\n{}",
            o.stdout
        );
        seen += 1;
        let mut in_commands = false;
        for line in o.stdout.lines() {
            if line == "Commands:" {
                in_commands = true;
            } else if in_commands {
                let Some(name) = line
                    .strip_prefix("  ")
                    .and_then(|l| l.split_whitespace().next())
                else {
                    break;
                };
                if name != "help" {
                    let mut sub = path.clone();
                    sub.push(name.to_string());
                    todo.push(sub);
                }
            }
        }
    }
    assert!(seen > 40, "only {seen} commands");
}
