//! `format = "otlp_json"` against real etcd, Kafka (tansu) and
//! osmem-server: OpenTelemetry logs requests written by hand after the
//! OTLP/JSON mapping (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding),
//! as the Collector's Kafka exporter writes them with `encoding:
//! otlp_json`, become one document per log record with `_id`
//! `<topic>-<partition>-<offset>-<n>`; a request that does not decode and a
//! log record Elasticsearch refuses are dead-lettered (the record, with the
//! reason); a request without log records writes nothing; and reading the
//! topic again overwrites the same documents.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{unique, wait_until, Logingest, Options, Stack, GROUP_DEADLINE};
use serde_json::{json, Value};

const PREFIX: &str = "/logingest/topics/";

/// 2 resources × 2 scopes, 5 log records: string, int, double, bool,
/// array and kvlist attributes, trace and span ids (upper-case hex, as in
/// the spec's example), a record with only `observedTimeUnixNano`, a
/// structured body, a scope without name.
fn big_request() -> Value {
    let s = |v: &str| json!({"stringValue": v});
    json!({"resourceLogs": [
        {"resource": {"attributes": [
            {"key": "service.name", "value": s("cart")},
            {"key": "service.instance.id", "value": s("cart-7f9c")},
            {"key": "host.cpus", "value": {"intValue": "8"}}]},
         "scopeLogs": [
            {"scope": {"name": "cart.http", "version": "1.4.0"},
             "logRecords": [
                {"timeUnixNano": "1704164645678901234", "observedTimeUnixNano": "1704164645700000000",
                 "severityNumber": 9, "severityText": "INFO",
                 "body": s("GET /cart 200"),
                 "attributes": [
                    {"key": "http.status_code", "value": {"intValue": "200"}},
                    {"key": "http.route", "value": s("/cart")},
                    {"key": "duration_ms", "value": {"doubleValue": 12.5}},
                    {"key": "cached", "value": {"boolValue": false}},
                    {"key": "tags", "value": {"arrayValue": {"values": [s("a"), s("b")]}}},
                    {"key": "user", "value": {"kvlistValue": {"values": [
                        {"key": "id", "value": {"intValue": "42"}},
                        {"key": "plan", "value": s("pro")}]}}}],
                 "traceId": "5B8EFFF798038103D269B633813FC60C",
                 "spanId": "EEE19B7EC3C1B174",
                 "flags": 1},
                {"observedTimeUnixNano": "1704164646000000000",
                 "severityNumber": 17, "severityText": "ERROR",
                 "body": s("payment failed")}]},
            {"scope": {"name": "cart.db"},
             "logRecords": [
                {"timeUnixNano": "1704164647000000001", "severityNumber": 5,
                 "body": {"kvlistValue": {"values": [{"key": "query", "value": s("SELECT 1")}]}}}]}]},
        {"resource": {"attributes": [{"key": "service.name", "value": s("billing")}]},
         "scopeLogs": [
            {"scope": {},
             "logRecords": [
                {"timeUnixNano": "1704164648000000000", "body": s("invoice 1")}]},
            {"scope": {"name": "billing.audit", "attributes": [{"key": "audit", "value": {"boolValue": true}}]},
             "logRecords": [
                {"timeUnixNano": "1704164649000000000", "severityText": "WARN", "body": s("invoice 2"),
                 "attributes": [{"key": "http.status_code", "value": {"intValue": 402}}]}]}]}
    ]})
}

/// What each log record of [`big_request`] becomes (without `kafka`).
fn big_documents() -> Vec<Value> {
    let cart = json!({"attributes": {"service.name": "cart", "service.instance.id": "cart-7f9c", "host.cpus": 8}});
    let billing = json!({"attributes": {"service.name": "billing"}});
    vec![
        json!({
            "@timestamp": "2024-01-02T03:04:05.678901234Z",
            "message": "GET /cart 200",
            "severity_text": "INFO",
            "severity_number": 9,
            "attributes": {"http.status_code": 200, "http.route": "/cart", "duration_ms": 12.5,
                "cached": false, "tags": ["a", "b"], "user": {"id": 42, "plan": "pro"}},
            "trace_id": "5b8efff798038103d269b633813fc60c",
            "span_id": "eee19b7ec3c1b174",
            "flags": 1,
            "resource": cart,
            "scope": {"name": "cart.http", "version": "1.4.0"}
        }),
        json!({
            "@timestamp": "2024-01-02T03:04:06.000000000Z",
            "message": "payment failed",
            "severity_text": "ERROR",
            "severity_number": 17,
            "resource": cart,
            "scope": {"name": "cart.http", "version": "1.4.0"}
        }),
        json!({
            "@timestamp": "2024-01-02T03:04:07.000000001Z",
            "message": "{\"query\":\"SELECT 1\"}",
            "severity_number": 5,
            "resource": cart,
            "scope": {"name": "cart.db"}
        }),
        json!({
            "@timestamp": "2024-01-02T03:04:08.000000000Z",
            "message": "invoice 1",
            "resource": billing
        }),
        json!({
            "@timestamp": "2024-01-02T03:04:09.000000000Z",
            "message": "invoice 2",
            "severity_text": "WARN",
            "attributes": {"http.status_code": 402},
            "resource": billing,
            "scope": {"name": "billing.audit", "attributes": {"audit": true}}
        }),
    ]
}

/// Creates `index` with `event_name` mapped as a number: a log record with
/// an event name is refused by Elasticsearch (400), the others are stored.
async fn index_refusing_event_names(stack: &Stack, index: &str) {
    let response = reqwest::Client::new()
        .put(format!("{}/{index}", stack.es_url))
        .json(&json!({"mappings": {"properties": {"event_name": {"type": "long"}}}}))
        .send()
        .await
        .expect("create index");
    assert!(response.status().is_success(), "create index {index}");
}

/// `(offset, _id of the record)` of a produced record id.
fn offset_of(id: &str) -> i64 {
    id.rsplit('-')
        .next()
        .and_then(|o| o.parse().ok())
        .expect("offset")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_requests_become_one_document_per_log_record_and_redelivery_overwrites_them() {
    let stack = Stack::start();
    let topic = unique("otlp");
    let dead = unique("otlp-dead");
    stack.create_topic(&topic, 1);
    index_refusing_event_names(&stack, &topic).await;
    let options = Options {
        extra: format!("[dead_letter]\ndestination = \"elasticsearch\"\nindex = \"{dead}\"\n"),
        ..Options::default()
    };
    let mut daemon = Logingest::start(&stack, &options);
    stack.put(&format!("{PREFIX}{topic}"), r#"{"format": "otlp_json"}"#);

    let one_log = |body: &str, extra: Value| {
        let mut record =
            json!({"timeUnixNano": "1704164650000000000", "body": {"stringValue": body}});
        record
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        record
    };
    let refused_by_es = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        one_log("kept", json!({})),
        one_log("refused", json!({"eventName": "login"})),
        one_log("kept too", json!({}))
    ]}]}]});
    let malformed = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        one_log("fine", json!({})),
        one_log("bad span", json!({"spanId": "not-hex!"}))
    ]}]}]});
    let values: Vec<Vec<u8>> = vec![
        big_request().to_string().into_bytes(),
        malformed.to_string().into_bytes(),
        br#"{"resourceLogs": []}"#.to_vec(),
        b"GET / 200 (a plain line on an otlp topic)".to_vec(),
        refused_by_es.to_string().into_bytes(),
        json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [one_log("last", json!({}))]}]}]})
            .to_string()
            .into_bytes(),
    ];
    let records: Vec<(Option<Vec<u8>>, Vec<u8>)> = values
        .iter()
        .map(|v| (Some(b"host-1".to_vec()), v.clone()))
        .collect();
    let ids = stack.produce(&topic, 1, &records).await;
    let offsets: Vec<i64> = ids.iter().map(|id| offset_of(id)).collect();
    let part = |record: usize, n: u32| format!("{}-{n}", ids[record]);

    // Committed past every record: the malformed ones and the refused log
    // record only once dead-lettered.
    stack
        .wait_committed_through(&options.group, &topic, 1, &ids, GROUP_DEADLINE)
        .await;

    let docs = stack.documents(&topic).await;
    let mut expected_ids: Vec<String> = (0..5).map(|n| part(0, n)).collect();
    expected_ids.extend([part(4, 0), part(4, 2), part(5, 0)]);
    expected_ids.sort();
    assert_eq!(
        docs.keys().cloned().collect::<Vec<_>>(),
        expected_ids,
        "one document per log record; nothing for the malformed, empty and plain records, nor for the refused log record"
    );
    let kafka = |record: usize| json!({"topic": &topic, "partition": 0, "offset": offsets[record], "key": "host-1"});
    for (n, want) in big_documents().into_iter().enumerate() {
        let mut want = want;
        want["kafka"] = kafka(0);
        assert_eq!(docs[&part(0, n as u32)], want, "log record {n}");
    }
    assert_eq!(docs[&part(4, 0)]["message"], "kept");
    assert_eq!(docs[&part(4, 2)]["message"], "kept too");
    assert_eq!(docs[&part(5, 0)]["message"], "last");
    assert_eq!(docs[&part(5, 0)]["kafka"], kafka(5));

    // One letter per refused record, with the reason.
    let letters = stack.documents(&dead).await;
    let reasons: BTreeMap<i64, String> = letters
        .values()
        .map(|l| {
            (
                l["kafka"]["offset"].as_i64().expect("offset"),
                l["error"]["reason"].as_str().expect("reason").to_string(),
            )
        })
        .collect();
    assert_eq!(
        reasons.keys().copied().collect::<Vec<_>>(),
        [offsets[1], offsets[3], offsets[4]],
        "{reasons:?}"
    );
    assert_eq!(
        reasons[&offsets[1]],
        "invalid otlp_json value at resourceLogs[0].scopeLogs[0].logRecords[1]: spanId \"not-hex!\" is not 16 hex digits"
    );
    assert!(
        reasons[&offsets[3]].starts_with("not an otlp_json logs request: "),
        "{}",
        reasons[&offsets[3]]
    );
    assert!(
        reasons[&offsets[4]].starts_with("log record 1: ") && reasons[&offsets[4]].contains("400"),
        "{}",
        reasons[&offsets[4]]
    );
    // The letter is the record as it was read, to be replayed whole.
    let letter = letters
        .values()
        .find(|l| l["kafka"]["offset"] == offsets[4])
        .expect("letter of the refused log record");
    assert_eq!(
        letter["message"],
        String::from_utf8_lossy(&values[4]).as_ref()
    );
    let before = stack.all_versions(&topic).await;
    assert!(before.values().all(|v| *v == 1), "{before:?}");

    // Reading the topic again (another group from the start) writes the
    // same documents again: `_version` 2 for each, no other `_id`.
    daemon.terminate(Duration::from_secs(20)).await;
    let again = Options {
        extra: options.extra.clone(),
        ..Options::default()
    };
    let _daemon = Logingest::start(&stack, &again);
    stack
        .wait_committed_through(&again.group, &topic, 1, &ids, GROUP_DEADLINE)
        .await;
    wait_until(
        "every document written twice",
        Duration::from_secs(30),
        || async { stack.all_versions(&topic).await.values().all(|v| *v == 2) },
    )
    .await;
    let after = stack.all_versions(&topic).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the same ids"
    );
    assert_eq!(stack.count(&dead).await, Some(3), "the same three letters");
}
