//! Records at the edges of the memory budget and of shaping: held while
//! the budget is spent, larger than the budget, refused by a transform.
//! Each must end indexed or dead-lettered, never committed unseen, never
//! stalling the process.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::proxy::{Fault, FaultProxy};
use common::{unique, wait_until, Logingest, Options, Stack, GROUP_DEADLINE};
use rdkafka::producer::FutureRecord;

const PREFIX: &str = "/logingest/topics/";

/// The ids present in `index` (none when it does not exist).
async fn ids_in(stack: &Stack, index: &str) -> BTreeSet<String> {
    stack.all_versions(index).await.into_keys().collect()
}

/// Produces 1 kB lines round-robin over `partitions` as fast as the broker
/// takes them, in rounds of `per_round` every 50 ms, until `stop`.
fn produce_kilobyte_lines(
    stack: &Stack,
    topic: &str,
    partitions: i32,
    per_round: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let producer = common::steady_producer(&stack.brokers);
    let topic = topic.to_string();
    tokio::spawn(async move {
        let pad = "k".repeat(1000);
        let mut ids = Vec::new();
        let mut i = 0i32;
        while !stop.load(Ordering::Relaxed) {
            let mut sends = Vec::new();
            for _ in 0..per_round {
                let value = format!("{i} {pad}");
                let partition = i % partitions;
                i += 1;
                let producer = producer.clone();
                let topic = topic.clone();
                sends.push(async move {
                    let record = FutureRecord::<(), _>::to(&topic)
                        .payload(&value)
                        .partition(partition);
                    producer
                        .send(record, Duration::from_secs(60))
                        .await
                        .map(|d| format!("{topic}-{}-{}", d.partition, d.offset))
                        .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"))
                });
            }
            ids.extend(futures::future::join_all(sends).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ids
    })
}

/// Issue 17.1: a record taken from the queue while the budget is spent is
/// held by its task; cancelling the task (here: the topic's index changed)
/// must leave its offset to the next task, not store past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_held_for_memory_are_not_committed_when_the_task_is_cancelled() {
    let stack = Stack::start();
    let proxy = FaultProxy::start(&stack.es_url).await;
    let topic = unique("held");
    let first = format!("{topic}-a");
    let second = format!("{topic}-b");
    stack.create_topic(&topic, 4);
    stack.put(
        &format!("{PREFIX}{topic}"),
        &format!(r#"{{"index": "{first}"}}"#),
    );
    let options = Options {
        es_url: Some(proxy.url()),
        batch: "max_documents = 100\nmax_bytes = 131072".into(),
        extra: "[index_template]\nenabled = false\n[memory]\nmax_buffered = \"1MiB\"\n".into(),
        ..Options::default()
    };
    // Every request waits: the budget is spent and tasks hold records.
    proxy.set(Fault::Delay(Duration::from_millis(700)));
    let daemon = Logingest::start(&stack, &options);
    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce_kilobyte_lines(&stack, &topic, 4, 100, stop.clone());
    daemon
        .wait_metric("logingest_partitions_paused", 4.0, GROUP_DEADLINE)
        .await;
    // Settings changes cancel every task of the topic, each time while the
    // budget is spent.
    for round in 0..4 {
        let index = if round % 2 == 0 { &second } else { &first };
        stack.put(
            &format!("{PREFIX}{topic}"),
            &format!(r#"{{"index": "{index}"}}"#),
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let ids = producer.await.expect("producer");
    proxy.set(Fault::None);
    stack
        .wait_committed_through(&options.group, &topic, 4, &ids, Duration::from_secs(120))
        .await;
    let stored: BTreeSet<String> = ids_in(&stack, &first)
        .await
        .union(&ids_in(&stack, &second).await)
        .cloned()
        .collect();
    let missing: Vec<&String> = ids.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(!ids.is_empty());
    assert!(
        missing.is_empty(),
        "{} of {} committed records are in neither index: {:?}",
        missing.len(),
        ids.len(),
        &missing[..missing.len().min(20)]
    );
    drop(daemon);
}

/// Issue 17.2: a record larger than the free budget (here, than the whole
/// budget's share) goes through with what the budget can give; nothing
/// around it is lost and the budget is whole again at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_larger_than_the_budget_goes_through_and_nothing_is_lost() {
    let stack = Stack::start();
    let topic = unique("huge");
    stack.create_topic(&topic, 1);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let options = Options {
        batch: "max_bytes = 1048576".into(),
        extra: "[index_template]\nenabled = false\n[memory]\nmax_buffered = \"4MiB\"\n".into(),
        kafka_options: "\"fetch.message.max.bytes\" = \"8388608\"\n\"receive.message.max.bytes\" = \"20000000\"".into(),
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    let huge = "h".repeat(5 << 19); // 2.5 MiB
    let mut records: Vec<(Option<Vec<u8>>, Vec<u8>)> = (0..20)
        .map(|i| (None, format!("small {i}").into_bytes()))
        .collect();
    records.insert(10, (None, huge.clone().into_bytes()));
    let ids = common::produce_to_with(
        &stack.brokers,
        &topic,
        1,
        &records,
        &[("message.max.bytes", "10000000")],
    )
    .await;
    stack
        .wait_committed_through(&options.group, &topic, 1, &ids, GROUP_DEADLINE)
        .await;
    stack.assert_exactly(&topic, &ids).await;
    daemon.assert_verified(&topic, ids.len() as u64, 0);
    let documents = stack.documents(&topic).await;
    assert_eq!(
        documents[&ids[10]]["message"].as_str().map(str::len),
        Some(huge.len())
    );
    let budget = daemon
        .metric("logingest_memory_budget_bytes")
        .await
        .expect("budget gauge");
    wait_until("the budget given back", Duration::from_secs(10), || async {
        daemon.metric("logingest_buffered_bytes").await == Some(0.0)
    })
    .await;
    assert_eq!(budget, 4.0 * 1024.0 * 1024.0);
}

/// Issue 17.2: with a budget of two requests and 2 kB lines, the next
/// chunk's pre-allocation never needs more than the budget can give: every
/// partition keeps going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tight_budget_with_large_batches_never_stalls() {
    let stack = Stack::start();
    let topic = unique("tight");
    stack.create_topic(&topic, 1);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let options = Options {
        batch: "max_bytes = 1048576\nmax_documents = 5000".into(),
        extra: "[index_template]\nenabled = false\n[memory]\nmax_buffered = \"2MiB\"\n".into(),
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    let pad = "t".repeat(2000);
    let records: Vec<_> = (0..5000)
        .map(|i| (None, format!("{i} {pad}").into_bytes()))
        .collect();
    let ids = stack.produce(&topic, 1, &records).await;
    stack
        .wait_committed_through(&options.group, &topic, 1, &ids, Duration::from_secs(90))
        .await;
    stack.assert_exactly(&topic, &ids).await;
    daemon.assert_verified(&topic, ids.len() as u64, 0);
    let budget = daemon
        .metric("logingest_memory_budget_bytes")
        .await
        .expect("budget gauge");
    wait_until("the budget given back", Duration::from_secs(10), || async {
        daemon
            .metric("logingest_buffered_bytes")
            .await
            .is_some_and(|b| b <= budget && b == 0.0)
    })
    .await;
}

/// Issue 17.7: a topic whose transform must not be bypassed (redaction)
/// sends records its transform fails on to the dead letters, not into its
/// index; `%index` cannot route into the dead-letter index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_transforms_go_to_the_dead_letters_when_the_topic_says_so() {
    let stack = Stack::start();
    let topic = unique("redact");
    let dead = unique("dead-letters");
    stack.create_topic(&topic, 1);
    let program = format!("del(.password)\nif .route == \"dlq\" {{ %index = \"{dead}\" }}");
    stack.put(
        &format!("{PREFIX}{topic}"),
        &serde_json::json!({
            "format": "json",
            "transform": program,
            "transform_failure": "dead_letter",
        })
        .to_string(),
    );
    let options = Options {
        extra: format!(
            "[index_template]\nenabled = false\n[dead_letter]\ndestination = \"elasticsearch\"\nindex = \"{dead}\"\n"
        ),
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    // Over the transform's 64 KiB input cap: it cannot be redacted.
    let long = format!(
        r#"{{"password": "hunter2", "pad": "{}"}}"#,
        "p".repeat(70 << 10)
    );
    let records = vec![
        (None, br#"{"password": "s3cret", "user": "a"}"#.to_vec()),
        (None, long.into_bytes()),
        (None, br#"{"password": "x", "route": "dlq"}"#.to_vec()),
        (None, br#"{"password": "s3cret", "user": "b"}"#.to_vec()),
    ];
    let ids = stack.produce(&topic, 1, &records).await;
    stack
        .wait_committed_through(&options.group, &topic, 1, &ids, GROUP_DEADLINE)
        .await;
    stack
        .assert_exactly(&topic, &[ids[0].clone(), ids[3].clone()])
        .await;
    let indexed = stack.documents(&topic).await;
    for doc in indexed.values() {
        assert!(doc.get("password").is_none(), "not redacted: {doc}");
    }
    let letters = stack.documents(&dead).await;
    assert_eq!(
        letters.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([ids[1].clone(), ids[2].clone()]),
        "{letters:?}"
    );
    for id in [&ids[1], &ids[2]] {
        let reason = letters[id]["error"]["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("transform failed: "), "{id}: {reason}");
    }
    assert!(letters[&ids[2]]["error"]["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("dead-letter index"));
    daemon.assert_verified(&topic, 4, 2);
    assert_eq!(
        daemon
            .metric(&format!(
                "logingest_transform_failures_total{{topic=\"{topic}\"}}"
            ))
            .await,
        Some(2.0)
    );
}

/// Seconds from producing one record to `partition` until its document
/// can be fetched by id, for `samples` records one after the other.
async fn delivery_latencies(
    stack: &Stack,
    topic: &str,
    partition: i32,
    samples: usize,
) -> Vec<f64> {
    let producer = common::steady_producer(&stack.brokers);
    let http = reqwest::Client::new();
    let mut latencies = Vec::new();
    for i in 0..samples {
        let value = format!("latency probe {i}");
        let start = std::time::Instant::now();
        let delivery = producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .payload(&value)
                    .partition(partition),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
        let id = format!("{topic}-{}-{}", delivery.partition, delivery.offset);
        loop {
            let found = http
                .get(format!("{}/{topic}/_doc/{id}", stack.es_url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if found {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{id} not indexed within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        latencies.push(start.elapsed().as_secs_f64());
    }
    latencies
}

/// Issue 17.6: a partition handed over and back while its old task still
/// drains reads as fast as a fresh assignment (rust-rdkafka's drop of the
/// old queue handle disables the shared queue's wake-ups; the new task must
/// not depend on them being there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_back_while_its_old_task_drains_reads_as_fast_as_a_fresh_one() {
    let stack = Stack::start();
    let topic = unique("returned");
    stack.create_topic(&topic, 2);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let group = unique("group");
    let slow = Options {
        group: group.clone(),
        extra: "[index_template]\nenabled = false\n".into(),
        // The revoked task drains for 20 s beyond its deadline, longer
        // than the revoke waits (drain_timeout + 2 s): the partition is
        // handed over, and handed back, while it still holds its queue.
        env: vec![(
            "LOGINGEST_TEST_SLOW_DRAIN",
            format!("{topic}/0/20000,{topic}/1/20000"),
        )],
        ..Options::default()
    };
    let a = Logingest::start(&stack, &slow);
    let ids = stack.produce_lines(&topic, 2, 10).await;
    stack
        .wait_committed_through(&group, &topic, 2, &ids, GROUP_DEADLINE)
        .await;
    a.assert_verified(&topic, 10, 0);
    let mut b = Logingest::start(
        &stack,
        &Options {
            group: group.clone(),
            extra: "[index_template]\nenabled = false\n".into(),
            ..Options::default()
        },
    );
    wait_until(
        "the second member gets a partition",
        GROUP_DEADLINE,
        || async {
            b.metric("logingest_partition_tasks")
                .await
                .is_some_and(|n| n >= 1.0)
        },
    )
    .await;
    b.terminate(Duration::from_secs(20)).await;
    wait_until(
        "the partition assigned back while its old task drains",
        GROUP_DEADLINE,
        || async {
            a.log()
                .contains("assigned again while its old task still drains")
        },
    )
    .await;
    // The old task is gone once its slow drain ended.
    wait_until("the old task stopped", Duration::from_secs(40), || async {
        a.log().contains("test fault: slow drain over")
            && a.metric("logingest_partition_tasks")
                .await
                .is_some_and(|n| n == 2.0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut means = Vec::new();
    for partition in 0..2 {
        let latencies = delivery_latencies(&stack, &topic, partition, 12).await;
        let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
        eprintln!("partition {partition}: mean latency {mean:.3} s ({latencies:.3?})");
        means.push(mean);
    }
    let (fast, slowest) = (
        means.iter().cloned().fold(f64::MAX, f64::min),
        means.iter().cloned().fold(0.0, f64::max),
    );
    assert!(
        slowest < 2.0 * fast + 0.1,
        "the returned partition reads slower than the other: {means:?}"
    );
}

/// Issue 17.5: a document whose item the cluster answers 503 every time
/// (an ingest pipeline failing on it, a shard that never recovers) is sent
/// again only for `elasticsearch.max_item_retry_duration`, then
/// dead-lettered with the last reason; its partition moves past it and
/// nothing else is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_always_answered_503_is_dead_lettered_after_the_item_retry_limit() {
    let stack = Stack::start();
    let proxy = FaultProxy::start(&stack.es_url).await;
    let topic = unique("stuck");
    let dead = unique("dead-letters");
    stack.create_topic(&topic, 3);
    stack.put(&format!("{PREFIX}{topic}"), "");
    // Offset 3 of partition 1: the first lines go round robin, 10 each.
    let stuck = format!("{topic}-1-3");
    proxy.set(Fault::BulkItem503 {
        index: topic.clone(),
        id: stuck.clone(),
    });
    let options = Options {
        es_url: Some(proxy.url()),
        elasticsearch: "max_item_retry_duration = \"3s\"".into(),
        extra: format!(
            "[index_template]\nenabled = false\n[dead_letter]\ndestination = \"elasticsearch\"\nindex = \"{dead}\"\n"
        ),
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    let mut ids = stack.produce_lines(&topic, 3, 30).await;
    assert!(ids.contains(&stuck), "{stuck} not among {ids:?}");
    // Steady lines on every partition while the document is retried, and
    // after.
    let stop = Arc::new(AtomicBool::new(false));
    let steady = stack.produce_steadily(&topic, 3, 10, stop.clone());
    wait_until("the document retried", GROUP_DEADLINE, || async {
        daemon
            .metric(&format!(
                "logingest_documents_retried_total{{topic=\"{topic}\"}}"
            ))
            .await
            .is_some_and(|n| n >= 2.0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    ids.extend(steady.await.expect("producer"));
    stack
        .wait_committed_through(&options.group, &topic, 3, &ids, Duration::from_secs(90))
        .await;
    let committed = stack.committed(&options.group, &topic, 3);
    eprintln!("committed: {committed:?}, {} lines", ids.len());
    assert!(committed[&1] > Some(3), "{committed:?}");
    // Every other line indexed once; the stuck one only in the dead letters.
    let others: Vec<String> = ids.iter().filter(|id| **id != stuck).cloned().collect();
    stack.assert_exactly(&topic, &others).await;
    let letters = stack.documents(&dead).await;
    assert_eq!(
        letters.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([stuck.clone()]),
        "{letters:?}"
    );
    let reason = letters[&stuck]["error"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.starts_with("503 unavailable_shards_exception: injected")
            && reason.contains("max_item_retry_duration"),
        "{reason}"
    );
    for (series, value) in [
        ("logingest_documents_failed_total", 1.0),
        ("logingest_documents_dead_lettered_total", 1.0),
        ("logingest_documents_retry_expired_total", 1.0),
    ] {
        assert_eq!(
            daemon
                .metric(&format!("{series}{{topic=\"{topic}\"}}"))
                .await,
            Some(value),
            "{series}"
        );
    }
    daemon.assert_verified(&topic, ids.len() as u64, 1);
}

/// Issue 17.5: only the time a document's item is answered 429/5xx counts
/// against `max_item_retry_duration`; while whole requests fail (the
/// cluster down), the document is waited for, not dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_between_item_failures_does_not_use_up_the_item_retry_limit() {
    let stack = Stack::start();
    let proxy = FaultProxy::start(&stack.es_url).await;
    let topic = unique("outage");
    stack.create_topic(&topic, 1);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let stuck = format!("{topic}-0-4");
    let item_fails = || Fault::BulkItem503 {
        index: topic.clone(),
        id: stuck.clone(),
    };
    proxy.set(item_fails());
    let options = Options {
        es_url: Some(proxy.url()),
        elasticsearch: "max_item_retry_duration = \"3s\"".into(),
        extra: "[index_template]\nenabled = false\n".into(),
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    let ids = stack.produce_lines(&topic, 1, 10).await;
    wait_until("the item answered 503", GROUP_DEADLINE, || async {
        proxy.items_503() >= 1
    })
    .await;
    // Whole requests fail for twice the limit...
    proxy.set(Fault::Status(503));
    tokio::time::sleep(Duration::from_secs(6)).await;
    // ... then the item is answered 503 once more, and then stored.
    let before = proxy.items_503();
    proxy.set(item_fails());
    wait_until(
        "the item answered 503 after the outage",
        Duration::from_secs(30),
        || async { proxy.items_503() > before },
    )
    .await;
    proxy.set(Fault::None);
    stack
        .wait_committed_through(&options.group, &topic, 1, &ids, GROUP_DEADLINE)
        .await;
    eprintln!("items answered 503: {}", proxy.items_503());
    stack.assert_exactly(&topic, &ids).await;
    for series in [
        "logingest_documents_failed_total",
        "logingest_documents_retry_expired_total",
    ] {
        assert_eq!(
            daemon
                .metric(&format!("{series}{{topic=\"{topic}\"}}"))
                .await,
            Some(0.0),
            "{series}"
        );
    }
    daemon.assert_verified(&topic, 10, 0);
}
