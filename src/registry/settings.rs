//! Parsing per-topic settings: the JSON object of a prefix-form registry
//! value, into the [`TopicSettings`] every stage reads.
//!
//! ```json
//! {"index": "nginx-%Y.%m.%d", "format": "json", "timestamp_field": "time", "pipeline": "geoip",
//!  "kafka_fields": ["topic", "offset"], "headers": "field"}
//! {"transform": ". = merge(., parse_nginx_log!(.message, \"combined\"))"}
//! ```
//!
//! Every field is optional and validated when the value changes; an invalid
//! value is rejected with a reason naming the field.

use std::sync::Arc;

use serde::Deserialize;

use super::RegistryError;
use crate::topic::{
    validate_index, HeadersMode, IndexTemplate, KafkaFields, LineFormat, RateLimits,
    TimestampFormat, TopicSettings, TransformFailure,
};

/// The JSON object of the prefix form. Unknown fields are collected, not
/// refused: during a rolling upgrade a newer instance may write settings this
/// one does not know. They are reported (a typo does not pass silently), and
/// rejected with `registry.strict`.
#[derive(Debug, Default, Deserialize)]
struct TopicValue {
    index: Option<String>,
    data_stream: Option<String>,
    #[serde(default)]
    format: LineFormat,
    json_target: Option<String>,
    timestamp_field: Option<String>,
    pipeline: Option<String>,
    kafka_fields: Option<Vec<KafkaField>>,
    #[serde(default)]
    headers: HeadersMode,
    transform: Option<String>,
    transform_failure: Option<TransformFailure>,
    timestamp_format: Option<TimestampFormat>,
    max_docs_per_second: Option<serde_json::Value>,
    max_bytes_per_second: Option<serde_json::Value>,
    #[serde(flatten)]
    unknown: std::collections::BTreeMap<String, serde_json::Value>,
}

/// One name of the `kafka_fields` list.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum KafkaField {
    Topic,
    Partition,
    Offset,
    Key,
}

fn kafka_fields(names: &[KafkaField]) -> KafkaFields {
    let mut fields = KafkaFields::NONE;
    for name in names {
        match name {
            KafkaField::Topic => fields.topic = true,
            KafkaField::Partition => fields.partition = true,
            KafkaField::Offset => fields.offset = true,
            KafkaField::Key => fields.key = true,
        }
    }
    fields
}

fn invalid(field: &str, why: impl std::fmt::Display) -> RegistryError {
    RegistryError::InvalidValue(format!("{field}: {why}"))
}

/// A rate limit: absent or `null` is no limit; else a finite,
/// non-negative number (0 reads nothing: the topic is held).
fn rate(field: &str, value: Option<serde_json::Value>) -> Result<Option<f64>, RegistryError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => value
            .as_f64()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Some)
            .ok_or_else(|| {
                invalid(
                    field,
                    format!("{value} is not a non-negative number (per second; leave it out for no limit)"),
                )
            }),
    }
}

fn non_empty(field: &str, value: Option<String>) -> Result<Option<String>, RegistryError> {
    match value {
        Some(v) if v.trim().is_empty() => Err(invalid(field, "must not be empty")),
        other => Ok(other),
    }
}

/// Parses the value of a prefix-form key for `topic`; unknown fields are
/// ignored (see [`parse_topic_value_checked`] to see or refuse them).
pub fn parse_topic_value(topic: &str, value: &[u8]) -> Result<TopicSettings, RegistryError> {
    parse_topic_value_checked(topic, value, false).map(|(settings, _)| settings)
}

/// Parses the value of a prefix-form key for `topic`, returning the names of
/// the fields it did not know; with `strict` those reject the value.
pub fn parse_topic_value_checked(
    topic: &str,
    value: &[u8],
    strict: bool,
) -> Result<(TopicSettings, Vec<String>), RegistryError> {
    let text = std::str::from_utf8(value)
        .map_err(|_| RegistryError::InvalidValue("value is not UTF-8".into()))?;
    let parsed: TopicValue = if text.trim().is_empty() {
        TopicValue::default()
    } else {
        serde_json::from_str(text).map_err(|e| {
            RegistryError::InvalidValue(format!(
                "expected empty or a JSON object like {{\"index\": \"name\"}}: {e}"
            ))
        })?
    };
    let unknown: Vec<String> = parsed.unknown.keys().cloned().collect();
    if strict && !unknown.is_empty() {
        return Err(RegistryError::InvalidValue(format!(
            "unknown fields (registry.strict): {}",
            unknown.join(", ")
        )));
    }
    let mut settings = TopicSettings::defaults(topic);
    match (parsed.index, parsed.data_stream) {
        (Some(_), Some(_)) => return Err(invalid("data_stream", "cannot be combined with index")),
        (Some(index), None) => {
            settings.template = IndexTemplate::parse(topic, &index)?;
            settings.index = index;
        }
        (None, Some(stream)) => {
            validate_index(&stream)?;
            settings.template = IndexTemplate::fixed(&stream);
            settings.index = stream;
            settings.data_stream = true;
        }
        (None, None) => validate_index(&settings.index)?,
    }
    settings.format = parsed.format;
    settings.json_target = non_empty("json_target", parsed.json_target)?;
    settings.timestamp_field = non_empty("timestamp_field", parsed.timestamp_field)?;
    settings.pipeline = non_empty("pipeline", parsed.pipeline)?;
    if let Some(names) = &parsed.kafka_fields {
        settings.kafka_fields = kafka_fields(names);
    }
    settings.headers = parsed.headers;
    if let Some(source) = non_empty("transform", parsed.transform)? {
        // Compiled now, so that a program that does not compile rejects the
        // value (with VRL's diagnostic); the tasks take the compiled program
        // from the same cache.
        crate::transform::compiled(&source).map_err(|e| invalid("transform", e))?;
        settings.transform = Some(Arc::from(source));
    }
    if let Some(failure) = parsed.transform_failure {
        if settings.transform.is_none() {
            return Err(invalid("transform_failure", "needs a \"transform\""));
        }
        settings.transform_failure = failure;
    }
    settings.limits = RateLimits {
        docs_per_second: rate("max_docs_per_second", parsed.max_docs_per_second)?,
        bytes_per_second: rate("max_bytes_per_second", parsed.max_bytes_per_second)?,
    };
    if settings.format != LineFormat::Json {
        if settings.json_target.is_some() {
            return Err(invalid("json_target", "needs \"format\": \"json\""));
        }
        if settings.timestamp_field.is_some() {
            return Err(invalid("timestamp_field", "needs \"format\": \"json\""));
        }
    }
    if let Some(format) = parsed.timestamp_format {
        if settings.timestamp_field.is_none() {
            return Err(invalid("timestamp_format", "needs \"timestamp_field\""));
        }
        settings.timestamp_format = format;
    }
    if let Some(target) = &settings.json_target {
        if matches!(target.as_str(), "@timestamp" | "kafka" | "message" | "tags") {
            return Err(invalid(
                "json_target",
                format!("{target:?} is a field logingest writes itself"),
            ));
        }
    }
    Ok((settings, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<TopicSettings, RegistryError> {
        parse_topic_value("nginx", value.as_bytes())
    }

    #[test]
    fn all_settings() {
        let s = parse(
            r#"{"index": "{topic}-%Y.%m.%d", "format": "json", "json_target": "app", "timestamp_field": "time", "pipeline": "geoip"}"#,
        )
        .unwrap();
        assert_eq!(s.index, "{topic}-%Y.%m.%d");
        assert_eq!(s.format, LineFormat::Json);
        assert_eq!(s.json_target.as_deref(), Some("app"));
        assert_eq!(s.timestamp_field.as_deref(), Some("time"));
        assert_eq!(s.pipeline.as_deref(), Some("geoip"));
        assert!(!s.data_stream);
        let stream = parse(r#"{"data_stream": "logs-nginx-default"}"#).unwrap();
        assert!(stream.data_stream);
        assert_eq!(stream.index, "logs-nginx-default");
    }

    #[test]
    fn transform_failure_is_parsed_and_needs_a_transform() {
        let value = r#"{"transform": "del(.password)", "transform_failure": "dead_letter"}"#;
        assert_eq!(
            parse(value).unwrap().transform_failure,
            TransformFailure::DeadLetter
        );
        assert_eq!(
            parse(r#"{"transform": ".a = 1"}"#)
                .unwrap()
                .transform_failure,
            TransformFailure::Index
        );
        let error = parse(r#"{"transform_failure": "drop"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("transform_failure: needs"), "{error}");
        assert!(parse(r#"{"transform": ".a = 1", "transform_failure": "maybe"}"#).is_err());
    }

    #[test]
    fn transform_is_compiled_and_compared_by_source() {
        let nginx = r#"{"transform": ". = merge(., parse_nginx_log!(.message, \"combined\"))"}"#;
        let a = parse(nginx).unwrap();
        assert!(a.transform.as_deref().unwrap().contains("parse_nginx_log!"));
        assert_eq!(a, parse(nginx).unwrap(), "same program, same settings");
        assert_ne!(a, parse(r#"{"transform": ".a = 1"}"#).unwrap());
        assert_ne!(a, parse("").unwrap());
        assert!(parse("").unwrap().transform.is_none());
        for (value, error) in [
            (r#"{"transform": " "}"#, "transform: must not be empty"),
            (r#"{"transform": ".a = ("}"#, "transform: 1:"),
            (
                r#"{"transform": ". = parse_nginx_log(.message, \"combined\")"}"#,
                "transform: 1:5: error[E103]",
            ),
            (
                r#"{"transform": ".h = get_env_var!(\"HOME\")"}"#,
                "not available in logingest's sandbox",
            ),
        ] {
            let err = parse(value).unwrap_err().to_string();
            assert!(err.contains(error), "{value}: {err}");
        }
    }

    #[test]
    fn kafka_fields_choose_the_metadata_documents_carry() {
        assert_eq!(parse("").unwrap().kafka_fields, KafkaFields::ALL);
        let some = parse(r#"{"kafka_fields": ["offset", "topic"]}"#).unwrap();
        assert_eq!(
            some.kafka_fields,
            KafkaFields {
                topic: true,
                offset: true,
                ..KafkaFields::NONE
            }
        );
        assert!(parse(r#"{"kafka_fields": []}"#)
            .unwrap()
            .kafka_fields
            .is_empty());
        let err = parse(r#"{"kafka_fields": ["host"]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `host`"), "{err}");
    }

    #[test]
    fn rate_limits_are_non_negative_numbers_and_need_no_restart() {
        let none = parse("").unwrap();
        assert!(none.limits.is_unlimited());
        let limited =
            parse(r#"{"max_docs_per_second": 200, "max_bytes_per_second": 1.5e6}"#).unwrap();
        assert_eq!(
            limited.limits,
            RateLimits {
                docs_per_second: Some(200.0),
                bytes_per_second: Some(1_500_000.0),
            }
        );
        assert_eq!(
            parse(r#"{"max_docs_per_second": null}"#).unwrap().limits,
            RateLimits::default()
        );
        assert_eq!(
            parse(r#"{"max_docs_per_second": 0}"#)
                .unwrap()
                .limits
                .docs_per_second,
            Some(0.0)
        );
        // Only the limits changed: applied live. Anything else: restart.
        assert!(!none.needs_restart(&limited));
        assert!(!limited.needs_restart(&none));
        assert!(none.needs_restart(&parse(r#"{"index": "other"}"#).unwrap()));
        for (value, error) in [
            (
                r#"{"max_docs_per_second": -1}"#,
                "max_docs_per_second: -1 is not a non-negative number",
            ),
            (
                r#"{"max_bytes_per_second": "10MB"}"#,
                "max_bytes_per_second: \"10MB\" is not",
            ),
            (
                r#"{"max_docs_per_second": [1]}"#,
                "max_docs_per_second: [1] is not",
            ),
        ] {
            let err = parse(value).unwrap_err().to_string();
            assert!(err.contains(error), "{value}: {err}");
        }
    }

    #[test]
    fn invalid_settings_name_the_field() {
        for (value, field) in [
            (r#"{"index": "a", "data_stream": "b"}"#, "data_stream"),
            (r#"{"format": "yaml"}"#, "unknown variant `yaml`"),
            (r#"{"json_target": "x"}"#, "json_target"),
            (
                r#"{"format": "json", "json_target": "kafka"}"#,
                "json_target",
            ),
            (r#"{"timestamp_field": "t"}"#, "timestamp_field"),
            (r#"{"pipeline": " "}"#, "pipeline"),
            (r#"{"index": "x-%Q"}"#, "index"),
            (r#"{"index": "{host}-x"}"#, "index"),
            (r#"{"index": "UPPER-%Y"}"#, "lower case"),
            (r#"{"data_stream": "Bad"}"#, "lower case"),
        ] {
            let err = parse(value).unwrap_err().to_string();
            assert!(err.contains(field), "{value}: {err}");
        }
    }
}
