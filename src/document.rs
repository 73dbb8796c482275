//! Shaping one Kafka record into one Elasticsearch `_bulk` entry.
//!
//! The document contract (also in the README):
//! * `_id` = `<topic>-<partition>-<offset>`: unique per record, so a redelivery
//!   overwrites instead of duplicating;
//! * `_source` = `@timestamp`, `message`, `kafka.{topic,partition,offset,key}`;
//!   with `"format": "json"` the line's own fields too.

use std::borrow::Cow;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::registry::{validate_index, LineFormat, RegistryError, TopicSettings};

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

/// An index name that may depend on the document: `{topic}` and
/// strftime-style date parts (`%Y.%m.%d`) taken from its `@timestamp` (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexTemplate {
    /// The name with `{topic}` resolved.
    name: String,
    /// Its date parts, compiled; `None` when the name is fixed.
    items: Option<Vec<Item<'static>>>,
}

impl IndexTemplate {
    /// A fixed index name.
    pub fn fixed(name: &str) -> Self {
        Self {
            name: name.to_string(),
            items: None,
        }
    }

    /// Compiles `template` for `topic`, checking that every date part is
    /// known and that the names it gives are valid index names.
    pub fn parse(topic: &str, template: &str) -> Result<Self, RegistryError> {
        let name = template.replace("{topic}", &topic.to_ascii_lowercase());
        if name.contains(['{', '}']) {
            return Err(RegistryError::InvalidValue(format!(
                "index: {template:?} has a placeholder other than {{topic}}"
            )));
        }
        if !name.contains('%') {
            validate_index(&name)?;
            return Ok(Self::fixed(&name));
        }
        let items = StrftimeItems::new(&name).parse_to_owned().map_err(|_| {
            RegistryError::InvalidValue(format!("index: {template:?} has an unknown %-date part"))
        })?;
        let compiled = Self {
            name,
            items: Some(items),
        };
        let sample = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        validate_index(&compiled.render(sample))?;
        Ok(compiled)
    }

    /// The index name for a document with this `@timestamp`.
    pub fn render(&self, timestamp: DateTime<Utc>) -> Cow<'_, str> {
        match &self.items {
            None => Cow::Borrowed(&self.name),
            Some(items) => Cow::Owned(timestamp.format_with_items(items.iter()).to_string()),
        }
    }

    /// The index pattern covering every name it renders (date parts as `*`),
    /// for an index template.
    pub fn pattern(&self) -> String {
        let Some(items) = &self.items else {
            return self.name.clone();
        };
        let mut pattern = String::new();
        for item in items {
            match item {
                Item::Literal(s) | Item::Space(s) => pattern.push_str(s),
                Item::OwnedLiteral(s) | Item::OwnedSpace(s) => pattern.push_str(s),
                _ if pattern.ends_with('*') => {}
                _ => pattern.push('*'),
            }
        }
        pattern
    }
}

#[derive(Serialize)]
struct ActionMeta<'a> {
    #[serde(rename = "_index")]
    index: &'a str,
    #[serde(rename = "_id")]
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline: Option<&'a str>,
}

#[derive(Serialize)]
struct TextSource<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    message: Cow<'a, str>,
    kafka: KafkaFields<'a>,
}

fn kafka_fields<'a>(record: &Record<'a>) -> KafkaFields<'a> {
    KafkaFields {
        topic: record.topic,
        partition: record.partition,
        offset: record.offset,
        key: record.key.map(text),
    }
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

/// A field's value as a time: RFC 3339 text, or epoch milliseconds (a
/// number or a string of digits).
fn parse_time(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                s.parse::<i64>()
                    .ok()
                    .and_then(DateTime::from_timestamp_millis)
            }),
        Value::Number(n) => n.as_i64().and_then(DateTime::from_timestamp_millis),
        _ => None,
    }
}

/// Looks a field up by name, then by dotted path (`a.b.c`).
fn lookup<'v>(object: &'v Map<String, Value>, field: &str) -> Option<&'v Value> {
    if let Some(v) = object.get(field) {
        return Some(v);
    }
    let mut parts = field.split('.');
    let mut current = object.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// The `_source` of a JSON-format record and its `@timestamp`.
fn json_source(
    settings: &TopicSettings,
    record: &Record<'_>,
    now: DateTime<Utc>,
) -> (Map<String, Value>, DateTime<Utc>) {
    let kafka_time = timestamp(record.timestamp_ms, now);
    let raw = record.value.map(text).unwrap_or(Cow::Borrowed(""));
    let mut doc = Map::new();
    let mut time = kafka_time;
    {
        match record
            .value
            .map(serde_json::from_slice::<Map<String, Value>>)
        {
            Some(Ok(object)) => {
                if let Some(field) = &settings.timestamp_field {
                    time = lookup(&object, field)
                        .and_then(parse_time)
                        .unwrap_or(kafka_time);
                }
                match &settings.json_target {
                    Some(target) => {
                        doc.insert(target.clone(), Value::Object(object));
                    }
                    None => doc = object,
                }
                if doc.contains_key("message") {
                    match doc
                        .entry("event")
                        .or_insert_with(|| Value::Object(Map::new()))
                    {
                        Value::Object(event) => {
                            event.insert("original".into(), Value::String(raw.into_owned()));
                        }
                        _ => {
                            doc.insert("event.original".into(), Value::String(raw.into_owned()));
                        }
                    }
                } else {
                    doc.insert("message".into(), Value::String(raw.into_owned()));
                }
            }
            _ => {
                doc.insert("message".into(), Value::String(raw.into_owned()));
                doc.insert("tags".into(), Value::from(vec!["json_parse_failure"]));
            }
        }
    }
    // logingest's own fields win over same-named fields of the line.
    doc.insert(
        "@timestamp".into(),
        Value::String(time.to_rfc3339_opts(SecondsFormat::Millis, true)),
    );
    doc.insert(
        "kafka".into(),
        serde_json::to_value(kafka_fields(record)).unwrap_or(Value::Null),
    );
    (doc, time)
}

/// Appends the action line and the source line of `record`, shaped by the
/// topic's `settings`, to a `_bulk` body, each ending in `\n`.
pub fn write_bulk_entry(
    body: &mut Vec<u8>,
    settings: &TopicSettings,
    record: &Record<'_>,
    now: DateTime<Utc>,
) -> Result<(), serde_json::Error> {
    let id = document_id(record.topic, record.partition, record.offset);
    // Plain lines take a fast path: a struct serialised directly.
    let (doc, time) = match settings.format {
        LineFormat::Text => (None, timestamp(record.timestamp_ms, now)),
        LineFormat::Json => {
            let (doc, time) = json_source(settings, record, now);
            (Some(doc), time)
        }
    };
    let index = settings.template.render(time);
    let meta = ActionMeta {
        index: &index,
        id: &id,
        pipeline: settings.pipeline.as_deref(),
    };
    // Data streams only take `create`; a 409 then means "already there".
    body.extend_from_slice(if settings.data_stream {
        b"{\"create\":"
    } else {
        b"{\"index\":"
    });
    serde_json::to_writer(&mut *body, &meta)?;
    body.extend_from_slice(b"}\n");
    match doc {
        Some(doc) => serde_json::to_writer(&mut *body, &doc)?,
        None => serde_json::to_writer(
            &mut *body,
            &TextSource {
                timestamp: time.to_rfc3339_opts(SecondsFormat::Millis, true),
                message: record.value.map(text).unwrap_or(Cow::Borrowed("")),
                kafka: kafka_fields(record),
            },
        )?,
    }
    body.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn entry(record: Record<'_>) -> (Value, Value) {
        entry_with(&TopicSettings::defaults("idx"), record)
    }

    fn entry_with(settings: &TopicSettings, record: Record<'_>) -> (Value, Value) {
        let mut body = Vec::new();
        let now = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        write_bulk_entry(&mut body, settings, &record, now).unwrap();
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

    fn settings(value: &str) -> TopicSettings {
        crate::registry::parse_topic_value("nginx", value.as_bytes()).unwrap()
    }

    #[test]
    fn index_template_from_topic_and_timestamp() {
        let s = settings(r#"{"index": "{topic}-%Y.%m.%d"}"#);
        let (action, _) = entry_with(&s, record(Some(b"x"), None));
        assert_eq!(action["index"]["_index"], "nginx-2020.09.13");
        assert_eq!(s.template.pattern(), "nginx-*.*.*");
        assert_eq!(
            settings(r#"{"index": "fixed"}"#).template.pattern(),
            "fixed"
        );
    }

    #[test]
    fn data_stream_uses_create_and_pipeline_goes_in_the_action() {
        let s = settings(r#"{"data_stream": "logs-nginx-default", "pipeline": "geo"}"#);
        let (action, _) = entry_with(&s, record(Some(b"x"), None));
        assert_eq!(
            action,
            json!({"create": {"_index": "logs-nginx-default", "_id": "nginx-12-3", "pipeline": "geo"}})
        );
    }

    #[test]
    fn json_lines_become_fields() {
        let s = settings(r#"{"format": "json", "timestamp_field": "time"}"#);
        let line = br#"{"level": "warn", "time": "2024-01-02T03:04:05.678Z", "kafka": "theirs"}"#;
        let (_, source) = entry_with(&s, record(Some(line), None));
        assert_eq!(source["level"], "warn");
        assert_eq!(source["@timestamp"], "2024-01-02T03:04:05.678Z");
        assert_eq!(source["message"], std::str::from_utf8(line).unwrap());
        assert_eq!(source["kafka"]["topic"], "nginx", "logingest's fields win");

        let with_message = br#"{"message": "hello", "time": 1700000000123}"#;
        let (_, source) = entry_with(&s, record(Some(with_message), None));
        assert_eq!(source["message"], "hello");
        assert_eq!(
            source["event"]["original"],
            std::str::from_utf8(with_message).unwrap()
        );
        assert_eq!(source["@timestamp"], "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn json_target_and_unparsable_lines() {
        let s = settings(r#"{"format": "json", "json_target": "app", "timestamp_field": "nope"}"#);
        let (_, source) = entry_with(&s, record(Some(br#"{"a": {"b": 1}}"#), None));
        assert_eq!(source["app"]["a"]["b"], 1);
        assert_eq!(source["message"], r#"{"a": {"b": 1}}"#);
        assert_eq!(
            source["@timestamp"], "2020-09-13T12:26:40.123Z",
            "falls back to Kafka time"
        );
        for bad in [&b"not json"[..], b"[1, 2]", b"\xff{", b""] {
            let (_, source) = entry_with(&s, record(Some(bad), None));
            assert_eq!(source["tags"], json!(["json_parse_failure"]));
            assert_eq!(source["message"], String::from_utf8_lossy(bad).as_ref());
        }
    }

    #[test]
    fn dotted_timestamp_field_and_epoch_strings() {
        let s = settings(r#"{"format": "json", "timestamp_field": "meta.ts"}"#);
        let (_, source) = entry_with(
            &s,
            record(Some(br#"{"meta": {"ts": "1600000000000"}}"#), None),
        );
        assert_eq!(source["@timestamp"], "2020-09-13T12:26:40.000Z");
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
