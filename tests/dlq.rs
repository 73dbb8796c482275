//! `logingest dlq replay` against the real local servers: documents
//! dead-lettered by a running logingest (a mapping that rejects them),
//! replayed by the CLI once the mapping is fixed, with their original
//! `_id`s; letters refused again, dry runs, reduced letters, the
//! dead-letter index and `--to-topic`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{logingest_cli, unique, wait_until, Logingest, Options, Stack, GROUP_DEADLINE};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

const PREFIX: &str = "/logingest/topics/";

/// A fixed Kafka timestamp for produced lines: 2024-01-02T03:04:05.678Z.
const TIMESTAMP_MS: i64 = 1_704_164_645_678;
const TIMESTAMP: &str = "2024-01-02T03:04:05.678Z";

fn series(name: &str, topic: &str) -> String {
    format!("logingest_{name}{{topic=\"{topic}\"}}")
}

/// An index whose `message` is a number: text lines are rejected.
async fn numeric_message_index(stack: &Stack, index: &str) {
    let response = reqwest::Client::new()
        .put(format!("{}/{index}", stack.es_url))
        .json(&json!({"mappings": {"properties": {"message": {"type": "long"}}}}))
        .send()
        .await
        .expect("create index");
    assert!(response.status().is_success(), "create index");
}

async fn delete_index(stack: &Stack, index: &str) {
    let response = reqwest::Client::new()
        .delete(format!("{}/{index}", stack.es_url))
        .send()
        .await
        .expect("delete index");
    assert!(response.status().is_success(), "delete index");
}

/// Produces `values` round robin over `partitions` with [`TIMESTAMP_MS`];
/// returns their `_id`s.
async fn produce_at(stack: &Stack, topic: &str, partitions: i32, values: &[&str]) -> Vec<String> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let mut ids = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let delivery = producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .payload(*value)
                    .partition(i as i32 % partitions)
                    .timestamp(TIMESTAMP_MS),
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

/// Writes a dead letter straight into `dlq` (partition 0).
async fn produce_letter(stack: &Stack, dlq: &str, headers: &[(&str, &str)], value: Option<&[u8]>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let mut owned = OwnedHeaders::new();
    for (key, text) in headers {
        owned = owned.insert(Header {
            key,
            value: Some(*text),
        });
    }
    let mut record = FutureRecord::<(), [u8]>::to(dlq)
        .partition(0)
        .headers(owned);
    if let Some(value) = value {
        record = record.payload(value);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .unwrap_or_else(|(e, _)| panic!("produce to {dlq}: {e}"));
}

/// A config for the CLI alone (no daemon): etcd, Kafka, Elasticsearch of
/// `stack`, group `group`, and `extra` TOML.
fn cli_config(stack: &Stack, group: &str, extra: &str) -> PathBuf {
    let path = stack.dir.path().join(format!("{}.toml", unique("dlq-cli")));
    std::fs::write(
        &path,
        format!(
            r#"
[etcd]
endpoints = ["{etcd}"]

[kafka]
brokers = ["{brokers}"]
group_id = "{group}"

[elasticsearch]
url = "{es}"
request_timeout = "5s"

[batch]
linger = "50ms"

[retry]
initial_backoff = "50ms"
max_backoff = "1s"
{extra}
"#,
            etcd = stack.etcd_url,
            brokers = stack.brokers,
            es = stack.es_url,
        ),
    )
    .expect("write config");
    path
}

fn replay(config: &Path, topic: &str, extra: &[&str]) -> Output {
    let config = config.to_str().expect("utf-8 path");
    let mut args = vec!["dlq", "replay", topic, "-c", config];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let out = logingest_cli(&args, &[("RUST_LOG", "warn")]);
    eprintln!(
        "---- dlq replay {topic} {extra:?} ({:?}): {:?}\nstdout:\n{}\nstderr:\n{}",
        started.elapsed(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn counts(read: u64, replayed: u64, refused: u64, not_replayable: u64) -> String {
    format!("{read} read, {replayed} replayed, {refused} refused again, {not_replayable} not replayable")
}

/// Registers `topic` (whose index rejects text lines), runs a logingest
/// until `bad` lines are dead-lettered, and stops it. Returns the `_id`s
/// of every line produced and the daemon's config path.
async fn dead_letter_some(
    stack: &Stack,
    topic: &str,
    partitions: i32,
    lines: &[&str],
    bad: usize,
    options: &Options,
) -> (Vec<String>, PathBuf) {
    stack.create_topic(topic, partitions as u32);
    numeric_message_index(stack, topic).await;
    stack.put(&format!("{PREFIX}{topic}"), "");
    let mut daemon = Logingest::start(stack, options);
    let ids = produce_at(stack, topic, partitions, lines).await;
    daemon
        .wait_metric(
            &series("documents_dead_lettered_total", topic),
            bad as f64,
            GROUP_DEADLINE,
        )
        .await;
    let good = lines.len() - bad;
    wait_until(
        "the good lines indexed",
        Duration::from_secs(20),
        || async {
            daemon
                .metric(&series("documents_indexed_total", topic))
                .await
                == Some(good as f64)
        },
    )
    .await;
    let status = daemon.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "logingest exited with {status}");
    (ids, daemon.config.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_brings_dead_letters_back_after_the_fix_and_a_second_replay_does_nothing() {
    let stack = Stack::start();
    let topic = unique("replay");
    let dlq = format!("{topic}.dlq");
    stack.create_topic(&dlq, 2);
    let lines = ["1", "not a number", "2", "bad line", "3", "4"];
    let options = Options::default();
    let (ids, config) = dead_letter_some(&stack, &topic, 2, &lines, 2, &options).await;
    let rejected = vec![ids[1].clone(), ids[3].clone()];
    assert!(
        stack.versions(&topic, &rejected).await.is_empty(),
        "the rejected documents are not indexed"
    );

    // The fix: the index goes, and logingest's template (message: text)
    // applies to the new one.
    delete_index(&stack, &topic).await;
    let out = replay(&config, &topic, &[]);
    assert!(out.status.success(), "replay failed");
    assert!(
        stdout(&out).contains(&counts(2, 2, 0, 0)),
        "{}",
        stdout(&out)
    );
    let docs = stack.documents(&topic).await;
    assert_eq!(docs.len(), 2, "{docs:?}");
    for (id, line) in rejected.iter().zip(["not a number", "bad line"]) {
        let doc = &docs[id];
        assert_eq!(doc["message"], line);
        assert_eq!(doc["@timestamp"], TIMESTAMP, "the original Kafka time");
        let (partition, offset) = id
            .strip_prefix(&format!("{topic}-"))
            .and_then(|rest| rest.split_once('-'))
            .expect("id");
        assert_eq!(doc["kafka"]["topic"], topic.as_str());
        assert_eq!(doc["kafka"]["partition"].to_string(), partition);
        assert_eq!(doc["kafka"]["offset"].to_string(), offset);
    }
    stack.assert_exactly(&topic, &rejected).await;
    let first = stack.versions(&topic, &rejected).await;
    let group = format!("{}-dlq-replay-{topic}", options.group);
    let committed: i64 = stack.committed(&group, &dlq, 2).values().flatten().sum();
    assert_eq!(committed, 2, "both letters committed (offsets start at 0)");

    // Nothing again: the position is recorded in the dead-letter topic.
    let out = replay(&config, &topic, &[]);
    assert!(out.status.success(), "second replay failed");
    assert!(
        stdout(&out).contains("nothing to replay"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(&counts(0, 0, 0, 0)),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        stack.versions(&topic, &rejected).await,
        first,
        "not written again"
    );
    stack.assert_exactly(&topic, &rejected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letters_refused_again_stay_and_the_position_does_not_pass_them() {
    let stack = Stack::start();
    let topic = unique("refused");
    let dlq = format!("{topic}.dlq");
    stack.create_topic(&dlq, 1);
    let options = Options::default();
    let lines = ["1", "still not a number", "2"];
    let (ids, config) = dead_letter_some(&stack, &topic, 1, &lines, 1, &options).await;
    // A letter after it that the unfixed index accepts.
    produce_letter(
        &stack,
        &dlq,
        &[
            ("logingest.topic", &topic),
            ("logingest.partition", "0"),
            ("logingest.offset", "1000"),
            ("logingest.error", "400 crafted"),
        ],
        Some(b"77"),
    )
    .await;
    let crafted = format!("{topic}-0-1000");

    let out = replay(&config, &topic, &[]);
    assert_eq!(out.status.code(), Some(3), "refused again: exit 3");
    assert!(
        stdout(&out).contains(&counts(2, 1, 1, 0)),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(&format!("refused again: {} ({dlq}/0/0)", ids[1])),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("mapper_parsing_exception"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("refused again"), "{}", stderr(&out));
    assert_eq!(
        stack
            .versions(&topic, std::slice::from_ref(&crafted))
            .await
            .get(&crafted),
        Some(&1)
    );
    let group = format!("{}-dlq-replay-{topic}", options.group);
    assert_eq!(
        stack.committed(&group, &dlq, 1),
        BTreeMap::from([(0, None)]),
        "nothing committed past the letter refused again"
    );
    // Still refused: still there, still exit 3, not dead-lettered twice.
    let out = replay(&config, &topic, &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stdout(&out).contains(&counts(2, 1, 1, 0)),
        "{}",
        stdout(&out)
    );

    // Fixed: both again (the accepted one is written again, same _id).
    delete_index(&stack, &topic).await;
    let out = replay(&config, &topic, &[]);
    assert!(out.status.success(), "replay after the fix failed");
    assert!(
        stdout(&out).contains(&counts(2, 2, 0, 0)),
        "{}",
        stdout(&out)
    );
    stack
        .assert_exactly(&topic, &[ids[1].clone(), crafted])
        .await;
    assert_eq!(
        stack.committed(&group, &dlq, 1),
        BTreeMap::from([(0, Some(2))])
    );
    let out = replay(&config, &topic, &[]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("nothing to replay"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_the_letters_and_changes_nothing() {
    let stack = Stack::start();
    let topic = unique("dry");
    let dlq = format!("{topic}.dlq");
    stack.create_topic(&dlq, 1);
    let options = Options::default();
    let lines = ["bad one", "5", "bad two"];
    let (ids, config) = dead_letter_some(&stack, &topic, 1, &lines, 2, &options).await;
    // The fix this time: another index for the topic.
    let fixed = format!("{topic}-fixed");
    stack.put(
        &format!("{PREFIX}{topic}"),
        &json!({ "index": fixed }).to_string(),
    );

    let out = replay(&config, &topic, &["--dry-run"]);
    assert!(out.status.success(), "dry run failed");
    let text = stdout(&out);
    for (id, offset) in [(&ids[0], 0), (&ids[2], 1)] {
        assert!(
            text.contains(&format!(
                "would replay {id} ({dlq}/0/{offset}): 7 B, full, reason: 400"
            )),
            "{text}"
        );
    }
    assert!(text.contains("dry run: dlq replay"), "{text}");
    assert!(text.contains("2 would be replayed"), "{text}");
    assert!(text.contains("nothing was written or committed"), "{text}");
    stack
        .assert_nothing_indexed(&fixed, "after a dry run")
        .await;
    let group = format!("{}-dlq-replay-{topic}", options.group);
    assert_eq!(
        stack.committed(&group, &dlq, 1),
        BTreeMap::from([(0, None)])
    );

    let out = replay(&config, &topic, &[]);
    assert!(out.status.success(), "replay failed");
    assert!(
        stdout(&out).contains(&counts(2, 2, 0, 0)),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(&format!("index {fixed}")),
        "{}",
        stdout(&out)
    );
    stack
        .assert_exactly(&fixed, &[ids[0].clone(), ids[2].clone()])
        .await;

    // --from-offset replays again what was replayed: same _ids, new versions.
    let out = replay(&config, &topic, &["--from-offset", "1"]);
    assert!(out.status.success(), "replay --from-offset failed");
    assert!(
        stdout(&out).contains(&counts(1, 1, 0, 0)),
        "{}",
        stdout(&out)
    );
    let both = [ids[0].clone(), ids[2].clone()];
    let v = stack.versions(&fixed, &both).await;
    assert_eq!((v.get(&ids[0]), v.get(&ids[2])), (Some(&1), Some(&2)));
    // Exactly those two: the one replayed again overwrote its document.
    stack.assert_delivered(&fixed, &both, 1).await;
    // Past the end: nothing (not a reset to the beginning).
    let out = replay(&config, &topic, &["--from-offset", "0:99"]);
    assert!(out.status.success(), "replay --from-offset 0:99 failed");
    assert!(
        stdout(&out).contains("nothing to replay"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("past the end"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reduced_letter_is_replayed_from_the_source_topic() {
    let stack = Stack::start();
    let topic = unique("reduced");
    let dlq = format!("{topic}.dlq");
    stack.create_topic(&topic, 1);
    stack.create_topic(&dlq, 1);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let big = format!("{} the end", "x".repeat(3000));
    let ids = produce_at(&stack, &topic, 1, &["first", &big]).await;
    let offset = ids[1].rsplit('-').next().expect("offset").to_string();
    let reduced = |partition: i64, offset: i64| {
        json!({"reduced": true, "reason": "413 request entity too large", "refused": "message too large",
            "topic": &topic, "partition": partition, "offset": offset, "original_size": 3008,
            "key_size": null, "value_prefix": "xxxx"})
        .to_string()
    };
    let description = reduced(0, offset.parse().expect("number"));
    let letter_headers = |partition: &str, offset: &str| -> Vec<(String, String)> {
        [
            ("logingest.topic", topic.as_str()),
            ("logingest.partition", partition),
            ("logingest.offset", offset),
            ("logingest.error", "413 request entity too large"),
            ("logingest.reduced", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let good = letter_headers("0", &offset);
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    produce_letter(&stack, &dlq, &good, Some(description.as_bytes())).await;
    // One whose original is gone (the topic has no partition 7), and one
    // that is no dead letter at all.
    let gone = letter_headers("7", "3");
    let gone: Vec<(&str, &str)> = gone.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    produce_letter(&stack, &dlq, &gone, Some(reduced(7, 3).as_bytes())).await;
    produce_letter(&stack, &dlq, &[], Some(b"stray record")).await;
    let config = cli_config(&stack, &unique("group"), "");

    let out = replay(&config, &topic, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(4), "not replayable: exit 4");
    assert!(
        stdout(&out).contains(&format!(
            "would replay {} ({dlq}/0/0): 2.9 KiB, reduced (original read from the topic)",
            ids[1]
        )),
        "{}",
        stdout(&out)
    );

    let out = replay(&config, &topic, &[]);
    assert_eq!(out.status.code(), Some(4), "not replayable: exit 4");
    let text = stdout(&out);
    assert!(text.contains(&counts(3, 1, 0, 2)), "{text}");
    assert!(
        text.contains(&format!(
            "not replayable: {topic}-7-3 ({dlq}/0/1): original no longer in the topic"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("not replayable: {dlq}/0/2: malformed dead letter")),
        "{text}"
    );
    let docs = stack.documents(&topic).await;
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[&ids[1]]["message"], big.as_str(), "the full original");
    assert_eq!(docs[&ids[1]]["@timestamp"], TIMESTAMP);

    // Letters that can never be replayed are passed for good.
    let out = replay(&config, &topic, &[]);
    assert!(out.status.success(), "second replay failed");
    assert!(
        stdout(&out).contains("nothing to replay"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letters_of_the_dead_letter_index_are_replayed_and_deleted() {
    let stack = Stack::start();
    let topic = unique("from-index");
    let dead = unique("dead-letters");
    let options = Options {
        extra: format!("[dead_letter]\ndestination = \"elasticsearch\"\nindex = \"{dead}\"\n"),
        ..Options::default()
    };
    let lines = ["1", "seven", "2", "eight"];
    let (ids, config) = dead_letter_some(&stack, &topic, 1, &lines, 2, &options).await;
    assert_eq!(stack.count(&dead).await, Some(2));

    // Not fixed yet: refused again, and they stay as they are.
    let out = replay(&config, &topic, &["--from-index"]);
    assert_eq!(out.status.code(), Some(3), "refused again: exit 3");
    assert!(
        stdout(&out).contains(&counts(2, 0, 2, 0)),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        stack.count(&dead).await,
        Some(2),
        "letters refused again stay"
    );
    // A reduced letter whose original is gone (no partition 9).
    let gone = format!("{topic}-9-1");
    let body = format!(
        "{}\n{}\n",
        json!({"index": {"_index": &dead, "_id": &gone}}),
        json!({"@timestamp": TIMESTAMP, "message": "xx", "reduced": true, "original_size": 2,
            "kafka": {"topic": &topic, "partition": 9, "offset": 1},
            "error": {"reason": "413 request entity too large"}})
    );
    let reply: Value = reqwest::Client::new()
        .post(format!("{}/_bulk?refresh=true", stack.es_url))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("bulk")
        .json()
        .await
        .expect("bulk reply");
    assert_eq!(reply["errors"], false, "{reply}");

    delete_index(&stack, &topic).await;
    let out = replay(&config, &topic, &["--from-index"]);
    assert_eq!(out.status.code(), Some(4), "not replayable: exit 4");
    assert!(
        stdout(&out).contains(&counts(3, 2, 0, 1)),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(&format!("from index {dead}")),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(&format!(
            "not replayable: {gone} ({dead}/{gone}): original no longer in the topic"
        )),
        "{}",
        stdout(&out)
    );
    let docs = stack.documents(&topic).await;
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert_eq!(docs[&ids[1]]["message"], "seven");
    assert_eq!(docs[&ids[3]]["message"], "eight");
    assert_eq!(docs[&ids[3]]["@timestamp"], TIMESTAMP);
    let left = stack.documents(&dead).await;
    assert_eq!(left.len(), 1, "replayed letters are deleted: {left:?}");
    assert!(
        left[&gone]["replay"]["not_replayable"]
            .as_str()
            .is_some_and(|r| r.contains("original no longer in the topic")),
        "{left:?}"
    );

    // destination = "elasticsearch" implies the index: nothing left there
    // (the letter that cannot be replayed is skipped from now on).
    let out = replay(&config, &topic, &[]);
    assert!(out.status.success(), "second replay failed");
    assert!(
        stdout(&out).contains("nothing to replay"),
        "{}",
        stdout(&out)
    );
    stack
        .assert_exactly(&topic, &[ids[1].clone(), ids[3].clone()])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_topic_produces_the_originals_again() {
    let stack = Stack::start();
    let topic = unique("again");
    let dlq = format!("{topic}.dlq");
    stack.create_topic(&topic, 2);
    stack.create_topic(&dlq, 1);
    produce_at(&stack, &topic, 2, &["a", "b", "c"]).await;
    produce_letter(
        &stack,
        &dlq,
        &[
            ("logingest.topic", &topic),
            ("logingest.partition", "1"),
            ("logingest.offset", "0"),
            ("logingest.error", "400 x"),
            ("logingest.timestamp", &TIMESTAMP_MS.to_string()),
        ],
        Some(b"b"),
    )
    .await;
    // Not registered: --to-topic does not need the registry.
    let config = cli_config(&stack, &unique("group"), "");
    let out = replay(&config, &topic, &["--to-topic"]);
    assert!(out.status.success(), "replay --to-topic failed");
    assert!(
        stdout(&out).contains(&counts(1, 1, 0, 0)),
        "{}",
        stdout(&out)
    );

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 1, Offset::Offset(1))
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let start = Instant::now();
    let message = loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no record produced again"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            break m.detach();
        }
    };
    assert_eq!(message.payload(), Some(&b"b"[..]));
    assert_eq!(
        message.offset(),
        1,
        "a new offset of the original partition"
    );
    assert_eq!(message.timestamp().to_millis(), Some(TIMESTAMP_MS));
    let header = message
        .headers()
        .and_then(|h| {
            h.iter()
                .find(|h| h.key == "logingest.replay.of")
                .and_then(|h| h.value)
        })
        .map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(header, Some(format!("{topic}-1-0")));

    let out = replay(&config, &topic, &["--to-topic"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("nothing to replay"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_and_unreachable_services_are_clear_errors() {
    let stack = Stack::start();
    let topic = unique("unknown");
    let config = cli_config(&stack, &unique("group"), "");
    let out = replay(&config, &topic, &[]);
    assert_eq!(out.status.code(), Some(6), "unknown topic: exit 6");
    assert!(
        stderr(&out).contains("is not registered"),
        "{}",
        stderr(&out)
    );
    let out = replay(&config, &topic, &["--to-topic"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(
        stderr(&out).contains("does not exist in Kafka"),
        "{}",
        stderr(&out)
    );
    let out = replay(&config, &topic, &["--from-index", "--from-offset", "3"]);
    assert_eq!(out.status.code(), Some(2), "usage: exit 2");

    stack.put(&format!("{PREFIX}{topic}"), "");
    let closed = common::free_port();
    let no_es = config.with_extension("no-es.toml");
    std::fs::write(
        &no_es,
        std::fs::read_to_string(&config)
            .expect("config")
            .replace(&stack.es_url, &format!("http://127.0.0.1:{closed}")),
    )
    .expect("write config");
    let out = replay(&no_es, &topic, &[]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "Elasticsearch unreachable: exit 5"
    );
    assert!(
        stderr(&out).contains("cannot reach Elasticsearch"),
        "{}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(&config).expect("config");
    for (what, from, needle) in [
        (
            "etcd",
            stack.etcd_url.clone(),
            "cannot read the registry from etcd",
        ),
        ("kafka", stack.brokers.clone(), "cannot reach Kafka"),
    ] {
        let path = config.with_extension(format!("no-{what}.toml"));
        let to = if what == "etcd" {
            format!("http://127.0.0.1:{closed}")
        } else {
            format!("127.0.0.1:{closed}")
        };
        std::fs::write(&path, text.replace(&from, &to)).expect("write config");
        let out = replay(&path, &topic, &[]);
        assert_eq!(out.status.code(), Some(5), "{what} unreachable: exit 5");
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
    }
}
