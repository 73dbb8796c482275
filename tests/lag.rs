//! Lag in seconds and stuck partitions, against the real servers: the
//! lag gauge follows a sink held by the proxy and returns to 0; a partition
//! that waits for memory (records it cannot read yet) shows its lag; a partition
//! whose documents Elasticsearch keeps refusing (503) is reported stuck —
//! gauge, one warning, `/readyz` — while the other partition keeps flowing,
//! and recovers when the refusals stop.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::{Fault, FaultProxy};
use common::{unique, wait_until, Logingest, Options, Stack, GROUP_DEADLINE};

const PREFIX: &str = "/logingest/topics/";

fn lag_series(topic: &str, partition: i32) -> String {
    format!("logingest_partition_lag_seconds{{topic=\"{topic}\",partition=\"{partition}\"}}")
}

/// The sink is held for 10 s (every `_bulk` request delayed by the proxy)
/// while lines arrive steadily: near the end of the hold the gauge reads
/// the hold's age (± 2 s); after the release it returns to exactly 0, and
/// the latency histogram saw chunks that waited longer than 5.12 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_seconds_follow_a_held_sink_and_return_to_zero() {
    const HOLD: Duration = Duration::from_secs(10);
    let stack = Stack::start();
    let topic = unique("lagged");
    stack.create_topic(&topic, 1);
    let proxy = FaultProxy::start(&stack.es_url).await;
    let daemon = Logingest::start(
        &stack,
        &Options {
            es_url: Some(proxy.url()),
            ..Options::default()
        },
    );
    stack.put(&format!("{PREFIX}{topic}"), "");
    let stop = Arc::new(AtomicBool::new(false));
    let producer = stack.produce_steadily(&topic, 1, 20, stop.clone());
    let lag = lag_series(&topic, 0);
    wait_until(
        "lines indexed and the lag below 2 s",
        GROUP_DEADLINE,
        || async {
            stack.count(&topic).await.unwrap_or(0) > 0
                && daemon.metric(&lag).await.is_some_and(|l| l < 2.0)
        },
    )
    .await;

    proxy.set(Fault::Delay(HOLD));
    let held = Instant::now();
    // Samples of (age of the hold, gauge) up to 1 s before its end (a
    // request sent at the hold's start is answered at its end).
    let mut samples = Vec::new();
    while held.elapsed() < HOLD - Duration::from_secs(1) {
        if let Some(value) = daemon.metric(&lag).await {
            samples.push((held.elapsed().as_secs_f64(), value));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.set(Fault::None);
    let (age, value) = *samples.last().expect("lag samples during the hold");
    eprintln!("lag during the hold (age of the hold s, gauge s): {samples:?}");
    eprintln!(
        "lag accuracy: gauge {value:.3} s at {age:.3} s into the hold (error {:+.3} s)",
        value - age
    );
    assert!(
        (value - age).abs() <= 2.0,
        "gauge {value} s at {age} s into the hold: {samples:?}"
    );

    stop.store(true, Ordering::Relaxed);
    let ids = producer.await.expect("producer");
    wait_until("the lag back to 0", GROUP_DEADLINE, || async {
        daemon.metric(&lag).await == Some(0.0)
    })
    .await;
    stack.assert_exactly(&topic, &ids).await;
    let scrape = daemon.scrape().await;
    let count = scrape.value(&format!(
        "logingest_document_latency_seconds_count{{topic=\"{topic}\"}}"
    ));
    let within = scrape.value(&format!(
        "logingest_document_latency_seconds_bucket{{le=\"5.12\",topic=\"{topic}\"}}"
    ));
    assert!(
        within < count,
        "no chunk waited more than 5.12 s ({within} of {count} within)"
    );
}

/// Partition 1's documents are answered 503 forever, and its unacknowledged
/// chunks end up holding the whole memory budget (1 MiB; 1 000 records of
/// 1 KB are more): partition 0, whose own chunks are all acknowledged, then
/// waits for memory with a record taken from its queue and more behind it.
/// Its lag is that record's age — not 0 — and goes back to 0 once the
/// refusals stop and everything is read and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_waiting_for_memory_shows_its_lag() {
    let stack = Stack::start();
    let topic = unique("starved");
    stack.create_topic(&topic, 2);
    let proxy = FaultProxy::start(&stack.es_url).await;
    proxy.set(Fault::BulkItems503ForIdPrefix(format!("{topic}-1-")));
    let daemon = Logingest::start(
        &stack,
        &Options {
            es_url: Some(proxy.url()),
            batch: "max_bytes = 262144".into(),
            extra: "[memory]\nmax_buffered = \"1MiB\"\n".into(),
            ..Options::default()
        },
    );
    // Partition 1's backlog (its records round robin with partition 0's).
    let records: Vec<_> = (0..2000)
        .map(|i| (None, format!("{i:04} {}", "x".repeat(1000)).into_bytes()))
        .collect();
    let mut ids = stack.produce(&topic, 2, &records).await;
    stack.put(&format!("{PREFIX}{topic}"), "");
    let stop = Arc::new(AtomicBool::new(false));
    // Partition 0 only, from now on.
    let producer = stack.produce_steadily(&topic, 1, 10, stop.clone());
    let lag = lag_series(&topic, 0);
    // Polled with a deadline; the samples (age, lag, paused partitions)
    // are the test's figures.
    let waiting = Instant::now();
    let mut samples = Vec::new();
    loop {
        let scrape = daemon.scrape().await;
        let sample = (
            waiting.elapsed().as_secs(),
            scrape.get(&lag),
            scrape.get("logingest_partitions_paused"),
        );
        samples.push(sample);
        if sample.1.is_some_and(|l| l >= 5.0) || waiting.elapsed() > GROUP_DEADLINE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let tail = &samples[samples.len().saturating_sub(5)..];
    eprintln!("(s, partition 0 lag, paused partitions): {tail:?}");
    assert!(
        samples.last().and_then(|s| s.1).is_some_and(|l| l >= 5.0),
        "partition 0's lag never reached 5 s while it waited for memory: {tail:?}"
    );

    proxy.set(Fault::None);
    stop.store(true, Ordering::Relaxed);
    ids.extend(producer.await.expect("producer"));
    wait_until("partition 0's lag back to 0", GROUP_DEADLINE, || async {
        daemon.metric(&lag).await == Some(0.0)
    })
    .await;
    wait_until("everything indexed", GROUP_DEADLINE, || async {
        stack.count(&topic).await.unwrap_or(0) == ids.len() as u64
    })
    .await;
    // Refused attempts of partition 1 were stored by the proxy's upstream:
    // only presence and no extra ids are checked.
    let delivery = stack.delivery(&topic, &ids).await;
    assert_eq!(delivery.missing, 0, "{delivery:?}");
    assert_eq!(delivery.extra, 0, "{delivery:?}");
}

/// Partition 1's documents are answered 503 by Elasticsearch forever (the
/// proxy rewrites their items), partition 0's are stored: after
/// `kafka.stuck_after` the stuck gauge of the topic is 1, one warning names
/// topic and partition 1, `/readyz` (with `http.unready_on_stuck`) is 503
/// naming it, and partition 0's committed offset keeps moving. Once the
/// refusals stop, the gauge returns to 0, the recovery is logged, `/readyz`
/// is 200 and everything is delivered exactly once per `_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_refused_forever_is_reported_stuck_while_the_other_flows() {
    let stack = Stack::start();
    let topic = unique("stuck");
    stack.create_topic(&topic, 2);
    let proxy = FaultProxy::start(&stack.es_url).await;
    proxy.set(Fault::BulkItems503ForIdPrefix(format!("{topic}-1-")));
    let options = Options {
        es_url: Some(proxy.url()),
        kafka: "stuck_after = \"6s\"".into(),
        http: "unready_on_stuck = true".into(),
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let stop = Arc::new(AtomicBool::new(false));
    let producer = stack.produce_steadily(&topic, 2, 10, stop.clone());
    // Partition 1's warnings (partition 0 may legitimately be reported too
    // if the first request to a fresh Elasticsearch takes longer than
    // stuck_after on a loaded machine; it then recovers).
    let warnings = |log: &str| {
        log.lines()
            .filter(|l| {
                l.contains("partition stuck") && l.contains(&topic) && l.contains("partition=1 ")
            })
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let stuck = format!("logingest_partitions_stuck{{topic=\"{topic}\"}}");
    wait_until("partition 1 reported stuck", GROUP_DEADLINE, || async {
        !warnings(&daemon.log()).is_empty()
    })
    .await;

    // The other partition keeps flowing: its committed offset moves on.
    let committed = |p: i32| stack.committed(&options.group, &topic, 2)[&p];
    let before = committed(0);
    wait_until(
        "partition 0 committed further while 1 is stuck",
        Duration::from_secs(30),
        || async { committed(0) > before },
    )
    .await;
    assert_eq!(
        committed(1),
        None,
        "partition 1 committed past a refused document"
    );
    assert!(
        daemon
            .metric(&lag_series(&topic, 1))
            .await
            .is_some_and(|l| l >= 6.0),
        "partition 1's lag is below stuck_after"
    );
    // Only partition 1 (partition 0, flowing, is not).
    daemon
        .wait_metric(&stuck, 1.0, Duration::from_secs(30))
        .await;
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("{}/readyz", daemon.http))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap_or_default();
    assert!(body.contains(&format!("{topic}/1")), "readyz: {body}");
    let logged = warnings(&daemon.log());
    assert_eq!(logged.len(), 1, "one warning per episode: {logged:#?}");
    assert!(logged[0].contains("WARN"), "{}", logged[0]);

    proxy.set(Fault::None);
    daemon.wait_metric(&stuck, 0.0, GROUP_DEADLINE).await;
    wait_until("the recovery logged", Duration::from_secs(10), || async {
        daemon.log().lines().any(|l| {
            l.contains("partition moves again") && l.contains(&topic) && l.contains("partition=1")
        })
    })
    .await;
    wait_until("ready again", Duration::from_secs(10), || async {
        http.get(format!("{}/readyz", daemon.http))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let ids = producer.await.expect("producer");
    let mut last: BTreeMap<i32, Option<i64>> = BTreeMap::new();
    for id in &ids {
        let (rest, offset) = id.rsplit_once('-').expect("id");
        let (_, partition) = rest.rsplit_once('-').expect("id");
        let (p, o): (i32, i64) = (
            partition.parse().expect("partition"),
            offset.parse().expect("offset"),
        );
        let slot = last.entry(p).or_default();
        *slot = Some(slot.map_or(o + 1, |s| s.max(o + 1)));
    }
    wait_until("every partition committed", GROUP_DEADLINE, || async {
        stack.committed(&options.group, &topic, 2) == last
    })
    .await;
    // Partition 1's documents were stored by every refused attempt (the
    // proxy forwards, then rewrites the reply): redeliveries by design of
    // the fault, so only presence and no extra ids are checked.
    let delivery = stack.delivery(&topic, &ids).await;
    assert_eq!(delivery.missing, 0, "{delivery:?}");
    assert_eq!(delivery.extra, 0, "{delivery:?}");
    assert_eq!(
        warnings(&daemon.log()).len(),
        1,
        "still one warning for the one episode"
    );
}

/// `logingest status` per topic: the largest lag in messages and in
/// seconds, the seconds read from Kafka (the Kafka timestamp of the record
/// at the group's committed offset, or the first one without a commit).
/// Three records stamped an hour ago, no instance running: 3 messages and
/// 3600 s (+ the test's own seconds) behind. Skipped, saying so, when the
/// broker reports a wrong high watermark (tansu after batched produces).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_topics_max_lag_in_messages_and_seconds() {
    let stack = Stack::start();
    let topic = unique("behind");
    stack.create_topic(&topic, 1);
    let producer = common::steady_producer(&stack.brokers);
    let hour_ago = chrono::Utc::now().timestamp_millis() - 3_600_000;
    for i in 0..3 {
        let value = format!("{topic} {i}");
        let record = rdkafka::producer::FutureRecord::<(), _>::to(&topic)
            .payload(&value)
            .partition(0)
            .timestamp(hour_ago + i * 1000);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
    stack.put(&format!("{PREFIX}{topic}"), "");
    let group = unique("group");
    let config = stack.dir.path().join(format!("status-{group}.toml"));
    std::fs::write(&config, format!("[kafka]\ngroup_id = \"{group}\"\n")).expect("config");
    let status = |output: &str| {
        common::logingest_cli(
            &[
                "status",
                "--config",
                config.to_str().expect("path"),
                "--output",
                output,
            ],
            &[
                ("LOGINGEST_ETCD_ENDPOINTS", &stack.etcd_url),
                ("LOGINGEST_KAFKA_BROKERS", &stack.brokers),
            ],
        )
    };
    let out = status("json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let row = report["partitions"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["topic"] == topic.as_str()))
        .unwrap_or_else(|| panic!("no row for {topic}: {report:#}"))
        .clone();
    if row["high_watermark"] != 3 {
        eprintln!(
            "SKIP: the broker reports high watermark {} for 3 records (tansu quirk)",
            row["high_watermark"]
        );
        return;
    }
    assert_eq!(row["lag"], 3, "{row}");
    let seconds = row["lag_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("{row}"));
    assert!((3600.0..3700.0).contains(&seconds), "{row}");

    let out = status("text");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{text}");
    let summary = text
        .split("MAX-LAG-SECONDS")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(&topic))
        .unwrap_or_else(|| panic!("no per-topic lag row:\n{text}"))
        .to_string();
    let cells: Vec<&str> = summary.split_whitespace().collect();
    assert_eq!(cells[1], "3", "{summary}");
    let shown: f64 = cells[2].parse().expect("seconds");
    assert!((3600.0..3700.0).contains(&shown), "{summary}");
}
