//! A cheap drift guard for the prose docs: what `docs/user-guide.md` and
//! `docs/troubleshooting.md` name must exist. Files and tests they cite exist; the `lvstun-node`
//! flags in the guide's commands are flags of that role (asked of its clap definition); `--set`
//! keys are chart values; the node label is the one the example selects; `./dev` commands exist;
//! every condition or Event reason quoted in the troubleshooting page is one of the vocabulary's
//! (`lvstun_crds::conditions`), and every metric name a registered one. No I/O beyond reading
//! the repository.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns panic on purpose

use std::path::Path;

use lvstun_crds::conditions::{EventReason, vocabulary};
use lvstun_tests::controlplane::repo_root;

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The command lines of the ```sh blocks, with `\` continuations joined.
fn commands(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in md.lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.split(" #").next().unwrap_or_default().trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        if !pending.trim().is_empty() {
            out.push(pending.trim().to_string());
        }
        pending.clear();
    }
    out
}

/// Every `backticked` span of a Markdown text.
fn code_spans(md: &str) -> Vec<String> {
    md.replace("```", "")
        .split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// Repository paths a text names (words starting with a top-level folder of the repo).
fn repo_paths(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || "`()[],;:".contains(c))
        .map(|w| w.trim_end_matches(['.', ')']))
        // Globs and placeholders name families of files, not one.
        .filter(|w| !w.contains(['*', '<']))
        .filter(|w| {
            [
                "deploy/",
                "docs/",
                "tests/",
                "crds/",
                "node-daemon/",
                "operator/",
            ]
            .iter()
            .any(|p| w.starts_with(p))
        })
        .map(String::from)
        .collect()
}

#[test]
fn files_and_tests_the_docs_name_exist() {
    let mut checked = 0;
    for doc in ["docs/user-guide.md", "docs/troubleshooting.md", "README.md"] {
        let text = read(doc);
        for p in repo_paths(&text) {
            assert!(
                repo_root().join(&p).exists(),
                "{doc} names {p}, which does not exist"
            );
            checked += 1;
        }
        // Relative links between the docs.
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap_or_default();
            if target.ends_with(".md") && !target.contains("://") {
                let base = Path::new(doc).parent().unwrap();
                assert!(
                    repo_root().join(base).join(target).exists(),
                    "{doc} links to {target}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} references found: is the parser broken?"
    );
}

/// The long flags of a role of `lvstun-node` and of its modes (`web apply`, `balancer cleanup`),
/// from the node daemon's own command-line definition.
fn long_flags(role: &clap::Command) -> std::collections::BTreeSet<String> {
    let mut flags: std::collections::BTreeSet<String> = role
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    for mode in role.get_subcommands() {
        flags.extend(long_flags(mode));
    }
    flags
}

#[test]
fn the_guides_commands_use_flags_values_and_labels_that_exist() {
    let guide = read("docs/user-guide.md");
    let cmds = commands(&guide);
    let node = <lvstun_node::Cli as clap::CommandFactory>::command();
    let values: serde_norway::Value =
        serde_norway::from_str(&read("deploy/helm/lvstun/values.yaml")).unwrap();
    let example: serde_norway::Value =
        serde_norway::from_str(&read("deploy/examples/virtualservice.yaml")).unwrap();
    let labels = &example["spec"]["balancers"]["nodeSelector"]["matchLabels"];
    let dev = read("dev");
    let crd_names: Vec<String> = lvstun_crds::crds()
        .into_iter()
        .map(|c| c.metadata.name.unwrap_or_default())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for cmd in &cmds {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        match words.as_slice() {
            ["lvstun-node", role, rest @ ..] => {
                let role_cmd = node
                    .find_subcommand(role)
                    .unwrap_or_else(|| panic!("{cmd}: no role {role}"));
                let flags = long_flags(role_cmd);
                for flag in rest.iter().filter(|w| w.starts_with("--")) {
                    let flag = flag.split('=').next().unwrap();
                    assert!(
                        flags.contains(flag.trim_start_matches("--")),
                        "{cmd}: {role} has no {flag}"
                    );
                }
                seen.insert("lvstun-node");
            }
            ["helm", "install", ..] => {
                for pair in words.windows(2).filter(|w| w[0] == "--set") {
                    let key = pair[1].split('=').next().unwrap();
                    let mut v = &values;
                    for part in key.split('.') {
                        v = &v[part];
                    }
                    assert!(!v.is_null(), "{cmd}: {key} is not a chart value");
                }
                seen.insert("helm");
            }
            ["kubectl", "label", "node", .., kv] => {
                // A label the example selects, or one the chart runs a DaemonSet on.
                let (k, val) = kv.split_once('=').unwrap();
                let chart = |role: &str| values[role]["nodeSelector"][k].as_str() == Some(val);
                assert!(
                    labels[k].as_str() == Some(val) || chart("balancer") || chart("web"),
                    "{cmd}: the example selects {labels:?}, the chart's DaemonSets run on {:?} and {:?}",
                    values["balancer"]["nodeSelector"],
                    values["web"]["nodeSelector"]
                );
                seen.insert("label");
            }
            ["kubectl", "get", "crd", names @ ..] => {
                for n in names {
                    assert!(crd_names.iter().any(|c| c == n), "{cmd}: no CRD {n}");
                }
                seen.insert("crd");
            }
            ["./dev", sub, ..] => {
                assert!(
                    dev.contains(&format!("\n  {sub})")),
                    "{cmd}: ./dev has no {sub}"
                );
                seen.insert("dev");
            }
            _ => {}
        }
        if let Some(reason) = cmd.split("reason=").nth(1) {
            let reason = reason.split_whitespace().next().unwrap();
            assert!(
                EventReason::parse(reason).is_some(),
                "{cmd}: no Event reason {reason}"
            );
        }
    }
    for kind in ["lvstun-node", "helm", "label", "crd", "dev"] {
        assert!(
            seen.contains(kind),
            "no {kind} command checked in the guide: {cmds:#?}"
        );
    }
}

#[test]
fn reasons_and_metrics_in_troubleshooting_are_the_codes_own() {
    let text = read("docs/troubleshooting.md");
    // The vocabulary of statuses, conditions and Events, and the kinds they are written on.
    let kinds: Vec<String> = lvstun_crds::crds()
        .into_iter()
        .map(|c| c.spec.names.kind)
        .collect();
    let known = |word: &str| vocabulary().any(|v| v == word) || kinds.iter().any(|k| k == word);
    let metrics = read("operator/src/metrics.rs") + &read("node-daemon/src/balancer/http.rs");
    let (mut reasons, mut names) = (0, 0);
    for span in code_spans(&text) {
        let camel = span.len() > 1
            && span.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && span.chars().all(|c| c.is_ascii_alphabetic())
            && span.chars().any(|c| c.is_ascii_lowercase());
        if camel {
            assert!(known(&span), "reason {span} is not in the code");
            reasons += 1;
        }
        if span.starts_with("lvstun_") {
            // A series may be shown with its labels: the metric is the name before them.
            let metric = span.split('{').next().unwrap_or(&span);
            // prometheus-client appends `_total` to counters at exposition.
            let base = metric.strip_suffix("_total").unwrap_or(metric);
            assert!(
                metrics.contains(&format!("\"{metric}\""))
                    || metrics.contains(&format!("\"{base}\"")),
                "metric {span} is not registered"
            );
            names += 1;
        }
    }
    assert!(
        reasons >= 20 && names >= 8,
        "{reasons} reasons, {names} metrics"
    );
}
