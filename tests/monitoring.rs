//! Monitoring: the Prometheus rules (`deploy/prometheus/`) pass promtool's
//! check and unit tests and follow the conventions (job selector, severity,
//! every rule unit-tested); a real Prometheus scraping running instances
//! loads and evaluates them (a recording rule has a value for the topic, and
//! "sink failing", "registered topic not owned", "partition stuck" and "lag
//! high" really fire); the Grafana
//! dashboard (`deploy/grafana/logingest.json`) is well formed; and every
//! metric, recorded series and label that the rules and the dashboard name
//! exists in a running logingest's `/metrics` (or in the rules file).
//!
//! promtool and prometheus come from Debian's `prometheus` package
//! (`scripts/install-stack.sh` installs it). Without them these tests fail,
//! naming the package; `LOGINGEST_PROMTOOL` / `LOGINGEST_PROMETHEUS` point
//! at other binaries.
//!
//! The shipped alerts keep production `for:` durations; the Prometheus test
//! loads a copy of the rules with every `for:` line rewritten to
//! [`TEST_FOR`], so that an alert fires within seconds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::proxy::{Fault, FaultProxy};
use common::{free_port, unique, wait_until, Logingest, Options, Server, Stack, GROUP_DEADLINE};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

const PREFIX: &str = "/logingest/topics/";
const RULES: &str = "deploy/prometheus/logingest-rules.yml";
const RULES_TEST: &str = "deploy/prometheus/logingest-rules.test.yml";
const DASHBOARD: &str = "deploy/grafana/logingest.json";
/// The scrape job the rules and the dashboard select.
const JOB: &str = "logingest";
/// The `for:` of every alert in the Prometheus test's copy of the rules.
const TEST_FOR: &str = "2s";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A binary of Debian's `prometheus` package: `$env`, else on PATH. Panics
/// naming the package when it is missing: these tests never pass silently.
fn prometheus_tool(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH: install the Debian package `prometheus` \
                 (apt-get install prometheus; scripts/install-stack.sh does), or set {env}"
            )
        })
}

/// Runs `cmd`; panics with its output unless it succeeds.
fn run_ok(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

// ---- the rules file ------------------------------------------------------------------

struct Rule {
    group: String,
    /// The alert's or the recorded series' name.
    name: String,
    alert: bool,
    expr: String,
    yaml: Yaml,
}

fn load_yaml(rel: &str) -> Yaml {
    let mut docs =
        YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"));
    assert_eq!(docs.len(), 1, "{rel}: one document");
    docs.remove(0)
}

fn rules() -> Vec<Rule> {
    let doc = load_yaml(RULES);
    let groups = doc["groups"].as_vec().expect("groups");
    let mut rules = Vec::new();
    for group in groups {
        let group_name = group["name"].as_str().expect("group name");
        for rule in group["rules"].as_vec().expect("rules") {
            let (name, alert) = match (rule["alert"].as_str(), rule["record"].as_str()) {
                (Some(a), None) => (a, true),
                (None, Some(r)) => (r, false),
                _ => panic!("{group_name}: a rule is neither alert nor record: {rule:?}"),
            };
            rules.push(Rule {
                group: group_name.to_string(),
                name: name.to_string(),
                alert,
                expr: rule["expr"].as_str().expect("expr").to_string(),
                yaml: rule.clone(),
            });
        }
    }
    rules
}

fn recorded_names() -> BTreeSet<String> {
    rules()
        .into_iter()
        .filter(|r| !r.alert)
        .map(|r| r.name)
        .collect()
}

// ---- enough PromQL to find metric names, label names and Grafana variables -----------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num,
    /// A Grafana variable: `$name`, `${name}`, `${name:format}`.
    Var(String),
    Op(String),
    Punct(char),
}

fn tokens(expr: &str) -> Vec<Tok> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let take_while = |i: &mut usize, f: &dyn Fn(char) -> bool| -> String {
        let start = *i;
        while *i < chars.len() && f(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect()
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            take_while(&mut i, &|c| c != '\n');
        } else if c == '"' || c == '\'' || c == '`' {
            let quote = c;
            i += 1;
            let mut s = String::new();
            while i < chars.len() && chars[i] != quote {
                if chars[i] == '\\' && quote != '`' && i + 1 < chars.len() {
                    i += 1;
                }
                s.push(chars[i]);
                i += 1;
            }
            assert!(i < chars.len(), "unterminated string in {expr:?}");
            i += 1;
            out.push(Tok::Str(s));
        } else if c == '$' {
            i += 1;
            let name = if chars.get(i) == Some(&'{') {
                i += 1;
                let inner = take_while(&mut i, &|c| c != '}');
                i += 1;
                inner.split(':').next().unwrap_or_default().to_string()
            } else {
                take_while(&mut i, &|c| c.is_ascii_alphanumeric() || c == '_')
            };
            out.push(Tok::Var(name));
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            take_while(&mut i, &|c| {
                c.is_ascii_alphanumeric() || c == '.' || c == '_'
            });
            out.push(Tok::Num);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let ident = take_while(&mut i, &|c| {
                c.is_ascii_alphanumeric() || c == '_' || c == ':'
            });
            out.push(Tok::Ident(ident));
        } else if "=!<>".contains(c) {
            let mut op = c.to_string();
            if matches!(chars.get(i + 1), Some('=') | Some('~')) {
                op.push(chars[i + 1]);
                i += 1;
            }
            i += 1;
            out.push(Tok::Op(op));
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

/// A vector selector: a metric name and its label matchers.
#[derive(Debug)]
struct Selector {
    metric: String,
    matchers: Vec<(String, String, String)>,
}

/// What one expression names.
#[derive(Debug, Default)]
struct Uses {
    selectors: Vec<Selector>,
    labels: BTreeSet<String>,
    vars: BTreeSet<String>,
}

const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Words that are not metric names even when no `(` follows them
/// (aggregations may be written `sum by (l) (...)`).
const KEYWORDS: [&str; 20] = [
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "atan2",
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

fn analyse(expr: &str) -> Uses {
    let toks = tokens(expr);
    let mut uses = Uses::default();
    let mut i = 0;
    // Label matchers from `{` (at toks[i]) to `}`; returns the index after.
    let matchers = |mut i: usize, uses: &mut Uses| -> (usize, Vec<(String, String, String)>) {
        let mut found = Vec::new();
        i += 1;
        loop {
            match (&toks.get(i), &toks.get(i + 1), &toks.get(i + 2)) {
                (Some(Tok::Punct('}')), _, _) => return (i + 1, found),
                (Some(Tok::Punct(',')), _, _) => i += 1,
                (Some(Tok::Ident(l)), Some(Tok::Op(op)), Some(Tok::Str(v))) => {
                    uses.labels.insert(l.clone());
                    found.push((l.clone(), op.clone(), v.clone()));
                    i += 3;
                }
                (Some(Tok::Ident(l)), Some(Tok::Op(op)), Some(Tok::Var(v))) => {
                    uses.labels.insert(l.clone());
                    uses.vars.insert(v.clone());
                    found.push((l.clone(), op.clone(), format!("${v}")));
                    i += 3;
                }
                other => panic!("cannot read the label matchers of {expr:?} at {other:?}"),
            }
        }
    };
    // Variables inside strings (`topic=~"$topic"`).
    for tok in &toks {
        if let Tok::Str(text) = tok {
            for var in tokens(&text.replace(['"', '\'', '`'], " ")) {
                if let Tok::Var(v) = var {
                    uses.vars.insert(v);
                }
            }
        }
    }
    while i < toks.len() {
        match &toks[i] {
            Tok::Var(v) => {
                uses.vars.insert(v.clone());
                i += 1;
            }
            Tok::Ident(word) if GROUPING.contains(&word.as_str()) => {
                i += 1;
                if toks.get(i) == Some(&Tok::Punct('(')) {
                    i += 1;
                    while let Some(tok) = toks.get(i) {
                        i += 1;
                        match tok {
                            Tok::Ident(l) => {
                                uses.labels.insert(l.clone());
                            }
                            Tok::Punct(',') => {}
                            Tok::Punct(')') => break,
                            other => panic!("{expr:?}: unexpected {other:?} in {word}(...)"),
                        }
                    }
                }
            }
            Tok::Ident(word) if word == "label_values" => {
                // label_values([selector,] label)
                let close = toks[i..]
                    .iter()
                    .position(|t| *t == Tok::Punct(')'))
                    .map(|p| i + p)
                    .unwrap_or_else(|| panic!("{expr:?}: label_values without ')'"));
                if let Some(Tok::Ident(label)) = toks.get(close - 1) {
                    uses.labels.insert(label.clone());
                }
                let inner = &toks[i + 2..close - 1];
                if let Some(Tok::Ident(metric)) = inner.first() {
                    let mut selector = Selector {
                        metric: metric.clone(),
                        matchers: Vec::new(),
                    };
                    if inner.get(1) == Some(&Tok::Punct('{')) {
                        let (_, m) = matchers(i + 3, &mut uses);
                        selector.matchers = m;
                    }
                    uses.selectors.push(selector);
                }
                i = close + 1;
            }
            // A function or an aggregation.
            Tok::Ident(_) if toks.get(i + 1) == Some(&Tok::Punct('(')) => i += 1,
            Tok::Ident(word) if KEYWORDS.contains(&word.as_str()) => i += 1,
            Tok::Ident(metric) => {
                let mut selector = Selector {
                    metric: metric.clone(),
                    matchers: Vec::new(),
                };
                i += 1;
                if toks.get(i) == Some(&Tok::Punct('{')) {
                    let (next, m) = matchers(i, &mut uses);
                    selector.matchers = m;
                    i = next;
                }
                uses.selectors.push(selector);
            }
            Tok::Punct('{') => {
                let (next, _) = matchers(i, &mut uses);
                i = next;
            }
            _ => i += 1,
        }
    }
    uses
}

#[test]
fn promql_scanner_finds_metrics_labels_and_variables() {
    let uses = analyse(
        r#"sum by (job, le) (rate(logingest_x_bucket{job="logingest", topic=~"$topic"}[$__rate_interval]))
           / on (job) group_left ignoring(le) topic:logingest_y:rate1m{a!="}{"} offset 5m
           + deriv(up[15m:1m]) # logingest_comment
           unless label_values(logingest_z{k="v"}, topic)"#,
    );
    let metrics: Vec<&str> = uses.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(
        metrics,
        [
            "logingest_x_bucket",
            "topic:logingest_y:rate1m",
            "up",
            "logingest_z"
        ]
    );
    assert_eq!(
        uses.selectors[0].matchers,
        [
            ("job".into(), "=".into(), "logingest".into()),
            ("topic".into(), "=~".into(), "$topic".into())
        ]
    );
    assert_eq!(
        uses.labels,
        ["a", "job", "k", "le", "topic"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    assert_eq!(
        uses.vars,
        ["__rate_interval", "topic"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}

/// Whether every selector of `uses` selects `job="logingest"`.
fn job_selector_problems(what: &str, uses: &Uses) -> Vec<String> {
    uses.selectors
        .iter()
        .filter(|s| {
            !s.matchers
                .iter()
                .any(|(l, op, v)| l == "job" && op == "=" && v == JOB)
        })
        .map(|s| format!("{what}: selector {} lacks job=\"{JOB}\"", s.metric))
        .collect()
}

// ---- promtool -------------------------------------------------------------------------

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    let promtool = prometheus_tool("promtool", "LOGINGEST_PROMTOOL");
    let mut check = Command::new(&promtool);
    check.args(["check", "rules"]).arg(root().join(RULES));
    let out = run_ok(check, "promtool check rules");
    let rules = rules();
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "promtool check rules:\n{out}"
    );
    // Rule files in the test file are relative to its directory.
    let mut test = Command::new(&promtool);
    test.args(["test", "rules"])
        .arg(root().join(RULES_TEST))
        .current_dir(root().join("deploy/prometheus"));
    let out = run_ok(test, "promtool test rules");
    assert!(out.contains("SUCCESS"), "promtool test rules:\n{out}");
}

/// Conventions, and coverage of the unit tests: every alert fires in some
/// case and stays quiet in another, every recorded series is compared.
#[test]
fn rules_follow_the_conventions_and_are_all_unit_tested() {
    let rules = rules();
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for rule in &rules {
        let what = format!("{} {}", rule.group, rule.name);
        if !names.insert(rule.name.clone()) {
            problems.push(format!("{what}: defined twice"));
        }
        problems.extend(job_selector_problems(&what, &analyse(&rule.expr)));
        if rule.alert {
            if !rule.name.starts_with("Logingest") {
                problems.push(format!("{what}: alert names start with Logingest"));
            }
            if rule.yaml["for"].as_str().is_none() {
                problems.push(format!("{what}: no `for:`"));
            }
            let severity = rule.yaml["labels"]["severity"].as_str().unwrap_or("");
            if !["warning", "critical"].contains(&severity) {
                problems.push(format!("{what}: severity {severity:?}"));
            }
            for key in ["summary", "description"] {
                if rule.yaml["annotations"][key].as_str().unwrap_or("").len() < 20 {
                    problems.push(format!("{what}: annotation {key} missing or too short"));
                }
            }
        } else {
            // level:metric:operations, the metric part one logingest exports.
            let parts: Vec<&str> = rule.name.split(':').collect();
            if parts.len() != 3 || !parts[1].starts_with("logingest_") {
                problems.push(format!(
                    "{what}: not named level:logingest_metric:operation"
                ));
            }
        }
    }

    let test = load_yaml(RULES_TEST);
    let mut firing: BTreeSet<String> = BTreeSet::new();
    let mut quiet: BTreeSet<String> = BTreeSet::new();
    let mut compared: BTreeSet<String> = BTreeSet::new();
    for case in test["tests"].as_vec().expect("tests") {
        for alert_test in case["alert_rule_test"].as_vec().into_iter().flatten() {
            let name = alert_test["alertname"]
                .as_str()
                .expect("alertname")
                .to_string();
            let expected = alert_test["exp_alerts"].as_vec().map_or(0, Vec::len);
            if expected > 0 {
                firing.insert(name);
            } else {
                quiet.insert(name);
            }
        }
        for expr_test in case["promql_expr_test"].as_vec().into_iter().flatten() {
            let expr = expr_test["expr"].as_str().expect("expr");
            compared.extend(analyse(expr).selectors.into_iter().map(|s| s.metric));
        }
    }
    for rule in &rules {
        if rule.alert {
            if !firing.contains(&rule.name) {
                problems.push(format!("{}: no unit test where it fires", rule.name));
            }
            if !quiet.contains(&rule.name) {
                problems.push(format!("{}: no unit test where it stays quiet", rule.name));
            }
        } else if !compared.contains(&rule.name) {
            problems.push(format!("{}: no promql_expr_test", rule.name));
        }
    }
    for name in firing.union(&quiet) {
        if !names.contains(name) {
            problems.push(format!("unit test of unknown alert {name}"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

// ---- the dashboard --------------------------------------------------------------------

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Every PromQL expression of the dashboard, with where it is.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let what = format!(
                    "panel {:?} target {}",
                    panel["title"].as_str().unwrap_or(""),
                    target["refId"].as_str().unwrap_or("?")
                );
                out.push((what, expr.to_string()));
            }
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if var["type"] == "query" {
            let query = var["query"]
                .as_str()
                .or_else(|| var["query"]["query"].as_str())
                .unwrap_or_else(|| panic!("variable {}: no query", var["name"]));
            out.push((format!("variable {}", var["name"]), query.to_string()));
        }
    }
    out
}

/// Grafana's own variables that queries may use.
const GRAFANA_VARS: [&str; 4] = ["__rate_interval", "__interval", "__range", "__range_s"];

#[test]
fn dashboard_is_well_formed() {
    let d = dashboard();
    let mut problems = Vec::new();
    for key in [
        "title",
        "uid",
        "schemaVersion",
        "panels",
        "templating",
        "time",
        "annotations",
        "tags",
    ] {
        if d.get(key).is_none() {
            problems.push(format!("top-level key {key} missing"));
        }
    }
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let uid = d["uid"].as_str().unwrap_or("");
    assert!(
        !uid.is_empty() && uid.len() <= 40,
        "uid {uid:?}: 1 to 40 characters"
    );
    let schema = d["schemaVersion"].as_i64().unwrap_or(0);
    assert!(schema >= 36, "schemaVersion {schema} < 36");
    assert!(d["time"]["from"].is_string() && d["time"]["to"].is_string());

    // Template variables.
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let mut var_names = BTreeSet::new();
    for var in vars {
        let name = var["name"].as_str().unwrap_or("");
        assert!(!name.is_empty(), "variable without name: {var}");
        assert!(var_names.insert(name.to_string()), "variable {name} twice");
        assert!(var["type"].is_string(), "variable {name}: no type");
    }
    let datasource = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let ds_ref = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    let topic = vars
        .iter()
        .find(|v| v["name"] == "topic")
        .expect("a topic variable");
    assert_eq!(topic["type"], "query");
    assert_eq!(topic["datasource"], ds_ref, "topic variable's datasource");
    let topic_query = "label_values(logingest_documents_read_total, topic)";
    assert!(
        topic["query"] == topic_query || topic["query"]["query"] == topic_query,
        "topic variable: {}",
        topic["query"]
    );
    assert_eq!(topic["definition"], topic_query);
    assert_eq!(topic["includeAll"], true);
    assert_eq!(topic["multi"], true);

    // Panels.
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, i64, i64, i64, i64)> = Vec::new();
    for panel in panels(&d) {
        let title = panel["title"].as_str().unwrap_or("").to_string();
        let what = format!("panel {title:?}");
        if title.is_empty() {
            problems.push(format!("{what}: no title"));
        }
        match panel["id"].as_i64() {
            Some(id) if ids.insert(id) => {}
            Some(id) => problems.push(format!("{what}: id {id} used twice")),
            None => problems.push(format!("{what}: no id")),
        }
        let kind = panel["type"].as_str().unwrap_or("");
        if kind.is_empty() {
            problems.push(format!("{what}: no type"));
        }
        let g = &panel["gridPos"];
        let (Some(x), Some(y), Some(w), Some(h)) = (
            g["x"].as_i64(),
            g["y"].as_i64(),
            g["w"].as_i64(),
            g["h"].as_i64(),
        ) else {
            problems.push(format!("{what}: gridPos {g}"));
            continue;
        };
        if x < 0 || y < 0 || w < 1 || h < 1 || x + w > 24 {
            problems.push(format!("{what}: gridPos {g} outside the 24-column grid"));
        }
        for (other, ox, oy, ow, oh) in &boxes {
            if x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h {
                problems.push(format!("{what} overlaps panel {other:?}"));
            }
        }
        boxes.push((title.clone(), x, y, w, h));
        if kind == "row" {
            // A row is a section header: no query of its own.
            if panel.get("targets").is_some() || w != 24 || h != 1 {
                problems.push(format!("{what}: a row is 24x1 and has no targets"));
            }
            continue;
        }
        if panel["datasource"] != ds_ref {
            problems.push(format!("{what}: datasource {}", panel["datasource"]));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{what}: no targets"));
        }
        let mut ref_ids = BTreeSet::new();
        for target in &targets {
            let expr = target["expr"].as_str().unwrap_or("");
            if expr.trim().is_empty() {
                problems.push(format!("{what}: a target without expr"));
            }
            let ref_id = target["refId"].as_str().unwrap_or("");
            if ref_id.is_empty() || !ref_ids.insert(ref_id.to_string()) {
                problems.push(format!("{what}: refId {ref_id:?} missing or repeated"));
            }
            if target["datasource"] != ds_ref {
                problems.push(format!(
                    "{what}: target datasource {}",
                    target["datasource"]
                ));
            }
        }
    }
    assert!(ids.len() >= 20, "only {} panels", ids.len());

    // Queries: variables defined, job selected, recorded series recorded.
    let recorded = recorded_names();
    for (what, expr) in dashboard_exprs(&d) {
        let uses = analyse(&expr);
        for var in &uses.vars {
            if !var_names.contains(var) && !GRAFANA_VARS.contains(&var.as_str()) {
                problems.push(format!("{what}: unknown variable ${var}"));
            }
        }
        if !what.starts_with("variable") {
            problems.extend(job_selector_problems(&what, &uses));
        }
        for s in &uses.selectors {
            if s.metric.contains(':') && !recorded.contains(&s.metric) {
                problems.push(format!("{what}: {} is not recorded by {RULES}", s.metric));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

// ---- against a running logingest ------------------------------------------------------

/// `/metrics` of `daemon`, or empty while it does not answer.
async fn scrape(daemon: &Logingest) -> String {
    match reqwest::get(format!("{}/metrics", daemon.http)).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Documents in `index` (0 while it does not exist).
async fn indexed(es_url: &str, index: &str) -> u64 {
    let client = reqwest::Client::new();
    let _ = client
        .post(format!("{es_url}/{index}/_refresh"))
        .send()
        .await;
    match client.get(format!("{es_url}/{index}/_count")).send().await {
        Ok(r) => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|b| b["count"].as_u64())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// The families of an exposition (`# TYPE` lines) and the label names of
/// each family's samples.
struct Exposition {
    types: BTreeMap<String, String>,
    labels: BTreeMap<String, BTreeSet<String>>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut types = BTreeMap::new();
        let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                types.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') && !line.is_empty() {
                let name_end = line.find(['{', ' ']).unwrap_or(line.len());
                let sample = &line[..name_end];
                let names = labels.entry(sample.to_string()).or_default();
                if let Some(inner) = line[name_end..]
                    .strip_prefix('{')
                    .and_then(|r| r.split_once('}'))
                {
                    for pair in inner.0.split(',') {
                        if let Some((label, _)) = pair.split_once('=') {
                            names.insert(label.to_string());
                        }
                    }
                }
            }
        }
        Self { types, labels }
    }

    /// The sample names a query can select: counters with `_total`,
    /// histograms' `_bucket`, `_sum` and `_count`, gauges as they are.
    fn sample_names(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (family, kind) in &self.types {
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for suffix in suffixes {
                out.insert(format!("{family}{suffix}"), family.clone());
            }
        }
        out
    }
}

/// Every metric name in the rules' and the dashboard's expressions is one a
/// running instance exports (with the suffix its type gets), every recorded
/// series is recorded, and every label name is one the series carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_name_only_exported_metrics() {
    let stack = Stack::start();
    let topic = unique("names");
    stack.create_topic(&topic, 2);
    let daemon = Logingest::start(&stack, &Options::default());
    stack.put(&format!("{PREFIX}{topic}"), "");
    stack.produce_lines(&topic, 2, 20).await;
    wait_until("20 documents indexed", GROUP_DEADLINE, || async {
        indexed(&stack.es_url, &topic).await == 20
    })
    .await;
    // The partition series exist once the tasks have reported (lag in
    // messages needs librdkafka's statistics, every 5 s).
    let mut partition_series = Vec::new();
    for metric in ["partition_lag", "partition_lag_seconds"] {
        for p in 0..2 {
            partition_series.push(format!(
                "logingest_{metric}{{topic=\"{topic}\",partition=\"{p}\"}}"
            ));
        }
    }
    wait_until(
        "per-partition series in /metrics",
        Duration::from_secs(30),
        || async {
            let text = scrape(&daemon).await;
            partition_series.iter().all(|s| text.contains(s.as_str()))
        },
    )
    .await;
    let text = scrape(&daemon).await;
    let exposition = Exposition::parse(&text);
    let samples = exposition.sample_names();
    // Per-topic counters that have not counted yet are exported at 0 (the
    // first increment is then visible to increase()).
    for family in [
        "documents_dead_lettered",
        "dead_letters_refused",
        "partition_task_restarts",
    ] {
        let series = format!("logingest_{family}_total{{topic=\"{topic}\"}} 0\n");
        assert!(text.contains(&series), "{series} not in /metrics:\n{text}");
    }

    // Label names: those of logingest's series, plus what Prometheus adds.
    let mut known_labels: BTreeSet<String> = ["job", "instance", "le", "__name__"]
        .map(String::from)
        .into_iter()
        .collect();
    for (sample, names) in &exposition.labels {
        if sample.starts_with("logingest_") {
            known_labels.extend(names.iter().cloned());
        }
    }
    // With the default honor_labels: false, Prometheus renames the
    // instance label of logingest_instance_info.
    let legend_labels: BTreeSet<String> = known_labels
        .iter()
        .cloned()
        .chain(["exported_instance".to_string()])
        .collect();

    let recorded = recorded_names();
    let mut exprs: Vec<(String, String)> = rules()
        .into_iter()
        .map(|r| (format!("rule {}", r.name), r.expr))
        .collect();
    let d = dashboard();
    exprs.extend(dashboard_exprs(&d));
    let mut problems = Vec::new();
    let mut used_families = BTreeSet::new();
    for (what, expr) in &exprs {
        let uses = analyse(expr);
        for s in &uses.selectors {
            let name = &s.metric;
            if name.starts_with("logingest_") {
                match samples.get(name) {
                    Some(family) => {
                        used_families.insert(family.clone());
                    }
                    None => {
                        let hint = exposition
                            .types
                            .get(name.trim_end_matches("_total"))
                            .map(|kind| format!(" (family {name} is a {kind})"))
                            .unwrap_or_default();
                        problems.push(format!("{what}: {name} is not in /metrics{hint}"));
                    }
                }
            } else if name.contains(':') {
                if !recorded.contains(name) {
                    problems.push(format!("{what}: {name} is not recorded by {RULES}"));
                }
            } else if name != "up" {
                problems.push(format!("{what}: unknown metric {name}"));
            }
        }
        for label in &uses.labels {
            if !known_labels.contains(label) {
                problems.push(format!("{what}: label {label} is on no logingest series"));
            }
        }
    }
    for panel in panels(&d) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let legend = target["legendFormat"].as_str().unwrap_or("");
            for part in legend.split("{{").skip(1) {
                let label = part.split("}}").next().unwrap_or("").trim();
                if !legend_labels.contains(label) {
                    problems.push(format!(
                        "panel {}: legend label {label} is on no series",
                        panel["title"]
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}\n/metrics:\n{text}");
    let unused: Vec<&String> = exposition
        .types
        .keys()
        .filter(|f| f.starts_with("logingest_") && !used_families.contains(*f))
        .collect();
    assert!(
        unused.is_empty(),
        "families shown by neither the rules nor the dashboard: {unused:?}"
    );
}

// ---- a real Prometheus ----------------------------------------------------------------

/// A Prometheus server on a free port scraping `targets` every second
/// under job "logingest", evaluating a copy of the rules every second.
/// Killed when dropped (and with the test process).
struct Prometheus {
    url: String,
    client: reqwest::Client,
    // Dropped in order: the server, then its directory.
    _server: Server,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- Prometheus log ----\n{}", self.log());
        }
    }
}

/// The rules with every `for:` set to [`TEST_FOR`]; panics unless every
/// alert had one.
fn rules_for_test() -> String {
    let text = read(RULES);
    let mut rewritten = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let body = line.trim_start();
            if body.starts_with("for:") {
                rewritten += 1;
                let indent = &line[..line.len() - body.len()];
                format!("{indent}for: {TEST_FOR}")
            } else {
                line.to_string()
            }
        })
        .collect();
    let alerts = rules().iter().filter(|r| r.alert).count();
    assert_eq!(rewritten, alerts, "every alert has one `for:` line");
    lines.join("\n") + "\n"
}

impl Prometheus {
    async fn start(bin: PathBuf, targets: &[&Logingest]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = dir.path().join("logingest-rules.yml");
        std::fs::write(&rules, rules_for_test()).unwrap();
        let targets: Vec<String> = targets
            .iter()
            .map(|t| format!("'{}'", t.http.trim_start_matches("http://")))
            .collect();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [{}]\n",
                rules.display(),
                targets.join(", ")
            ),
        )
        .unwrap();
        let port = free_port();
        let data = dir.path().join("data");
        let server = Server::new(
            "prometheus",
            port,
            dir.path().join("prometheus.log"),
            Box::new(move || {
                let mut c = Command::new(&bin);
                c.arg(format!("--config.file={}", config.display()))
                    .arg(format!("--storage.tsdb.path={}", data.display()))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .arg("--log.level=warn");
                c
            }),
        );
        let prometheus = Self {
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            _server: server,
            dir,
        };
        wait_until("Prometheus ready", Duration::from_secs(30), || async {
            prometheus
                .client
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET /api/v1/`path`: its `data`, or `None` while it fails.
    async fn api(&self, path: &str) -> Option<Value> {
        let body: Value = self
            .client
            .get(format!("{}/api/v1/{path}", self.url))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// An instant query's result vector; panics when Prometheus refuses the
    /// query.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let body: Value = self
            .client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .expect("query Prometheus")
            .json()
            .await
            .expect("query reply");
        assert_eq!(body["status"], "success", "query {expr}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Alerts in state `firing` named `name`.
    async fn firing(&self, name: &str) -> Vec<Value> {
        let Some(data) = self.api("alerts").await else {
            return Vec::new();
        };
        data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .cloned()
            .collect()
    }
}

fn value_of(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Two instances in their own consumer groups: one healthy, one whose
/// Elasticsearch answers every `_bulk` with a reply that is not a bulk
/// reply; a topic indexed under steady load and a registered topic that
/// does not exist in Kafka. Prometheus must scrape both, load every rule
/// with health "ok", record the topic's indexed rate, and fire "sink
/// failing" for the broken instance only and "registered topic not owned"
/// for the missing topic only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_logingest_and_evaluates_the_rules() {
    // Before anything else, so that a missing package fails at once.
    let bin = prometheus_tool("prometheus", "LOGINGEST_PROMETHEUS");
    let stack = Stack::start();
    let topic = unique("watched");
    let ghost = unique("ghost");
    stack.create_topic(&topic, 2);
    let proxy = FaultProxy::start(&stack.es_url).await;
    proxy.set(Fault::BulkReply200("{}".into()));
    let healthy = Logingest::start(&stack, &Options::default());
    let broken = Logingest::start(
        &stack,
        &Options {
            es_url: Some(proxy.url()),
            // Its partitions never move: stuck within seconds.
            kafka: "stuck_after = \"3s\"".into(),
            ..Options::default()
        },
    );
    // Two records an hour old first: the broken instance never gets them
    // acknowledged, so its lag is an hour (above LogingestLagHigh's 300 s);
    // the healthy one indexes them at once.
    let producer = common::steady_producer(&stack.brokers);
    let hour_ago = chrono::Utc::now().timestamp_millis() - 3_600_000;
    for p in 0..2 {
        let value = format!("{topic} an hour old {p}");
        let record = rdkafka::producer::FutureRecord::<(), _>::to(&topic)
            .payload(&value)
            .partition(p)
            .timestamp(hour_ago);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
    drop(producer);
    stack.put(&format!("{PREFIX}{topic}"), "");
    // Never created: tansu does not create a topic a consumer subscribes to.
    stack.put(&format!("{PREFIX}{ghost}"), "");
    let stop = Arc::new(AtomicBool::new(false));
    let producer = stack.produce_steadily(&topic, 2, 20, stop.clone());
    wait_until("the healthy instance indexes", GROUP_DEADLINE, || async {
        indexed(&stack.es_url, &topic).await > 0
    })
    .await;

    let prometheus = Prometheus::start(bin, &[&healthy, &broken]).await;
    let target = |d: &Logingest| d.http.trim_start_matches("http://").to_string();
    let (healthy_target, broken_target) = (target(&healthy), target(&broken));

    // Both targets scraped.
    wait_until("both targets up", Duration::from_secs(30), || async {
        let Some(data) = prometheus.api("targets").await else {
            return false;
        };
        let up: BTreeSet<String> = data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["health"] == "up" && t["labels"]["job"] == JOB)
            .filter_map(|t| t["labels"]["instance"].as_str().map(String::from))
            .collect();
        up == BTreeSet::from([healthy_target.clone(), broken_target.clone()])
    })
    .await;

    // Every rule loaded and evaluated without error.
    let expected: BTreeMap<String, usize> = rules().iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.group.clone()).or_default() += 1;
        m
    });
    let all_ok = || async {
        let Some(data) = prometheus.api("rules").await else {
            return false;
        };
        let groups = data["groups"].as_array().cloned().unwrap_or_default();
        let loaded: BTreeMap<String, usize> = groups
            .iter()
            .map(|g| {
                (
                    g["name"].as_str().unwrap_or("").to_string(),
                    g["rules"].as_array().map_or(0, Vec::len),
                )
            })
            .collect();
        let errors: Vec<&Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .filter(|r| r["health"] == "err")
            .collect();
        assert!(
            errors.is_empty(),
            "rules failing in Prometheus: {errors:#?}"
        );
        loaded == expected
            && groups
                .iter()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .all(|r| r["health"] == "ok")
    };
    wait_until(
        "every rule loaded with health ok",
        Duration::from_secs(30),
        all_ok,
    )
    .await;

    // A recording rule has a value for the topic.
    let indexed_rate =
        format!("topic:logingest_documents_indexed:rate1m{{job=\"{JOB}\", topic=\"{topic}\"}}");
    wait_until(
        "the topic's indexed rate is recorded",
        Duration::from_secs(60),
        || async {
            prometheus
                .query(&indexed_rate)
                .await
                .first()
                .is_some_and(|s| value_of(s) > 0.0)
        },
    )
    .await;
    // The instance id shows as exported_instance (the target is `instance`).
    let info = prometheus
        .query(&format!("logingest_instance_info{{job=\"{JOB}\"}}"))
        .await;
    assert_eq!(info.len(), 2, "{info:#?}");
    for sample in &info {
        assert!(
            sample["metric"]["exported_instance"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "instance id not in exported_instance: {sample}"
        );
    }

    // The alerts.
    wait_until(
        "LogingestSinkFailing fires for the broken instance",
        Duration::from_secs(60),
        || async {
            prometheus
                .firing("LogingestSinkFailing")
                .await
                .iter()
                .any(|a| a["labels"]["instance"] == broken_target.as_str())
        },
    )
    .await;
    wait_until(
        "LogingestTopicNotOwned fires for the missing topic",
        Duration::from_secs(60),
        || async {
            prometheus
                .firing("LogingestTopicNotOwned")
                .await
                .iter()
                .any(|a| a["labels"]["topic"] == ghost.as_str())
        },
    )
    .await;
    wait_until(
        "LogingestPartitionStuck fires for the broken instance",
        Duration::from_secs(60),
        || async {
            prometheus
                .firing("LogingestPartitionStuck")
                .await
                .iter()
                .any(|a| {
                    a["labels"]["instance"] == broken_target.as_str()
                        && a["labels"]["topic"] == topic.as_str()
                })
        },
    )
    .await;
    wait_until(
        "LogingestLagHigh fires for the topic",
        Duration::from_secs(60),
        || async {
            prometheus
                .firing("LogingestLagHigh")
                .await
                .iter()
                .any(|a| a["labels"]["topic"] == topic.as_str())
        },
    )
    .await;
    let stuck = prometheus.firing("LogingestPartitionStuck").await;
    assert!(
        stuck
            .iter()
            .all(|a| a["labels"]["instance"] == broken_target.as_str()),
        "partitions stuck on the healthy instance too: {stuck:#?}"
    );
    // The healthy instance's lag of the topic is 0: the alert's value is the
    // broken one's hour.
    let healthy_lag = prometheus
        .query(&format!(
            "max(logingest_partition_lag_seconds{{job=\"{JOB}\", instance=\"{healthy_target}\", topic=\"{topic}\"}})"
        ))
        .await;
    assert!(
        healthy_lag.first().is_some_and(|s| value_of(s) < 300.0),
        "healthy instance's lag: {healthy_lag:#?}"
    );
    let sink = prometheus.firing("LogingestSinkFailing").await;
    assert!(
        sink.iter()
            .all(|a| a["labels"]["instance"] == broken_target.as_str()),
        "sink failing for the healthy instance too: {sink:#?}"
    );
    assert_eq!(sink[0]["labels"]["severity"], "critical");
    assert!(sink[0]["annotations"]["summary"]
        .as_str()
        .is_some_and(|s| s.contains(&broken_target)));
    let orphans = prometheus.firing("LogingestTopicNotOwned").await;
    assert!(
        orphans
            .iter()
            .all(|a| a["labels"]["topic"] == ghost.as_str()),
        "the ingested topic counts as not owned: {orphans:#?}"
    );

    // Every dashboard query evaluates and shows something against these two
    // instances (Grafana's variables substituted).
    for (what, expr) in dashboard_exprs(&dashboard()) {
        if what.starts_with("variable") {
            continue;
        }
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$topic", ".*");
        wait_until(
            &format!("{what} shows data: {expr}"),
            Duration::from_secs(30),
            || async { !prometheus.query(&expr).await.is_empty() },
        )
        .await;
    }

    stop.store(true, Ordering::Relaxed);
    producer.await.expect("producer");
    assert!(
        !prometheus.log().contains("level=error"),
        "Prometheus logged errors:\n{}",
        prometheus.log()
    );
    drop(proxy);
}
