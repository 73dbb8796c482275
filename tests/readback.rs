//! `logingest search` and `logingest tail` against the real pipeline:
//! topics registered in etcd, lines produced to Kafka (tansu), indexed by a
//! running logingest into osmem-server, then read back by the CLI.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use common::{logingest_cli, unique, wait_until, Logingest, Options, Stack, GROUP_DEADLINE};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

const PREFIX: &str = "/logingest/topics/";
/// A registry prefix the daemon does not watch: topics registered there
/// exist for the CLI only.
const CLI_ONLY_PREFIX: &str = "/readback-cli-only/topics/";

/// Writes a CLI config for `stack` (etcd, Elasticsearch at `es_url`).
fn cli_config(stack: &Stack, name: &str, prefix: &str, es_url: &str) -> PathBuf {
    let path = stack.dir.path().join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[etcd]\nendpoints = [\"{}\"]\nprefix = \"{prefix}\"\n\n[elasticsearch]\nurl = \"{es_url}\"\nrequest_timeout = \"5s\"\n",
            stack.etcd_url
        ),
    )
    .expect("write cli config");
    path
}

fn run(config: &Path, args: &[&str]) -> Output {
    let mut all = vec![args[0], "--config", config.to_str().expect("utf-8 path")];
    all.extend_from_slice(&args[1..]);
    logingest_cli(&all, &[])
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_lines(out: &Output) -> Vec<Value> {
    stdout_lines(out)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

/// Indexes `docs` (`(index, id, source)`) with `_bulk` and refreshes.
async fn bulk(es_url: &str, docs: &[(String, String, Value)]) {
    let mut body = String::new();
    for (index, id, source) in docs {
        body.push_str(&json!({"index": {"_index": index, "_id": id}}).to_string());
        body.push('\n');
        body.push_str(&source.to_string());
        body.push('\n');
    }
    let client = reqwest::Client::new();
    let reply: Value = client
        .post(format!("{es_url}/_bulk"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("bulk")
        .json()
        .await
        .expect("bulk reply");
    assert_eq!(reply["errors"], false, "{reply}");
    let _ = client.post(format!("{es_url}/_refresh")).send().await;
}

/// Produces `(value, timestamp_ms)` to partition 0 of `topic`, with the
/// given Kafka timestamps; returns the `_id`s.
async fn produce_at(brokers: &str, topic: &str, records: &[(String, i64)]) -> Vec<String> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let mut ids = Vec::new();
    for (value, timestamp) in records {
        let delivery = producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .payload(value)
                    .partition(0)
                    .timestamp(*timestamp),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
        ids.push(format!(
            "{topic}-{}-{}",
            delivery.partition, delivery.offset
        ));
    }
    ids
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("time")
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_a_topics_documents_by_word_field_and_time() {
    let stack = Stack::start();
    let topic = unique("web");
    let neighbour = unique("other");
    stack.create_topic(&topic, 2);
    stack.create_topic(&neighbour, 1);
    // Dated indices; the neighbour writes into the same ones.
    stack.put(
        &format!("{PREFIX}{topic}"),
        r#"{"index": "{topic}-%Y.%m.%d"}"#,
    );
    stack.put(
        &format!("{PREFIX}{neighbour}"),
        &format!(r#"{{"index": "{topic}-%Y.%m.%d"}}"#),
    );
    let _daemon = Logingest::start(&stack, &Options::default());
    let lines = [
        "GET /index.html 200",
        "GET /missing 404 needle",
        "POST /login 200",
        "GET /favicon.ico 200",
        "POST /upload 500 needle",
        "GET /health 200",
    ];
    let records: Vec<_> = lines
        .iter()
        .map(|l| (None, l.as_bytes().to_vec()))
        .collect();
    let ids = stack.produce(&topic, 2, &records).await;
    let neighbour_ids = stack
        .produce(
            &neighbour,
            1,
            &[(None, b"GET /neighbour 200 needle".to_vec())],
        )
        .await;
    let pattern = format!("{topic}-*");
    wait_until("7 documents indexed", GROUP_DEADLINE, || async {
        stack.count(&pattern).await == Some(7)
    })
    .await;
    let config = cli_config(&stack, "cli", PREFIX, &stack.es_url);

    // Everything of the topic, newest first, not the neighbour's.
    let out = run(&config, &["search", &topic, "-o", "json"]);
    ok(&out);
    let docs = json_lines(&out);
    let mut found: Vec<String> = docs
        .iter()
        .map(|d| d["_id"].as_str().unwrap().to_string())
        .collect();
    found.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(found, expected, "the topic's documents only");
    for d in &docs {
        assert_eq!(d["kafka"]["topic"], topic.as_str());
        let index = d["_index"].as_str().unwrap();
        assert!(index.starts_with(&format!("{topic}-")), "{index}");
        assert!(d["message"].is_string() && d["@timestamp"].is_string());
    }
    let times: Vec<&str> = docs
        .iter()
        .map(|d| d["@timestamp"].as_str().unwrap())
        .collect();
    let mut newest_first = times.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, newest_first, "newest first");

    // By a word.
    let out = run(&config, &["search", &topic, "needle"]);
    ok(&out);
    let found = stdout_lines(&out);
    assert_eq!(found.len(), 2, "{found:?}");
    for line in &found {
        assert!(line.contains("needle"), "{line}");
        assert!(line.contains(&format!(" {topic}/")), "{line}");
    }
    // Two words are ANDed; several arguments make one query.
    let out = run(&config, &["search", &topic, "POST", "needle"]);
    ok(&out);
    assert_eq!(stdout_lines(&out).len(), 1, "{}", stderr(&out));
    assert!(stdout_lines(&out)[0].ends_with("POST /upload 500 needle"));

    // By a field.
    let out = run(
        &config,
        &["search", &topic, "kafka.partition:1", "-o", "json"],
    );
    ok(&out);
    let docs = json_lines(&out);
    assert_eq!(docs.len(), 3);
    assert!(docs.iter().all(|d| d["kafka"]["partition"] == 1));
    // Records go round robin: the odd-numbered lines are on partition 1.
    let mut messages: Vec<&str> = docs
        .iter()
        .map(|d| d["message"].as_str().unwrap())
        .collect();
    messages.sort();
    let mut odd = vec![lines[1], lines[3], lines[5]];
    odd.sort();
    assert_eq!(messages, odd);

    // Chosen fields, and a limit.
    let out = run(
        &config,
        &[
            "search",
            &topic,
            "--fields",
            "kafka.offset,message",
            "--limit",
            "2",
        ],
    );
    ok(&out);
    let found = stdout_lines(&out);
    assert_eq!(found.len(), 2, "{found:?}");
    for line in &found {
        assert!(
            line.contains(" kafka.offset=") && line.contains(" message="),
            "{line}"
        );
    }

    // --since / --until: an old document in an old dated index.
    let old_id = format!("{topic}-0-999");
    bulk(
        &stack.es_url,
        &[(
            format!("{topic}-2020.01.01"),
            old_id.clone(),
            json!({
                "@timestamp": "2020-01-01T00:00:00.000Z",
                "message": "an old needle",
                "kafka": {"topic": topic, "partition": 0, "offset": 999}
            }),
        )],
    )
    .await;
    let ids_of = |out: &Output| -> Vec<String> {
        json_lines(out)
            .iter()
            .map(|d| d["_id"].as_str().unwrap().to_string())
            .collect()
    };
    let out = run(&config, &["search", &topic, "needle", "-o", "json"]);
    ok(&out);
    let all = ids_of(&out);
    assert_eq!(all.len(), 3);
    assert_eq!(all.last(), Some(&old_id), "the oldest comes last");
    let out = run(
        &config,
        &["search", &topic, "needle", "--since", "1h", "-o", "json"],
    );
    ok(&out);
    let recent = ids_of(&out);
    assert_eq!(recent.len(), 2);
    assert!(
        !recent.contains(&old_id),
        "--since excludes the old document"
    );
    let out = run(
        &config,
        &[
            "search",
            &topic,
            "--until",
            "2021-01-01T00:00:00Z",
            "-o",
            "json",
        ],
    );
    ok(&out);
    assert_eq!(ids_of(&out), vec![old_id.clone()]);
    let out = run(
        &config,
        &[
            "search",
            &topic,
            "--since",
            "2019-12-31T23:00:00+01:00",
            "--until",
            "10m",
            "-o",
            "json",
        ],
    );
    ok(&out);
    assert_eq!(
        ids_of(&out),
        vec![old_id.clone()],
        "RFC 3339 with an offset"
    );

    // An index pattern is searched as given, every topic's documents.
    let out = run(&config, &["search", &pattern, "needle", "--since", "1h"]);
    ok(&out);
    let found = stdout_lines(&out);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found
        .iter()
        .any(|l| l.contains(&format!(" {neighbour}/0/0 "))));
    assert_eq!(neighbour_ids, [format!("{neighbour}-0-0")]);

    // No match: success, nothing on stdout.
    let out = run(&config, &["search", &topic, "nosuchword"]);
    ok(&out);
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("no documents match"),
        "{}",
        stderr(&out)
    );

    // A bad query: the server's reason, exit 4.
    let out = run(&config, &["search", &topic, "GET AND ("]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("refused the query") && err.contains("parse"),
        "{err}"
    );

    // Bad usage: exit 2, before anything is asked.
    let out = run(&config, &["search", &topic, "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("RFC 3339"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_explains_a_missing_index_and_an_unreachable_cluster() {
    let stack = Stack::start();
    // Registered for the CLI only: no daemon subscribes to it, so it has
    // no index.
    let topic = unique("quiet");
    stack.put(
        &format!("{CLI_ONLY_PREFIX}{topic}"),
        r#"{"index": "{topic}-%Y.%m.%d"}"#,
    );
    let config = cli_config(&stack, "cli", CLI_ONLY_PREFIX, &stack.es_url);
    let out = run(&config, &["search", &topic]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("no index matches {topic}-*.*.*")) && err.contains(&topic),
        "{err}"
    );
    // An unregistered name is taken as an index, and said so.
    let missing = unique("no-such-index");
    let out = run(&config, &["search", &missing]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("not a registered topic"), "{err}");
    assert!(
        err.contains(&format!("no index matches {missing}")),
        "{err}"
    );
    // tail without -f as well.
    let out = run(&config, &["tail", &topic]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // A registry value that does not parse is named, not searched around.
    let broken = unique("broken");
    stack.put(
        &format!("{CLI_ONLY_PREFIX}{broken}"),
        r#"{"index": "x-%Q"}"#,
    );
    let out = run(&config, &["search", &broken]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("registry value of topic"),
        "{}",
        stderr(&out)
    );

    // Nothing listens there: connection refused, naming the URL, exit 5.
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let config = cli_config(&stack, "dead", CLI_ONLY_PREFIX, &dead);
    for args in [
        vec!["search", topic.as_str()],
        vec!["search", "some-index-*", "x"],
        vec!["tail", topic.as_str(), "-f"],
    ] {
        let out = run(&config, &args);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("cannot reach Elasticsearch at {dead}")),
            "{args:?}: {err}"
        );
    }
    // etcd unreachable: says so, and how to do without it.
    let out = logingest_cli(
        &["search", &topic],
        &[
            (
                "LOGINGEST_ETCD_ENDPOINTS",
                &format!("http://127.0.0.1:{}", common::free_port()),
            ),
            ("LOGINGEST_ES_URL", &stack.es_url),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("etcd") && stderr(&out).contains("--index"));
}

/// A `logingest tail -f` child whose stdout lines are collected.
struct Follower {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: PathBuf,
}

impl Follower {
    fn start(config: &Path, args: &[&str], stderr: PathBuf) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_logingest"));
        cmd.arg("tail")
            .arg("--config")
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start logingest tail");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(line) => sink.lock().unwrap().push(line),
                    Err(_) => break,
                }
            }
        });
        Self {
            child: Some(child),
            lines,
            stderr,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The printed documents' `_id`s (JSON output), in order.
    fn ids(&self) -> Vec<String> {
        self.lines()
            .iter()
            .map(|l| {
                let v: Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
                v["_id"].as_str().expect("_id").to_string()
            })
            .collect()
    }

    async fn wait_for(&self, what: &str, id: &str) {
        wait_until(what, Duration::from_secs(30), || async {
            self.ids().iter().any(|i| i == id)
        })
        .await;
    }

    async fn interrupt(&mut self, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain syscall on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < deadline,
                "tail -f did not exit after SIGINT"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- tail stdout ----\n{}\n---- tail stderr ----\n{}",
                self.lines().join("\n"),
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
    }
}

fn counts(ids: &[String]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(id.as_str()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_new_documents_exactly_once_and_ends_on_ctrl_c() {
    let stack = Stack::start();
    let topic = unique("tailed");
    stack.create_topic(&topic, 2);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let _daemon = Logingest::start(&stack, &Options::default());
    let history = stack.produce_lines(&topic, 2, 3).await;
    wait_until("history indexed", GROUP_DEADLINE, || async {
        stack.count(&topic).await == Some(3)
    })
    .await;
    let config = cli_config(&stack, "cli", PREFIX, &stack.es_url);

    // tail without -f: the last 2, oldest first.
    let out = run(&config, &["tail", &topic, "-n", "2", "-o", "json"]);
    ok(&out);
    let last_two = json_lines(&out);
    assert_eq!(last_two.len(), 2);
    assert!(last_two[0]["@timestamp"].as_str() <= last_two[1]["@timestamp"].as_str());

    let mut follower = Follower::start(
        &config,
        &[
            &topic,
            "-f",
            "-n",
            "2",
            "-o",
            "json",
            "--interval",
            "200ms",
            "--window",
            "60s",
        ],
        stack.dir.path().join("tail.stderr"),
    );
    wait_until("the last 2 printed", Duration::from_secs(30), || async {
        follower.lines().len() == 2
    })
    .await;
    let start_ids = follower.ids();
    let expected_start: Vec<String> = last_two
        .iter()
        .map(|d| d["_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(start_ids, expected_start);

    // New lines through the whole pipeline.
    let fresh = stack.produce_lines(&topic, 2, 5).await;
    for id in &fresh {
        follower.wait_for("a produced line", id).await;
    }
    // A line whose Kafka timestamp is 10 s older than lines already shown
    // (within the 60 s window), and one 10 minutes older (beyond it).
    let now = Utc::now().timestamp_millis();
    let late = produce_at(
        &stack.brokers,
        &topic,
        &[
            ("late but within the window".into(), now - 10_000),
            ("too late for the window".into(), now - 600_000),
        ],
    )
    .await;
    follower.wait_for("the late line", &late[0]).await;
    let docs = stack.documents(&topic).await;
    assert_eq!(docs[&late[0]]["@timestamp"], rfc3339(now - 10_000));
    assert_eq!(docs[&late[1]]["@timestamp"], rfc3339(now - 600_000));
    // A document written straight into the index, older than everything
    // shown since the start.
    let direct = format!("{topic}-1-9999");
    bulk(
        &stack.es_url,
        &[(
            topic.clone(),
            direct.clone(),
            json!({
                "@timestamp": rfc3339(now - 25_000),
                "message": "indexed directly",
                "kafka": {"topic": topic, "partition": 1, "offset": 9999}
            }),
        )],
    )
    .await;
    follower
        .wait_for("the directly indexed document", &direct)
        .await;
    // Markers one after the other: each takes at least one more poll
    // re-reading the window, where a repeat would show.
    for n in 0..3 {
        let marker = stack.produce_lines(&topic, 2, 1).await;
        follower.wait_for(&format!("marker {n}"), &marker[0]).await;
    }

    let printed = follower.ids();
    let counts = counts(&printed);
    assert!(
        counts.values().all(|n| *n == 1),
        "every document at most once: {counts:?}"
    );
    for id in fresh.iter().chain([&late[0], &direct]) {
        assert_eq!(counts.get(id.as_str()), Some(&1), "{id} shown once");
    }
    let oldest_history = history
        .iter()
        .find(|id| !start_ids.contains(id))
        .expect("one history line not among the last 2");
    assert!(
        !counts.contains_key(oldest_history.as_str()),
        "history older than the last N is not shown"
    );
    assert!(
        !counts.contains_key(late[1].as_str()),
        "a document beyond the window is not shown"
    );
    assert_eq!(printed.len(), 2 + fresh.len() + 2 + 3);

    let status = follower.interrupt(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "Ctrl-C ends tail -f cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_f_waits_for_an_index_that_does_not_exist_yet() {
    // Elasticsearch alone: --index needs no registry.
    let es = common::start_es();
    let index = unique("later");
    let config = es.dir.path().join("cli.toml");
    std::fs::write(&config, format!("[elasticsearch]\nurl = \"{}\"\n", es.url)).expect("config");
    let mut follower = Follower::start(
        &config,
        &["--index", &index, "-f", "-o", "json", "--interval", "200ms"],
        es.dir.path().join("tail.stderr"),
    );
    let stderr_path = es.dir.path().join("tail.stderr");
    wait_until("the waiting note", Duration::from_secs(30), || async {
        std::fs::read_to_string(&stderr_path)
            .unwrap_or_default()
            .contains("waiting for documents")
    })
    .await;
    let now = Utc::now().timestamp_millis();
    let docs: Vec<_> = (0..3)
        .map(|i| {
            (
                index.clone(),
                format!("doc-{i}"),
                json!({"@timestamp": rfc3339(now + i), "message": format!("line {i}")}),
            )
        })
        .collect();
    bulk(&es.url, &docs).await;
    wait_until("3 documents followed", Duration::from_secs(30), || async {
        follower.lines().len() == 3
    })
    .await;
    assert_eq!(follower.ids(), ["doc-0", "doc-1", "doc-2"]);
    let status = follower.interrupt(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
}
