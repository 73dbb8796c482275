//! `logingest verify` against the real servers: a topic fully ingested is
//! complete; documents deleted from Elasticsearch are reported as missing
//! ranges; a write made twice is reported as redelivered; dead-lettered
//! offsets are accounted for, not missing.

mod common;

use std::time::Duration;

use common::proxy::{Fault, FaultProxy};
use common::{logingest_cli, unique, wait_until, Logingest, Options, Stack, GROUP_DEADLINE};
use serde_json::Value;

const PREFIX: &str = "/logingest/topics/";

/// Runs `logingest verify TOPIC --json` with `config`: exit code and report.
fn verify(config: &std::path::Path, topic: &str, extra: &[&str]) -> (i32, Value) {
    let config = config.to_string_lossy().into_owned();
    let mut args = vec!["verify", topic, "-c", &config, "--json"];
    args.extend_from_slice(extra);
    let output = logingest_cli(&args, &[]);
    let code = output.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}), exit {code}:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (code, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_proves_a_topic_complete_and_names_what_is_missing_or_written_twice() {
    let stack = Stack::start();
    let topic = unique("verified");
    stack.create_topic(&topic, 2);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let options = Options::default();
    let daemon = Logingest::start(&stack, &options);
    let ids = stack.produce_lines(&topic, 2, 40).await;
    stack
        .wait_committed_through(&options.group, &topic, 2, &ids, GROUP_DEADLINE)
        .await;
    stack.assert_exactly(&topic, &ids).await;

    let (code, report) = verify(&daemon.config, &topic, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["totals"]["checked"], 40, "{report:#}");
    assert_eq!(report["totals"]["indexed"], 40, "{report:#}");
    assert_eq!(report["totals"]["missing"], 0, "{report:#}");
    assert_eq!(report["totals"]["redelivered_writes"], 0, "{report:#}");

    // Three documents of partition 0 gone from Elasticsearch, one written twice.
    let http = reqwest::Client::new();
    let in_p0: Vec<&String> = ids
        .iter()
        .filter(|id| id.starts_with(&format!("{topic}-0-")))
        .collect();
    assert!(in_p0.len() >= 6);
    let gone = [in_p0[1], in_p0[2], in_p0[4]];
    for id in gone {
        let r = http
            .delete(format!("{}/{topic}/_doc/{id}", stack.es_url))
            .send()
            .await
            .expect("delete");
        assert!(r.status().is_success(), "delete {id}: {}", r.status());
    }
    let twice = in_p0[5];
    let r = http
        .put(format!("{}/{topic}/_doc/{twice}", stack.es_url))
        .json(&serde_json::json!({"message": "again", "kafka": {"topic": topic, "partition": 0, "offset": 5}}))
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success());
    http.post(format!("{}/{topic}/_refresh", stack.es_url))
        .send()
        .await
        .expect("refresh");
    wait_until("the deletions visible", Duration::from_secs(10), || async {
        stack.count(&topic).await == Some(ids.len() as u64 - 3)
    })
    .await;

    let (code, report) = verify(&daemon.config, &topic, &[]);
    assert_eq!(code, 1, "{report:#}");
    let p0 = &report["partitions"][0];
    assert_eq!(p0["partition"], 0, "{report:#}");
    // Offsets 1, 2 and 4 of partition 0, as ranges; offset 5 written twice.
    assert_eq!(
        p0["missing"],
        serde_json::json!({"count": 3, "ranges": [[1, 2], [4, 4]]}),
        "{report:#}"
    );
    assert_eq!(
        p0["redelivered"],
        serde_json::json!({"count": 1, "ranges": [[5, 5]]}),
        "{report:#}"
    );
    assert_eq!(report["totals"]["missing"], 3, "{report:#}");
    assert_eq!(report["partitions"][1]["missing"]["count"], 0, "{report:#}");
    let (code, only_one) = verify(&daemon.config, &topic, &["--partitions", "1"]);
    assert_eq!(code, 0, "partition 1 is complete: {only_one:#}");
    assert_eq!(only_one["partitions"].as_array().map(Vec::len), Some(1));
    assert_eq!(only_one["partitions"][0]["partition"], 1);
    assert_eq!(only_one["totals"]["checked"], 20);
}

/// Issue 17.9: an offset given up and dead-lettered (here: a document the
/// cluster answers 503 every time, dead-lettered after
/// `max_item_retry_duration`, into the dead-letter topic) is reported as
/// dead-lettered, not missing; the topic is complete (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_dead_lettered_offsets_as_accounted_for() {
    let stack = Stack::start();
    let proxy = FaultProxy::start(&stack.es_url).await;
    let topic = unique("lettered");
    let dlq = format!("{topic}.dlq");
    stack.create_topic(&topic, 2);
    stack.create_topic(&dlq, 1);
    stack.put(&format!("{PREFIX}{topic}"), "");
    // Offset 2 of partition 0 (lines go round robin).
    let stuck = format!("{topic}-0-2");
    proxy.set(Fault::BulkItem503 {
        index: topic.clone(),
        id: stuck.clone(),
    });
    let options = Options {
        es_url: Some(proxy.url()),
        elasticsearch: "max_item_retry_duration = \"2s\"".into(),
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    let ids = stack.produce_lines(&topic, 2, 20).await;
    assert!(ids.contains(&stuck), "{ids:?}");
    stack
        .wait_committed_through(&options.group, &topic, 2, &ids, GROUP_DEADLINE)
        .await;
    let others: Vec<String> = ids.iter().filter(|id| **id != stuck).cloned().collect();
    stack.assert_exactly(&topic, &others).await;

    let (code, report) = verify(&daemon.config, &topic, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["complete"], true, "{report:#}");
    assert_eq!(report["dead_letters"], format!("topic {dlq}"), "{report:#}");
    assert_eq!(report["totals"]["checked"], 20, "{report:#}");
    assert_eq!(report["totals"]["indexed"], 19, "{report:#}");
    assert_eq!(report["totals"]["missing"], 0, "{report:#}");
    assert_eq!(report["totals"]["dead_lettered"], 1, "{report:#}");
    assert_eq!(report["totals"]["redelivered_writes"], 0, "{report:#}");
    let p0 = &report["partitions"][0];
    assert_eq!(p0["partition"], 0, "{report:#}");
    assert_eq!(
        p0["dead_lettered"],
        serde_json::json!({"count": 1, "ranges": [[2, 2]]}),
        "{report:#}"
    );
    assert_eq!(p0["missing"]["count"], 0, "{report:#}");
    assert_eq!(report["partitions"][1]["dead_lettered"]["count"], 0);

    // The text report names the range too.
    let config = daemon.config.to_string_lossy().into_owned();
    let output = logingest_cli(&["verify", &topic, "-c", &config], &[]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("partition 0 dead-lettered: 2\n"), "{text}");
}
