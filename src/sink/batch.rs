//! A batch of documents of one partition, encoded as a `_bulk` body.

use std::ops::Range;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::document::{write_bulk_entry, Record};
use crate::registry::TopicSettings;

/// Documents of one partition, in offset order, ready to send.
#[derive(Debug)]
pub struct Batch {
    topic: Arc<str>,
    partition: i32,
    body: Vec<u8>,
    docs: Vec<DocSpan>,
    /// The records' raw keys and values, for dead-lettering them unchanged.
    raw: Vec<u8>,
}

/// Where one document's two lines sit in the body.
#[derive(Debug, Clone)]
struct DocSpan {
    offset: i64,
    lines: Range<usize>,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
}

/// A record of the batch as it was read from Kafka.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its value.
    pub value: Option<&'a [u8]>,
}

impl Batch {
    /// An empty batch for `topic`/`partition`.
    pub fn new(topic: Arc<str>, partition: i32) -> Self {
        Self {
            topic,
            partition,
            body: Vec::new(),
            docs: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// Appends a record's document, written to `index`.
    pub fn push(
        &mut self,
        settings: &TopicSettings,
        record: &Record<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), serde_json::Error> {
        let start = self.body.len();
        if let Err(e) = write_bulk_entry(&mut self.body, settings, record, now) {
            self.body.truncate(start);
            return Err(e);
        }
        let mut keep = |bytes: Option<&[u8]>| {
            bytes.map(|b| {
                let start = self.raw.len();
                self.raw.extend_from_slice(b);
                start..self.raw.len()
            })
        };
        let key = keep(record.key);
        let value = keep(record.value);
        self.docs.push(DocSpan {
            offset: record.offset,
            lines: start..self.body.len(),
            key,
            value,
        });
        Ok(())
    }

    /// The record at `position` as read from Kafka.
    pub fn raw(&self, position: usize) -> RawRecord<'_> {
        let doc = &self.docs[position];
        RawRecord {
            offset: doc.offset,
            key: doc.key.clone().map(|r| &self.raw[r]),
            value: doc.value.clone().map(|r| &self.raw[r]),
        }
    }

    /// Position of the document with `offset`.
    pub fn position_of(&self, offset: i64) -> Option<usize> {
        self.docs.binary_search_by_key(&offset, |d| d.offset).ok()
    }

    /// The topic of every document in the batch.
    pub fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    /// The partition of every document in the batch.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether the batch holds no document.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Size of the encoded body.
    pub fn bytes(&self) -> usize {
        self.body.len()
    }

    /// Memory held: the body and the raw records.
    pub fn memory(&self) -> usize {
        self.body.len() + self.raw.len()
    }

    /// Offset of the last document.
    pub fn last_offset(&self) -> Option<i64> {
        self.docs.last().map(|d| d.offset)
    }

    /// Offset of the document at `position`.
    pub fn offset_at(&self, position: usize) -> i64 {
        self.docs[position].offset
    }

    /// The whole body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The two lines of the documents at `positions`, concatenated: the body
    /// of a retry that carries only some of the documents.
    pub fn body_of(&self, positions: &[usize]) -> Vec<u8> {
        let mut out = Vec::with_capacity(positions.iter().map(|&p| self.docs[p].lines.len()).sum());
        for &p in positions {
            out.extend_from_slice(&self.body[self.docs[p].lines.clone()]);
        }
        out
    }

    /// The source line of the document at `position` (for reports).
    pub fn source_of(&self, position: usize) -> &[u8] {
        let lines = &self.body[self.docs[position].lines.clone()];
        let split = lines.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        lines[split..]
            .strip_suffix(b"\n")
            .unwrap_or(&lines[split..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_of_a_subset_is_those_documents_lines() {
        let mut batch = Batch::new(Arc::from("t"), 0);
        let now = Utc::now();
        for offset in 0..3 {
            let value = format!("line {offset}");
            let record = Record {
                topic: "t",
                partition: 0,
                offset,
                key: None,
                value: Some(value.as_bytes()),
                timestamp_ms: Some(0),
            };
            batch
                .push(&TopicSettings::defaults("t"), &record, now)
                .unwrap();
        }
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.last_offset(), Some(2));
        let subset = String::from_utf8(batch.body_of(&[0, 2])).unwrap();
        assert_eq!(subset.lines().count(), 4);
        assert!(subset.contains("\"_id\":\"t-0-0\"") && subset.contains("\"_id\":\"t-0-2\""));
        assert!(!subset.contains("t-0-1"));
        let source: serde_json::Value = serde_json::from_slice(batch.source_of(1)).unwrap();
        assert_eq!(source["message"], "line 1");
        assert_eq!(batch.raw(2).value, Some(&b"line 2"[..]));
        assert_eq!(batch.raw(2).key, None);
        assert_eq!(batch.position_of(1), Some(1));
        assert_eq!(batch.position_of(7), None);
    }
}
