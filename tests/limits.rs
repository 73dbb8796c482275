//! Per-topic rate limits set live in the registry, and `/metrics` that does
//! not grow with topic churn. Against real etcd, Kafka (tansu) and
//! osmem-server.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{unique, wait_until, Logingest, Options, Stack, GROUP_DEADLINE};

const PREFIX: &str = "/logingest/topics/";

fn series(name: &str, topic: &str) -> String {
    format!("logingest_{name}{{topic=\"{topic}\"}}")
}

/// Two samples of counters, some seconds apart.
struct Window {
    started: Instant,
    start: Vec<f64>,
}

impl Window {
    async fn open(daemon: &Logingest, series: &[&str]) -> Self {
        let scrape = daemon.scrape().await;
        Self {
            started: Instant::now(),
            start: series.iter().map(|s| scrape.value(s)).collect(),
        }
    }

    /// Per-second rates of `series` since the window opened.
    async fn rates(&self, daemon: &Logingest, series: &[&str]) -> Vec<f64> {
        let scrape = daemon.scrape().await;
        let seconds = self.started.elapsed().as_secs_f64();
        series
            .iter()
            .zip(&self.start)
            .map(|(s, start)| (scrape.value(s) - start) / seconds)
            .collect()
    }
}

fn assert_within(what: &str, rate: f64, target: f64) {
    eprintln!("{what}: {rate:.1}/s (target {target}/s)");
    assert!(
        (rate - target).abs() <= target * 0.10,
        "{what}: {rate:.1}/s is not within 10 % of {target}/s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_across_partitions_and_change_live_without_restart() {
    let stack = Stack::start();
    let (limited, bytes, free) = (unique("limited"), unique("bytes"), unique("free"));
    stack.create_topic(&limited, 2);
    stack.create_topic(&bytes, 1);
    stack.create_topic(&free, 1);
    // Backlogs larger than the limits let through during the test.
    stack.produce_lines(&limited, 2, 12_000).await;
    // About 23 bytes a line: 46 s of backlog at 3000 bytes/s.
    let bytes_ids = stack.produce_lines(&bytes, 1, 6_000).await;
    let free_ids = stack.produce_lines(&free, 1, 6_000).await;
    assert_eq!((bytes_ids.len(), free_ids.len()), (6_000, 6_000));

    let daemon = Logingest::start(&stack, &Options::default());
    stack.put(
        &format!("{PREFIX}{limited}"),
        r#"{"max_docs_per_second": 200}"#,
    );
    stack.put(
        &format!("{PREFIX}{bytes}"),
        r#"{"max_bytes_per_second": 3000}"#,
    );
    stack.put(&format!("{PREFIX}{free}"), "");
    let read = |t: &str| series("documents_read_total", t);
    let (limited_read, bytes_read, free_read) = (
        read(&limited),
        series("bytes_read_total", &bytes),
        read(&free),
    );
    wait_until("the three topics read", GROUP_DEADLINE, || async {
        let scrape = daemon.scrape().await;
        [&limited_read, &bytes_read, &free_read]
            .iter()
            .all(|s| scrape.get(s).is_some_and(|v| v > 0.0))
    })
    .await;
    // Past the first second's burst (the buckets start full).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let starts = series("partition_task_starts_total", &limited);
    let starts_before = daemon.scrape().await.value(&starts);

    // A rate is measured over a window: the sleep is the window.
    let measured = [limited_read.as_str(), bytes_read.as_str()];
    let window = Window::open(&daemon, &measured).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let rates = window.rates(&daemon, &measured).await;
    assert_within("documents of the limited topic", rates[0], 200.0);
    assert_within("bytes of the bytes-limited topic", rates[1], 3000.0);
    // The unlimited topic read its whole backlog meanwhile (well above
    // 200/s: 6000 documents in less than the 20 s window and before).
    let scrape = daemon.scrape().await;
    assert_eq!(scrape.value(&free_read), 6_000.0, "unlimited topic");
    let throttled = scrape.value(&series("topic_throttled_seconds_total", &limited));
    eprintln!("throttled seconds of the limited topic: {throttled:.1}");
    assert!(throttled > 10.0, "throttled seconds: {throttled}");
    assert_eq!(
        scrape.get(&series("topic_throttled_seconds_total", &free)),
        Some(0.0),
        "an unlimited topic is never throttled"
    );

    // Raised live: the new rate holds from 1 s after the change.
    stack.put(
        &format!("{PREFIX}{limited}"),
        r#"{"max_docs_per_second": 600}"#,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let window = Window::open(&daemon, &measured[..1]).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rates = window.rates(&daemon, &measured[..1]).await;
    assert_within("documents of the limited topic, raised", rates[0], 600.0);
    assert_eq!(
        daemon.scrape().await.value(&starts),
        starts_before,
        "changing a rate limit must not restart the topic's tasks"
    );
    // Nothing dropped: lifting the limit lets the whole backlog through.
    stack.put(&format!("{PREFIX}{limited}"), "");
    daemon
        .wait_metric(&limited_read, 12_000.0, Duration::from_secs(60))
        .await;
}

/// `etcdctl txn` of `puts`, so that many topics arrive in one registry
/// change (and one subscription change, one group round on tansu).
fn put_all(stack: &Stack, puts: &[(String, &str)]) {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &stack.etcd_url, "txn"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("etcdctl txn");
    let mut script = String::from("\n");
    for (key, value) in puts {
        script.push_str(&format!("put {key} {value}\n"));
    }
    script.push_str("\n\n");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(script.as_bytes()).expect("write txn");
    drop(stdin);
    assert!(child.wait().expect("etcdctl txn").success(), "etcdctl txn");
}

fn line_count(text: &str) -> usize {
    text.lines().count()
}

/// `/metrics` once no line names `needle` (the series go when the
/// reconciler has seen the tasks end), or after 10 s: the text either way.
async fn settled_without(daemon: &Logingest, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = daemon.scrape().await.text;
        if !text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_removed_topics_are_removed() {
    const ROUNDS: usize = 4;
    const TOPICS: usize = 50;
    let stack = Stack::start();
    let base = unique("base");
    stack.create_topic(&base, 1);
    // The series of a removed topic stay 1 s (the default is minutes, for
    // scrapes to see their final values).
    let daemon = Logingest::start(
        &stack,
        &Options {
            http: "removed_topic_grace = \"1s\"".into(),
            ..Options::default()
        },
    );
    stack.put(&format!("{PREFIX}{base}"), "");
    stack.produce_lines(&base, 1, 10).await;
    daemon
        .wait_metric(
            &series("documents_indexed_total", &base),
            10.0,
            GROUP_DEADLINE,
        )
        .await;

    // The lag series comes with librdkafka's statistics (every 5 s): a
    // family that appears later would change the size for its own reasons.
    let lag = format!("logingest_partition_lag{{topic=\"{base}\",partition=\"0\"}}");
    wait_until("the lag series", GROUP_DEADLINE, || async {
        daemon.metric(&lag).await.is_some()
    })
    .await;

    let churn = unique("churn");
    let mut before = None;
    // Round 0 is one topic: it brings the series that any add and remove
    // brings once (revoke events), before the size is taken.
    for round in 0..=ROUNDS {
        let count = if round == 0 { 1 } else { TOPICS };
        let topics: Vec<String> = (0..count).map(|i| format!("{churn}-{round}-{i}")).collect();
        for topic in &topics {
            stack.create_topic(topic, 1);
        }
        futures::future::join_all(topics.iter().map(|t| stack.produce_lines(t, 1, 1))).await;
        let puts: Vec<(String, &str)> = topics
            .iter()
            .map(|t| (format!("{PREFIX}{t}"), "{}"))
            .collect();
        put_all(&stack, &puts);
        let last = series("documents_indexed_total", &topics[count - 1]);
        wait_until("the round's topics indexed", GROUP_DEADLINE, || async {
            let scrape = daemon.scrape().await;
            topics
                .iter()
                .all(|t| scrape.get(&series("documents_indexed_total", t)) == Some(1.0))
        })
        .await;
        eprintln!("round {round}: {count} topics running ({last} = 1)");
        let out = stack.etcdctl(&["del", "--prefix", &format!("{PREFIX}{churn}-{round}-")]);
        assert!(out.status.success(), "etcdctl del --prefix");
        daemon
            .wait_metric("logingest_partition_tasks", 1.0, GROUP_DEADLINE)
            .await;
        daemon
            .wait_metric("logingest_registry_topics", 1.0, GROUP_DEADLINE)
            .await;
        if round == 0 {
            before = Some(settled_without(&daemon, &churn).await);
        }
    }
    let before_text = before.expect("size before the churn");
    let before = line_count(&before_text);
    let text = settled_without(&daemon, &churn).await;
    let after = line_count(&text);
    let series_of = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_string())
            .collect()
    };
    let (old, new) = (series_of(&before_text), series_of(&text));
    let left: Vec<&String> = new.difference(&old).collect();
    let gone: Vec<&String> = old.difference(&new).collect();
    eprintln!(
        "/metrics lines: {before} before {ROUNDS}x{TOPICS} topics added and removed, {after} after"
    );
    assert_eq!(
        after,
        before,
        "/metrics changed size; {} lines new, e.g. {:?}; {} gone, e.g. {:?}",
        left.len(),
        &left[..left.len().min(5)],
        gone.len(),
        &gone[..gone.len().min(5)],
    );
    assert!(
        daemon
            .scrape()
            .await
            .value(&series("documents_indexed_total", &base))
            == 10.0,
        "the remaining topic keeps its series"
    );
}
