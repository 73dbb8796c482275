//! A dead letter as read back: from a record of the dead-letter topic (its
//! `logingest.*` headers, see [`crate::sink::dead_letter::headers`]) or from
//! a document of the dead-letter index. Pure: no I/O, so every shape a
//! letter can take (full, reduced, foreign, malformed) is tested alone.

use std::fmt;
use std::sync::Arc;

use chrono::DateTime;
use rdkafka::message::{Headers, Message, OwnedMessage};
use serde_json::Value;

use crate::sink::dead_letter::headers;
use crate::topic::document_id;

/// Header set on a record re-produced by `--to-topic`: the `_id` of the
/// original record (`<topic>-<partition>-<offset>`), for tracing it back.
pub const REPLAY_OF: &str = "logingest.replay.of";

/// Where a letter was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LetterAt {
    /// A record of the dead-letter topic.
    Topic {
        /// The dead-letter topic.
        topic: Arc<str>,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
    },
    /// A document of the dead-letter index.
    Index {
        /// The dead-letter index.
        index: Arc<str>,
        /// The document's `_id`.
        id: String,
    },
}

impl fmt::Display for LetterAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LetterAt::Topic {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}/{partition}/{offset}"),
            LetterAt::Index { index, id } => write!(f, "{index}/{id}"),
        }
    }
}

/// A record's key, value and Kafka timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload {
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The value (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
    /// The Kafka timestamp in ms since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl Payload {
    /// Bytes of key and value.
    pub fn size(&self) -> u64 {
        let len = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len) as u64;
        len(&self.key) + len(&self.value)
    }
}

/// What a letter holds of its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// The record itself.
    Full(Payload),
    /// A reduced letter (the destination refused the full record): only a
    /// description; the record must be read from the source topic.
    Reduced {
        /// The value's size, as the letter says.
        original_size: Option<u64>,
    },
}

/// A dead letter of the replayed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// Where it was read.
    pub at: LetterAt,
    /// The source partition of the record.
    pub partition: i32,
    /// The source offset of the record.
    pub offset: i64,
    /// Why it was dead-lettered.
    pub reason: String,
    /// The record, or that it must be fetched.
    pub contents: Contents,
}

impl Letter {
    /// The record's size (key and value; a reduced letter's original size).
    pub fn size(&self) -> u64 {
        match &self.contents {
            Contents::Full(payload) => payload.size(),
            Contents::Reduced { original_size } => original_size.unwrap_or(0),
        }
    }

    /// The `_id` of the document made from the record.
    pub fn document_id(&self, topic: &str) -> String {
        document_id(topic, self.partition, self.offset)
    }
}

/// What reading one dead-letter record or document came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// A letter of the replayed topic.
    Letter(Letter),
    /// A letter of another topic (a dead-letter topic or index shared by
    /// several topics): skipped.
    OtherTopic {
        /// Where it was read.
        at: LetterAt,
        /// Its source topic.
        topic: String,
    },
    /// Not a dead letter logingest can read: skipped and reported.
    Malformed {
        /// Where it was read.
        at: LetterAt,
        /// What is wrong with it.
        reason: String,
    },
}

impl Read {
    /// Where it was read.
    pub fn at(&self) -> &LetterAt {
        match self {
            Read::Letter(letter) => &letter.at,
            Read::OtherTopic { at, .. } | Read::Malformed { at, .. } => at,
        }
    }
}

fn header_text<'m>(message: &'m OwnedMessage, name: &str) -> Option<&'m str> {
    let headers = message.headers()?;
    headers
        .iter()
        .filter(|h| h.key == name)
        .filter_map(|h| h.value)
        .last()
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
}

/// Reads a record of the dead-letter topic `at.topic` as a letter of
/// `topic`.
pub fn from_message(topic: &str, dlq_topic: &Arc<str>, message: &OwnedMessage) -> Read {
    let at = LetterAt::Topic {
        topic: dlq_topic.clone(),
        partition: message.partition(),
        offset: message.offset(),
    };
    let malformed = |reason: String| Read::Malformed {
        at: at.clone(),
        reason,
    };
    let Some(source) = header_text(message, headers::TOPIC) else {
        return malformed(format!(
            "no {} header: not a logingest dead letter",
            headers::TOPIC
        ));
    };
    if source != topic {
        return Read::OtherTopic {
            at,
            topic: source.to_string(),
        };
    }
    let reduced =
        header_text(message, headers::REDUCED).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let description: Option<Value> = if reduced {
        message
            .payload()
            .and_then(|p| serde_json::from_slice::<Value>(p).ok())
    } else {
        None
    };
    let number = |header: &str, field: &str| -> Option<i64> {
        header_text(message, header)
            .and_then(|v| v.parse::<i64>().ok())
            .or_else(|| description.as_ref()?.get(field)?.as_i64())
    };
    let partition = number(headers::PARTITION, "partition").and_then(|p| i32::try_from(p).ok());
    let offset = number(headers::OFFSET, "offset");
    let (Some(partition), Some(offset)) = (partition, offset) else {
        return malformed(format!(
            "no valid {} and {} headers",
            headers::PARTITION,
            headers::OFFSET
        ));
    };
    if partition < 0 || offset < 0 {
        return malformed(format!("negative partition {partition} or offset {offset}"));
    }
    let reason = header_text(message, headers::ERROR)
        .map(String::from)
        .or_else(|| {
            description
                .as_ref()?
                .get("reason")?
                .as_str()
                .map(String::from)
        })
        .unwrap_or_default();
    let contents = if reduced {
        Contents::Reduced {
            original_size: description
                .as_ref()
                .and_then(|d| d.get("original_size")?.as_u64()),
        }
    } else {
        Contents::Full(Payload {
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            // The source record's time; a letter written before the header
            // existed has only its own (the time it was dead-lettered).
            timestamp_ms: header_text(message, headers::TIMESTAMP)
                .and_then(|v| v.parse::<i64>().ok())
                .or_else(|| message.timestamp().to_millis()),
        })
    };
    Read::Letter(Letter {
        at,
        partition,
        offset,
        reason,
        contents,
    })
}

/// Reads a document of the dead-letter index as a letter of `topic`.
pub fn from_document(topic: &str, index: &Arc<str>, id: &str, source: &Value) -> Read {
    let at = LetterAt::Index {
        index: index.clone(),
        id: id.to_string(),
    };
    let kafka = &source["kafka"];
    let Some(source_topic) = kafka["topic"].as_str() else {
        return Read::Malformed {
            at,
            reason: "no kafka.topic: not a logingest dead letter".into(),
        };
    };
    if source_topic != topic {
        return Read::OtherTopic {
            at,
            topic: source_topic.to_string(),
        };
    }
    let partition = kafka["partition"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok());
    let (Some(partition), Some(offset)) = (partition, kafka["offset"].as_i64()) else {
        return Read::Malformed {
            at,
            reason: "no valid kafka.partition and kafka.offset".into(),
        };
    };
    if partition < 0 || offset < 0 {
        return Read::Malformed {
            at,
            reason: format!("negative partition {partition} or offset {offset}"),
        };
    }
    let reason = source["error"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let contents = if source["reduced"].as_bool() == Some(true) {
        Contents::Reduced {
            original_size: source["original_size"].as_u64(),
        }
    } else {
        let text = |v: &Value| v.as_str().map(|s| s.as_bytes().to_vec());
        Contents::Full(Payload {
            key: text(&kafka["key"]),
            value: text(&source["message"]),
            timestamp_ms: kafka["timestamp"].as_i64().or_else(|| {
                source["@timestamp"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.timestamp_millis())
            }),
        })
    };
    Read::Letter(Letter {
        at,
        partition,
        offset,
        reason,
        contents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders, Timestamp};
    use serde_json::json;

    fn message(headers: &[(&str, &str)], key: Option<&[u8]>, value: Option<&[u8]>) -> OwnedMessage {
        let mut owned = OwnedHeaders::new();
        for (k, v) in headers {
            owned = owned.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        OwnedMessage::new(
            value.map(<[u8]>::to_vec),
            key.map(<[u8]>::to_vec),
            "app.dlq".into(),
            Timestamp::CreateTime(1_700_000_999_000),
            1,
            42,
            Some(owned),
        )
    }

    fn dlq() -> Arc<str> {
        Arc::from("app.dlq")
    }

    #[test]
    fn a_full_letter_carries_the_record_and_its_time() {
        let m = message(
            &[
                ("logingest.topic", "app"),
                ("logingest.partition", "3"),
                ("logingest.offset", "17"),
                ("logingest.error", "400 mapper_parsing_exception"),
                ("logingest.timestamp", "1700000000123"),
            ],
            Some(b"k"),
            Some(b"not a number"),
        );
        let Read::Letter(letter) = from_message("app", &dlq(), &m) else {
            panic!("not a letter");
        };
        assert_eq!((letter.partition, letter.offset), (3, 17));
        assert_eq!(letter.reason, "400 mapper_parsing_exception");
        assert_eq!(letter.at.to_string(), "app.dlq/1/42");
        assert_eq!(letter.document_id("app"), "app-3-17");
        assert_eq!(letter.size(), 13);
        assert_eq!(
            letter.contents,
            Contents::Full(Payload {
                key: Some(b"k".to_vec()),
                value: Some(b"not a number".to_vec()),
                timestamp_ms: Some(1_700_000_000_123),
            })
        );
    }

    #[test]
    fn an_older_letter_without_the_timestamp_header_uses_its_own_time() {
        let m = message(
            &[
                ("logingest.topic", "app"),
                ("logingest.partition", "0"),
                ("logingest.offset", "1"),
            ],
            None,
            None,
        );
        let Read::Letter(letter) = from_message("app", &dlq(), &m) else {
            panic!("not a letter");
        };
        assert_eq!(letter.reason, "");
        assert_eq!(
            letter.contents,
            Contents::Full(Payload {
                key: None,
                value: None,
                timestamp_ms: Some(1_700_000_999_000),
            })
        );
    }

    #[test]
    fn a_reduced_letter_must_be_fetched() {
        let value = json!({"reduced": true, "reason": "413 too large", "refused": "too large",
            "topic": "app", "partition": 2, "offset": 9, "original_size": 5000000,
            "key_size": null, "value_prefix": "aaa"})
        .to_string();
        let m = message(
            &[
                ("logingest.topic", "app"),
                ("logingest.partition", "2"),
                ("logingest.offset", "9"),
                ("logingest.error", "413 too large"),
                ("logingest.reduced", "true"),
            ],
            None,
            Some(value.as_bytes()),
        );
        let Read::Letter(letter) = from_message("app", &dlq(), &m) else {
            panic!("not a letter");
        };
        assert_eq!((letter.partition, letter.offset), (2, 9));
        assert_eq!(
            letter.contents,
            Contents::Reduced {
                original_size: Some(5_000_000)
            }
        );
        assert_eq!(letter.size(), 5_000_000);
        // Position from the description when the headers lack it.
        let m = message(
            &[("logingest.topic", "app"), ("logingest.reduced", "true")],
            None,
            Some(value.as_bytes()),
        );
        let Read::Letter(letter) = from_message("app", &dlq(), &m) else {
            panic!("not a letter");
        };
        assert_eq!((letter.partition, letter.offset), (2, 9));
        assert_eq!(letter.reason, "413 too large");
    }

    #[test]
    fn foreign_and_malformed_records_are_told_apart() {
        let other = message(&[("logingest.topic", "web")], None, Some(b"x"));
        assert!(matches!(
            from_message("app", &dlq(), &other),
            Read::OtherTopic { topic, .. } if topic == "web"
        ));
        let plain = message(&[], None, Some(b"x"));
        assert!(matches!(
            from_message("app", &dlq(), &plain),
            Read::Malformed { reason, .. } if reason.contains("logingest.topic")
        ));
        for (p, o) in [("x", "1"), ("1", ""), ("-1", "3"), ("99999999999", "1")] {
            let bad = message(
                &[
                    ("logingest.topic", "app"),
                    ("logingest.partition", p),
                    ("logingest.offset", o),
                ],
                None,
                Some(b"x"),
            );
            let read = from_message("app", &dlq(), &bad);
            assert!(matches!(read, Read::Malformed { .. }), "{p}/{o}: {read:?}");
            assert_eq!(read.at().to_string(), "app.dlq/1/42");
        }
    }

    #[test]
    fn index_documents_full_and_reduced() {
        let index: Arc<str> = Arc::from("logingest-dead-letters");
        let full = json!({"@timestamp": "2025-01-01T00:00:00.000Z", "message": "seven",
            "kafka": {"topic": "app", "partition": 0, "offset": 1, "key": "k", "timestamp": 1_600_000_000_000_i64},
            "error": {"reason": "400 x"}});
        let Read::Letter(letter) = from_document("app", &index, "app-0-1", &full) else {
            panic!("not a letter");
        };
        assert_eq!(letter.at.to_string(), "logingest-dead-letters/app-0-1");
        assert_eq!(letter.reason, "400 x");
        assert_eq!(
            letter.contents,
            Contents::Full(Payload {
                key: Some(b"k".to_vec()),
                value: Some(b"seven".to_vec()),
                timestamp_ms: Some(1_600_000_000_000),
            })
        );
        let older = json!({"@timestamp": "2025-01-01T00:00:00.000Z", "message": "m",
            "kafka": {"topic": "app", "partition": 0, "offset": 2}});
        let Read::Letter(letter) = from_document("app", &index, "app-0-2", &older) else {
            panic!("not a letter");
        };
        assert!(matches!(
            letter.contents,
            Contents::Full(Payload {
                timestamp_ms: Some(1_735_689_600_000),
                key: None,
                ..
            })
        ));
        let reduced = json!({"message": "aaa", "reduced": true, "original_size": 12,
            "kafka": {"topic": "app", "partition": 1, "offset": 5}});
        let Read::Letter(letter) = from_document("app", &index, "app-1-5", &reduced) else {
            panic!("not a letter");
        };
        assert_eq!(
            letter.contents,
            Contents::Reduced {
                original_size: Some(12)
            }
        );
        let other = json!({"kafka": {"topic": "app2", "partition": 0, "offset": 1}});
        assert!(matches!(
            from_document("app", &index, "app2-0-1", &other),
            Read::OtherTopic { .. }
        ));
        let bad = json!({"kafka": {"topic": "app", "partition": "zero"}});
        assert!(matches!(
            from_document("app", &index, "x", &bad),
            Read::Malformed { .. }
        ));
    }
}
