//! Documents (`serde_json`) to VRL values and back, by move: strings change
//! hands without being copied when nothing else holds them.

use chrono::SecondsFormat;
use serde_json::{Map, Number, Value as Json};
use vrl::value::{KeyString, ObjectMap, Value};

/// Bytes a scalar other than a string counts for in [`object_to_vrl`]'s size.
const SCALAR_SIZE: usize = 8;

/// Converts a document, adding the bytes of its keys and strings (and
/// [`SCALAR_SIZE`] per other value) to `size`.
pub(crate) fn object_to_vrl(map: Map<String, Json>, size: &mut usize) -> ObjectMap {
    map.into_iter()
        .map(|(k, v)| {
            *size += k.len();
            (KeyString::from(k), to_vrl(v, size))
        })
        .collect()
}

fn to_vrl(value: Json, size: &mut usize) -> Value {
    match value {
        Json::String(s) => {
            *size += s.len();
            Value::from(s)
        }
        Json::Object(map) => Value::Object(object_to_vrl(map, size)),
        Json::Array(items) => {
            *size += SCALAR_SIZE;
            Value::Array(items.into_iter().map(|v| to_vrl(v, size)).collect())
        }
        other => {
            *size += SCALAR_SIZE;
            match other {
                Json::Bool(b) => Value::Boolean(b),
                Json::Number(n) => match n.as_i64() {
                    Some(i) => Value::Integer(i),
                    // u64 above i64::MAX and floats; serde_json numbers are
                    // finite, so this is never NaN.
                    None => Value::from_f64_or_zero(n.as_f64().unwrap_or_default()),
                },
                _ => Value::Null,
            }
        }
    }
}

/// Converts a VRL object back into a document.
pub(crate) fn object_to_json(map: ObjectMap) -> Map<String, Json> {
    map.into_iter()
        .map(|(k, v)| (k.into(), to_json(v)))
        .collect()
}

/// Text of bytes: reuses the allocation when it is not shared; invalid
/// UTF-8 becomes U+FFFD, as in [`crate::document`].
fn text(bytes: bytes::Bytes) -> String {
    let vec: Vec<u8> = bytes.into();
    match String::from_utf8(vec) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Converts one VRL value into JSON. Timestamps become RFC 3339 UTC text
/// (with as many fractional digits as they need), regexes their pattern,
/// non-finite floats `null`.
pub(crate) fn to_json(value: Value) -> Json {
    match value {
        Value::Bytes(b) => Json::String(text(b)),
        Value::String(s) => Json::String(text(s.into_bytes())),
        Value::Regex(r) => Json::String(r.as_str().to_string()),
        Value::Integer(i) => Json::Number(i.into()),
        Value::Float(f) => Number::from_f64(f.into_inner()).map_or(Json::Null, Json::Number),
        Value::Boolean(b) => Json::Bool(b),
        Value::Timestamp(t) => Json::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        Value::Object(map) => Json::Object(object_to_json(map)),
        Value::Array(items) => Json::Array(items.into_iter().map(to_json).collect()),
        Value::Null => Json::Null,
    }
}

/// The VRL type name of a value, for error messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Bytes(_) | Value::String(_) => "string",
        Value::Regex(_) => "regex",
        Value::Integer(_) => "integer",
        Value::Float(_) => "float",
        Value::Boolean(_) => "boolean",
        Value::Timestamp(_) => "timestamp",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::Null => "null",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_keeps_types() {
        let doc = json!({
            "message": "héllo",
            "n": 5, "big": u64::MAX, "f": 1.5, "b": true, "z": null,
            "a": [1, "x", {"k": []}],
            "kafka": {"topic": "t", "partition": 3, "offset": 9}
        });
        let Json::Object(map) = doc.clone() else {
            unreachable!()
        };
        let mut size = 0;
        let vrl = object_to_vrl(map, &mut size);
        assert!(size > "héllo".len());
        let back = object_to_json(vrl);
        let mut expected = doc;
        expected["big"] = json!(u64::MAX as f64);
        assert_eq!(Json::Object(back), expected);
    }

    #[test]
    fn timestamps_invalid_utf8_and_nan() {
        let t = chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        assert_eq!(
            to_json(Value::Timestamp(t)),
            json!("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(
            to_json(Value::Bytes(bytes::Bytes::from_static(b"a\xffb"))),
            json!("a\u{fffd}b")
        );
        assert_eq!(to_json(Value::from_f64_or_zero(f64::INFINITY)), json!(null));
    }
}
