//! One line per document: `text` for people, `json` for scripts.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::query::Hit;

/// `-o` of `search` and `tail`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `TIME TOPIC/PARTITION/OFFSET MESSAGE` (or the `--fields`), one
    /// line per document; control characters escaped.
    #[default]
    Text,
    /// One JSON object per line: the `_source` with `_id` and `_index`.
    Json,
}

/// Formats hits as lines.
#[derive(Debug, Clone)]
pub struct Printer {
    format: Format,
    fields: Vec<String>,
}

impl Printer {
    /// A printer of `format`, showing `fields` (dotted paths) instead of
    /// the message when not empty.
    pub fn new(format: Format, fields: Vec<String>) -> Self {
        let fields = fields
            .into_iter()
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect();
        Self { format, fields }
    }

    /// The `_source` filter the printer needs: `None` for the whole source.
    pub fn source_filter(&self) -> Option<Vec<String>> {
        if self.fields.is_empty() {
            return None;
        }
        let mut wanted = self.fields.clone();
        if self.format == Format::Text {
            for f in [
                "@timestamp",
                "kafka.topic",
                "kafka.partition",
                "kafka.offset",
            ] {
                if !wanted.iter().any(|w| w == f) {
                    wanted.push(f.to_string());
                }
            }
        }
        Some(wanted)
    }

    /// The line of one hit, without its newline.
    pub fn line(&self, hit: &Hit) -> String {
        match self.format {
            Format::Json => {
                let mut object = hit.source.clone();
                object.insert("_id".into(), Value::String(hit.id.clone()));
                object.insert("_index".into(), Value::String(hit.index.clone()));
                Value::Object(object).to_string()
            }
            Format::Text => self.text_line(hit),
        }
    }

    fn text_line(&self, hit: &Hit) -> String {
        let source = &hit.source;
        let mut line = match lookup(source, "@timestamp") {
            Some(Value::String(t)) => escape(t),
            Some(other) => other.to_string(),
            None => "-".to_string(),
        };
        line.push(' ');
        line.push_str(&location(hit));
        if self.fields.is_empty() {
            line.push(' ');
            match source.get("message") {
                Some(Value::String(m)) => line.push_str(&escape(m)),
                Some(other) => line.push_str(&escape(&other.to_string())),
                None => {
                    // Not one of logingest's documents: everything else.
                    let mut rest = source.clone();
                    rest.remove("@timestamp");
                    rest.remove("kafka");
                    line.push_str(&escape(&Value::Object(rest).to_string()));
                }
            }
        } else {
            for field in &self.fields {
                let value = match lookup(source, field) {
                    Some(Value::String(s)) => escape(s),
                    Some(other) => escape(&other.to_string()),
                    None => "-".to_string(),
                };
                let _ = write!(line, " {field}={value}");
            }
        }
        line
    }
}

/// `topic/partition/offset` of a logingest document, else `index/_id`.
fn location(hit: &Hit) -> String {
    let kafka = |f: &str| lookup(&hit.source, &format!("kafka.{f}"));
    match (kafka("topic"), kafka("partition"), kafka("offset")) {
        (Some(Value::String(topic)), Some(partition), Some(offset)) => {
            escape(&format!("{topic}/{partition}/{offset}"))
        }
        _ => escape(&format!("{}/{}", hit.index, hit.id)),
    }
}

/// A field by dotted path: `a.b.c` finds `{"a": {"b": {"c": 1}}}`, and
/// also keys that contain dots themselves (`{"a.b": {"c": 1}}`).
pub fn lookup<'v>(object: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    if let Some(v) = object.get(path) {
        return Some(v);
    }
    for (at, _) in path.match_indices('.') {
        let (head, tail) = (&path[..at], &path[at + 1..]);
        if let Some(Value::Object(inner)) = object.get(head) {
            if let Some(v) = lookup(inner, tail) {
                return Some(v);
            }
        }
    }
    None
}

/// Control characters (newlines, ANSI escapes) as Rust escapes, so that a
/// document stays one line and cannot drive the terminal; tabs are kept.
fn escape(text: &str) -> String {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hit(source: Value) -> Hit {
        Hit {
            id: "nginx-1-42".into(),
            index: "nginx-2025.05.01".into(),
            source: source.as_object().cloned().unwrap_or_default(),
            sort: vec![],
            time_ms: None,
            version: None,
        }
    }

    fn doc() -> Hit {
        hit(json!({
            "@timestamp": "2025-05-01T12:00:00.000Z",
            "message": "GET / 200\n\u{1b}[31mred",
            "kafka": {"topic": "nginx", "partition": 1, "offset": 42},
            "http": {"status": 200},
            "a.b": {"c": "dotted"}
        }))
    }

    #[test]
    fn text_lines() {
        let p = Printer::new(Format::Text, vec![]);
        assert_eq!(
            p.line(&doc()),
            "2025-05-01T12:00:00.000Z nginx/1/42 GET / 200\\n\\u{1b}[31mred"
        );
        assert_eq!(p.source_filter(), None);
        let other = hit(json!({"@timestamp": "t", "level": "warn"}));
        assert_eq!(
            p.line(&other),
            "t nginx-2025.05.01/nginx-1-42 {\"level\":\"warn\"}"
        );
        assert_eq!(p.line(&hit(json!({}))), "- nginx-2025.05.01/nginx-1-42 {}");
    }

    #[test]
    fn chosen_fields() {
        let p = Printer::new(
            Format::Text,
            vec!["http.status".into(), " a.b.c".into(), "nope".into()],
        );
        assert_eq!(
            p.line(&doc()),
            "2025-05-01T12:00:00.000Z nginx/1/42 http.status=200 a.b.c=dotted nope=-"
        );
        assert_eq!(
            p.source_filter().unwrap(),
            [
                "http.status",
                "a.b.c",
                "nope",
                "@timestamp",
                "kafka.topic",
                "kafka.partition",
                "kafka.offset"
            ]
        );
        let j = Printer::new(Format::Json, vec!["http.status".into()]);
        assert_eq!(j.source_filter().unwrap(), ["http.status"]);
    }

    #[test]
    fn json_lines() {
        let p = Printer::new(Format::Json, vec![]);
        let line = p.line(&doc());
        assert!(!line.contains('\n'));
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["_id"], "nginx-1-42");
        assert_eq!(parsed["_index"], "nginx-2025.05.01");
        assert_eq!(parsed["kafka"]["offset"], 42);
    }
}
