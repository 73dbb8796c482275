//! Encoding one document into its two `_bulk` lines: the action
//! (`{"index":{"_index":...,"_id":...}}`) and the source.
//!
//! This is the hot path, so an [`EntryEncoder`] is built once per partition
//! task with everything that does not change from one record to the next
//! already encoded: the action's opening, the `_id` prefix
//! (`<topic>-<partition>-`), the `kafka` object's fixed fields. Per record
//! it appends the offset digits, the timestamp (formatted from a per-second
//! cache) and the escaped message — no allocation for plain text lines.
//! Documents that are JSON objects (`format: json`, or a transform's
//! output) are written with serde.

use std::io::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::topic::{KafkaFields, TopicPartition, TopicSettings};

/// Writes the `_bulk` entries of one partition's documents.
#[derive(Debug)]
pub struct EntryEncoder {
    settings: std::sync::Arc<TopicSettings>,
    /// `{"index":{"_index":` or `{"create":{"_index":`.
    action_open: &'static [u8],
    /// The quoted index name when it is fixed.
    fixed_index: Option<Vec<u8>>,
    /// The last rendered templated index, with the second it was rendered
    /// for.
    rendered: Option<(i64, Vec<u8>)>,
    /// Whether the template renders fractions of seconds.
    template_has_fraction: bool,
    /// `,"_id":"<topic>-<partition>-`.
    id_prefix: Vec<u8>,
    /// `"` + `,"pipeline":"..."` when set + `}}\n`.
    action_close: Vec<u8>,
    /// The `kafka` object's fields before `offset`: `"topic":"t","partition":3`.
    kafka_fixed: Vec<u8>,
    fields: KafkaFields,
    timestamps: TimestampCache,
}

impl EntryEncoder {
    /// The encoder of `partition`'s documents under `settings`.
    pub fn new(settings: std::sync::Arc<TopicSettings>, partition: &TopicPartition) -> Self {
        let quoted = |s: &str| serde_json::to_vec(s).unwrap_or_else(|_| b"\"\"".to_vec());
        let fixed_index = settings
            .template
            .is_fixed()
            .then(|| quoted(&settings.template.render(DateTime::<Utc>::UNIX_EPOCH)));
        let mut id_prefix = b",\"_id\":".to_vec();
        let id_start = quoted(&format!("{}-{}-", partition.topic, partition.partition));
        // Keep the opening quote, drop the closing one: the offset follows.
        id_prefix.extend_from_slice(&id_start[..id_start.len() - 1]);
        let mut action_close = b"\"".to_vec();
        if let Some(pipeline) = &settings.pipeline {
            action_close.extend_from_slice(b",\"pipeline\":");
            action_close.extend_from_slice(&quoted(pipeline));
        }
        action_close.extend_from_slice(b"}}\n");
        let fields = settings.kafka_fields;
        let mut kafka_fixed = Vec::new();
        if fields.topic {
            kafka_fixed.extend_from_slice(b"\"topic\":");
            kafka_fixed.extend_from_slice(&quoted(&partition.topic));
        }
        if fields.partition {
            if !kafka_fixed.is_empty() {
                kafka_fixed.push(b',');
            }
            let _ = write!(kafka_fixed, "\"partition\":{}", partition.partition);
        }
        let template_has_fraction = settings.index.contains("%f")
            || settings.index.contains("%.")
            || settings.index.contains("%3f")
            || settings.index.contains("%6f")
            || settings.index.contains("%9f");
        Self {
            action_open: if settings.data_stream {
                // Data streams only take `create`; a 409 then means "already there".
                b"{\"create\":{\"_index\":"
            } else {
                b"{\"index\":{\"_index\":"
            },
            settings,
            fixed_index,
            rendered: None,
            template_has_fraction,
            id_prefix,
            action_close,
            kafka_fixed,
            fields,
            timestamps: TimestampCache::default(),
        }
    }

    /// The settings this encoder writes for.
    pub fn settings(&self) -> &TopicSettings {
        &self.settings
    }

    /// Writes the action line of the document with `offset`, going to
    /// `index` when a transform routed it, else to the topic's index for a
    /// document stamped `timestamp`.
    pub fn write_action(
        &mut self,
        out: &mut Vec<u8>,
        offset: i64,
        timestamp: DateTime<Utc>,
        index: Option<&str>,
    ) {
        self.write_part_action(out, offset, None, timestamp, index);
    }

    /// [`EntryEncoder::write_action`] for the `part`th document of a record
    /// that has several (`format = "otlp_json"`): its `_id` ends in
    /// `-<part>`.
    pub fn write_part_action(
        &mut self,
        out: &mut Vec<u8>,
        offset: i64,
        part: Option<u32>,
        timestamp: DateTime<Utc>,
        index: Option<&str>,
    ) {
        out.extend_from_slice(self.action_open);
        match (index, &self.fixed_index) {
            (Some(index), _) => {
                let _ = serde_json::to_writer(&mut *out, index);
            }
            (None, Some(fixed)) => out.extend_from_slice(fixed),
            (None, None) => {
                let key = if self.template_has_fraction {
                    timestamp.timestamp_millis()
                } else {
                    timestamp.timestamp()
                };
                if self.rendered.as_ref().is_none_or(|(k, _)| *k != key) {
                    let name = self.settings.template.render(timestamp);
                    let quoted = serde_json::to_vec(name.as_ref()).unwrap_or_default();
                    self.rendered = Some((key, quoted));
                }
                if let Some((_, quoted)) = &self.rendered {
                    out.extend_from_slice(quoted);
                }
            }
        }
        out.extend_from_slice(&self.id_prefix);
        out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
        if let Some(part) = part {
            out.push(b'-');
            out.extend_from_slice(itoa::Buffer::new().format(part).as_bytes());
        }
        out.extend_from_slice(&self.action_close);
    }

    /// Writes the source line of a plain text record: `@timestamp`,
    /// `message` (invalid UTF-8 replaced by U+FFFD, so a line is never lost
    /// for its encoding) and the configured `kafka.*` fields.
    pub fn write_text_source(
        &mut self,
        out: &mut Vec<u8>,
        timestamp_ms: i64,
        value: Option<&[u8]>,
        offset: i64,
        key: Option<&[u8]>,
    ) {
        out.extend_from_slice(b"{\"@timestamp\":\"");
        self.timestamps.write(out, timestamp_ms);
        out.extend_from_slice(b"\",\"message\":");
        write_json_text(out, value.unwrap_or_default());
        self.write_kafka_object(out, offset, key);
        out.extend_from_slice(b"}\n");
    }

    /// Writes `,"kafka":{...}` with the configured fields (nothing when
    /// none applies).
    fn write_kafka_object(&self, out: &mut Vec<u8>, offset: i64, key: Option<&[u8]>) {
        let key = key.filter(|_| self.fields.key);
        if self.kafka_fixed.is_empty() && !self.fields.offset && key.is_none() {
            return;
        }
        out.extend_from_slice(b",\"kafka\":{");
        out.extend_from_slice(&self.kafka_fixed);
        let mut first = self.kafka_fixed.is_empty();
        if self.fields.offset {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(b"\"offset\":");
            out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
            first = false;
        }
        if let Some(key) = key {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(b"\"key\":");
            write_json_text(out, key);
        }
        out.push(b'}');
    }

    /// The `kafka` object as a JSON value, for documents built as objects.
    pub fn kafka_value(
        &self,
        partition: &TopicPartition,
        offset: i64,
        key: Option<&[u8]>,
    ) -> Option<Value> {
        let mut kafka = Map::new();
        if self.fields.topic {
            kafka.insert("topic".into(), Value::from(partition.topic.as_ref()));
        }
        if self.fields.partition {
            kafka.insert("partition".into(), Value::from(partition.partition));
        }
        if self.fields.offset {
            kafka.insert("offset".into(), Value::from(offset));
        }
        if let Some(key) = key.filter(|_| self.fields.key) {
            kafka.insert(
                "key".into(),
                Value::from(String::from_utf8_lossy(key).into_owned()),
            );
        }
        (!kafka.is_empty()).then_some(Value::Object(kafka))
    }

    /// Writes a document built as a JSON object as the source line.
    pub fn write_object_source(
        &self,
        out: &mut Vec<u8>,
        document: &Map<String, Value>,
    ) -> Result<(), serde_json::Error> {
        serde_json::to_writer(&mut *out, document)?;
        out.push(b'\n');
        Ok(())
    }
}

/// Writes `bytes` as a JSON string: invalid UTF-8 becomes U+FFFD (a line is
/// never lost for its encoding), `"`, `\\` and control characters are
/// escaped as serde_json does. Runs of plain bytes are found eight at a
/// time and copied whole: log lines are mostly plain.
pub fn write_json_text(out: &mut Vec<u8>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => write_json_str(out, text),
        Err(_) => write_json_str(out, &String::from_utf8_lossy(bytes)),
    }
}

fn write_json_str(out: &mut Vec<u8>, text: &str) {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether any byte of `word` is below 0x20, or is `"` or `\\`.
    let special = |word: u64| {
        let below_space = word.wrapping_sub(LOW * 0x20) & !word;
        let quote = (word ^ (LOW * b'"' as u64)).wrapping_sub(LOW) & !(word ^ (LOW * b'"' as u64));
        let backslash =
            (word ^ (LOW * b'\\' as u64)).wrapping_sub(LOW) & !(word ^ (LOW * b'\\' as u64));
        (below_space | quote | backslash) & HIGH != 0
    };
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if i + 8 <= bytes.len() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[i..i + 8]);
            if !special(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            0x00..=0x1f => None,
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]);
            }
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// RFC 3339 UTC timestamps with milliseconds, formatted without allocating:
/// the `YYYY-MM-DDTHH:MM:SS` part is cached per second (consecutive records
/// mostly share it).
#[derive(Debug, Default)]
struct TimestampCache {
    second: Option<i64>,
    text: [u8; 19],
}

impl TimestampCache {
    fn write(&mut self, out: &mut Vec<u8>, ms: i64) {
        let second = ms.div_euclid(1000);
        let millis = ms.rem_euclid(1000) as u32;
        if self.second != Some(second) {
            match civil_seconds(second) {
                Some(text) => {
                    self.text = text;
                    self.second = Some(second);
                }
                None => {
                    // Outside years 0000-9999: rare enough for chrono.
                    self.second = None;
                    let time = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
                    let text = time.to_rfc3339_opts(SecondsFormat::Millis, true);
                    out.extend_from_slice(text.trim_end_matches('Z').as_bytes());
                    out.push(b'Z');
                    return;
                }
            }
        }
        out.extend_from_slice(&self.text);
        out.extend_from_slice(&[
            b'.',
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
        ]);
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix second, for years 0000 to 9999
/// (Howard Hinnant's days-to-civil algorithm).
fn civil_seconds(second: i64) -> Option<[u8; 19]> {
    let days = second.div_euclid(86_400);
    let in_day = second.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let (h, m, s) = (in_day / 3600, in_day / 60 % 60, in_day % 60);
    let digit = |v: i64| b'0' + v as u8;
    Some([
        digit(year / 1000),
        digit(year / 100 % 10),
        digit(year / 10 % 10),
        digit(year % 10),
        b'-',
        digit(month / 10),
        digit(month % 10),
        b'-',
        digit(day / 10),
        digit(day % 10),
        b'T',
        digit(h / 10),
        digit(h % 10),
        b':',
        digit(m / 10),
        digit(m % 10),
        b':',
        digit(s / 10),
        digit(s % 10),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::sync::Arc;

    fn lines(out: &[u8]) -> (Value, Value) {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.ends_with('\n'));
        let mut lines = text.lines();
        let action = serde_json::from_str(lines.next().unwrap()).unwrap();
        let source = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert!(lines.next().is_none());
        (action, source)
    }

    fn encode(settings: TopicSettings, key: Option<&[u8]>) -> (Value, Value) {
        let tp = TopicPartition::new("nginx", 12);
        let mut e = EntryEncoder::new(Arc::new(settings), &tp);
        let mut out = Vec::new();
        let ts = DateTime::from_timestamp_millis(1_600_000_000_123).unwrap();
        e.write_action(&mut out, 3, ts, None);
        e.write_text_source(&mut out, 1_600_000_000_123, Some(b"GET / 200"), 3, key);
        lines(&out)
    }

    #[test]
    fn plain_lines_shape_the_contract() {
        let (action, source) = encode(TopicSettings::defaults("nginx"), Some(b"host-1"));
        assert_eq!(
            action,
            json!({"index": {"_index": "nginx", "_id": "nginx-12-3"}})
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
    fn chosen_kafka_fields_only() {
        let mut s = TopicSettings::defaults("nginx");
        s.kafka_fields = KafkaFields {
            offset: true,
            ..KafkaFields::NONE
        };
        let (_, source) = encode(s.clone(), Some(b"k"));
        assert_eq!(source["kafka"], json!({"offset": 3}));
        s.kafka_fields = KafkaFields::NONE;
        let (_, source) = encode(s.clone(), Some(b"k"));
        assert!(source.get("kafka").is_none());
        s.kafka_fields = KafkaFields {
            key: true,
            ..KafkaFields::NONE
        };
        assert!(encode(s.clone(), None).1.get("kafka").is_none());
        assert_eq!(encode(s, Some(b"k")).1["kafka"], json!({"key": "k"}));
    }

    #[test]
    fn data_streams_pipelines_templates_and_routing() {
        let mut s = TopicSettings::defaults("nginx");
        s.data_stream = true;
        s.pipeline = Some("geo".into());
        let (action, _) = encode(s, None);
        assert_eq!(
            action,
            json!({"create": {"_index": "nginx", "_id": "nginx-12-3", "pipeline": "geo"}})
        );
        let mut s = TopicSettings::defaults("nginx");
        s.index = "{topic}-%Y.%m.%d".into();
        s.template = crate::topic::IndexTemplate::parse("nginx", &s.index).unwrap();
        let tp = TopicPartition::new("nginx", 0);
        let mut e = EntryEncoder::new(Arc::new(s), &tp);
        let mut out = Vec::new();
        for ms in [1_600_000_000_123, 1_600_000_000_999, 1_700_000_000_000] {
            let ts = DateTime::from_timestamp_millis(ms).unwrap();
            e.write_action(&mut out, 1, ts, None);
        }
        e.write_action(&mut out, 2, DateTime::UNIX_EPOCH, Some("routed"));
        let text = String::from_utf8(out).unwrap();
        let indices: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["index"]["_index"].clone())
            .collect();
        assert_eq!(
            indices,
            vec![
                json!("nginx-2020.09.13"),
                json!("nginx-2020.09.13"),
                json!("nginx-2023.11.14"),
                json!("routed")
            ]
        );
    }

    #[test]
    fn invalid_utf8_and_control_characters_are_kept_as_text() {
        let tp = TopicPartition::new("t", 0);
        let mut e = EntryEncoder::new(Arc::new(TopicSettings::defaults("t")), &tp);
        let mut out = Vec::new();
        e.write_action(&mut out, 0, DateTime::UNIX_EPOCH, None);
        e.write_text_source(&mut out, 0, Some(b"bad \xff {\"a\":1}\0\n"), 0, None);
        let (_, source) = lines(&out);
        assert_eq!(source["message"], "bad \u{fffd} {\"a\":1}\u{0}\n");
        assert_eq!(source["@timestamp"], "1970-01-01T00:00:00.000Z");
    }

    proptest! {
        #[test]
        fn text_is_escaped_exactly_like_serde_json(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut out = Vec::new();
            write_json_text(&mut out, &bytes);
            let expected = serde_json::to_vec(String::from_utf8_lossy(&bytes).as_ref()).unwrap();
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn log_like_text_is_escaped_exactly_like_serde_json(text in "[ -~\t\n\"\\\\\u{0}-\u{1f}é€]{0,300}") {
            let mut out = Vec::new();
            write_json_text(&mut out, text.as_bytes());
            prop_assert_eq!(out, serde_json::to_vec(&text).unwrap());
        }

        #[test]
        fn timestamps_match_chrono(ms in -62_167_219_200_000i64..253_402_300_799_999i64) {
            let mut cache = TimestampCache::default();
            let mut out = Vec::new();
            cache.write(&mut out, ms);
            let expected = DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Millis, true);
            prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }
}
