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
//! documents at its next attempt, or its dead letters still waiting for
//! their destination, instead of retrying them for nobody.

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
    /// The sink dropped the chunk without settling it (it stopped, or the
    /// task driving its request failed): nothing of it is stored for sure,
    /// and its records must be read again.
    pub lost: bool,
}

/// Where one document sits in a chunk.
#[derive(Debug, Clone)]
struct DocEntry {
    offset: i64,
    /// Its place among the documents of its record, when the record makes
    /// several (`format = "otlp_json"`).
    part: Option<u32>,
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
    /// Records refused before indexing (by shaping): their positions among
    /// the documents and why. They are dead-lettered, never sent.
    refused: Vec<(u32, Box<str>)>,
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
            refused: Vec::new(),
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
            + self.refused.iter().map(|(_, r)| r.len()).sum::<usize>()
    }

    /// Forgets the capacities learnt from the previous chunk, so that the
    /// first document allocates only what it needs (the memory budget is
    /// too tight for the usual pre-allocation).
    pub fn forget_sizes(&mut self) {
        if self.body.capacity() == 0 {
            self.hint = (0, 0, 0);
        }
    }

    /// Where the next document's lines start.
    pub fn mark(&self) -> usize {
        self.body.len()
    }

    /// Forgets whatever was written since `mark` (an encoding error).
    pub fn rollback(&mut self, mark: usize) {
        self.body.truncate(mark);
    }

    /// Records a record that must not be indexed (its value does not parse,
    /// its transform failed under `transform_failure = "dead_letter"`): it
    /// takes a place in the chunk with no lines, and the sink dead-letters
    /// it with `reason` before the chunk is answered — so its offset
    /// advances only once the dead letter is delivered.
    pub fn refuse(&mut self, record: RawRecord<'_>, reason: String) {
        let mark = self.mark();
        let position = self.docs.len() as u32;
        self.commit_document(mark, record);
        self.refused.push((position, reason.into_boxed_str()));
    }

    /// Records the document whose lines were written since `mark`, with the
    /// raw record.
    pub fn commit_document(&mut self, mark: usize, record: RawRecord<'_>) {
        self.commit(mark, record, None);
    }

    /// Records the `part`th document of a record that makes several: the
    /// raw record is kept once, with its first part (`part` 0), and shared
    /// by the others, which must follow it.
    pub fn commit_part(&mut self, mark: usize, record: RawRecord<'_>, part: u32) {
        self.commit(mark, record, Some(part));
    }

    fn commit(&mut self, mark: usize, record: RawRecord<'_>, part: Option<u32>) {
        let shared = match (part, self.docs.last()) {
            (Some(p), Some(previous)) if p > 0 && previous.offset == record.offset => {
                Some((previous.key.clone(), previous.value.clone()))
            }
            _ => None,
        };
        let (key, value) = match shared {
            Some(ranges) => ranges,
            None => {
                let mut keep = |bytes: Option<&[u8]>| {
                    bytes.map(|b| {
                        let start = self.raw.len() as u32;
                        self.raw.extend_from_slice(b);
                        start..self.raw.len() as u32
                    })
                };
                let key = keep(record.key);
                (key, keep(record.value))
            }
        };
        self.docs.push(DocEntry {
            offset: record.offset,
            part,
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

    /// [`ChunkBuilder::sizes`], scaled down so that the first allocation
    /// of the next chunk stays within `cap` bytes.
    pub fn sizes_within(&self, max_bytes: usize, cap: usize) -> (usize, usize, usize) {
        let (docs, body, raw) = self.sizes(max_bytes);
        let entry = std::mem::size_of::<DocEntry>();
        let total = docs * entry + body + raw;
        if total <= cap {
            return (docs, body, raw);
        }
        let scale = |n: usize| (n as u128 * cap as u128 / total as u128) as usize;
        (scale(docs), scale(body), scale(raw))
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
            answer: Some(Answer(Some(answer))),
            refused: self.refused,
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
    answer: Option<Answer>,
    refused: Vec<(u32, Box<str>)>,
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

    /// Documents in the chunk, refused ones included.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Documents to send to Elasticsearch (those not refused by shaping).
    pub fn sendable(&self) -> usize {
        self.docs.len() - self.refused.len()
    }

    /// The documents refused by shaping: their positions, and why.
    pub fn refusals(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        self.refused.iter().map(|(p, r)| (*p, &**r))
    }

    /// Whether the document at `position` was refused by shaping.
    pub fn is_refused(&self, position: u32) -> bool {
        self.refused.iter().any(|(p, _)| *p == position)
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

    /// The place of the document at `position` among its record's
    /// documents, when its record makes several.
    pub fn part(&self, position: usize) -> Option<u32> {
        self.docs[position].part
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
        self.answer.as_ref().is_none_or(Answer::is_closed)
    }

    /// Answers the partition task (once) and frees the chunk's memory.
    pub fn answer(mut self, outcome: ChunkOutcome) {
        if let Some(answer) = self.answer.take() {
            answer.send(outcome);
        }
    }

    /// Takes the answer out, to wait for the task to stop waiting while the
    /// chunk is still needed (its dead letters are being delivered). The
    /// chunk counts as abandoned from then on.
    pub fn take_answer(&mut self) -> Option<Answer> {
        self.answer.take()
    }
}

/// Where a chunk's outcome goes: its partition task.
///
/// Dropped without an answer (the sink stopped, or the task driving its
/// request panicked), it answers "lost" on its way out: its partition task
/// never waits for an answer that cannot come.
#[derive(Debug)]
pub struct Answer(Option<oneshot::Sender<ChunkOutcome>>);

impl Answer {
    /// Whether the partition task stopped waiting.
    pub fn is_closed(&self) -> bool {
        self.0.as_ref().is_none_or(oneshot::Sender::is_closed)
    }

    /// Resolves when the partition task stops waiting (drain deadline,
    /// revoke, the task ended).
    pub async fn closed(&mut self) {
        if let Some(sender) = &mut self.0 {
            sender.closed().await;
        }
    }

    /// Sends the outcome.
    pub fn send(mut self, outcome: ChunkOutcome) {
        if let Some(sender) = self.0.take() {
            // The task gone means nobody waits for the answer.
            let _ = sender.send(outcome);
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send(ChunkOutcome {
                lost: true,
                ..ChunkOutcome::default()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::gauge::Gauge;

    use super::*;
    use crate::memory::MemoryBudget;

    fn record(offset: i64, value: &[u8]) -> RawRecord<'_> {
        RawRecord {
            offset,
            key: None,
            value: Some(value),
            timestamp_ms: None,
        }
    }

    fn sealed(builder: ChunkBuilder) -> (Chunk, oneshot::Receiver<ChunkOutcome>) {
        let budget = MemoryBudget::new(1 << 20, Gauge::default(), &Gauge::default());
        let (answer, receive) = oneshot::channel();
        (
            builder.seal(ChunkId::new(0), budget.empty(), answer, false),
            receive,
        )
    }

    #[test]
    fn refused_records_take_a_place_but_are_never_sent() {
        let mut b = ChunkBuilder::new(TopicPartition::new("t", 0), 4, 1024);
        let mark = b.mark();
        b.body_mut().extend_from_slice(b"{\"index\":{}}\n{}\n");
        b.commit_document(mark, record(7, b"a"));
        b.refuse(record(8, b"not otlp"), "does not parse".into());
        let (chunk, _receive) = sealed(b);
        assert_eq!(chunk.len(), 2);
        assert_eq!(chunk.sendable(), 1);
        assert!(chunk.is_refused(1) && !chunk.is_refused(0));
        assert_eq!(
            chunk.refusals().collect::<Vec<_>>(),
            [(1, "does not parse")]
        );
        assert_eq!(chunk.raw(1).value, Some(&b"not otlp"[..]));
        let mut request = crate::sink::request::Request::new();
        request.push(chunk);
        assert_eq!(request.documents(), 1);
        assert_eq!(request.all_documents().len(), 1);
    }

    #[test]
    fn parts_of_a_record_share_its_raw_copy_and_carry_their_ids() {
        let mut b = ChunkBuilder::new(TopicPartition::new("t", 3), 4, 1024);
        for (offset, part) in [(7, 0), (7, 1), (8, 0)] {
            let mark = b.mark();
            b.body_mut().extend_from_slice(b"{}\n{}\n");
            b.commit_part(mark, record(offset, b"request"), part);
        }
        assert_eq!(b.raw.len(), 2 * "request".len(), "one copy per record");
        let (chunk, _receive) = sealed(b);
        assert_eq!(chunk.raw(1).value, Some(&b"request"[..]));
        assert_eq!((chunk.offset(1), chunk.part(1)), (7, Some(1)));
        let mut request = crate::sink::request::Request::new();
        request.push(chunk);
        let doc = |d| crate::sink::request::DocRef { chunk: 0, doc: d };
        assert!(request.has_id(doc(1), "t-3-7-1"));
        assert!(!request.has_id(doc(1), "t-3-7"));
        assert!(!request.has_id(doc(1), "t-3-7-0"));
        assert!(!request.has_id(doc(1), "t-3-71"));
        assert!(request.has_id(doc(2), "t-3-8-0"));
    }

    #[tokio::test]
    async fn a_chunk_dropped_unanswered_answers_lost() {
        let mut b = ChunkBuilder::new(TopicPartition::new("t", 0), 4, 1024);
        b.refuse(record(1, b"x"), "r".into());
        let (chunk, receive) = sealed(b);
        drop(chunk);
        assert!(receive.await.expect("an answer").lost);
        let (chunk, receive) = sealed(ChunkBuilder::new(TopicPartition::new("t", 0), 4, 1024));
        chunk.answer(ChunkOutcome {
            stored: 3,
            ..ChunkOutcome::default()
        });
        let outcome = receive.await.expect("an answer");
        assert!(!outcome.lost);
        assert_eq!(outcome.stored, 3);
    }

    #[test]
    fn the_next_chunks_first_allocation_stays_within_its_cap() {
        let mut b = ChunkBuilder::new(TopicPartition::new("t", 0), 4, 1024);
        for i in 0..500 {
            let mark = b.mark();
            b.body_mut().extend_from_slice(&[b'x'; 2000]);
            b.commit_document(mark, record(i, &[b'y'; 2000]));
        }
        let cap = 256 << 10;
        let sizes = b.sizes_within(1 << 20, cap);
        let next = ChunkBuilder::sized(TopicPartition::new("t", 0), sizes);
        assert!(next.pending_allocation() <= cap, "{sizes:?}");
        assert!(next.pending_allocation() > cap / 2, "{sizes:?}");
        let mut tight = ChunkBuilder::sized(TopicPartition::new("t", 0), sizes);
        tight.forget_sizes();
        assert_eq!(tight.pending_allocation(), 0);
    }
}
