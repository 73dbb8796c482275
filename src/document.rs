//! Shaping one Kafka record into one Elasticsearch `_bulk` entry.
//!
//! The document contract (also in the README):
//! * `_id` = `<topic>-<partition>-<offset>`: unique per record, so a redelivery
//!   overwrites instead of duplicating;
//! * `_source` = `@timestamp`, `message`, `kafka.{topic,partition,offset,key}`.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// The parts of a Kafka record that end up in a document.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The topic it was read from.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// The record key, when there is one.
    pub key: Option<&'a [u8]>,
    /// The record value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// The Kafka timestamp in milliseconds since the epoch, when present.
    pub timestamp_ms: Option<i64>,
}

/// The `_id` of the document made from a record.
///
/// Parsed from the right it is unambiguous: the last two `-`-separated
/// fields are numbers, and a topic name cannot make them anything else.
pub fn document_id(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}-{partition}-{offset}")
}

#[derive(Serialize)]
struct Action<'a> {
    index: ActionMeta<'a>,
}

#[derive(Serialize)]
struct ActionMeta<'a> {
    #[serde(rename = "_index")]
    index: &'a str,
    #[serde(rename = "_id")]
    id: &'a str,
}

#[derive(Serialize)]
struct Source<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    message: Cow<'a, str>,
    kafka: KafkaFields<'a>,
}

#[derive(Serialize)]
struct KafkaFields<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<Cow<'a, str>>,
}

/// Text of a byte string: invalid UTF-8 sequences become U+FFFD, so a line
/// is never dropped for its encoding.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// RFC 3339 UTC with milliseconds; `now` when the record has no usable
/// timestamp (absent, negative or out of range).
pub fn timestamp(timestamp_ms: Option<i64>, now: DateTime<Utc>) -> DateTime<Utc> {
    timestamp_ms
        .filter(|ms| *ms >= 0)
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or(now)
}

/// Appends the action line and the source line of `record` to a `_bulk`
/// body, each ending in `\n`.
pub fn write_bulk_entry(
    body: &mut Vec<u8>,
    index: &str,
    record: &Record<'_>,
    now: DateTime<Utc>,
) -> Result<(), serde_json::Error> {
    let id = document_id(record.topic, record.partition, record.offset);
    serde_json::to_writer(
        &mut *body,
        &Action {
            index: ActionMeta { index, id: &id },
        },
    )?;
    body.push(b'\n');
    let source = Source {
        timestamp: timestamp(record.timestamp_ms, now).to_rfc3339_opts(SecondsFormat::Millis, true),
        message: record.value.map(text).unwrap_or(Cow::Borrowed("")),
        kafka: KafkaFields {
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
            key: record.key.map(text),
        },
    };
    serde_json::to_writer(&mut *body, &source)?;
    body.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn entry(record: Record<'_>) -> (Value, Value) {
        let mut body = Vec::new();
        let now = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        write_bulk_entry(&mut body, "idx", &record, now).unwrap();
        let text = String::from_utf8(body).unwrap();
        let mut lines = text.lines();
        let action = serde_json::from_str(lines.next().unwrap()).unwrap();
        let source = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert!(lines.next().is_none());
        assert!(text.ends_with('\n'));
        (action, source)
    }

    fn record<'a>(value: Option<&'a [u8]>, key: Option<&'a [u8]>) -> Record<'a> {
        Record {
            topic: "nginx",
            partition: 12,
            offset: 3,
            key,
            value,
            timestamp_ms: Some(1_600_000_000_123),
        }
    }

    #[test]
    fn ids_do_not_collide_like_the_old_program() {
        assert_ne!(document_id("t", 1, 23), document_id("t", 12, 3));
        assert_eq!(document_id("nginx", 12, 3), "nginx-12-3");
    }

    #[test]
    fn shapes_the_contract() {
        let (action, source) = entry(record(Some(b"GET / 200"), Some(b"host-1")));
        assert_eq!(
            action,
            json!({"index": {"_index": "idx", "_id": "nginx-12-3"}})
        );
        assert_eq!(
            source,
            json!({
                "@timestamp": "2020-09-13T12:26:40.123Z",
                "message": "GET / 200",
                "kafka": {"topic": "nginx", "partition": 12, "offset": 3, "key": "host-1"}
            })
        );
    }

    #[test]
    fn no_key_no_field_and_invalid_utf8_is_replaced() {
        let (_, source) = entry(record(Some(b"bad \xff\xfe end"), None));
        assert_eq!(source["message"], "bad \u{fffd}\u{fffd} end");
        assert!(source["kafka"].get("key").is_none());
    }

    #[test]
    fn control_characters_and_json_look_alikes_stay_text() {
        let (_, source) = entry(record(Some(b"{\"a\":1}\0\x01\n"), None));
        assert_eq!(source["message"], "{\"a\":1}\u{0}\u{1}\n");
    }

    #[test]
    fn missing_or_bogus_timestamp_uses_ingest_time() {
        let mut r = record(None, None);
        r.timestamp_ms = None;
        let (_, source) = entry(r);
        assert_eq!(source["@timestamp"], "2023-11-14T22:13:20.000Z");
        assert_eq!(source["message"], "");
        r.timestamp_ms = Some(-1);
        assert_eq!(entry(r).1["@timestamp"], "2023-11-14T22:13:20.000Z");
        r.timestamp_ms = Some(i64::MAX);
        assert_eq!(entry(r).1["@timestamp"], "2023-11-14T22:13:20.000Z");
    }
}
