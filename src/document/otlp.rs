//! `format = "otlp_json"`: an OpenTelemetry `ExportLogsServiceRequest` in
//! the OTLP/JSON encoding (what the Collector's Kafka exporter writes with
//! `encoding: otlp_json`) decoded into one document per log record.
//!
//! Typed serde structs follow the protobuf JSON mapping of the OTLP spec
//! (<https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>):
//! lowerCamelCase names (the proto names are accepted too, as protobuf
//! JSON parsers do), 64-bit integers as decimal strings (numbers accepted),
//! trace and span ids as hex, enums as integers (names accepted), unknown
//! fields ignored. Own structs rather than `opentelemetry-proto`'s: they
//! are about as long as the glue that crate would need, add no dependency
//! (prost, the opentelemetry API and SDK), and decide themselves what a
//! malformed value is (an error naming the field, never a panic).
//!
//! Each log record becomes an object with `@timestamp` (from
//! `timeUnixNano`, else `observedTimeUnixNano`; `None` when both are 0 or
//! absent: the caller uses the Kafka timestamp), `message` (the body: text
//! as it is, any other value as its JSON text, so that `message` stays a
//! text field), `severity_text`, `severity_number`, `attributes`,
//! `resource.attributes`, `scope.{name,version,attributes}`, `trace_id`,
//! `span_id`, `flags`, `event_name`, `dropped_attributes_count` — each
//! only when set.

use std::fmt;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// Why a record is not an OTLP/JSON logs request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OtlpError {
    /// Not JSON, or a field of the wrong type.
    #[error("not an otlp_json logs request: {0}")]
    Syntax(String),
    /// A field of the right type with a value that is not valid.
    #[error("invalid otlp_json value at {location}: {reason}")]
    Value {
        /// Which log record (`resourceLogs[0].scopeLogs[1].logRecords[2]`).
        location: String,
        /// What is wrong.
        reason: String,
    },
}

/// One decoded log record: the document's fields (without logingest's own
/// `kafka` object) and its time, when it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct LogDocument {
    /// `@timestamp` aside, every field of the document.
    pub fields: Map<String, Value>,
    /// `timeUnixNano`, else `observedTimeUnixNano`; `None` when neither is
    /// set (the Kafka timestamp is used then).
    pub time: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Request {
    #[serde(default, rename = "resourceLogs", alias = "resource_logs")]
    resource_logs: Option<Vec<ResourceLogs>>,
}

#[derive(Deserialize)]
struct ResourceLogs {
    #[serde(default)]
    resource: Option<Resource>,
    #[serde(default, rename = "scopeLogs", alias = "scope_logs")]
    scope_logs: Option<Vec<ScopeLogs>>,
}

#[derive(Deserialize)]
struct Resource {
    #[serde(default)]
    attributes: Option<Vec<KeyValue>>,
}

#[derive(Deserialize)]
struct ScopeLogs {
    #[serde(default)]
    scope: Option<Scope>,
    #[serde(default, rename = "logRecords", alias = "log_records")]
    log_records: Option<Vec<LogRecord>>,
}

#[derive(Deserialize)]
struct Scope {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    attributes: Option<Vec<KeyValue>>,
}

#[derive(Deserialize)]
struct LogRecord {
    #[serde(
        default,
        rename = "timeUnixNano",
        alias = "time_unix_nano",
        deserialize_with = "uint64"
    )]
    time_unix_nano: Option<u64>,
    #[serde(
        default,
        rename = "observedTimeUnixNano",
        alias = "observed_time_unix_nano",
        deserialize_with = "uint64"
    )]
    observed_time_unix_nano: Option<u64>,
    #[serde(
        default,
        rename = "severityNumber",
        alias = "severity_number",
        deserialize_with = "severity"
    )]
    severity_number: Option<i64>,
    #[serde(default, rename = "severityText", alias = "severity_text")]
    severity_text: Option<String>,
    #[serde(default)]
    body: Option<AnyValue>,
    #[serde(default)]
    attributes: Option<Vec<KeyValue>>,
    #[serde(
        default,
        rename = "droppedAttributesCount",
        alias = "dropped_attributes_count",
        deserialize_with = "uint64"
    )]
    dropped_attributes_count: Option<u64>,
    #[serde(default, deserialize_with = "uint64")]
    flags: Option<u64>,
    #[serde(default, rename = "traceId", alias = "trace_id")]
    trace_id: Option<String>,
    #[serde(default, rename = "spanId", alias = "span_id")]
    span_id: Option<String>,
    #[serde(default, rename = "eventName", alias = "event_name")]
    event_name: Option<String>,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: Option<AnyValue>,
}

/// `AnyValue`: a oneof, so at most one of these is set (none: an empty
/// value, indexed as `null`).
#[derive(Deserialize)]
struct AnyValue {
    #[serde(default, rename = "stringValue", alias = "string_value")]
    string_value: Option<String>,
    #[serde(default, rename = "boolValue", alias = "bool_value")]
    bool_value: Option<bool>,
    #[serde(
        default,
        rename = "intValue",
        alias = "int_value",
        deserialize_with = "int64"
    )]
    int_value: Option<i64>,
    #[serde(
        default,
        rename = "doubleValue",
        alias = "double_value",
        deserialize_with = "double"
    )]
    double_value: Option<Double>,
    #[serde(default, rename = "arrayValue", alias = "array_value")]
    array_value: Option<ValueList<AnyValue>>,
    #[serde(default, rename = "kvlistValue", alias = "kvlist_value")]
    kvlist_value: Option<ValueList<KeyValue>>,
    #[serde(default, rename = "bytesValue", alias = "bytes_value")]
    bytes_value: Option<String>,
}

#[derive(Deserialize)]
struct ValueList<T> {
    #[serde(default = "Vec::new")]
    values: Vec<T>,
}

/// A double as the JSON mapping writes it: a number, or `"NaN"`,
/// `"Infinity"`, `"-Infinity"` (JSON numbers cannot say those).
enum Double {
    Finite(f64),
    Special(&'static str),
}

/// An unsigned 64-bit integer: a decimal string (the mapping) or a number.
fn uint64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an unsigned 64-bit integer (a decimal string or a number)")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("{v} is negative")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            // 1.7e18 is how some writers print a large integer.
            if v.fract() == 0.0 && (0.0..1.8e19).contains(&v) {
                Ok(Some(v as u64))
            } else {
                Err(E::custom(format!("{v} is not an unsigned integer")))
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.parse()
                .map(Some)
                .map_err(|_| E::custom(format!("{v:?} is not an unsigned integer")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// A signed 64-bit integer: a decimal string (the mapping) or a number.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a 64-bit integer (a decimal string or a number)")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("{v} is out of range")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.fract() == 0.0 && (-9.2e18..9.2e18).contains(&v) {
                Ok(Some(v as i64))
            } else {
                Err(E::custom(format!("{v} is not an integer")))
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.parse()
                .map(Some)
                .map_err(|_| E::custom(format!("{v:?} is not an integer")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

fn double<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Double>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<Double>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number, \"NaN\", \"Infinity\" or \"-Infinity\"")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(Double::Finite(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(Double::Finite(v as f64)))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Double::Finite(v as f64)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            match v {
                "NaN" => Ok(Some(Double::Special("NaN"))),
                "Infinity" => Ok(Some(Double::Special("Infinity"))),
                "-Infinity" => Ok(Some(Double::Special("-Infinity"))),
                _ => match v.parse::<f64>() {
                    Ok(f) if f.is_finite() => Ok(Some(Double::Finite(f))),
                    _ => Err(E::custom(format!("{v:?} is not a number"))),
                },
            }
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// `SeverityNumber` by its enum name, as protobuf JSON allows.
fn severity_by_name(name: &str) -> Option<i64> {
    const LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    let rest = name.strip_prefix("SEVERITY_NUMBER_")?;
    if rest == "UNSPECIFIED" {
        return Some(0);
    }
    let (level, step) = match rest.char_indices().last() {
        Some((i, c @ '2'..='4')) => (&rest[..i], i64::from(c as u8 - b'1')),
        _ => (rest, 0),
    };
    let position = LEVELS.iter().position(|l| *l == level)?;
    Some(position as i64 * 4 + 1 + step)
}

fn severity<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a severity number (an integer or a SEVERITY_NUMBER_* name)")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("{v} is out of range")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            severity_by_name(v)
                .map(Some)
                .ok_or_else(|| E::custom(format!("{v:?} is not a severity number")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// Decodes an `ExportLogsServiceRequest` into its log records' documents,
/// in request order (resource, then scope, then record).
pub fn decode(value: &[u8]) -> Result<Vec<LogDocument>, OtlpError> {
    let request: Request =
        serde_json::from_slice(value).map_err(|e| OtlpError::Syntax(e.to_string()))?;
    let mut documents = Vec::new();
    for (r, resource_logs) in request.resource_logs.into_iter().flatten().enumerate() {
        let at = |s: usize, l: Option<usize>| match l {
            Some(l) => format!("resourceLogs[{r}].scopeLogs[{s}].logRecords[{l}]"),
            None => format!("resourceLogs[{r}].scopeLogs[{s}]"),
        };
        let resource = match resource_logs.resource.and_then(|r| r.attributes) {
            Some(attributes) => {
                let attributes = object(attributes)
                    .map_err(|reason| value_error(format!("resourceLogs[{r}].resource"), reason))?;
                (!attributes.is_empty()).then(|| {
                    let mut resource = Map::new();
                    resource.insert("attributes".into(), Value::Object(attributes));
                    Value::Object(resource)
                })
            }
            None => None,
        };
        for (s, scope_logs) in resource_logs.scope_logs.into_iter().flatten().enumerate() {
            let scope = match scope_logs.scope {
                Some(scope) => {
                    scope_value(scope).map_err(|reason| value_error(at(s, None), reason))?
                }
                None => None,
            };
            for (l, record) in scope_logs.log_records.into_iter().flatten().enumerate() {
                let mut document =
                    log_document(record).map_err(|reason| value_error(at(s, Some(l)), reason))?;
                if let Some(resource) = &resource {
                    document.fields.insert("resource".into(), resource.clone());
                }
                if let Some(scope) = &scope {
                    document.fields.insert("scope".into(), scope.clone());
                }
                documents.push(document);
            }
        }
    }
    Ok(documents)
}

fn value_error(location: String, reason: String) -> OtlpError {
    OtlpError::Value { location, reason }
}

/// `scope.{name,version,attributes}`, each when set; `None` when empty.
fn scope_value(scope: Scope) -> Result<Option<Value>, String> {
    let mut fields = Map::new();
    if let Some(name) = scope.name.filter(|n| !n.is_empty()) {
        fields.insert("name".into(), Value::String(name));
    }
    if let Some(version) = scope.version.filter(|v| !v.is_empty()) {
        fields.insert("version".into(), Value::String(version));
    }
    if let Some(attributes) = scope.attributes {
        let attributes = object(attributes)?;
        if !attributes.is_empty() {
            fields.insert("attributes".into(), Value::Object(attributes));
        }
    }
    Ok((!fields.is_empty()).then_some(Value::Object(fields)))
}

/// The document of one log record (without resource and scope).
fn log_document(record: LogRecord) -> Result<LogDocument, String> {
    let mut fields = Map::new();
    let message = match record.body.map(any_value).transpose()? {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text,
        Some(other) => other.to_string(),
    };
    fields.insert("message".into(), Value::String(message));
    if let Some(text) = record.severity_text.filter(|t| !t.is_empty()) {
        fields.insert("severity_text".into(), Value::String(text));
    }
    if let Some(number) = record.severity_number.filter(|n| *n != 0) {
        fields.insert("severity_number".into(), Value::from(number));
    }
    if let Some(attributes) = record.attributes {
        let attributes = object(attributes)?;
        if !attributes.is_empty() {
            fields.insert("attributes".into(), Value::Object(attributes));
        }
    }
    if let Some(id) = hex_id("traceId", record.trace_id, 16)? {
        fields.insert("trace_id".into(), Value::String(id));
    }
    if let Some(id) = hex_id("spanId", record.span_id, 8)? {
        fields.insert("span_id".into(), Value::String(id));
    }
    if let Some(flags) = record.flags.filter(|f| *f != 0) {
        let flags = u32::try_from(flags).map_err(|_| format!("flags: {flags} is not a fixed32"))?;
        fields.insert("flags".into(), Value::from(flags));
    }
    if let Some(name) = record.event_name.filter(|n| !n.is_empty()) {
        fields.insert("event_name".into(), Value::String(name));
    }
    if let Some(count) = record.dropped_attributes_count.filter(|c| *c != 0) {
        fields.insert("dropped_attributes_count".into(), Value::from(count));
    }
    let time = [record.time_unix_nano, record.observed_time_unix_nano]
        .into_iter()
        .flatten()
        .find(|nanos| *nanos != 0)
        .map(|nanos| {
            i64::try_from(nanos)
                .map(DateTime::from_timestamp_nanos)
                .map_err(|_| format!("time {nanos} ns is out of range"))
        })
        .transpose()?;
    Ok(LogDocument { fields, time })
}

/// A trace or span id: hex of `bytes` bytes (lower-cased), or absent when
/// empty (the spec's "no id").
fn hex_id(field: &str, id: Option<String>, bytes: usize) -> Result<Option<String>, String> {
    let Some(id) = id.filter(|i| !i.is_empty()) else {
        return Ok(None);
    };
    if id.len() != bytes * 2 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{field} {id:?} is not {} hex digits", bytes * 2));
    }
    // All zeros is the spec's invalid id: as good as none.
    if id.bytes().all(|b| b == b'0') {
        return Ok(None);
    }
    Ok(Some(id.to_ascii_lowercase()))
}

/// Attributes as an object, in their order; a repeated key keeps its last
/// value (the spec forbids repeats; this is what a map would do).
fn object(attributes: Vec<KeyValue>) -> Result<Map<String, Value>, String> {
    let mut object = Map::new();
    for attribute in attributes {
        let value = match attribute.value {
            Some(value) => any_value(value).map_err(|e| format!("{:?}: {e}", attribute.key))?,
            None => Value::Null,
        };
        object.insert(attribute.key, value);
    }
    Ok(object)
}

/// An `AnyValue` as JSON: strings, booleans, integers and doubles as they
/// are (a non-finite double as its name), arrays and key-value lists as
/// arrays and objects, bytes as the base64 text they came as (checked).
fn any_value(value: AnyValue) -> Result<Value, String> {
    let AnyValue {
        string_value,
        bool_value,
        int_value,
        double_value,
        array_value,
        kvlist_value,
        bytes_value,
    } = value;
    let set = [
        string_value.is_some(),
        bool_value.is_some(),
        int_value.is_some(),
        double_value.is_some(),
        array_value.is_some(),
        kvlist_value.is_some(),
        bytes_value.is_some(),
    ]
    .into_iter()
    .filter(|s| *s)
    .count();
    if set > 1 {
        return Err("a value with more than one of its kinds set".into());
    }
    Ok(if let Some(s) = string_value {
        Value::String(s)
    } else if let Some(b) = bool_value {
        Value::Bool(b)
    } else if let Some(i) = int_value {
        Value::from(i)
    } else if let Some(d) = double_value {
        match d {
            Double::Finite(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
            Double::Special(name) => Value::String(name.into()),
        }
    } else if let Some(list) = array_value {
        Value::Array(
            list.values
                .into_iter()
                .map(any_value)
                .collect::<Result<_, _>>()?,
        )
    } else if let Some(list) = kvlist_value {
        Value::Object(object(list.values)?)
    } else if let Some(b64) = bytes_value {
        base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .map_err(|e| format!("bytesValue is not base64: {e}"))?;
        Value::String(b64)
    } else {
        Value::Null
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: &Value) -> Vec<Value> {
        decode(value.to_string().as_bytes())
            .unwrap()
            .into_iter()
            .map(|d| Value::Object(d.fields))
            .collect()
    }

    #[test]
    fn one_document_per_log_record_with_resource_and_scope() {
        let request = json!({"resourceLogs": [
            {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
             "scopeLogs": [
                {"scope": {"name": "lib", "version": "1.2"},
                 "logRecords": [
                    {"timeUnixNano": "1704164645678901234", "severityNumber": 9, "severityText": "INFO",
                     "body": {"stringValue": "hello"},
                     "attributes": [
                        {"key": "n", "value": {"intValue": "42"}},
                        {"key": "ok", "value": {"boolValue": true}},
                        {"key": "d", "value": {"doubleValue": 1.5}},
                        {"key": "list", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": 7}]}}},
                        {"key": "map", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"stringValue": "v"}}]}}},
                        {"key": "raw", "value": {"bytesValue": "/wD+"}},
                        {"key": "empty", "value": {}}
                     ],
                     "traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "eee19b7ec3c1b174",
                     "flags": 1, "eventName": "login", "droppedAttributesCount": 2},
                    {"observedTimeUnixNano": 1704164646000000000u64, "body": {"kvlistValue": {"values": [{"key": "a", "value": {"intValue": "1"}}]}}}
                 ]}
             ]},
            {"scopeLogs": [{"logRecords": [{}]}]}
        ]});
        let documents = decode(request.to_string().as_bytes()).unwrap();
        assert_eq!(documents.len(), 3);
        assert_eq!(
            Value::Object(documents[0].fields.clone()),
            json!({
                "message": "hello",
                "severity_text": "INFO",
                "severity_number": 9,
                "attributes": {"n": 42, "ok": true, "d": 1.5, "list": ["a", 7],
                    "map": {"k": "v"}, "raw": "/wD+", "empty": null},
                "trace_id": "5b8efff798038103d269b633813fc60c",
                "span_id": "eee19b7ec3c1b174",
                "flags": 1,
                "event_name": "login",
                "dropped_attributes_count": 2,
                "resource": {"attributes": {"service.name": "cart"}},
                "scope": {"name": "lib", "version": "1.2"}
            })
        );
        assert_eq!(
            documents[0]
                .time
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "2024-01-02T03:04:05.678901234Z"
        );
        assert_eq!(documents[1].fields["message"], r#"{"a":1}"#);
        assert_eq!(
            documents[1].time.unwrap().timestamp_nanos_opt(),
            Some(1_704_164_646_000_000_000)
        );
        assert_eq!(
            Value::Object(documents[2].fields.clone()),
            json!({"message": ""})
        );
        assert_eq!(documents[2].time, None);
    }

    #[test]
    fn proto_field_names_and_enum_names_are_accepted() {
        let docs = fields(&json!({"resource_logs": [{"scope_logs": [{"log_records": [
            {"severity_number": "SEVERITY_NUMBER_WARN3", "body": {"string_value": "x"}}
        ]}]}]}));
        assert_eq!(docs, [json!({"message": "x", "severity_number": 15})]);
        assert_eq!(severity_by_name("SEVERITY_NUMBER_TRACE"), Some(1));
        assert_eq!(severity_by_name("SEVERITY_NUMBER_FATAL4"), Some(24));
        assert_eq!(severity_by_name("SEVERITY_NUMBER_LOUD"), None);
    }

    #[test]
    fn empty_requests_have_no_documents() {
        for empty in [
            json!({}),
            json!({"resourceLogs": []}),
            json!({"resourceLogs": [{}]}),
            json!({"resourceLogs": [{"scopeLogs": [{"logRecords": []}]}]}),
        ] {
            assert_eq!(fields(&empty), Vec::<Value>::new(), "{empty}");
        }
    }

    #[test]
    fn malformed_values_are_errors_naming_the_log_record() {
        let bad = |record: Value| {
            let request =
                json!({"resourceLogs": [{"scopeLogs": [{}, {"logRecords": [{}, record]}]}]});
            decode(request.to_string().as_bytes())
                .unwrap_err()
                .to_string()
        };
        let at = "invalid otlp_json value at resourceLogs[0].scopeLogs[1].logRecords[1]: ";
        assert_eq!(
            bad(json!({"traceId": "xyz"})),
            format!("{at}traceId \"xyz\" is not 32 hex digits")
        );
        assert_eq!(
            bad(json!({"spanId": "0011"})),
            format!("{at}spanId \"0011\" is not 16 hex digits")
        );
        assert_eq!(
            bad(json!({"attributes": [{"key": "b", "value": {"bytesValue": "!!"}}]})),
            format!("{at}\"b\": bytesValue is not base64: Invalid symbol 33, offset 0.")
        );
        assert_eq!(
            bad(json!({"body": {"stringValue": "a", "intValue": "1"}})),
            format!("{at}a value with more than one of its kinds set")
        );
        assert_eq!(
            bad(json!({"timeUnixNano": "18446744073709551615"})),
            format!("{at}time 18446744073709551615 ns is out of range")
        );
        for (value, needle) in [
            (&b"not json"[..], "expected ident"),
            (b"[1]", "invalid type"),
            (br#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}"#, "\"soon\" is not an unsigned integer"),
            (br#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"intValue": 1.5}}]}]}]}"#, "1.5 is not an integer"),
            (br#"{"resourceLogs": {}}"#, "invalid type"),
        ] {
            let error = decode(value).unwrap_err();
            assert!(matches!(error, OtlpError::Syntax(_)), "{error}");
            assert!(error.to_string().contains(needle), "{error}");
        }
    }

    #[test]
    fn zero_ids_and_times_count_as_absent() {
        let docs = decode(
            json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
                {"timeUnixNano": "0", "observedTimeUnixNano": "5", "traceId": "00000000000000000000000000000000", "spanId": ""}
            ]}]}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            Value::Object(docs[0].fields.clone()),
            json!({"message": ""})
        );
        assert_eq!(docs[0].time.unwrap().timestamp_nanos_opt(), Some(5));
    }

    #[test]
    fn special_doubles_are_named() {
        let docs = fields(&json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
            {"attributes": [{"key": "x", "value": {"doubleValue": "NaN"}}, {"key": "y", "value": {"doubleValue": "-Infinity"}}]}
        ]}]}]}));
        assert_eq!(docs[0]["attributes"], json!({"x": "NaN", "y": "-Infinity"}));
    }
}
