//! Documents shaped per topic (registry settings) and the index template,
//! against real etcd, Kafka (tansu) and osmem-server.

mod common;

use std::time::Duration;

use common::{unique, wait_until, Logingest, Options, Stack, GROUP_DEADLINE};
use serde_json::Value;

const PREFIX: &str = "/logingest/topics/";

async fn mapping(stack: &Stack, index: &str) -> Value {
    reqwest::get(format!("{}/{index}/_mapping", stack.es_url))
        .await
        .expect("mapping")
        .json()
        .await
        .expect("mapping json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_go_to_daily_indices_by_their_own_timestamp() {
    let stack = Stack::start();
    let topic = unique("app");
    stack.create_topic(&topic, 1);
    let _daemon = Logingest::start(&stack, &Options::default());
    stack.put(
        &format!("{PREFIX}{topic}"),
        r#"{"index": "{topic}-%Y.%m.%d", "format": "json", "timestamp_field": "time"}"#,
    );
    let lines = [
        r#"{"time": "2024-01-02T10:00:00Z", "level": "info", "user": {"id": 7}}"#,
        r#"{"time": "2024-01-03T23:59:59.5Z", "level": "warn", "message": "disk full"}"#,
        r#"{"time": 1704412800000, "level": "debug"}"#,
        "plain text, not json",
    ];
    let records: Vec<_> = lines
        .iter()
        .map(|l| (None, l.as_bytes().to_vec()))
        .collect();
    let ids = stack.produce(&topic, 1, &records).await;

    let day = |d: &str| format!("{topic}-{d}");
    wait_until(
        "documents in their daily indices",
        GROUP_DEADLINE,
        || async {
            stack.count(&day("2024.01.02")).await == Some(1)
                && stack.count(&day("2024.01.03")).await == Some(1)
                && stack.count(&day("2024.01.05")).await == Some(1)
        },
    )
    .await;
    let first = &stack.documents(&day("2024.01.02")).await[&ids[0]];
    assert_eq!(first["level"], "info");
    assert_eq!(first["user"]["id"], 7);
    assert_eq!(first["message"], lines[0]);
    assert_eq!(first["@timestamp"], "2024-01-02T10:00:00.000Z");
    assert_eq!(first["kafka"]["offset"], 0);
    let second = &stack.documents(&day("2024.01.03")).await[&ids[1]];
    assert_eq!(second["message"], "disk full");
    assert_eq!(second["event"]["original"], lines[1]);
    assert_eq!(second["@timestamp"], "2024-01-03T23:59:59.500Z");

    // Not JSON: indexed as text, tagged, under the Kafka timestamp's day.
    let today = chrono::Utc::now().format("%Y.%m.%d").to_string();
    wait_until(
        "unparsable line indexed",
        Duration::from_secs(10),
        || async { stack.count(&day(&today)).await == Some(1) },
    )
    .await;
    let plain = &stack.documents(&day(&today)).await[&ids[3]];
    assert_eq!(plain["message"], lines[3]);
    assert_eq!(plain["tags"], serde_json::json!(["json_parse_failure"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_index_gets_the_template_mapping_unless_disabled() {
    let stack = Stack::start();
    let (with, without) = (unique("mapped"), unique("dynamic"));
    stack.create_topic(&with, 1);
    stack.create_topic(&without, 1);
    stack.put(&format!("{PREFIX}{with}"), "");
    let mut templated = Logingest::start(&stack, &Options::default());
    stack
        .produce(&with, 1, &[(Some(b"k".to_vec()), b"line".to_vec())])
        .await;
    wait_until("templated topic indexed", GROUP_DEADLINE, || async {
        stack.count(&with).await == Some(1)
    })
    .await;
    let m = mapping(&stack, &with).await;
    let props = &m[&with]["mappings"]["properties"];
    assert_eq!(props["@timestamp"]["type"], "date");
    assert_eq!(props["message"]["type"], "text");
    assert_eq!(props["kafka"]["properties"]["topic"]["type"], "keyword");
    assert_eq!(props["kafka"]["properties"]["key"]["type"], "keyword");
    assert_eq!(props["kafka"]["properties"]["partition"]["type"], "integer");
    assert_eq!(props["kafka"]["properties"]["offset"]["type"], "long");

    // Same documents, template disabled: the dynamic mapping differs,
    // which shows the template above did the work.
    assert!(templated.terminate(Duration::from_secs(30)).await.success());
    let other = Options {
        extra: "[index_template]\nenabled = false\n".into(),
        ..Options::default()
    };
    let _plain = Logingest::start(&stack, &other);
    stack.put(&format!("{PREFIX}{without}"), "");
    stack
        .produce(&without, 1, &[(Some(b"k".to_vec()), b"line".to_vec())])
        .await;
    wait_until("untemplated topic indexed", GROUP_DEADLINE, || async {
        stack.count(&without).await == Some(1)
    })
    .await;
    let m = mapping(&stack, &without).await;
    assert_ne!(
        m[&without]["mappings"]["properties"]["kafka"]["properties"]["topic"]["type"],
        "keyword"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_setting_reaches_elasticsearch_with_each_document() {
    let stack = Stack::start();
    let topic = unique("piped");
    let dead = unique("dead");
    stack.create_topic(&topic, 1);
    let daemon = Logingest::start(
        &stack,
        &Options {
            extra: format!("[dead_letter]\ndestination = \"elasticsearch\"\nindex = \"{dead}\"\n"),
            ..Options::default()
        },
    );
    // osmem-server has no ingest pipelines: it refuses documents naming
    // one, and its reason proves the name was sent.
    stack.put(
        &format!("{PREFIX}{topic}"),
        r#"{"pipeline": "geoip-enrich"}"#,
    );
    let ids = stack.produce_lines(&topic, 1, 2).await;
    wait_until("documents dead-lettered", GROUP_DEADLINE, || async {
        stack.count(&dead).await == Some(2)
    })
    .await;
    let letters = stack.documents(&dead).await;
    let reason = letters[&ids[0]]["error"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("geoip-enrich"), "{reason}");
    assert_eq!(
        daemon
            .metric(&format!(
                "logingest_documents_dead_lettered_total{{topic=\"{topic}\"}}"
            ))
            .await,
        Some(2.0)
    );
}
