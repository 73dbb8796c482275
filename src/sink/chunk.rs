//! A chunk: a contiguous run of one partition's documents, encoded as
//! `_bulk` lines — the unit a partition task hands to the sink and gets
//! acknowledged.
//!
//! The sink packs chunks of many partitions into one request, and answers
//! each chunk separately once every document of it is stored or
//! dead-lettered. A chunk carries the memory it holds (a [`Reservation`]
//! of the process budget, given back when the chunk is dropped) and the
//! raw records, so that a rejected document can be dead-lettered unchanged.
//! When its partition task gives up waiting (drain deadline, revoke), the
//! answer channel closes and the sink abandons the chunk's remaining
//! documents at its next attempt instead of retrying them for nobody.

use std::ops::Range;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::memory::Reservation;
use crate::topic::TopicPartition;

/// Identifies a chunk among its partition task's chunks (the offset
/// tracker hands them out, in read order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(u64);

impl ChunkId {
    /// The `n`th chunk of a task.
    pub fn new(n: u64) -> Self {
        Self(n)
    }
}

/// What the sink reports about a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkOutcome {
    /// Documents stored.
    pub stored: usize,
    /// Documents rejected for good and sent to the dead-letter destination
    /// (or, refused there too, logged).
    pub dead_lettered: usize,
}

/// Where one document sits in a chunk.
#[derive(Debug, Clone)]
struct DocEntry {
    offset: i64,
    /// Its two lines in the body.
    lines: Range<u32>,
    key: Option<Range<u32>>,
    value: Option<Range<u32>>,
    timestamp_ms: Option<i64>,
}

/// A record as it was read from Kafka, for dead-lettering it.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its value.
    pub value: Option<&'a [u8]>,
    /// Its Kafka timestamp (ms since the epoch), when it has one.
    pub timestamp_ms: Option<i64>,
}

/// A chunk being filled by its partition task.
#[derive(Debug)]
pub struct ChunkBuilder {
    partition: TopicPartition,
    /// Capacities to allocate at the first document (documents, body bytes,
    /// raw bytes; from the last chunk): an empty builder holds no memory.
    hint: (usize, usize, usize),
    body: Vec<u8>,
    docs: Vec<DocEntry>,
    raw: Vec<u8>,
    oldest_timestamp_ms: Option<i64>,
    started: Option<Instant>,
}

impl ChunkBuilder {
    /// An empty chunk of `partition`, to be sized for `documents` and
    /// `bytes` when its first document is written.
    pub fn new(partition: TopicPartition, documents: usize, bytes: usize) -> Self {
        Self::sized(partition, (documents, bytes, bytes / 2))
    }

    /// An empty chunk sized like a previous one ([`ChunkBuilder::sizes`]).
    pub fn sized(partition: TopicPartition, hint: (usize, usize, usize)) -> Self {
        Self {
            partition,
            hint,
            body: Vec::new(),
            docs: Vec::new(),
            raw: Vec::new(),
            oldest_timestamp_ms: None,
            started: None,
        }
    }

    /// The body being written: the encoder appends one document's two lines
    /// and then calls [`ChunkBuilder::commit_document`].
    pub fn body_mut(&mut self) -> &mut Vec<u8> {
        if self.body.capacity() == 0 {
            self.body.reserve(self.hint.1);
            self.docs.reserve(self.hint.0);
            self.raw.reserve(self.hint.2);
        }
        &mut self.body
    }

    /// Bytes the first document will allocate (the hinted capacities; 0
    /// once allocated).
    pub fn pending_allocation(&self) -> usize {
        if self.body.capacity() == 0 {
            self.hint.1 + self.hint.2 + self.hint.0 * std::mem::size_of::<DocEntry>()
        } else {
            0
        }
    }

    /// Heap bytes the chunk holds (allocated capacity, not length): what it
    /// must have reserved from the memory budget.
    pub fn footprint(&self) -> usize {
        self.body.capacity()
            + self.raw.capacity()
            + self.docs.capacity() * std::mem::size_of::<DocEntry>()
    }

    /// Where the next document's lines start.
    pub fn mark(&self) -> usize {
        self.body.len()
    }

    /// Forgets whatever was written since `mark` (an encoding error).
    pub fn rollback(&mut self, mark: usize) {
        self.body.truncate(mark);
    }

    /// Records the document whose lines were written since `mark`, with the
    /// raw record.
    pub fn commit_document(&mut self, mark: usize, record: RawRecord<'_>) {
        let mut keep = |bytes: Option<&[u8]>| {
            bytes.map(|b| {
                let start = self.raw.len() as u32;
                self.raw.extend_from_slice(b);
                start..self.raw.len() as u32
            })
        };
        let key = keep(record.key);
        let value = keep(record.value);
        self.docs.push(DocEntry {
            offset: record.offset,
            lines: mark as u32..self.body.len() as u32,
            key,
            value,
            timestamp_ms: record.timestamp_ms,
        });
        if let Some(ts) = record.timestamp_ms {
            self.oldest_timestamp_ms = Some(self.oldest_timestamp_ms.map_or(ts, |o| o.min(ts)));
        }
        self.started.get_or_insert_with(Instant::now);
    }

    /// Sizes for the next chunk of the same partition: what this one holds,
    /// an eighth more (the next burst may be a little larger), so that it
    /// rarely reallocates; capped by `max_bytes`.
    pub fn sizes(&self, max_bytes: usize) -> (usize, usize, usize) {
        let more = |n: usize| n + n / 8;
        let cap = max_bytes + max_bytes / 8;
        (
            more(self.docs.len()).max(16),
            more(self.body.len()).clamp(4096, cap),
            more(self.raw.len()).min(cap),
        )
    }

    /// Documents written.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether no document was written.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Bytes of the encoded body.
    pub fn bytes(&self) -> usize {
        self.body.len()
    }

    /// Seals the chunk for the sink: `id` from the offset tracker, the
    /// memory it holds, the channel its outcome goes to, and whether its
    /// partition is draining (the sink sends it without lingering).
    pub fn seal(
        self,
        id: ChunkId,
        reservation: Reservation,
        answer: oneshot::Sender<ChunkOutcome>,
        urgent: bool,
    ) -> Chunk {
        Chunk {
            partition: self.partition,
            id,
            body: Bytes::from(self.body),
            docs: self.docs,
            raw: self.raw,
            oldest_timestamp_ms: self.oldest_timestamp_ms,
            created: self.started.unwrap_or_else(Instant::now),
            urgent,
            answer: Some(answer),
            _reservation: reservation,
        }
    }
}

/// A sealed chunk, owned by the sink until it is answered.
#[derive(Debug)]
pub struct Chunk {
    partition: TopicPartition,
    id: ChunkId,
    body: Bytes,
    docs: Vec<DocEntry>,
    raw: Vec<u8>,
    oldest_timestamp_ms: Option<i64>,
    created: Instant,
    urgent: bool,
    answer: Option<oneshot::Sender<ChunkOutcome>>,
    _reservation: Reservation,
}

impl Chunk {
    /// The partition of every document in the chunk.
    pub fn partition(&self) -> &TopicPartition {
        &self.partition
    }

    /// Its id in the partition's offset tracker.
    pub fn id(&self) -> ChunkId {
        self.id
    }

    /// Documents in the chunk.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether it holds no document (everything read was dropped by a
    /// transform: it is answered at once).
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Bytes of the encoded body.
    pub fn bytes(&self) -> usize {
        self.body.len()
    }

    /// When its first document was written.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// Whether its partition is draining.
    pub fn urgent(&self) -> bool {
        self.urgent
    }

    /// The Kafka timestamp of its oldest record.
    pub fn oldest_timestamp_ms(&self) -> Option<i64> {
        self.oldest_timestamp_ms
    }

    /// The whole body (cheap to clone).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Replaces the body by the same bytes held elsewhere (a slice of the
    /// request body the chunk was copied into), freeing its own copy.
    pub fn share_body(&mut self, body: Bytes) {
        debug_assert_eq!(body, self.body);
        self.body = body;
    }

    /// The two lines of the document at `position`.
    pub fn lines(&self, position: usize) -> &[u8] {
        let r = &self.docs[position].lines;
        &self.body[r.start as usize..r.end as usize]
    }

    /// The offset of the document at `position`.
    pub fn offset(&self, position: usize) -> i64 {
        self.docs[position].offset
    }

    /// The record at `position` as read from Kafka.
    pub fn raw(&self, position: usize) -> RawRecord<'_> {
        let doc = &self.docs[position];
        let slice = |r: &Option<Range<u32>>| {
            r.as_ref()
                .map(|r| &self.raw[r.start as usize..r.end as usize])
        };
        RawRecord {
            offset: doc.offset,
            key: slice(&doc.key),
            value: slice(&doc.value),
            timestamp_ms: doc.timestamp_ms,
        }
    }

    /// Whether its partition task stopped waiting for the answer.
    pub fn is_abandoned(&self) -> bool {
        self.answer.as_ref().is_none_or(|a| a.is_closed())
    }

    /// Answers the partition task (once) and frees the chunk's memory.
    pub fn answer(mut self, outcome: ChunkOutcome) {
        if let Some(answer) = self.answer.take() {
            let _ = answer.send(outcome);
        }
    }
}
