//! The shared vocabulary of every stage: which partition, which settings,
//! which index, and the naming rules of Kafka and Elasticsearch.
//!
//! This module is a leaf: it imports nothing of the crate, so the registry
//! (which produces [`TopicSettings`]), the reconciler, the Kafka tasks and the
//! sink (which consume them) all depend on it and never on each other for
//! these names.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};

/// A name Kafka or Elasticsearch would refuse, or an index template that
/// cannot produce a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not a legal Kafka topic name.
    #[error("{0:?} is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-], not . or ..)")]
    Topic(String),
    /// Not a legal Elasticsearch index name.
    #[error("{0:?} is not a valid Elasticsearch index name: {1}")]
    Index(String, &'static str),
    /// An index template names a placeholder other than `{topic}`.
    #[error("index: {0:?} has a placeholder other than {{topic}}")]
    Placeholder(String),
    /// An index template has a `%` part strftime does not know.
    #[error("index: {0:?} has an unknown %-date part")]
    DatePart(String),
}

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic name.
    pub topic: Arc<str>,
    /// The partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// The partition `partition` of `topic`.
    pub fn new(topic: &str, partition: i32) -> Self {
        Self {
            topic: Arc::from(topic),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// The `_id` of the document made from a record: `<topic>-<partition>-<offset>`.
///
/// Parsed from the right it is unambiguous: the last two `-`-separated
/// fields are numbers, and a topic name cannot make them anything else.
pub fn document_id(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}-{partition}-{offset}")
}

/// The `_id` of the `part`th document (from 0) of a record that makes
/// several (`format = "otlp_json"`: one per log record, in request order).
pub fn part_document_id(topic: &str, partition: i32, offset: i64, part: u32) -> String {
    format!("{topic}-{partition}-{offset}-{part}")
}

/// Checks a Kafka topic name (the broker's own rules).
pub fn validate_topic(topic: &str) -> Result<(), NameError> {
    let legal = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if legal {
        Ok(())
    } else {
        Err(NameError::Topic(topic.to_string()))
    }
}

/// Checks an Elasticsearch index name (the server's own rules).
pub fn validate_index(index: &str) -> Result<(), NameError> {
    let fail = |why| Err(NameError::Index(index.to_string(), why));
    if index.is_empty() || index.len() > 255 {
        return fail("must be 1 to 255 bytes");
    }
    if index == "." || index == ".." {
        return fail("must not be . or ..");
    }
    if index.starts_with(['-', '_', '+']) {
        return fail("must not start with -, _ or +");
    }
    if index.chars().any(|c| c.is_uppercase()) {
        return fail("must be lower case");
    }
    if index.chars().any(|c| {
        matches!(
            c,
            '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
        ) || c.is_control()
    }) {
        return fail("must not contain \\ / * ? \" < > | space , # : or control characters");
    }
    Ok(())
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
    pub fn parse(topic: &str, template: &str) -> Result<Self, NameError> {
        let name = template.replace("{topic}", &topic.to_ascii_lowercase());
        if name.contains(['{', '}']) {
            return Err(NameError::Placeholder(template.to_string()));
        }
        if !name.contains('%') {
            validate_index(&name)?;
            return Ok(Self::fixed(&name));
        }
        let items = StrftimeItems::new(&name)
            .parse_to_owned()
            .map_err(|_| NameError::DatePart(template.to_string()))?;
        let compiled = Self {
            name,
            items: Some(items),
        };
        let sample = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        validate_index(&compiled.render(sample))?;
        Ok(compiled)
    }

    /// Whether every document goes to the same index.
    pub fn is_fixed(&self) -> bool {
        self.items.is_none()
    }

    /// The index name for a document with this `@timestamp`.
    pub fn render(&self, timestamp: DateTime<Utc>) -> Cow<'_, str> {
        match &self.items {
            None => Cow::Borrowed(&self.name),
            Some(items) => Cow::Owned(timestamp.format_with_items(items.iter()).to_string()),
        }
    }

    /// The index pattern covering every name it renders (date parts as `*`),
    /// for an index template and for searching.
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

/// How a record's value is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    /// The value is a line of text, indexed as `message`.
    #[default]
    Text,
    /// The value is a JSON object whose fields become document fields; a
    /// value that is not one is indexed as text and tagged.
    Json,
    /// The value is an OpenTelemetry `ExportLogsServiceRequest` in OTLP/JSON:
    /// one document per log record, `_id` `<topic>-<partition>-<offset>-<n>`
    /// (see `document::otlp`); a value that is not one is refused
    /// and dead-lettered.
    #[serde(rename = "otlp_json")]
    OtlpJson,
}

/// How a `timestamp_field` value is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    /// RFC 3339 text, or an epoch number whose unit is told by its
    /// magnitude (seconds, milliseconds, microseconds or nanoseconds).
    #[default]
    Auto,
    /// RFC 3339 text only.
    Rfc3339,
    /// Seconds since the epoch (fractions allowed).
    EpochSeconds,
    /// Milliseconds since the epoch.
    EpochMillis,
    /// Microseconds since the epoch.
    EpochMicros,
    /// Nanoseconds since the epoch.
    EpochNanos,
}

/// What becomes of a record's Kafka headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadersMode {
    /// Not indexed: documents stay as they were before headers existed.
    #[default]
    Off,
    /// Indexed as `kafka.headers` (UTF-8 values as strings, others base64,
    /// repeated keys as arrays).
    Field,
}

/// Which `kafka.*` fields each document carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaFields {
    /// `kafka.topic`.
    pub topic: bool,
    /// `kafka.partition`.
    pub partition: bool,
    /// `kafka.offset`.
    pub offset: bool,
    /// `kafka.key`, when the record has a key.
    pub key: bool,
}

impl KafkaFields {
    /// Every field (the default).
    pub const ALL: Self = Self {
        topic: true,
        partition: true,
        offset: true,
        key: true,
    };
    /// No `kafka` object at all.
    pub const NONE: Self = Self {
        topic: false,
        partition: false,
        offset: false,
        key: false,
    };

    /// Whether no field is written.
    pub fn is_empty(&self) -> bool {
        *self == Self::NONE
    }
}

impl Default for KafkaFields {
    fn default() -> Self {
        Self::ALL
    }
}

/// Settings of one registered topic, resolved with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSettings {
    /// The index (or index template) its documents go to; the data stream's
    /// name when `data_stream` is set.
    pub index: String,
    /// Write into the data stream named `index`, with `create`.
    pub data_stream: bool,
    /// How values are read.
    pub format: LineFormat,
    /// With `json`: put the object's fields under this key instead of at the
    /// top level.
    pub json_target: Option<String>,
    /// With `json`: take `@timestamp` from this field (RFC 3339 or an epoch
    /// number), else from the Kafka timestamp.
    pub timestamp_field: Option<String>,
    /// How `timestamp_field` is read (`auto`: by the number's magnitude).
    pub timestamp_format: TimestampFormat,
    /// Elasticsearch ingest pipeline applied to the documents.
    pub pipeline: Option<String>,
    /// Which `kafka.*` fields the documents carry.
    pub kafka_fields: KafkaFields,
    /// Whether the record headers are indexed (`kafka.headers`).
    pub headers: HeadersMode,
    /// The VRL program shaping each document (its source text; the registry
    /// compiles it when the value changes).
    pub transform: Option<Arc<str>>,
    /// What becomes of a record whose transform fails at run time.
    pub transform_failure: TransformFailure,
    /// `index`, compiled.
    pub template: IndexTemplate,
    /// Rate limits, applied live: changing only these does not restart the
    /// topic's tasks (see [`TopicSettings::needs_restart`]).
    pub limits: RateLimits,
}

/// The most a topic may read per second, across all its partitions (on
/// this instance); `None`: no limit.
///
/// Both numbers are finite and non-negative (the registry's parser
/// refuses anything else), which is what makes the `Eq` below sound.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimits {
    /// `max_docs_per_second`: records read per second.
    pub docs_per_second: Option<f64>,
    /// `max_bytes_per_second`: bytes of record keys and values read per
    /// second.
    pub bytes_per_second: Option<f64>,
}

impl Eq for RateLimits {}

impl RateLimits {
    /// No limit at all.
    pub fn is_unlimited(&self) -> bool {
        self.docs_per_second.is_none() && self.bytes_per_second.is_none()
    }
}

/// What becomes of a record whose transform fails at run time (an error,
/// the deadline, a line over the input cap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransformFailure {
    /// Indexed untransformed, tagged `transform_failure` (no record is
    /// lost, but a redaction program is bypassed for it).
    #[default]
    Index,
    /// Sent to the dead letters with the error, not indexed (for programs
    /// that must not be bypassed, such as redaction).
    DeadLetter,
    /// Dropped, counted in `logingest_transform_failures_total` and
    /// `logingest_documents_dropped_total`.
    Drop,
}

impl TopicSettings {
    /// The settings of a topic registered without any (default index: the
    /// topic name, lower-cased because Elasticsearch index names must be).
    pub fn defaults(topic: &str) -> Self {
        let index = topic.to_ascii_lowercase();
        Self {
            template: IndexTemplate::fixed(&index),
            index,
            data_stream: false,
            format: LineFormat::Text,
            json_target: None,
            timestamp_field: None,
            timestamp_format: TimestampFormat::Auto,
            pipeline: None,
            kafka_fields: KafkaFields::ALL,
            headers: HeadersMode::Off,
            transform: None,
            transform_failure: TransformFailure::Index,
            limits: RateLimits::default(),
        }
    }

    /// Whether going from `self` to `new` needs the topic's tasks
    /// restarted: any change but the rate limits, which the tasks read
    /// live from the topic's shared limiter.
    pub fn needs_restart(&self, new: &TopicSettings) -> bool {
        let mut same_limits = self.clone();
        same_limits.limits = new.limits;
        same_limits != *new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_and_index_names() {
        assert!(validate_topic("nginx.access_log-1").is_ok());
        assert!(validate_topic("").is_err());
        assert!(validate_topic("..").is_err());
        assert!(validate_topic(&"x".repeat(250)).is_err());
        assert!(validate_index("logs-2024.01.01").is_ok());
        assert!(validate_index("_x").is_err());
        assert!(validate_index("a,b").is_err());
    }

    #[test]
    fn templates_render_and_give_patterns() {
        let t = IndexTemplate::parse("Nginx", "{topic}-%Y.%m.%d").unwrap();
        let when = DateTime::<Utc>::from_timestamp_millis(1_600_000_000_123).unwrap();
        assert_eq!(t.render(when), "nginx-2020.09.13");
        assert_eq!(t.pattern(), "nginx-*.*.*");
        assert!(!t.is_fixed());
        assert!(IndexTemplate::parse("t", "fixed").unwrap().is_fixed());
        assert!(matches!(
            IndexTemplate::parse("t", "{host}-x"),
            Err(NameError::Placeholder(_))
        ));
        assert!(matches!(
            IndexTemplate::parse("t", "x-%Q"),
            Err(NameError::DatePart(_))
        ));
        assert!(matches!(
            IndexTemplate::parse("t", "UPPER-%Y"),
            Err(NameError::Index(..))
        ));
    }

    #[test]
    fn partitions_display_as_topic_slash_partition() {
        assert_eq!(TopicPartition::new("nginx", 3).to_string(), "nginx/3");
    }
}
