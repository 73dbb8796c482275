//! End-to-end behaviour of the core pipeline against real etcd, Kafka
//! (tansu) and Elasticsearch (osmem-server).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{unique, wait_until, Logingest, Options, Stack, GROUP_DEADLINE};

const PREFIX: &str = "/logingest/topics/";

fn tasks_metric() -> &'static str {
    "logingest_partition_tasks"
}

fn indexed(topic: &str) -> String {
    format!("logingest_documents_indexed_total{{topic=\"{topic}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_topic_is_indexed_with_exact_ids_and_fields() {
    let stack = Stack::start();
    let topic = unique("nginx");
    let index = unique("web-logs");
    stack.create_topic(&topic, 3);
    // Written before the topic is registered: must not be lost.
    let mut records: Vec<(Option<Vec<u8>>, Vec<u8>)> = (0..297)
        .map(|i| {
            (
                Some(format!("host-{}", i % 5).into_bytes()),
                format!("GET /{i} 200").into_bytes(),
            )
        })
        .collect();
    records.push((None, b"no key here".to_vec()));
    records.push((None, b"bad \xff\xfe utf8".to_vec()));
    records.push((Some(b"k".to_vec()), Vec::new()));
    let ids = stack.produce(&topic, 3, &records).await;

    let daemon = Logingest::start(&stack, &Options::default());
    stack.put(
        &format!("{PREFIX}{topic}"),
        &format!(r#"{{"index": "{index}"}}"#),
    );

    wait_until("all 300 documents indexed", GROUP_DEADLINE, || async {
        stack.count_or_zero(&index).await >= 300
    })
    .await;
    stack.assert_exactly(&index, &ids).await;

    let docs = stack.documents(&index).await;
    let by_message: BTreeMap<&str, &serde_json::Value> = docs
        .values()
        .map(|d| (d["message"].as_str().unwrap_or_default(), d))
        .collect();
    let keyed = by_message["GET /7 200"];
    assert_eq!(keyed["kafka"]["topic"], topic.as_str());
    assert_eq!(keyed["kafka"]["key"], "host-2");
    let (partition, offset) = (
        keyed["kafka"]["partition"].as_i64().unwrap(),
        keyed["kafka"]["offset"].as_i64().unwrap(),
    );
    assert!(docs.contains_key(&format!("{topic}-{partition}-{offset}")));
    let ts = keyed["@timestamp"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'),
        "{ts}"
    );
    assert!(by_message["no key here"]["kafka"].get("key").is_none());
    assert!(by_message.contains_key("bad \u{fffd}\u{fffd} utf8"));
    assert_eq!(by_message[""]["kafka"]["key"], "k");
    assert_eq!(daemon.metric(&indexed(&topic)).await, Some(300.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_stops_it_while_another_keeps_flowing() {
    let stack = Stack::start();
    let (gone, kept) = (unique("gone"), unique("kept"));
    stack.create_topic(&gone, 2);
    stack.create_topic(&kept, 2);
    let daemon = Logingest::start(&stack, &Options::default());
    stack.put(&format!("{PREFIX}{gone}"), "");
    stack.put(&format!("{PREFIX}{kept}"), "");
    let gone_ids = stack.produce_lines(&gone, 2, 40).await;
    let mut kept_ids = stack.produce_lines(&kept, 2, 40).await;
    wait_until("both topics indexed", GROUP_DEADLINE, || async {
        stack.count(&gone).await == Some(40) && stack.count(&kept).await == Some(40)
    })
    .await;

    stack.del(&format!("{PREFIX}{gone}"));
    // The removed topic's tasks stop on the registry event, before any
    // rebalance.
    daemon
        .wait_metric(tasks_metric(), 2.0, Duration::from_secs(5))
        .await;

    // Lines written to the removed topic first, then to the kept one: once
    // the kept topic's lines are in, the removed one's would have been too.
    stack.produce_lines(&gone, 2, 25).await;
    kept_ids.extend(stack.produce_lines(&kept, 2, 25).await);
    wait_until("kept topic keeps flowing", GROUP_DEADLINE, || async {
        stack.count(&kept).await == Some(65)
    })
    .await;
    stack.assert_exactly(&kept, &kept_ids).await;
    stack.assert_exactly(&gone, &gone_ids).await;
    assert_eq!(daemon.metric(&indexed(&gone)).await, Some(40.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_key_adds_topics_and_replacing_its_value_removes_one() {
    let stack = Stack::start();
    let (access, app) = (unique("access"), unique("app"));
    stack.create_topic(&access, 1);
    stack.create_topic(&app, 1);
    let daemon = Logingest::start(&stack, &Options::default());
    stack.put(
        "collectlogkey1",
        &format!(r#"[{{"path": "/var/log/nginx/access.log", "topic": "{access}"}}, {{"path": "/var/log/app.log", "topic": "{app}"}}]"#),
    );
    let access_ids = stack.produce_lines(&access, 1, 10).await;
    let mut app_ids = stack.produce_lines(&app, 1, 10).await;
    wait_until("both collector topics indexed", GROUP_DEADLINE, || async {
        stack.count(&access).await == Some(10) && stack.count(&app).await == Some(10)
    })
    .await;

    stack.put(
        "collectlogkey1",
        &format!(r#"[{{"path": "/var/log/app.log", "topic": "{app}"}}]"#),
    );
    daemon
        .wait_metric(tasks_metric(), 1.0, Duration::from_secs(5))
        .await;
    assert_eq!(daemon.metric("logingest_registry_topics").await, Some(1.0));
    stack.produce_lines(&access, 1, 5).await;
    app_ids.extend(stack.produce_lines(&app, 1, 5).await);
    wait_until(
        "remaining collector topic flows",
        GROUP_DEADLINE,
        || async { stack.count(&app).await == Some(15) },
    )
    .await;
    stack.assert_exactly(&app, &app_ids).await;
    stack.assert_exactly(&access, &access_ids).await;

    stack.del("collectlogkey1");
    daemon
        .wait_metric(tasks_metric(), 0.0, Duration::from_secs(5))
        .await;
    assert_eq!(daemon.metric("logingest_registry_topics").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_registry_value_is_ignored_and_last_good_state_kept() {
    let stack = Stack::start();
    let topic = unique("svc");
    let index = unique("svc-idx");
    stack.create_topic(&topic, 1);
    let mut daemon = Logingest::start(&stack, &Options::default());
    let key = format!("{PREFIX}{topic}");
    stack.put(&key, &format!(r#"{{"index": "{index}"}}"#));
    let mut ids = stack.produce_lines(&topic, 1, 10).await;
    wait_until("first lines indexed", GROUP_DEADLINE, || async {
        stack.count(&index).await == Some(10)
    })
    .await;

    stack.put(&key, "{not json");
    stack.put(&key, r#"{"index": "Has Upper Case"}"#);
    stack.put("collectlogkey1", r#"{"not": "an array"}"#);
    stack.put(&format!("{PREFIX}bad topic name"), "");
    daemon
        .wait_metric(
            "logingest_registry_changes_rejected_total",
            4.0,
            Duration::from_secs(5),
        )
        .await;
    assert!(
        daemon.log().contains(&key),
        "the log names the rejected key"
    );

    ids.extend(stack.produce_lines(&topic, 1, 10).await);
    wait_until(
        "later lines still go to the last good index",
        GROUP_DEADLINE,
        || async { stack.count(&index).await == Some(20) },
    )
    .await;
    stack.assert_exactly(&index, &ids).await;
    assert_eq!(daemon.metric(tasks_metric()).await, Some(1.0));
    assert!(daemon.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_committed_offsets_without_loss_or_duplicates() {
    let stack = Stack::start();
    let topic = unique("resume");
    stack.create_topic(&topic, 2);
    let options = Options::default();
    stack.put(&format!("{PREFIX}{topic}"), "");
    let mut ids = stack.produce_lines(&topic, 2, 300).await;

    let mut first = Logingest::start(&stack, &options);
    wait_until("first run indexes everything", GROUP_DEADLINE, || async {
        stack.count(&topic).await == Some(300)
    })
    .await;
    assert!(first.terminate(Duration::from_secs(30)).await.success());
    assert_eq!(
        stack.committed(&options.group, &topic, 2),
        BTreeMap::from([(0, Some(150)), (1, Some(150))])
    );

    // Written while no ingestor runs: the old program lost these.
    ids.extend(stack.produce_lines(&topic, 2, 200).await);
    let second = Logingest::start(&stack, &options);
    wait_until("second run catches up", GROUP_DEADLINE, || async {
        stack.count(&topic).await == Some(500)
    })
    .await;
    stack.assert_exactly(&topic, &ids).await;
    // It started from the committed offsets: only the new lines were read.
    second
        .wait_metric(&indexed(&topic), 200.0, Duration::from_secs(5))
        .await;
    assert_eq!(
        second
            .metric(&format!(
                "logingest_documents_read_total{{topic=\"{topic}\"}}"
            ))
            .await,
        Some(200.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_buffered_documents_and_commits_them() {
    let stack = Stack::start();
    let topic = unique("flush");
    stack.create_topic(&topic, 2);
    // A long linger keeps read documents buffered until shutdown.
    let options = Options {
        linger: "10min",
        idle_linger: Some("10min"),
        ..Options::default()
    };
    let mut daemon = Logingest::start(&stack, &options);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let ids = stack.produce_lines(&topic, 2, 50).await;
    daemon
        .wait_metric(
            &format!("logingest_documents_read_total{{topic=\"{topic}\"}}"),
            50.0,
            GROUP_DEADLINE,
        )
        .await;
    stack
        .assert_nothing_indexed(&topic, "nothing sent before the linger")
        .await;

    let status = daemon.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status}");
    stack.assert_exactly(&topic, &ids).await;
    assert_eq!(
        stack.committed(&options.group, &topic, 2),
        BTreeMap::from([(0, Some(25)), (1, Some(25))])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_loses_nothing_and_duplicates_nothing() {
    let stack = Stack::start();
    let topic = unique("crash");
    stack.create_topic(&topic, 2);
    let options = Options::default();
    stack.put(&format!("{PREFIX}{topic}"), "");
    let mut ids = stack.produce_lines(&topic, 2, 400).await;
    let mut first = Logingest::start(&stack, &options);
    wait_until("some documents indexed", GROUP_DEADLINE, || async {
        stack.count_or_zero(&topic).await > 0
    })
    .await;
    first.kill();
    // Written again by the next owner: what was indexed at or after the
    // committed offsets when the process died (acknowledged, not committed
    // yet).
    let uncommitted = stack
        .written_after_commit(&options.group, &topic, 2, &topic)
        .await;
    eprintln!("kill -9: {uncommitted} documents indexed after the last commit");
    ids.extend(stack.produce_lines(&topic, 2, 100).await);
    let _second = Logingest::start(&stack, &options);
    wait_until(
        "everything indexed after the crash",
        GROUP_DEADLINE,
        || async { stack.count(&topic).await == Some(500) },
    )
    .await;
    stack
        .wait_committed_through(&options.group, &topic, 2, &ids, GROUP_DEADLINE)
        .await;
    stack.assert_delivered(&topic, &ids, uncommitted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_registry_and_the_consumer_group() {
    let mut stack = Stack::start();
    let topic = unique("ready");
    stack.create_topic(&topic, 1);
    stack.etcd.stop();
    let daemon = Logingest::start(&stack, &Options::default());
    let client = reqwest::Client::new();
    let get = |path: &'static str| {
        let client = client.clone();
        let url = format!("{}{path}", daemon.http);
        async move {
            match client.get(url).send().await {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(_) => (0, String::new()),
            }
        }
    };
    wait_until("http up", Duration::from_secs(10), || async {
        get("/healthz").await.0 == 200
    })
    .await;
    let (code, body) = get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("registry"), "{body}");

    stack.etcd.start();
    stack.put(&format!("{PREFIX}{topic}"), "");
    wait_until(
        "ready with the partition assigned",
        GROUP_DEADLINE,
        || async {
            let (code, body) = get("/readyz").await;
            code == 200 && body.contains("1 partitions assigned")
        },
    )
    .await;
    let status: serde_json::Value =
        serde_json::from_str(&get("/status").await.1).expect("status json");
    assert_eq!(status["topics"][0], topic.as_str());
    assert_eq!(status["partitions"][0]["topic"], topic.as_str());
    assert_eq!(status["partitions"][0]["state"], "running");
}
