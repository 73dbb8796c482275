//! The promises of issue 9, measured against the real local servers:
//! only a real `_bulk` reply acknowledges; nothing stalls a partition for
//! good (413, oversize dead letters); a failed task is restarted; a
//! hand-over is fenced; the memory budget holds; readiness tells the truth;
//! requests across partitions; adaptive concurrency at a cluster's capacity.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::{Fault, FaultProxy};
use common::{unique, wait_until, Logingest, Options, Stack, GROUP_DEADLINE};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

const PREFIX: &str = "/logingest/topics/";

fn series(name: &str, topic: &str) -> String {
    format!("logingest_{name}{{topic=\"{topic}\"}}")
}

const MALFORMED: &str = "logingest_bulk_requests_total{outcome=\"malformed\"}";

/// A record read back from Kafka.
#[derive(Debug)]
struct Read {
    value: Vec<u8>,
    headers: BTreeMap<String, String>,
}

/// Reads `count` records of partition 0 of `topic` from the beginning.
fn read_records(brokers: &str, topic: &str, count: usize) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut records = Vec::new();
    let start = Instant::now();
    while records.len() < count {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {} of {count} records in {topic}",
            records.len()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let mut headers = BTreeMap::new();
            for h in m.headers().iter().flat_map(|h| h.iter()) {
                headers.insert(
                    h.key.to_string(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                );
            }
            records.push(Read {
                value: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    records
}

/// `GET path` on the instance: status and body (status 0 when it does not
/// answer).
async fn get(daemon: &Logingest, path: &str) -> (u16, String) {
    match reqwest::get(format!("{}{path}", daemon.http)).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_real_bulk_reply_acknowledges() {
    let stack = Stack::start();
    let proxy = FaultProxy::start(&stack.es_url).await;
    let topic = unique("malformed");
    stack.create_topic(&topic, 1);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let options = Options {
        es_url: Some(proxy.url()),
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    let mut ids = stack.produce_lines(&topic, 1, 10).await;
    wait_until("the first lines committed", GROUP_DEADLINE, || async {
        stack.committed(&options.group, &topic, 1) == BTreeMap::from([(0, Some(10))])
    })
    .await;
    let faults = [
        Fault::BulkReply200("{}".into()),
        Fault::BulkReply200("<html><body><h1>200 OK</h1>maintenance</body></html>".into()),
        Fault::TruncateBulkReply,
        Fault::DropLastBulkItem,
    ];
    for fault in faults {
        let committed = stack.committed(&options.group, &topic, 1);
        let malformed = daemon.metric(MALFORMED).await.unwrap_or(0.0);
        proxy.set(fault.clone());
        ids.extend(stack.produce_lines(&topic, 1, 10).await);
        wait_until(
            &format!("{fault:?} retried as malformed"),
            Duration::from_secs(30),
            || async { daemon.metric(MALFORMED).await.unwrap_or(0.0) >= malformed + 2.0 },
        )
        .await;
        assert_eq!(
            stack.committed(&options.group, &topic, 1),
            committed,
            "{fault:?}: an offset was committed on a reply that is not a bulk reply"
        );
        proxy.set(Fault::None);
        let total = ids.len() as i64;
        wait_until(
            &format!("committed after {fault:?}"),
            Duration::from_secs(30),
            || async {
                stack.committed(&options.group, &topic, 1) == BTreeMap::from([(0, Some(total))])
            },
        )
        .await;
        eprintln!(
            "after {fault:?}: malformed replies {}",
            daemon.metric(MALFORMED).await.unwrap_or(0.0)
        );
    }
    // Answered without forwarding: written once. Behind the truncated and
    // shortened replies: written, not acknowledged, written again (as many
    // times as the fault lasted).
    let answered = stack.delivery(&topic, &ids[..30]).await;
    assert_eq!((answered.missing, answered.redelivered), (0, 0));
    let forwarded = stack.delivery(&topic, &ids[30..]).await;
    eprintln!(
        "redelivered: {} of {} behind forwarded malformed replies",
        forwarded.redelivered, forwarded.expected
    );
    assert_eq!(forwarded.missing, 0);
    assert!(
        forwarded.redelivered >= 20,
        "each document behind a forwarded malformed reply is written again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_over_the_request_limit_is_dead_lettered_and_an_oversize_dead_letter_is_reduced()
{
    let stack = Stack::start();
    let proxy = FaultProxy::start(&stack.es_url).await;
    let topic = unique("oversize");
    let dlq = format!("{topic}.dlq");
    stack.create_topic(&topic, 1);
    stack.create_topic(&dlq, 1);
    stack.put(&format!("{PREFIX}{topic}"), "");
    // Requests over 100 kB are refused with 413 (a cluster's
    // http.max_content_length); the dead-letter producer takes records of
    // at most 200 kB.
    proxy.set(Fault::RequestLimit(100_000));
    let options = Options {
        es_url: Some(proxy.url()),
        kafka_options: "\"message.max.bytes\" = \"200000\"".into(),
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    let medium = vec![b'm'; 150_000];
    let large = vec![b'l'; 300_000];
    let records = vec![
        (None, b"before".to_vec()),
        (None, medium.clone()),
        (None, large.clone()),
        (None, b"after".to_vec()),
    ];
    let ids = common::produce_to_with(
        &stack.brokers,
        &topic,
        1,
        &records,
        &[("message.max.bytes", "1000000")],
    )
    .await;
    daemon
        .wait_metric(
            &series("documents_dead_lettered_total", &topic),
            2.0,
            GROUP_DEADLINE,
        )
        .await;
    let letters = read_records(&stack.brokers, &dlq, 2);
    assert_eq!(letters[0].value, medium, "the whole record, as read");
    assert_eq!(letters[0].headers["logingest.offset"], "1");
    assert!(
        letters[0].headers["logingest.error"].starts_with("413"),
        "{:?}",
        letters[0].headers
    );
    assert!(!letters[0].headers.contains_key("logingest.reduced"));
    // Over the producer's limit: the reduced form.
    assert_eq!(letters[1].headers["logingest.reduced"], "true");
    assert_eq!(letters[1].headers["logingest.offset"], "2");
    let reduced: Value = serde_json::from_slice(&letters[1].value).expect("reduced JSON");
    assert_eq!(reduced["reduced"], true);
    assert_eq!(reduced["topic"], topic.as_str());
    assert_eq!(reduced["partition"], 0);
    assert_eq!(reduced["offset"], 2);
    assert_eq!(reduced["original_size"], 300_000);
    assert!(reduced["reason"].as_str().unwrap_or("").starts_with("413"));
    assert!(
        reduced["refused"]
            .as_str()
            .unwrap_or("")
            .contains("too large"),
        "{reduced}"
    );
    assert_eq!(reduced["value_prefix"].as_str().map(str::len), Some(1024));
    // The partition moved on: both small lines indexed, all committed.
    wait_until("all committed", Duration::from_secs(30), || async {
        stack.committed(&options.group, &topic, 1) == BTreeMap::from([(0, Some(4))])
    })
    .await;
    stack
        .assert_delivered(&topic, &[ids[0].clone(), ids[3].clone()], 0)
        .await;
    assert_eq!(
        daemon
            .metric(&series("dead_letters_refused_total", &topic))
            .await,
        Some(0.0),
        "nothing was refused in its reduced form"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_is_restarted_from_its_first_unacknowledged_offset() {
    let stack = Stack::start();
    let topic = unique("panic");
    stack.create_topic(&topic, 2);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let ids = stack.produce_lines(&topic, 2, 200).await;
    let options = Options {
        env: vec![("LOGINGEST_TEST_PANIC_AT", format!("{topic}/0/37"))],
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    wait_until("everything committed", GROUP_DEADLINE, || async {
        stack.committed(&options.group, &topic, 2)
            == BTreeMap::from([(0, Some(100)), (1, Some(100))])
    })
    .await;
    // Restarted from the first unacknowledged offset: at most what the task
    // had read of partition 0 before the panic is written again.
    stack.assert_delivered(&topic, &ids, 37).await;
    assert_eq!(
        daemon
            .metric(&series("partition_task_restarts_total", &topic))
            .await,
        Some(1.0)
    );
    let log = daemon.log();
    assert!(
        log.contains("partition task failed") && log.contains("test fault: panic at"),
        "{log}"
    );
    assert!(log.contains(&format!("partition={topic}/0")), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_hand_over_never_moves_the_committed_offset_back() {
    let stack = Stack::start();
    let proxy = FaultProxy::start(&stack.es_url).await;
    let topic = unique("fenced");
    stack.create_topic(&topic, 4);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let options = Options {
        es_url: Some(proxy.url()),
        // Eager hand-overs: every partition moves at each rebalance (tansu
        // is slow with cooperative rebalancing between two members).
        kafka_options: "\"partition.assignment.strategy\" = \"range\"".into(),
        ..Options::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let producer = stack.produce_steadily(&topic, 4, 50, stop.clone());
    let first = Logingest::start(&stack, &options);
    wait_until("the first instance indexes", GROUP_DEADLINE, || async {
        stack.count(&topic).await.unwrap_or(0) > 50
    })
    .await;
    // Watch the group's committed offsets for the whole hand-over.
    let watching = Arc::new(AtomicBool::new(true));
    let monitor = {
        let (brokers, group, topic) = (stack.brokers.clone(), options.group.clone(), topic.clone());
        let watching = watching.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", &group)
                .create()
                .expect("consumer");
            let mut highest: BTreeMap<i32, i64> = BTreeMap::new();
            let mut backwards = Vec::new();
            let mut polls = 0;
            while watching.load(Ordering::Relaxed) {
                let mut tpl = TopicPartitionList::new();
                for p in 0..4 {
                    tpl.add_partition(&topic, p);
                }
                if let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(5)) {
                    polls += 1;
                    for e in committed.elements() {
                        if let Offset::Offset(o) = e.offset() {
                            let top = highest.entry(e.partition()).or_insert(o);
                            if o < *top {
                                backwards.push((e.partition(), *top, o));
                            }
                            *top = (*top).max(o);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (polls, backwards)
        })
    };
    // The sink becomes slower than the drain deadline (4 s), then a second
    // member joins: the first must hand partitions over with requests in
    // flight.
    proxy.set(Fault::Delay(Duration::from_secs(6)));
    let slow_from = Instant::now();
    let second = Logingest::start(&stack, &options);
    wait_until("both members own partitions", GROUP_DEADLINE, || async {
        let a = first
            .metric("logingest_partition_tasks")
            .await
            .unwrap_or(0.0);
        let b = second
            .metric("logingest_partition_tasks")
            .await
            .unwrap_or(0.0);
        a > 0.0 && b > 0.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    proxy.set(Fault::None);
    let slow_for = slow_from.elapsed();
    stop.store(true, Ordering::Relaxed);
    let ids = producer.await.expect("producer");
    let total = ids.len();
    wait_until("everything indexed", Duration::from_secs(90), || async {
        stack.count(&topic).await.unwrap_or(0) == total as u64
    })
    .await;
    watching.store(false, Ordering::Relaxed);
    let (polls, backwards) = monitor.await.expect("monitor");
    assert!(polls > 10, "the monitor saw the group only {polls} times");
    assert!(
        backwards.is_empty(),
        "committed offsets moved backwards: {backwards:?}"
    );
    // What was in flight at the hand-over is at most what was produced
    // while the sink was slow (50/s).
    let in_flight_bound = (slow_for.as_secs_f64() * 50.0).ceil() as u64 + 50;
    stack.assert_delivered(&topic, &ids, in_flight_bound).await;
    drop((first, second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_holds_with_many_partitions_and_a_failing_sink() {
    let stack = Stack::start();
    let proxy = FaultProxy::start(&stack.es_url).await;
    let topic = unique("budget");
    stack.create_topic(&topic, 16);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let budget = 2.0 * 1024.0 * 1024.0;
    let options = Options {
        es_url: Some(proxy.url()),
        batch: "max_documents = 200\nmax_bytes = 131072".into(),
        extra: "[index_template]\nenabled = false\n[memory]\nmax_buffered = \"2MiB\"\n".into(),
        ..Options::default()
    };
    proxy.set(Fault::Status(503));
    let daemon = Logingest::start(&stack, &options);
    let big = "x".repeat(1000);
    let records: Vec<_> = (0..16_000)
        .map(|i| (None, format!("{i} {big}").into_bytes()))
        .collect();
    let ids = stack.produce(&topic, 16, &records).await;
    wait_until("the budget fills", GROUP_DEADLINE, || async {
        daemon
            .metric("logingest_buffered_bytes")
            .await
            .unwrap_or(0.0)
            > budget / 2.0
    })
    .await;
    let mut peak = 0.0f64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let buffered = daemon
            .metric("logingest_buffered_bytes")
            .await
            .expect("buffered bytes exported");
        assert!(buffered <= budget, "buffered {buffered} > budget {budget}");
        peak = peak.max(buffered);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let paused = daemon.metric("logingest_partitions_paused").await;
    let rss = daemon.rss_bytes();
    eprintln!(
        "budget {budget}, peak buffered {peak}, paused {paused:?}, RSS {} MiB",
        rss >> 20
    );
    assert!(paused.unwrap_or(0.0) >= 1.0, "no partition paused");
    assert!(rss < 120 << 20, "RSS {} MiB", rss >> 20);
    proxy.set(Fault::None);
    wait_until(
        "all indexed after recovery",
        Duration::from_secs(120),
        || async { stack.count(&topic).await.unwrap_or(0) == ids.len() as u64 },
    )
    .await;
    // Nothing reached Elasticsearch during the outage: no redelivery.
    stack.assert_delivered(&topic, &ids, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_sink_and_health_the_loops() {
    let stack = Stack::start();
    let proxy = FaultProxy::start(&stack.es_url).await;
    let topic = unique("ready");
    stack.create_topic(&topic, 1);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let options = Options {
        es_url: Some(proxy.url()),
        http: "unready_after = \"2s\"".into(),
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    let mut ids = stack.produce_lines(&topic, 1, 5).await;
    wait_until("ready", GROUP_DEADLINE, || async {
        get(&daemon, "/readyz").await.0 == 200
    })
    .await;
    // Credentials rotated: every request answered 401.
    proxy.set(Fault::Status(401));
    ids.extend(stack.produce_lines(&topic, 1, 5).await);
    wait_until(
        "not ready while the sink fails",
        Duration::from_secs(30),
        || async {
            let (code, body) = get(&daemon, "/readyz").await;
            code == 503 && body.contains("every Elasticsearch bulk request has failed")
        },
    )
    .await;
    assert_eq!(get(&daemon, "/healthz").await, (200, "ok\n".to_string()));
    proxy.set(Fault::None);
    wait_until("ready again", Duration::from_secs(30), || async {
        get(&daemon, "/readyz").await.0 == 200
    })
    .await;
    wait_until("all indexed", Duration::from_secs(30), || async {
        stack.count(&topic).await.unwrap_or(0) == ids.len() as u64
    })
    .await;
    stack.assert_delivered(&topic, &ids, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_partitions_share_requests_and_every_document_reaches_its_offset() {
    let stack = Stack::start();
    let topic = unique("quiet");
    let partitions = 30;
    stack.create_topic(&topic, partitions as u32);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let options = Options {
        linger: "400ms",
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    // Lines produced before the group assigned the partitions would wait in
    // Kafka, not in logingest: start once every partition has its task.
    daemon
        .wait_metric(
            "logingest_partition_tasks",
            f64::from(partitions),
            GROUP_DEADLINE,
        )
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    // 300 lines/s over 30 partitions: 10 per partition per second.
    let producer = stack.produce_steadily(&topic, partitions, 300, stop.clone());
    tokio::time::sleep(Duration::from_secs(12)).await;
    stop.store(true, Ordering::Relaxed);
    let ids = producer.await.expect("producer");
    wait_until("everything indexed", GROUP_DEADLINE, || async {
        stack.count(&topic).await.unwrap_or(0) == ids.len() as u64
    })
    .await;
    stack.assert_delivered(&topic, &ids, 0).await;
    // Every partition's committed offset is its number of records.
    let mut per_partition: BTreeMap<i32, Option<i64>> =
        (0..partitions).map(|p| (p, None)).collect();
    for id in &ids {
        let mut parts = id.rsplitn(3, '-');
        let offset: i64 = parts.next().and_then(|o| o.parse().ok()).expect("offset");
        let partition: i32 = parts
            .next()
            .and_then(|p| p.parse().ok())
            .expect("partition");
        let slot = per_partition.entry(partition).or_default();
        *slot = Some(slot.map_or(offset + 1, |o: i64| o.max(offset + 1)));
    }
    wait_until(
        "every partition committed",
        Duration::from_secs(20),
        || async { stack.committed(&options.group, &topic, partitions) == per_partition },
    )
    .await;
    let scrape = daemon.metrics().await.expect("metrics");
    let docs = common::metric_value(&scrape, "logingest_bulk_documents_sum").expect("sum");
    let requests = common::metric_value(&scrape, "logingest_bulk_documents_count").expect("count");
    let average = docs / requests;
    eprintln!("{requests} requests, {average:.0} documents per request");
    // A request goes out at most every linger (plus one early send after
    // an idle linger): 300/s × 0.4 s ≈ 120 documents, half of it at worst.
    assert!(
        average >= 60.0,
        "average {average:.0} documents per request"
    );
    // How long lines waited is a timing, reported here and measured by the
    // benchmark (scripts/bench.sh, row "quiet"), not asserted on a shared
    // machine.
    let within = |le: &str| {
        common::metric_value(
            &scrape,
            &format!("logingest_document_latency_seconds_bucket{{le=\"{le}\",topic=\"{topic}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let chunks = common::metric_value(
        &scrape,
        &format!("logingest_document_latency_seconds_count{{topic=\"{topic}\"}}"),
    )
    .expect("latency count");
    eprintln!(
        "end-to-end latency: {:.0}% of {chunks} chunks within 0.64 s, {:.0}% within 1.28 s",
        100.0 * within("0.64") / chunks,
        100.0 * within("1.28") / chunks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_concurrency_is_refused_less_than_a_fixed_one_at_the_clusters_capacity() {
    let stack = Stack::start();
    let mut refused = BTreeMap::new();
    for adaptive in [false, true] {
        let proxy = FaultProxy::start(&stack.es_url).await;
        // The cluster takes two requests at once; a third is answered 429.
        proxy.set(Fault::Capacity(2));
        let topic = unique(if adaptive { "arc" } else { "fixed" });
        stack.create_topic(&topic, 4);
        let ids = stack.produce_lines(&topic, 4, 4000).await;
        stack.put(&format!("{PREFIX}{topic}"), "");
        let options = Options {
            es_url: Some(proxy.url()),
            batch: "max_documents = 100\nmax_in_flight = 8".into(),
            elasticsearch: format!("adaptive_concurrency = {adaptive}"),
            ..Options::default()
        };
        let daemon = Logingest::start(&stack, &options);
        wait_until("all indexed", Duration::from_secs(120), || async {
            stack.count(&topic).await.unwrap_or(0) == ids.len() as u64
        })
        .await;
        stack.assert_delivered(&topic, &ids, 0).await;
        let limit = daemon.metric("logingest_bulk_concurrency_limit").await;
        eprintln!(
            "adaptive {adaptive}: {} requests refused with 429, limit now {limit:?}",
            proxy.refused_429()
        );
        refused.insert(adaptive, proxy.refused_429());
        drop(daemon);
    }
    assert!(refused[&false] > 0, "the fixed setting met the capacity");
    assert!(
        refused[&true] < refused[&false],
        "adaptive {} vs fixed {} refused",
        refused[&true],
        refused[&false]
    );
}
