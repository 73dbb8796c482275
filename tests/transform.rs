//! Per-topic VRL transforms in the running pipeline, against real etcd,
//! Kafka (tansu) and osmem-server: typed fields, the filter, routing,
//! runtime failures, a live program change that touches only its topic, and
//! programs the registry refuses (syntax, sandboxed functions).

mod common;

use std::time::Duration;

use common::{unique, wait_until, Logingest, Options, Stack, GROUP_DEADLINE};
use serde_json::{json, Value};

const PREFIX: &str = "/logingest/topics/";

fn series(name: &str, topic: &str) -> String {
    format!("logingest_{name}{{topic=\"{topic}\"}}")
}

fn nginx(path: &str, status: u16, bytes: u32) -> Vec<u8> {
    format!(
        r#"203.0.113.42 - alice [13/Sep/2020:12:26:40 +0000] "GET {path} HTTP/1.1" {status} {bytes} "-" "curl/8.5.0""#
    )
    .into_bytes()
}

/// The registry value of a topic whose program parses nginx lines, drops
/// health checks and routes server errors to `errors`.
fn nginx_value(errors: &str) -> String {
    let program = format!(
        r#". = merge(., parse_nginx_log!(.message, "combined"))
if .request == "GET /healthz HTTP/1.1" {{ abort }}
if .status >= 500 {{ %index = "{errors}" }}"#
    );
    json!({ "transform": program }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_lines_become_typed_fields_filtered_and_routed() {
    let stack = Stack::start();
    let topic = unique("nginx");
    let errors = unique("nginx-errors");
    stack.create_topic(&topic, 1);
    let options = Options::default();
    let daemon = Logingest::start(&stack, &options);
    stack.put(&format!("{PREFIX}{topic}"), &nginx_value(&errors));

    let records = vec![
        (None, nginx("/api/orders", 200, 5321)),
        (None, b"not an access log line".to_vec()),
        (None, nginx("/api/pay", 503, 12)),
        (None, nginx("/healthz", 200, 2)),
    ];
    let ids = stack.produce(&topic, 1, &records).await;
    wait_until("kept documents indexed", GROUP_DEADLINE, || async {
        stack.count(&topic).await == Some(2) && stack.count(&errors).await == Some(1)
    })
    .await;
    // Each document written once, under logingest's own `_id`.
    stack
        .assert_exactly(&topic, &[ids[0].clone(), ids[1].clone()])
        .await;
    stack.assert_exactly(&errors, &[ids[2].clone()]).await;

    let docs = stack.documents(&topic).await;
    let parsed = &docs[&ids[0]];
    assert_eq!(parsed["status"], json!(200), "status is a number: {parsed}");
    assert_eq!(parsed["size"], json!(5321));
    assert_eq!(parsed["request"], "GET /api/orders HTTP/1.1");
    assert_eq!(parsed["client"], "203.0.113.42");
    assert_eq!(parsed["kafka"]["offset"], 0);
    assert!(parsed["message"]
        .as_str()
        .is_some_and(|m| m.contains("GET /api/orders")));
    // A runtime error: the document as it was, tagged, with the reason.
    let failed = &docs[&ids[1]];
    assert_eq!(failed["message"], "not an access log line");
    assert_eq!(failed["tags"], json!(["transform_failure"]));
    assert!(
        failed["transform"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("parse_nginx_log")),
        "the error names the failing call: {failed}"
    );
    assert!(failed.get("status").is_none());
    let routed = &stack.documents(&errors).await[&ids[2]];
    assert_eq!(routed["status"], json!(503));

    // Searchable as numbers: a range query finds the server error only in
    // the errors index and the 200 in the topic's index.
    let hits = |index: String, query: &'static str| {
        let url = format!("{}/{index}/_count?q={query}", stack.es_url);
        async move {
            let body: Value = reqwest::get(url)
                .await
                .expect("count")
                .json()
                .await
                .expect("json");
            body["count"].as_u64().expect("count in reply")
        }
    };
    assert_eq!(hits(errors.clone(), "status:%3E%3D500").await, 1);
    assert_eq!(hits(topic.clone(), "status:200").await, 1);

    // The dropped line advanced the committed offset; counted per topic.
    stack
        .wait_committed_through(&options.group, &topic, 1, &ids, GROUP_DEADLINE)
        .await;
    assert_eq!(
        daemon
            .metric(&series("documents_dropped_total", &topic))
            .await,
        Some(1.0)
    );
    assert_eq!(
        daemon
            .metric(&series("transform_failures_total", &topic))
            .await,
        Some(1.0)
    );
    assert_eq!(
        daemon
            .metric(&series("documents_indexed_total", &topic))
            .await,
        Some(3.0)
    );

    // A batch of nothing but dropped lines: no request to send, and still
    // its offsets are committed.
    let health: Vec<_> = (0..5).map(|_| (None, nginx("/healthz", 200, 2))).collect();
    let dropped = stack.produce(&topic, 1, &health).await;
    stack
        .wait_committed_through(&options.group, &topic, 1, &dropped, GROUP_DEADLINE)
        .await;
    assert_eq!(
        daemon
            .metric(&series("documents_dropped_total", &topic))
            .await,
        Some(6.0)
    );
    assert_eq!(stack.count(&topic).await, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_change_applies_to_its_topic_only_and_a_bad_one_is_refused() {
    let stack = Stack::start();
    let (shaped, other) = (unique("shaped"), unique("other"));
    stack.create_topic(&shaped, 2);
    stack.create_topic(&other, 2);
    let mut daemon = Logingest::start(&stack, &Options::default());
    let key = format!("{PREFIX}{shaped}");
    let program = |v: u32| json!({ "transform": format!(".version = {v}") }).to_string();
    stack.put(&key, &program(1));
    stack.put(&format!("{PREFIX}{other}"), "");
    let first = stack.produce_lines(&shaped, 2, 10).await;
    let mut other_ids = stack.produce_lines(&other, 2, 10).await;
    wait_until("both topics indexed", GROUP_DEADLINE, || async {
        stack.count(&shaped).await == Some(10) && stack.count(&other).await == Some(10)
    })
    .await;

    // Programs the registry refuses: a syntax error, an unhandled fallible
    // call, and functions the sandbox leaves out (environment, network).
    let refused = [
        r#"{"transform": ".a = "}"#,
        r#"{"transform": ".b = parse_json(.message)"}"#,
        r#"{"transform": ".home = get_env_var!(\"HOME\")"}"#,
        r#"{"transform": ".r = http_request!(\"http://127.0.0.1:1/\")"}"#,
    ];
    for value in refused {
        stack.put(&key, value);
    }
    daemon
        .wait_metric(
            "logingest_registry_changes_rejected_total",
            refused.len() as f64,
            Duration::from_secs(10),
        )
        .await;
    let log = daemon.log();
    assert!(log.contains(&key), "the log names the rejected key");
    assert!(
        log.contains("transform: 1:"),
        "the log gives VRL's position of the syntax error:\n{log}"
    );
    assert!(
        log.contains("get_env_var"),
        "the log names the refused function"
    );
    assert!(
        log.contains("error[E103]"),
        "the log gives the unhandled fallible call"
    );

    // The last good program still runs.
    let second = stack.produce_lines(&shaped, 2, 10).await;
    wait_until("lines under the kept program", GROUP_DEADLINE, || async {
        stack.count(&shaped).await == Some(20)
    })
    .await;
    let docs = stack.documents(&shaped).await;
    for id in first.iter().chain(&second) {
        assert_eq!(docs[id]["version"], json!(1), "{id}: {}", docs[id]);
    }

    // A new program: only this topic's tasks restart, from the next unread
    // offset; the other topic is not touched.
    stack.put(&key, &program(2));
    daemon
        .wait_metric(
            &series("partition_task_starts_total", &shaped),
            4.0,
            Duration::from_secs(10),
        )
        .await;
    let third = stack.produce_lines(&shaped, 2, 10).await;
    other_ids.extend(stack.produce_lines(&other, 2, 10).await);
    wait_until("lines under the new program", GROUP_DEADLINE, || async {
        stack.count(&shaped).await == Some(30) && stack.count(&other).await == Some(20)
    })
    .await;
    let docs = stack.documents(&shaped).await;
    for id in &third {
        assert_eq!(docs[id]["version"], json!(2), "{id}: {}", docs[id]);
    }
    for id in first.iter().chain(&second) {
        assert_eq!(
            docs[id]["version"],
            json!(1),
            "{id} rewritten: {}",
            docs[id]
        );
    }
    let all: Vec<String> = first.iter().chain(&second).chain(&third).cloned().collect();
    stack.assert_exactly(&shaped, &all).await;
    stack.assert_exactly(&other, &other_ids).await;
    assert_eq!(
        daemon
            .metric(&series("partition_task_starts_total", &other))
            .await,
        Some(2.0)
    );
    let other_docs = stack.documents(&other).await;
    assert!(other_docs.values().all(|d| d.get("version").is_none()));
    assert!(daemon.terminate(Duration::from_secs(30)).await.success());
}
