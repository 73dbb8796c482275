//! A batch of documents of one partition, encoded as a `_bulk` body.

use std::ops::Range;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::document::{write_bulk_entry, Record};

/// Documents of one partition, in offset order, ready to send.
#[derive(Debug)]
pub struct Batch {
    topic: Arc<str>,
    partition: i32,
    body: Vec<u8>,
    docs: Vec<DocSpan>,
}

/// Where one document's two lines sit in the body.
#[derive(Debug, Clone)]
struct DocSpan {
    offset: i64,
    lines: Range<usize>,
}

impl Batch {
    /// An empty batch for `topic`/`partition`.
    pub fn new(topic: Arc<str>, partition: i32) -> Self {
        Self {
            topic,
            partition,
            body: Vec::new(),
            docs: Vec::new(),
        }
    }

    /// Appends a record's document, written to `index`.
    pub fn push(
        &mut self,
        index: &str,
        record: &Record<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), serde_json::Error> {
        let start = self.body.len();
        if let Err(e) = write_bulk_entry(&mut self.body, index, record, now) {
            self.body.truncate(start);
            return Err(e);
        }
        self.docs.push(DocSpan {
            offset: record.offset,
            lines: start..self.body.len(),
        });
        Ok(())
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
            batch.push("t", &record, now).unwrap();
        }
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.last_offset(), Some(2));
        let subset = String::from_utf8(batch.body_of(&[0, 2])).unwrap();
        assert_eq!(subset.lines().count(), 4);
        assert!(subset.contains("\"_id\":\"t-0-0\"") && subset.contains("\"_id\":\"t-0-2\""));
        assert!(!subset.contains("t-0-1"));
        let source: serde_json::Value = serde_json::from_slice(batch.source_of(1)).unwrap();
        assert_eq!(source["message"], "line 1");
    }
}
