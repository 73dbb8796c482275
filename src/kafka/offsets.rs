//! The offset tracker of one partition task: which offsets were read, which
//! were handed to the sink in which chunk, which chunks Elasticsearch
//! acknowledged, and therefore which offset may be stored for the group to
//! commit.
//!
//! It is pure and synchronous (no I/O, no clock), so its rules are tested
//! alone, with random interleavings:
//!
//! * the stored offset is the end of the *contiguous acknowledged prefix*:
//!   it never passes a document that is read and not acknowledged, however
//!   out of order acknowledgements arrive;
//! * it only moves forward;
//! * once the assignment is revoked ([`OffsetTracker::revoke`]) nothing is
//!   ever handed out for storing again — the next owner starts from what
//!   was stored before the hand-over;
//! * the resume point is the first offset read and not acknowledged: where
//!   the next reader of the same queue must seek back to.
//!
//! Offsets may have gaps (compacted topics, transaction markers): chunks
//! are contiguous in *read order*, not in offset arithmetic.
//!
//! Each span also keeps the time of its first record (its Kafka timestamp,
//! or when it was read if it has none): one `i64` per chunk, so the lag in
//! seconds — the age of the first record not yet acknowledged — costs
//! nothing per record.

use std::collections::VecDeque;

use crate::sink::chunk::ChunkId;

/// An offset the task may store now: the next offset to read (Kafka's
/// convention), with the assignment generation it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOffset {
    /// The offset after the contiguous acknowledged prefix.
    pub next: i64,
    /// The generation of the assignment the tracker serves.
    pub generation: u64,
}

#[derive(Debug, Clone)]
struct Span {
    id: ChunkId,
    first: i64,
    last: i64,
    /// The time of the span's first record, in Unix milliseconds.
    first_time_ms: Option<i64>,
    acked: bool,
}

/// Offsets read since the last seal.
#[derive(Debug, Clone, Copy)]
struct Open {
    first: i64,
    last: i64,
    first_time_ms: Option<i64>,
}

/// Read, sent, acknowledged and stored offsets of one task.
#[derive(Debug, Clone)]
pub struct OffsetTracker {
    generation: u64,
    /// Sealed chunks not yet popped, in read order.
    pending: VecDeque<Span>,
    /// Offsets read since the last seal.
    open: Option<Open>,
    /// The last offset read (to refuse going backwards).
    last_read: Option<i64>,
    /// The first offset this tracker read.
    first_read: Option<i64>,
    /// The offset handed out for storing last (next offset to read).
    stored: Option<i64>,
    next_id: u64,
    revoked: bool,
}

impl OffsetTracker {
    /// A tracker for the assignment with this generation.
    pub fn new(generation: u64) -> Self {
        Self {
            generation,
            pending: VecDeque::new(),
            open: None,
            last_read: None,
            first_read: None,
            stored: None,
            next_id: 0,
            revoked: false,
        }
    }

    /// The generation of the assignment this tracker serves.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records a message read, with no time for the lag. Offsets must
    /// increase; a message at or before the last one read (a broker or
    /// client anomaly) is refused with `false` and must not be sent.
    pub fn read(&mut self, offset: i64) -> bool {
        self.read_at(offset, None)
    }

    /// [`OffsetTracker::read`], with the record's time in Unix
    /// milliseconds (its Kafka timestamp, or when it was read): kept only
    /// when it opens a span.
    pub fn read_at(&mut self, offset: i64, time_ms: Option<i64>) -> bool {
        if offset < 0 || self.last_read.is_some_and(|last| offset <= last) {
            return false;
        }
        self.last_read = Some(offset);
        self.first_read.get_or_insert(offset);
        self.open = Some(match self.open {
            Some(open) => Open {
                last: offset,
                ..open
            },
            None => Open {
                first: offset,
                last: offset,
                first_time_ms: time_ms,
            },
        });
        true
    }

    /// Whether messages were read since the last seal.
    pub fn has_open(&self) -> bool {
        self.open.is_some()
    }

    /// Closes the messages read since the last seal into a chunk about to
    /// be handed to the sink. `None` when nothing was read since.
    pub fn seal(&mut self) -> Option<ChunkId> {
        let open = self.open.take()?;
        let id = ChunkId::new(self.next_id);
        self.next_id += 1;
        self.pending.push_back(Span {
            id,
            first: open.first,
            last: open.last,
            first_time_ms: open.first_time_ms,
            acked: false,
        });
        Some(id)
    }

    /// Records the acknowledgement of a chunk (every document stored or
    /// dead-lettered). Returns the offset to store when the contiguous
    /// acknowledged prefix grew and the assignment was not revoked.
    pub fn ack(&mut self, id: ChunkId) -> Option<StoreOffset> {
        let span = self.pending.iter_mut().find(|s| s.id == id)?;
        span.acked = true;
        let mut advanced = None;
        while self.pending.front().is_some_and(|s| s.acked) {
            if let Some(span) = self.pending.pop_front() {
                advanced = Some(span.last + 1);
            }
        }
        let next = advanced?;
        if self.revoked {
            return None;
        }
        self.stored = Some(next);
        Some(StoreOffset {
            next,
            generation: self.generation,
        })
    }

    /// The partition was taken away: nothing may be stored from now on.
    pub fn revoke(&mut self) {
        self.revoked = true;
    }

    /// Whether [`OffsetTracker::revoke`] was called.
    pub fn is_revoked(&self) -> bool {
        self.revoked
    }

    /// The offset last handed out for storing.
    pub fn stored(&self) -> Option<i64> {
        self.stored
    }

    /// The first offset this tracker read.
    pub fn first_read(&self) -> Option<i64> {
        self.first_read
    }

    /// Chunks handed to the sink and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.pending.iter().filter(|s| !s.acked).count()
    }

    /// Whether every message read was acknowledged (nothing open or
    /// pending).
    pub fn is_settled(&self) -> bool {
        self.open.is_none() && self.pending.is_empty()
    }

    /// The first offset read and not acknowledged: where the next reader of
    /// the same queue must seek back to. `None` when everything read was
    /// acknowledged (the queue position is already right).
    pub fn resume_point(&self) -> Option<i64> {
        self.pending
            .front()
            .map(|s| s.first)
            .or(self.open.map(|o| o.first))
    }

    /// The time (Unix milliseconds) of the first record read and not
    /// acknowledged — the record at [`OffsetTracker::resume_point`]: a
    /// span's head is never acknowledged while it is in `pending`. `None`
    /// when everything read was acknowledged, or when that record was read
    /// without a time.
    pub fn oldest_unacknowledged_ms(&self) -> Option<i64> {
        match self.pending.front() {
            Some(span) => span.first_time_ms,
            None => self.open.and_then(|o| o.first_time_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stores_only_the_contiguous_acknowledged_prefix() {
        let mut t = OffsetTracker::new(7);
        for o in 10..13 {
            assert!(t.read(o));
        }
        let a = t.seal().unwrap();
        assert!(t.read(13));
        let b = t.seal().unwrap();
        assert!(t.read(20)); // a gap: compacted away
        let c = t.seal().unwrap();
        assert_eq!(t.ack(b), None, "b is acknowledged but a is not");
        assert_eq!(t.resume_point(), Some(10));
        assert_eq!(
            t.ack(a),
            Some(StoreOffset {
                next: 14,
                generation: 7
            })
        );
        assert_eq!(t.resume_point(), Some(20));
        assert_eq!(t.ack(c).map(|s| s.next), Some(21));
        assert!(t.is_settled());
        assert_eq!(t.resume_point(), None);
        assert_eq!(t.ack(c), None, "a second ack is ignored");
    }

    #[test]
    fn nothing_is_stored_after_revoke() {
        let mut t = OffsetTracker::new(1);
        t.read(0);
        let a = t.seal().unwrap();
        t.revoke();
        assert_eq!(t.ack(a), None);
        assert_eq!(t.stored(), None);
    }

    #[test]
    fn offsets_going_backwards_are_refused() {
        let mut t = OffsetTracker::new(1);
        assert!(t.read(5));
        assert!(!t.read(5));
        assert!(!t.read(4));
        assert!(!t.read(-1));
        assert_eq!(t.seal(), Some(ChunkId::new(0)));
        assert_eq!(t.seal(), None);
    }

    #[test]
    fn oldest_unacknowledged_time_is_that_of_the_resume_point() {
        let mut t = OffsetTracker::new(1);
        assert_eq!(t.oldest_unacknowledged_ms(), None);
        assert!(t.read_at(0, Some(1_000)));
        assert!(t.read_at(1, Some(1_500)));
        assert_eq!(t.oldest_unacknowledged_ms(), Some(1_000), "open span");
        let a = t.seal().unwrap();
        assert!(t.read_at(2, Some(2_000)));
        let b = t.seal().unwrap();
        assert!(t.read_at(3, Some(3_000)));
        assert_eq!(t.ack(b), None);
        assert_eq!(
            t.oldest_unacknowledged_ms(),
            Some(1_000),
            "b acknowledged out of order: a still holds the position"
        );
        assert!(t.ack(a).is_some());
        assert_eq!(
            t.oldest_unacknowledged_ms(),
            Some(3_000),
            "only the open read is left"
        );
        let c = t.seal().unwrap();
        t.ack(c);
        assert_eq!(t.oldest_unacknowledged_ms(), None, "caught up");
    }

    #[test]
    fn resume_point_includes_unsealed_reads() {
        let mut t = OffsetTracker::new(1);
        assert_eq!(t.resume_point(), None);
        t.read(3);
        assert_eq!(t.resume_point(), Some(3));
        assert!(t.has_open());
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Read this many messages (with a gap of `gap` before the first).
        Read {
            count: u8,
            gap: u8,
        },
        Seal,
        /// Acknowledge the pending chunk at this position (modulo).
        Ack(u8),
        Revoke,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u8..20, 0u8..3).prop_map(|(count, gap)| Op::Read { count, gap }),
            3 => Just(Op::Seal),
            4 => any::<u8>().prop_map(Op::Ack),
            1 => Just(Op::Revoke),
        ]
    }

    proptest! {
        /// Random interleavings of reads, seals, out-of-order acks and a
        /// revoke at any point: the stored offset never passes a document
        /// read and not acknowledged, only moves forward, never moves after
        /// the revoke, and the resume point is the first unacknowledged
        /// offset, whose time is the lag's.
        #[test]
        fn stored_offset_never_passes_an_unacknowledged_document(ops in prop::collection::vec(op(), 1..200)) {
            let mut t = OffsetTracker::new(3);
            let mut next_offset = 0i64;
            // Model: every offset read, and whether it is acknowledged.
            let mut read: Vec<i64> = Vec::new();
            let mut acked: std::collections::BTreeSet<i64> = Default::default();
            let mut unsealed: Vec<i64> = Vec::new();
            let mut chunks: Vec<(ChunkId, Vec<i64>)> = Vec::new();
            let mut stored: Option<i64> = None;
            let mut revoked = false;
            for op in ops {
                match op {
                    Op::Read { count, gap } => {
                        next_offset += i64::from(gap);
                        for _ in 0..count {
                            prop_assert!(t.read_at(next_offset, Some(next_offset * 10)));
                            read.push(next_offset);
                            unsealed.push(next_offset);
                            next_offset += 1;
                        }
                    }
                    Op::Seal => {
                        let id = t.seal();
                        prop_assert_eq!(id.is_some(), !unsealed.is_empty());
                        if let Some(id) = id {
                            chunks.push((id, std::mem::take(&mut unsealed)));
                        }
                    }
                    Op::Ack(i) => {
                        if chunks.is_empty() {
                            continue;
                        }
                        let (id, offsets) = chunks.remove(usize::from(i) % chunks.len());
                        acked.extend(offsets);
                        let result = t.ack(id);
                        if revoked {
                            prop_assert_eq!(result, None, "stored after revoke");
                        }
                        if let Some(store) = result {
                            prop_assert_eq!(store.generation, 3);
                            prop_assert!(stored.is_none_or(|s| store.next > s), "moved backwards");
                            // Every offset read below the stored one is acknowledged.
                            for o in read.iter().filter(|o| **o < store.next) {
                                prop_assert!(acked.contains(o), "stored {} past unacknowledged {}", store.next, o);
                            }
                            stored = Some(store.next);
                        }
                    }
                    Op::Revoke => {
                        t.revoke();
                        revoked = true;
                    }
                }
                prop_assert_eq!(t.stored(), stored);
                let first_unacked = read.iter().copied().find(|o| !acked.contains(o));
                prop_assert_eq!(t.resume_point(), first_unacked);
                prop_assert_eq!(t.oldest_unacknowledged_ms(), first_unacked.map(|o| o * 10));
            }
        }
    }
}
