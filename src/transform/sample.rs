//! `logingest transform test`: a program run on sample lines, each shown as
//! the document logingest would index.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Applied, Runner, Transform};
use crate::document::{Record, Shaper};
use crate::topic::{document_id, TopicPartition, TopicSettings};

/// The result for one sample line, printed as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleResult {
    /// 1-based line number (its offset is `line - 1`).
    pub line: usize,
    /// `keep`, `drop` or `failed`.
    pub outcome: &'static str,
    /// The index it would go to (not for `drop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// Its `_id` (not for `drop`).
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `abort`'s message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The runtime error (`failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The document as it would be indexed (for `failed`: the original,
    /// marked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<Map<String, Value>>,
}

/// Runs one program on sample lines of one topic: partition 0, the line
/// number minus one as offset, no key, the current time as Kafka time.
pub struct SampleRun {
    topic: String,
    shaper: Shaper,
    runner: Runner,
    lines: usize,
    kept: usize,
    dropped: usize,
    failed: usize,
}

impl SampleRun {
    /// A run of `transform` on `topic`'s documents, shaped by `settings`
    /// (whose own transform, if any, is ignored).
    pub fn new(topic: String, mut settings: TopicSettings, transform: Transform) -> Self {
        settings.transform = None;
        Self {
            shaper: Shaper::new(Arc::new(settings), TopicPartition::new(&topic, 0)),
            topic,
            runner: Runner::new(Arc::new(transform)),
            lines: 0,
            kept: 0,
            dropped: 0,
            failed: 0,
        }
    }

    /// Runs the program on the next line (a Kafka value).
    pub fn run(&mut self, value: &[u8], now: DateTime<Utc>) -> SampleResult {
        self.lines += 1;
        let offset = i64::try_from(self.lines - 1).unwrap_or(i64::MAX);
        let record = Record {
            offset,
            key: None,
            value: Some(value),
            timestamp_ms: Some(now.timestamp_millis()),
            headers: &[],
        };
        let mut result = SampleResult {
            line: self.lines,
            outcome: "keep",
            index: None,
            id: None,
            reason: None,
            error: None,
            document: None,
        };
        let (document, time) = self.shaper.object(&record, now);
        match self
            .runner
            .apply(&self.shaper.settings().template, document, time)
        {
            Applied::Index {
                document,
                index,
                error,
            } => {
                if error.is_some() {
                    self.failed += 1;
                    result.outcome = "failed";
                } else {
                    self.kept += 1;
                }
                result.index = Some(index);
                result.id = Some(document_id(&self.topic, 0, offset));
                result.error = error;
                result.document = Some(document);
            }
            Applied::Drop { reason } => {
                self.dropped += 1;
                result.outcome = "drop";
                result.reason = reason;
            }
        }
        result
    }

    /// `N lines: K kept, D dropped, F failed`.
    pub fn summary(&self) -> String {
        format!(
            "{} lines: {} kept, {} dropped, {} failed",
            self.lines, self.kept, self.dropped, self.failed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::tests::{NGINX, NGINX_LINE};
    use serde_json::json;

    #[test]
    fn sample_lines_show_outcome_index_and_document() {
        let program = format!(
            "if contains(string!(.message), \"drop me\") {{ abort }}\n{NGINX}\n\
             if .status >= 500 {{ %index = \"errors\" }}"
        );
        let settings =
            crate::registry::parse_topic_value("nginx", br#"{"index": "web-%Y"}"#).unwrap();
        let mut run = SampleRun::new(
            "nginx".into(),
            settings,
            Transform::compile(&program).unwrap(),
        );
        let now = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        let kept = run.run(NGINX_LINE.as_bytes(), now);
        assert_eq!(kept.outcome, "keep");
        assert_eq!(kept.index.as_deref(), Some("web-2023"));
        assert_eq!(kept.id.as_deref(), Some("nginx-0-0"));
        assert_eq!(kept.document.as_ref().unwrap()["status"], json!(200));

        let routed = run.run(NGINX_LINE.replace(" 200 ", " 502 ").as_bytes(), now);
        assert_eq!(routed.index.as_deref(), Some("errors"));

        let dropped = run.run(b"drop me", now);
        assert_eq!(dropped.outcome, "drop");
        assert!(dropped.document.is_none() && dropped.index.is_none());

        let failed = run.run(b"not nginx", now);
        assert_eq!(failed.outcome, "failed");
        assert_eq!(failed.id.as_deref(), Some("nginx-0-3"));
        let doc = failed.document.unwrap();
        assert_eq!(doc["message"], "not nginx");
        assert_eq!(doc["tags"], json!(["transform_failure"]));
        assert!(doc["transform"]["error"]
            .as_str()
            .unwrap()
            .contains("parse_nginx_log"));
        assert_eq!(run.summary(), "4 lines: 2 kept, 1 dropped, 1 failed");
    }
}
