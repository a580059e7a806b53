//! The Prometheus alert rules and the Grafana dashboard in `deploy/monitoring` only name metrics
//! that a datasync service registers (read from the sources: every `register_*!("name", ...)`),
//! and the rules pass `promtool check rules` where promtool is installed.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::{collections::BTreeSet, path::Path};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(Path::parent).unwrap()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The metric names the services register: the first string literal after `register_...!(`.
fn exported() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&root().join("shared/src"), &mut files);
    for service in std::fs::read_dir(root().join("services")).unwrap().flatten() {
        let src = service.path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("register_") {
            let rest = &text[at..];
            let Some(open) = rest.find("!(") else { continue };
            if rest[..open].contains(char::is_whitespace) {
                continue;
            }
            let after = &rest[open + 2..];
            if let Some(start) = after.find('"') {
                let literal = &after[start + 1..];
                if let Some(end) = literal.find('"') {
                    names.insert(literal[..end].to_owned());
                }
            }
        }
    }
    names
}

/// Keywords, and aggregation operators (followed by `by (...)`, not always by `(`).
const PROMQL_WORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The metric names a PromQL expression reads.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    // Drop label matchers, range selectors, string literals and grouping label lists.
    let mut cleaned = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut in_string = false;
    for c in expr.chars() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            c => cleaned.push(c),
        }
    }
    let mut names = BTreeSet::new();
    let chars: Vec<char> = cleaned.chars().collect();
    let mut i = 0;
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if matches!(
                word.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                skip_list = true;
            } else if next == Some(&'(') || PROMQL_WORDS.contains(&word.as_str()) {
                // A function or a keyword.
            } else if !skip_list {
                names.insert(word);
            }
            continue;
        }
        if c == ')' {
            skip_list = false;
        }
        i += 1;
    }
    names
}

/// The registered metric a series name belongs to (histograms export `_bucket`, `_sum`, `_count`).
fn base(name: &str, exported: &BTreeSet<String>) -> Option<String> {
    if exported.contains(name) {
        return Some(name.to_owned());
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|s| name.strip_suffix(s))
        .find(|b| exported.contains(*b))
        .map(str::to_owned)
}

/// The `expr:` values of a rules file (plain or `>` folded).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(value) = trimmed.strip_prefix("expr:") else { continue };
        let value = value.trim();
        if value == ">" || value == "|" {
            let indent = line.len() - trimmed.len();
            let folded: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            exprs.push(folded.join(" "));
        } else {
            exprs.push(value.to_owned());
        }
    }
    exprs
}

#[test]
fn the_alert_rules_and_the_grafana_dashboard_read_only_exported_metrics() {
    let exported = exported();
    assert!(
        exported.contains("monitor_overall_status") && exported.contains("http_requests_total"),
        "{exported:?}"
    );
    let rules =
        std::fs::read_to_string(root().join("deploy/monitoring/prometheus-rules.yml")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/monitoring/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = rule_exprs(&rules);
    let rule_count = exprs.len();
    assert!(rule_count >= 8, "{exprs:?}");
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() > rule_count + 10);
    let mut used = BTreeSet::new();
    let mut unknown = Vec::new();
    for expr in &exprs {
        let names = metrics_in(expr);
        assert!(!names.is_empty(), "no metric in {expr:?}");
        for name in names {
            match base(&name, &exported) {
                Some(b) => {
                    used.insert(b);
                }
                None => unknown.push(format!("{name} (in {expr})")),
            }
        }
    }
    assert!(unknown.is_empty(), "not exported by any service: {unknown:#?}");
    // Every health figure the monitor exports is on the dashboard.
    for figure in exported.iter().filter(|m| m.starts_with("monitor_")) {
        assert!(used.contains(figure), "{figure} is on no panel or rule");
    }
}

#[test]
fn the_expression_reader_finds_metrics_and_skips_labels_and_functions() {
    let names = metrics_in(
        r#"histogram_quantile(0.99, sum by (job, le) (rate(http_request_duration_seconds_bucket{job="x"}[5m]))) > 1 and on (job) ready == 0"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["http_request_duration_seconds_bucket", "ready"]
    );
}

#[test]
fn promtool_accepts_the_rules_where_it_is_installed() {
    let Ok(output) = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(root().join("deploy/monitoring/prometheus-rules.yml"))
        .output()
    else {
        eprintln!("promtool is not installed: the rules were checked by the metric-name test only");
        return;
    };
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
