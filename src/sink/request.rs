//! Building `_bulk` request bodies from chunks of many partitions, and
//! keeping track of which chunk and document each line of a request is.
//!
//! The first attempt of a request sends every chunk's body back to back
//! (one copy into one `Bytes`); a retry that carries only some documents
//! (items to retry, or a request halved after a 413) copies just their
//! lines. A chunk leaves the request as soon as all of its documents are
//! settled, so its partition hears back without waiting for the others.

use bytes::{BufMut, Bytes, BytesMut};

use super::chunk::Chunk;

/// One document of a request: its chunk and its position in the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocRef {
    /// Index of the chunk in the request.
    pub chunk: u32,
    /// Position of the document in the chunk.
    pub doc: u32,
}

/// Chunks sent together.
#[derive(Debug, Default)]
pub struct Request {
    chunks: Vec<Option<Chunk>>,
    documents: usize,
    bytes: usize,
}

impl Request {
    /// An empty request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk.
    pub fn push(&mut self, chunk: Chunk) {
        self.documents += chunk.sendable();
        self.bytes += chunk.bytes();
        self.chunks.push(Some(chunk));
    }

    /// Documents in the request.
    pub fn documents(&self) -> usize {
        self.documents
    }

    /// Bytes of its body.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether it holds no chunk.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Whether a chunk of a draining partition is in it.
    pub fn is_urgent(&self) -> bool {
        self.chunks.iter().flatten().any(Chunk::urgent)
    }

    /// Every document, in order.
    pub fn all_documents(&self) -> Vec<DocRef> {
        let mut refs = Vec::with_capacity(self.documents);
        for (c, chunk) in self.chunks.iter().enumerate() {
            if let Some(chunk) = chunk {
                refs.extend(
                    (0..chunk.len() as u32)
                        .filter(|&d| !chunk.is_refused(d))
                        .map(|d| DocRef {
                            chunk: c as u32,
                            doc: d,
                        }),
                );
            }
        }
        refs
    }

    /// The chunk of a document, while it is in the request.
    pub fn chunk(&self, index: u32) -> Option<&Chunk> {
        self.chunks.get(index as usize).and_then(Option::as_ref)
    }

    /// Chunk indices still in the request.
    pub fn chunk_indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .map(|(i, _)| i as u32)
    }

    /// Takes a chunk out (to answer it).
    pub fn take(&mut self, index: u32) -> Option<Chunk> {
        self.chunks.get_mut(index as usize).and_then(Option::take)
    }

    /// The body carrying `docs`: whole chunks back to back when `docs` is
    /// the request's every document in order, else their lines. After the
    /// first, whole body the chunks share it instead of keeping their own
    /// copies, so a request in flight holds its documents once.
    pub fn body(&mut self, docs: &[DocRef]) -> Bytes {
        // `docs` never repeats a document and keeps the request's order, so
        // all of them with every chunk still present is the whole request.
        let whole = docs.len() == self.documents && self.chunks.iter().all(Option::is_some);
        if whole {
            if let [Some(only)] = self.chunks.as_slice() {
                return only.body().clone();
            }
            let mut body = BytesMut::with_capacity(self.bytes);
            for chunk in self.chunks.iter().flatten() {
                body.put_slice(chunk.body());
            }
            let body = body.freeze();
            let mut start = 0;
            for chunk in self.chunks.iter_mut().flatten() {
                let end = start + chunk.bytes();
                chunk.share_body(body.slice(start..end));
                start = end;
            }
            return body;
        }
        let mut body = BytesMut::new();
        for d in docs {
            if let Some(chunk) = self.chunk(d.chunk) {
                body.put_slice(chunk.lines(d.doc as usize));
            }
        }
        body.freeze()
    }

    /// Whether `id` is the `_id` of document `d`.
    pub fn has_id(&self, d: DocRef, id: &str) -> bool {
        let Some(chunk) = self.chunk(d.chunk) else {
            return false;
        };
        let tp = chunk.partition();
        let offset = chunk.offset(d.doc as usize);
        // `<topic>-<partition>-<offset>[-<part>]`, compared without
        // formatting it.
        let mut rest = id;
        for part in [tp.topic.as_ref(), itoa::Buffer::new().format(tp.partition)] {
            match rest.strip_prefix(part).and_then(|r| r.strip_prefix('-')) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        match chunk.part(d.doc as usize) {
            None => rest == itoa::Buffer::new().format(offset),
            Some(part) => rest
                .strip_prefix(itoa::Buffer::new().format(offset))
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|r| r == itoa::Buffer::new().format(part)),
        }
    }
}
