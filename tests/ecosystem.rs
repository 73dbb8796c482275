//! Records as the ecosystem writes them (Kafka headers), against real
//! etcd, Kafka (tansu) and osmem-server.

mod common;

use std::time::Duration;

use common::{unique, wait_until, Logingest, Options, Stack, GROUP_DEADLINE};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

const PREFIX: &str = "/logingest/topics/";

/// Produces `value` with `headers` to partition 0 of `topic`; returns its
/// `_id`.
async fn produce_with_headers(
    brokers: &str,
    topic: &str,
    value: &[u8],
    headers: &[(&str, Option<&[u8]>)],
) -> String {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let mut owned = OwnedHeaders::new();
    for (key, value) in headers {
        owned = owned.insert(Header { key, value: *value });
    }
    let record = FutureRecord::<[u8], [u8]>::to(topic)
        .payload(value)
        .partition(0)
        .headers(owned);
    let delivery = producer
        .send(record, Duration::from_secs(30))
        .await
        .expect("delivered");
    format!("{topic}-{}-{}", delivery.partition, delivery.offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_headers_become_kafka_headers_when_asked() {
    let stack = Stack::start();
    let with = unique("hdr");
    let without = unique("nohdr");
    stack.create_topic(&with, 1);
    stack.create_topic(&without, 1);
    let _daemon = Logingest::start(&stack, &Options::default());
    stack.put(&format!("{PREFIX}{with}"), r#"{"headers": "field"}"#);
    stack.put(&format!("{PREFIX}{without}"), "");

    let not_utf8: &[u8] = &[0xff, 0x00, 0xfe];
    let headers: &[(&str, Option<&[u8]>)] = &[
        (
            "traceparent",
            Some(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ),
        ("bin", Some(not_utf8)),
        ("tag", Some(b"a")),
        ("tag", Some(b"b")),
        ("empty", None),
    ];
    let a = produce_with_headers(&stack.brokers, &with, b"line with headers", headers).await;
    let b = produce_with_headers(&stack.brokers, &with, b"line without headers", &[]).await;
    let c = produce_with_headers(&stack.brokers, &without, b"headers off", headers).await;
    wait_until("all three indexed", GROUP_DEADLINE, || async {
        stack.count(&with).await == Some(2) && stack.count(&without).await == Some(1)
    })
    .await;

    let docs = stack.documents(&with).await;
    let first = &docs[&a];
    assert_eq!(first["message"], "line with headers");
    assert_eq!(first["kafka"]["offset"], 0);
    assert_eq!(first["kafka"]["topic"], with.as_str());
    assert_eq!(
        first["kafka"]["headers"],
        json!({
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            // Not UTF-8: kept as base64 of the exact bytes.
            "bin": "/wD+",
            "tag": ["a", "b"],
            "empty": null,
        })
    );
    // No headers: no empty object.
    assert_eq!(docs[&b]["message"], "line without headers");
    assert!(docs[&b]["kafka"].get("headers").is_none(), "{:?}", docs[&b]);
    // Off by default: the document stays as it was.
    let off = &stack.documents(&without).await[&c];
    assert_eq!(off["message"], "headers off");
    assert!(off["kafka"].get("headers").is_none(), "{off:?}");
}
