//! The document contract: what a Kafka record becomes in Elasticsearch,
//! and the stage that shapes each record of a partition into its chunk.
//!
//! * `_id` = `<topic>-<partition>-<offset>`: unique per record, so a
//!   redelivery overwrites instead of duplicating (and bumps `_version`,
//!   which is how the tests count redeliveries);
//! * `_source` = `@timestamp`, `message`, `kafka.{topic,partition,offset,key}`
//!   (the `kafka_fields` setting chooses which); with `"format": "json"` the
//!   line's own fields too.
//!
//! With `"format": "otlp_json"` a record is an OpenTelemetry logs request
//! ([`otlp`]) and makes one document per log record, `_id`
//! `<topic>-<partition>-<offset>-<n>` (`n` from 0, in request order), all in
//! the record's chunk: its offset is acknowledged once all of them are
//! stored or dead-lettered.
//!
//! Plain text lines go straight to the encoder's fast path; JSON lines are
//! built as objects. A per-topic transform ([`crate::transform`]), when
//! set, runs on the object between shaping and encoding: it may change the
//! document, route it to another index, or drop it; the `_id` stays the
//! record's.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::sink::chunk::{ChunkBuilder, RawRecord};
use crate::sink::encoder::EntryEncoder;
#[cfg(test)]
use crate::topic::document_id;
use crate::topic::{
    HeadersMode, LineFormat, TimestampFormat, TopicPartition, TopicSettings, TransformFailure,
};
use crate::transform::{self, Applied, Runner};

pub mod otlp;

/// The parts of a Kafka record that end up in a document.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Its offset in the partition.
    pub offset: i64,
    /// The record key, when there is one.
    pub key: Option<&'a [u8]>,
    /// The record value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// The Kafka timestamp in milliseconds since the epoch, when present.
    pub timestamp_ms: Option<i64>,
    /// Its headers, in record order; empty unless the topic indexes them
    /// (the consumer only collects them then).
    pub headers: &'a [Header<'a>],
}

/// One Kafka record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Its key.
    pub key: &'a str,
    /// Its value; `None` for a header without one.
    pub value: Option<&'a [u8]>,
}

/// The `kafka.headers` object: one field per key, a string for a UTF-8
/// value, base64 (standard alphabet, padded) for any other so that no
/// bytes are lost, `null` for a header without value, and an array of
/// those, in record order, for a key that repeats.
pub fn headers_value(headers: &[Header<'_>]) -> Value {
    use base64::Engine as _;
    let mut object = Map::new();
    for header in headers {
        let value = match header.value {
            None => Value::Null,
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => Value::String(text.to_owned()),
                Err(_) => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            },
        };
        match object.get_mut(header.key) {
            None => {
                object.insert(header.key.to_owned(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => {
                let first = first.take();
                object.insert(header.key.to_owned(), Value::Array(vec![first, value]));
            }
        }
    }
    Value::Object(object)
}

/// Why a record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    /// Serialising the document failed (cannot happen for owned text; kept
    /// so that it would stop the task instead of skipping the record).
    #[error("cannot encode the document: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Text of a byte string: invalid UTF-8 sequences become U+FFFD, so a line
/// is never dropped for its encoding.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// The record's `@timestamp`: its Kafka timestamp, or `now` when it has no
/// usable one (absent, negative or out of range).
pub fn timestamp(timestamp_ms: Option<i64>, now: DateTime<Utc>) -> DateTime<Utc> {
    timestamp_ms
        .filter(|ms| *ms >= 0)
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or(now)
}
/// Below this magnitude an epoch number is in seconds (1e11 s is the year
/// 5138, while 1e11 ms is only 1973: no log line is timed there).
const EPOCH_SECONDS_BELOW: f64 = 1e11;
/// Below this, milliseconds (1e14 ms is the year 5138; 1e14 µs is 1973).
const EPOCH_MILLIS_BELOW: f64 = 1e14;
/// Below this, microseconds; above, nanoseconds.
const EPOCH_MICROS_BELOW: f64 = 1e17;

/// An epoch number as a time, in the unit `format` names, or with `Auto` by
/// its magnitude. Fractions are kept to the nanosecond where f64 allows.
fn epoch_time(value: f64, format: TimestampFormat) -> Option<DateTime<Utc>> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let nanos_per_unit = match format {
        TimestampFormat::Rfc3339 => return None,
        TimestampFormat::EpochSeconds => 1e9,
        TimestampFormat::EpochMillis => 1e6,
        TimestampFormat::EpochMicros => 1e3,
        TimestampFormat::EpochNanos => 1.0,
        TimestampFormat::Auto if value < EPOCH_SECONDS_BELOW => 1e9,
        TimestampFormat::Auto if value < EPOCH_MILLIS_BELOW => 1e6,
        TimestampFormat::Auto if value < EPOCH_MICROS_BELOW => 1e3,
        TimestampFormat::Auto => 1.0,
    };
    // Split into whole seconds and nanoseconds so that large values keep
    // their precision (an f64 of nanoseconds since 1970 does not).
    let units_per_second = 1e9 / nanos_per_unit;
    let seconds = (value / units_per_second).floor();
    let nanos = ((value - seconds * units_per_second) * nanos_per_unit).round();
    if seconds > i64::MAX as f64 {
        return None;
    }
    let nanos = (nanos as u32).min(999_999_999);
    DateTime::from_timestamp(seconds as i64, nanos)
}

/// A field's value as a time: RFC 3339 text, or an epoch number (a JSON
/// number or a string of one), read as `format` says.
fn parse_time(value: &Value, format: TimestampFormat) -> Option<DateTime<Utc>> {
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                let s = s.trim();
                // Exact integer parsing first: an f64 rounds nanoseconds.
                match s.parse::<i64>() {
                    Ok(n) => epoch_integer(n, format),
                    Err(_) => s.parse::<f64>().ok().and_then(|f| epoch_time(f, format)),
                }
            }),
        Value::Number(n) => match n.as_i64() {
            Some(i) => epoch_integer(i, format),
            None => n.as_f64().and_then(|f| epoch_time(f, format)),
        },
        _ => None,
    }
}

/// An integer epoch value, exactly for the integer units.
fn epoch_integer(value: i64, format: TimestampFormat) -> Option<DateTime<Utc>> {
    if value < 0 {
        return None;
    }
    let magnitude = value as f64;
    let unit = match format {
        TimestampFormat::Auto if magnitude < EPOCH_SECONDS_BELOW => TimestampFormat::EpochSeconds,
        TimestampFormat::Auto if magnitude < EPOCH_MILLIS_BELOW => TimestampFormat::EpochMillis,
        TimestampFormat::Auto if magnitude < EPOCH_MICROS_BELOW => TimestampFormat::EpochMicros,
        TimestampFormat::Auto => TimestampFormat::EpochNanos,
        other => other,
    };
    match unit {
        TimestampFormat::EpochSeconds => DateTime::from_timestamp(value, 0),
        TimestampFormat::EpochMillis => DateTime::from_timestamp_millis(value),
        TimestampFormat::EpochMicros => DateTime::from_timestamp_micros(value),
        TimestampFormat::EpochNanos => Some(DateTime::from_timestamp_nanos(value)),
        TimestampFormat::Rfc3339 | TimestampFormat::Auto => None,
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

/// The `_source` of a JSON-format record (without logingest's own fields)
/// and its `@timestamp`.
fn json_source(
    settings: &TopicSettings,
    record: &Record<'_>,
    kafka_time: DateTime<Utc>,
) -> (Map<String, Value>, DateTime<Utc>) {
    let raw = record.value.map(text).unwrap_or(Cow::Borrowed(""));
    let mut doc = Map::new();
    let mut time = kafka_time;
    match record
        .value
        .map(serde_json::from_slice::<Map<String, Value>>)
    {
        Some(Ok(object)) => {
            if let Some(field) = &settings.timestamp_field {
                time = lookup(&object, field)
                    .and_then(|v| parse_time(v, settings.timestamp_format))
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
    (doc, time)
}

/// Shapes one partition's records into documents and writes them into its
/// chunks. Built once per partition task.
#[derive(Debug)]
pub struct Shaper {
    partition: TopicPartition,
    encoder: EntryEncoder,
    /// The topic's transform, when it has one.
    runner: Option<Runner>,
    /// Why the topic's transform could not be had (it compiled when the
    /// registry value was read, so this is not expected): every document is
    /// then handled as a failed transform, never lost.
    broken: Option<String>,
    /// An index no transform may route into (the dead-letter index).
    protected_index: Option<Arc<str>>,
}

/// What became of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shaped {
    /// Its document is in the chunk.
    Written,
    /// The topic's transform dropped it (`abort`): nothing to index, its
    /// offset advances.
    Dropped,
    /// The transform failed at run time: the untransformed document, tagged
    /// `transform_failure` with the error in `transform.error`, is in the
    /// chunk (`transform_failure = "index"`).
    TransformFailed(String),
    /// The transform failed and the topic says `transform_failure =
    /// "drop"`: nothing in the chunk, its offset advances.
    TransformFailedDropped(String),
    /// The record holds nothing to index (an `otlp_json` request without
    /// log records): nothing in the chunk, its offset advances.
    Empty,
    /// The record must not be indexed (with why; nothing is in the chunk):
    /// the caller hands it to [`ChunkBuilder::refuse`] so that it is
    /// dead-lettered. A failed transform under `transform_failure =
    /// "dead_letter"` starts its reason with [`TRANSFORM_FAILED`].
    Refused(String),
}

/// One `otlp_json` document after the topic's transform.
struct Part {
    document: Map<String, Value>,
    /// Where the transform routed it (`None`: the topic's index).
    index: Option<String>,
    /// The error of a failed run.
    error: Option<String>,
}

/// How the reason of a record refused for a failed transform starts.
pub const TRANSFORM_FAILED: &str = "transform failed: ";

impl Shaper {
    /// The shaper of `partition` under `settings`.
    pub fn new(settings: Arc<TopicSettings>, partition: TopicPartition) -> Self {
        let (runner, broken) = match settings.transform.as_deref().map(transform::compiled) {
            None => (None, None),
            Some(Ok(program)) => (Some(Runner::new(program)), None),
            Some(Err(e)) => (
                None,
                Some(format!("the topic's transform does not compile: {e}")),
            ),
        };
        Self {
            encoder: EntryEncoder::new(settings, &partition),
            partition,
            runner,
            broken,
            protected_index: None,
        }
    }

    /// Refuses `%index` routing into `index` (the dead-letter index): such
    /// a record is handled as a failed transform.
    pub fn protecting(mut self, index: Option<Arc<str>>) -> Self {
        self.protected_index = index;
        self
    }

    /// Whether it runs a transform (whose records may take up to the
    /// program's deadline each, see [`crate::offload`]).
    pub fn transforms(&self) -> bool {
        self.runner.is_some()
    }

    /// The settings it shapes with.
    pub fn settings(&self) -> &TopicSettings {
        self.encoder.settings()
    }

    /// Whether `record`'s document carries `kafka.headers`: the topic
    /// indexes them and it has some (a record without headers gets no empty
    /// object).
    fn indexes_headers(&self, record: &Record<'_>) -> bool {
        self.settings().headers == HeadersMode::Field && !record.headers.is_empty()
    }

    /// The document of `record` as an object (the JSON shape, or the text
    /// shape as an object), with its `@timestamp`.
    pub fn object(
        &self,
        record: &Record<'_>,
        now: DateTime<Utc>,
    ) -> (Map<String, Value>, DateTime<Utc>) {
        let kafka_time = timestamp(record.timestamp_ms, now);
        let (mut doc, time) = match self.settings().format {
            LineFormat::Json => json_source(self.settings(), record, kafka_time),
            // Only a transform's fallback (`otlp_json` records are shaped by
            // `write_otlp`): the value as text.
            LineFormat::Text | LineFormat::OtlpJson => {
                let mut doc = Map::new();
                let message = record.value.map(text).unwrap_or_default();
                doc.insert("message".into(), Value::String(message.into_owned()));
                (doc, kafka_time)
            }
        };
        // logingest's own fields win over same-named fields of the line.
        doc.insert(
            "@timestamp".into(),
            Value::String(time.to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
        self.insert_kafka(&mut doc, record);
        (doc, time)
    }

    /// Sets (or removes) the document's `kafka` object: logingest's fields
    /// win over same-named fields of the record.
    fn insert_kafka(&self, doc: &mut Map<String, Value>, record: &Record<'_>) {
        let mut kafka = self
            .encoder
            .kafka_value(&self.partition, record.offset, record.key);
        if self.indexes_headers(record) {
            if let Value::Object(fields) = kafka.get_or_insert_with(|| Value::Object(Map::new())) {
                fields.insert("headers".into(), headers_value(record.headers));
            }
        }
        match kafka {
            Some(kafka) => {
                doc.insert("kafka".into(), kafka);
            }
            None => {
                doc.remove("kafka");
            }
        }
    }

    /// A transform's routing into the protected index is a failure: the
    /// document is taken untransformed, marked, into the topic's index.
    fn guard_protected_index(
        &self,
        applied: Applied,
        record: &Record<'_>,
        now: DateTime<Utc>,
    ) -> Applied {
        match (&applied, &self.protected_index) {
            (
                Applied::Index {
                    index, error: None, ..
                },
                Some(protected),
            ) if index.as_str() == &**protected => {
                let error = format!(
                    "%index {index:?} is the dead-letter index; transforms may not route into it"
                );
                let (mut document, time) = self.object(record, now);
                transform::mark_failure(&mut document, &error);
                Applied::Index {
                    document,
                    index: self.encoder.settings().template.render(time).into_owned(),
                    error: Some(error),
                }
            }
            _ => applied,
        }
    }

    /// Appends the document of `record` (both `_bulk` lines) to `chunk`.
    pub fn write(
        &mut self,
        chunk: &mut ChunkBuilder,
        record: &Record<'_>,
        now: DateTime<Utc>,
    ) -> Result<Shaped, ShapeError> {
        let mark = chunk.mark();
        let mut shaped = Shaped::Written;
        let result = match self.settings().format {
            LineFormat::OtlpJson => return self.write_otlp(chunk, record, now),
            _ if self.runner.is_some() || self.broken.is_some() => {
                let (document, time) = self.object(record, now);
                let template = &self.encoder.settings().template;
                let applied = match (&mut self.runner, &self.broken) {
                    (Some(runner), _) => runner.apply(template, document, time),
                    (None, error) => {
                        let error = error.clone().unwrap_or_default();
                        let mut document = document;
                        transform::mark_failure(&mut document, &error);
                        Applied::Index {
                            document,
                            index: template.render(time).into_owned(),
                            error: Some(error),
                        }
                    }
                };
                let applied = self.guard_protected_index(applied, record, now);
                match applied {
                    Applied::Drop { .. } => return Ok(Shaped::Dropped),
                    Applied::Index {
                        document,
                        index,
                        error,
                    } => {
                        if let Some(error) = error {
                            match self.settings().transform_failure {
                                TransformFailure::Index => {
                                    shaped = Shaped::TransformFailed(error);
                                }
                                TransformFailure::Drop => {
                                    return Ok(Shaped::TransformFailedDropped(error))
                                }
                                TransformFailure::DeadLetter => {
                                    return Ok(Shaped::Refused(format!(
                                        "{TRANSFORM_FAILED}{error}"
                                    )))
                                }
                            }
                        }
                        self.write_object(chunk, record.offset, time, Some(&index), &document)
                    }
                }
            }
            // Headers make the document an object: the text fast path
            // writes only the fixed fields.
            LineFormat::Text if self.indexes_headers(record) => {
                let (doc, time) = self.object(record, now);
                self.write_object(chunk, record.offset, time, None, &doc)
            }
            LineFormat::Text => {
                let time = timestamp(record.timestamp_ms, now);
                let body = chunk.body_mut();
                self.encoder.write_action(body, record.offset, time, None);
                self.encoder.write_text_source(
                    body,
                    time.timestamp_millis(),
                    record.value,
                    record.offset,
                    record.key,
                );
                Ok(())
            }
            LineFormat::Json => {
                let (doc, time) = self.object(record, now);
                self.write_object(chunk, record.offset, time, None, &doc)
            }
        };
        match result {
            Ok(()) => {
                chunk.commit_document(
                    mark,
                    RawRecord {
                        offset: record.offset,
                        key: record.key,
                        value: record.value,
                        timestamp_ms: record.timestamp_ms,
                    },
                );
                Ok(shaped)
            }
            Err(e) => {
                chunk.rollback(mark);
                Err(e)
            }
        }
    }

    /// Writes the documents of an `otlp_json` record, one per log record, or
    /// refuses the record (its value does not decode, or its transform
    /// failed under `transform_failure = "dead_letter"`) with nothing of it
    /// in the chunk. The topic's transform runs once per log record.
    fn write_otlp(
        &mut self,
        chunk: &mut ChunkBuilder,
        record: &Record<'_>,
        now: DateTime<Utc>,
    ) -> Result<Shaped, ShapeError> {
        let logs = match otlp::decode(record.value.unwrap_or_default()) {
            Ok(logs) if logs.is_empty() => return Ok(Shaped::Empty),
            Ok(logs) => logs,
            Err(e) => return Ok(Shaped::Refused(e.to_string())),
        };
        let kafka_time = timestamp(record.timestamp_ms, now);
        // Every document is built (and transformed) before any is written:
        // a record is refused whole or written whole.
        let mut documents = Vec::with_capacity(logs.len());
        let (mut dropped, mut failure, mut failure_dropped) = (0, None, false);
        for (part, log) in logs.into_iter().enumerate() {
            let part = u32::try_from(part).unwrap_or(u32::MAX);
            let time = log.time.unwrap_or(kafka_time);
            let mut document = log.fields;
            document.insert(
                "@timestamp".into(),
                Value::String(time.to_rfc3339_opts(SecondsFormat::Nanos, true)),
            );
            self.insert_kafka(&mut document, record);
            let Some(Part {
                document,
                index,
                error,
            }) = self.transform_part(document, time)
            else {
                dropped += 1;
                continue;
            };
            if let Some(error) = error {
                let error = format!("log record {part}: {error}");
                match self.settings().transform_failure {
                    TransformFailure::Index => {}
                    TransformFailure::Drop => {
                        failure_dropped = true;
                        failure.get_or_insert(error);
                        continue;
                    }
                    TransformFailure::DeadLetter => {
                        return Ok(Shaped::Refused(format!("{TRANSFORM_FAILED}{error}")));
                    }
                }
                failure.get_or_insert(error);
            }
            documents.push((part, time, index, document));
        }
        let raw = RawRecord {
            offset: record.offset,
            key: record.key,
            value: record.value,
            timestamp_ms: record.timestamp_ms,
        };
        for (part, time, index, document) in &documents {
            let mark = chunk.mark();
            let body = chunk.body_mut();
            self.encoder.write_part_action(
                body,
                record.offset,
                Some(*part),
                *time,
                index.as_deref(),
            );
            if let Err(e) = self.encoder.write_object_source(body, document) {
                chunk.rollback(mark);
                return Err(e.into());
            }
            chunk.commit_part(mark, raw, *part);
        }
        Ok(match failure {
            _ if documents.is_empty() && failure_dropped => {
                Shaped::TransformFailedDropped(failure.unwrap_or_default())
            }
            _ if documents.is_empty() && dropped > 0 => Shaped::Dropped,
            Some(error) => Shaped::TransformFailed(error),
            None => Shaped::Written,
        })
    }

    /// One `otlp_json` document through the topic's transform, if any:
    /// `None` when the program dropped it, else the document, the index it
    /// was routed to (`None`: the topic's), and the error of a failed run.
    fn transform_part(
        &mut self,
        mut document: Map<String, Value>,
        time: DateTime<Utc>,
    ) -> Option<Part> {
        let template = &self.encoder.settings().template;
        let runner = match (&mut self.runner, &self.broken) {
            (Some(runner), _) => runner,
            (None, Some(error)) => {
                transform::mark_failure(&mut document, error);
                return Some(Part {
                    document,
                    index: None,
                    error: Some(error.clone()),
                });
            }
            (None, None) => {
                return Some(Part {
                    document,
                    index: None,
                    error: None,
                })
            }
        };
        // Kept for the rare routing into the dead-letter index.
        let original = self.protected_index.is_some().then(|| document.clone());
        match runner.apply(template, document, time) {
            Applied::Drop { .. } => None,
            Applied::Index {
                index, error: None, ..
            } if self.protected_index.as_deref() == Some(index.as_str()) => {
                let error = format!(
                    "%index {index:?} is the dead-letter index; transforms may not route into it"
                );
                let mut document = original.unwrap_or_default();
                transform::mark_failure(&mut document, &error);
                Some(Part {
                    document,
                    index: None,
                    error: Some(error),
                })
            }
            Applied::Index {
                document,
                index,
                error,
            } => Some(Part {
                document,
                index: Some(index),
                error,
            }),
        }
    }

    /// Writes an object document (to `index` when routed).
    fn write_object(
        &mut self,
        chunk: &mut ChunkBuilder,
        offset: i64,
        time: DateTime<Utc>,
        index: Option<&str>,
        doc: &Map<String, Value>,
    ) -> Result<(), ShapeError> {
        let body = chunk.body_mut();
        self.encoder.write_action(body, offset, time, index);
        self.encoder.write_object_source(body, doc)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn entry(record: Record<'_>) -> (Value, Value) {
        entry_with(&TopicSettings::defaults("idx"), record)
    }

    fn entry_with(settings: &TopicSettings, record: Record<'_>) -> (Value, Value) {
        let tp = TopicPartition::new("nginx", 12);
        let mut shaper = Shaper::new(Arc::new(settings.clone()), tp.clone());
        let mut chunk = ChunkBuilder::new(tp, 1, 0);
        let now = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        shaper.write(&mut chunk, &record, now).unwrap();
        assert_eq!(chunk.len(), 1);
        let text = String::from_utf8(chunk.body_mut().clone()).unwrap();
        let mut lines = text.lines();
        let action = serde_json::from_str(lines.next().unwrap()).unwrap();
        let source = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert!(lines.next().is_none());
        assert!(text.ends_with('\n'));
        (action, source)
    }

    fn record<'a>(value: Option<&'a [u8]>, key: Option<&'a [u8]>) -> Record<'a> {
        Record {
            offset: 3,
            key,
            value,
            timestamp_ms: Some(1_600_000_000_123),
            headers: &[],
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

    #[test]
    fn epoch_numbers_are_read_by_magnitude() {
        let at = |v: Value, f: TimestampFormat| {
            parse_time(&v, f).map(|t| t.to_rfc3339_opts(SecondsFormat::Nanos, true))
        };
        let auto = TimestampFormat::Auto;
        let want = Some("2023-11-14T22:13:20.000000000Z".to_string());
        for v in [
            json!(1_700_000_000),
            json!(1_700_000_000_000i64),
            json!(1_700_000_000_000_000i64),
            json!(1_700_000_000_000_000_000i64),
            json!("1700000000"),
            json!(1_700_000_000.0),
        ] {
            assert_eq!(at(v.clone(), auto), want, "{v}");
        }
        assert_eq!(
            at(json!(1_700_000_000.25), auto).as_deref(),
            Some("2023-11-14T22:13:20.250000000Z")
        );
        assert_eq!(
            at(json!("1700000000.5"), auto).as_deref(),
            Some("2023-11-14T22:13:20.500000000Z")
        );
        assert_eq!(
            at(json!(1_700_000_000_123_456_789i64), auto).as_deref(),
            Some("2023-11-14T22:13:20.123456789Z")
        );
        // Thresholds: just under 1e11 is seconds (year 5138), at 1e11 ms.
        assert!(at(json!(99_999_999_999i64), auto)
            .unwrap()
            .starts_with("5138-"));
        assert!(at(json!(100_000_000_000i64), auto)
            .unwrap()
            .starts_with("1973-"));
        // An explicit format overrides the magnitude.
        assert_eq!(
            at(json!(1_700_000_000_000i64), TimestampFormat::EpochMillis),
            want
        );
        assert!(at(json!(1_700_000), TimestampFormat::EpochMillis)
            .unwrap()
            .starts_with("1970-01-01T00:28"));
        assert_eq!(at(json!(1_700_000_000), TimestampFormat::Rfc3339), None);
        assert_eq!(at(json!(-5), auto), None);
        assert_eq!(at(json!("soon"), auto), None);
    }

    #[test]
    fn epoch_seconds_timestamp_field_picks_the_right_daily_index() {
        let s = settings(r#"{"index": "app-%Y.%m.%d", "format": "json", "timestamp_field": "ts"}"#);
        let (_, source) = entry_with(&s, record(Some(br#"{"ts": 1700000000}"#), None));
        assert_eq!(source["@timestamp"], "2023-11-14T22:13:20.000Z");
        let s = settings(
            r#"{"format": "json", "timestamp_field": "ts", "timestamp_format": "epoch_seconds"}"#,
        );
        let (_, source) = entry_with(&s, record(Some(br#"{"ts": 1700000}"#), None));
        assert_eq!(source["@timestamp"], "1970-01-20T16:13:20.000Z");
    }

    /// Shapes `value` on an `otlp_json` topic: the outcome and the lines.
    fn otlp_entries(extra: &str, value: &[u8]) -> (Shaped, Vec<(Value, Value)>, ChunkBuilder) {
        let s = settings(&format!(r#"{{"format": "otlp_json"{extra}}}"#));
        let tp = TopicPartition::new("nginx", 12);
        let mut shaper = Shaper::new(Arc::new(s), tp.clone());
        let mut chunk = ChunkBuilder::new(tp, 1, 0);
        let now = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        let shaped = shaper
            .write(&mut chunk, &record(Some(value), Some(b"k")), now)
            .unwrap();
        let text = String::from_utf8(chunk.body_mut().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let pairs = lines
            .chunks(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect();
        (shaped, pairs, chunk)
    }

    const TWO_LOGS: &str = r#"{"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
        "scopeLogs": [{"scope": {"name": "s"}, "logRecords": [
            {"timeUnixNano": "1704164645678901234", "body": {"stringValue": "first"}},
            {"body": {"stringValue": "second"}, "severityText": "WARN"}]}]}]}"#;

    #[test]
    fn otlp_records_make_one_document_per_log_record() {
        let (shaped, entries, chunk) = otlp_entries("", TWO_LOGS.as_bytes());
        assert_eq!(shaped, Shaped::Written);
        assert_eq!(chunk.len(), 2);
        let ids: Vec<&Value> = entries.iter().map(|(a, _)| &a["index"]["_id"]).collect();
        assert_eq!(ids, [&json!("nginx-12-3-0"), &json!("nginx-12-3-1")]);
        assert_eq!(
            entries[0].1,
            json!({
                "@timestamp": "2024-01-02T03:04:05.678901234Z",
                "message": "first",
                "resource": {"attributes": {"service.name": "cart"}},
                "scope": {"name": "s"},
                "kafka": {"topic": "nginx", "partition": 12, "offset": 3, "key": "k"}
            })
        );
        // No time of its own: the Kafka timestamp.
        assert_eq!(entries[1].1["@timestamp"], "2020-09-13T12:26:40.123000000Z");
        assert_eq!(entries[1].1["severity_text"], "WARN");
        assert_eq!(
            crate::topic::part_document_id("nginx", 12, 3, 1),
            "nginx-12-3-1"
        );
    }

    #[test]
    fn otlp_values_that_do_not_decode_are_refused_and_empty_requests_write_nothing() {
        let (shaped, entries, _) = otlp_entries("", b"GET / 200");
        assert!(
            matches!(&shaped, Shaped::Refused(r) if r.starts_with("not an otlp_json logs request: ")),
            "{shaped:?}"
        );
        assert!(entries.is_empty());
        let bad_id =
            br#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{}, {"spanId": "zz"}]}]}]}"#;
        let (shaped, entries, chunk) = otlp_entries("", bad_id);
        assert_eq!(
            shaped,
            Shaped::Refused(
                "invalid otlp_json value at resourceLogs[0].scopeLogs[0].logRecords[1]: spanId \"zz\" is not 16 hex digits"
                    .into()
            )
        );
        assert!(entries.is_empty() && chunk.is_empty(), "refused whole");
        let (shaped, entries, _) = otlp_entries("", br#"{"resourceLogs": []}"#);
        assert_eq!((shaped, entries.len()), (Shaped::Empty, 0));
    }

    #[test]
    fn otlp_transforms_run_per_log_record() {
        let drop_warn = r#", "transform": "if .severity_text == \"WARN\" { abort }; .seen = true""#;
        let (shaped, entries, _) = otlp_entries(drop_warn, TWO_LOGS.as_bytes());
        assert_eq!(shaped, Shaped::Written);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0["index"]["_id"], "nginx-12-3-0");
        assert_eq!(entries[0].1["seen"], true);
        let failing = r#", "transform": "if .message == \"first\" { .x = parse_json!(.message) }", "transform_failure": "dead_letter""#;
        let (shaped, entries, _) = otlp_entries(failing, TWO_LOGS.as_bytes());
        assert!(
            matches!(&shaped, Shaped::Refused(r) if r.starts_with("transform failed: log record 0: ")),
            "{shaped:?}"
        );
        assert!(entries.is_empty(), "a record is refused whole");
    }
}
