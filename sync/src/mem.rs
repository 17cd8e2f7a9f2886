//! [`MemStore`]: an in-memory [`ReplicaStore`] for tests and the simulation (`test-utils`).
//!
//! A document is a grow-only set of opaque changes; a change's hash is the SHA-256 of its
//! bytes and the heads are the sorted set of every change hash. That flattens Automerge's
//! DAG but keeps the contract the protocol relies on: `changes_after(have)` returns exactly
//! the changes whose hash is not in `have`, and merging is a set union, so any delivery order
//! converges.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use sha2::{Digest, Sha256};

use crate::store::{BlobHash, ChangeHash, FeedEntry, FeedSeq, ReplicaStore};

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[derive(Debug, Clone, Default)]
struct Doc {
    changes: BTreeMap<ChangeHash, Vec<u8>>,
    seq: FeedSeq,
    /// The last change when it was a local edit ([`MemStore::edit`]), with the heads before
    /// it; any other write drops it.
    tip: Option<(Vec<ChangeHash>, Vec<u8>)>,
}

/// An in-memory store with a change feed, an epoch and blobs. `Clone` is a backup.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    epoch: u64,
    head: FeedSeq,
    docs: BTreeMap<String, Doc>,
    feed: BTreeMap<FeedSeq, String>,
    blobs: BTreeMap<BlobHash, Vec<u8>>,
    partial: BTreeMap<BlobHash, Vec<u8>>,
}

impl MemStore {
    pub fn new(epoch: u64) -> Self {
        Self {
            epoch,
            ..Self::default()
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// This store restored from a backup: same contents, a fresh epoch.
    pub fn restored(&self, new_epoch: u64) -> Self {
        Self {
            epoch: new_epoch,
            ..self.clone()
        }
    }

    /// Merges changes into a document; it gets a new feed entry if anything was new.
    /// Returns whether anything was new.
    pub fn apply(&mut self, doc_id: &str, changes: &[Vec<u8>]) -> bool {
        let doc = self.docs.entry(doc_id.to_string()).or_default();
        let mut new = false;
        doc.tip = None;
        for c in changes {
            new |= doc.changes.insert(sha256(c), c.clone()).is_none();
        }
        if new {
            self.feed.remove(&doc.seq);
            self.head += 1;
            doc.seq = self.head;
            self.feed.insert(self.head, doc_id.to_string());
        }
        new
    }

    /// A local edit: one new change on a document this store holds, kept as its tip (the
    /// node keeps a local event's change the same way). Returns whether it was new.
    pub fn edit(&mut self, doc_id: &str, change: Vec<u8>) -> bool {
        let base = self.doc_heads(doc_id).ok().flatten().unwrap_or_default();
        let new = self.apply(doc_id, std::slice::from_ref(&change));
        if new
            && !base.is_empty()
            && let Some(doc) = self.docs.get_mut(doc_id)
        {
            doc.tip = Some((base, change));
        }
        new
    }

    /// The document set: id -> heads.
    pub fn summary(&self) -> BTreeMap<String, Vec<ChangeHash>> {
        self.docs
            .iter()
            .map(|(id, d)| (id.clone(), d.changes.keys().copied().collect()))
            .collect()
    }

    pub fn doc_count(&self) -> usize {
        self.docs.len()
    }

    /// Every change of a document, for the shell to look for blob references.
    pub fn changes(&self, doc_id: &str) -> Vec<Vec<u8>> {
        self.docs
            .get(doc_id)
            .map(|d| d.changes.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Stores a whole blob; returns its hash.
    pub fn put_blob(&mut self, bytes: Vec<u8>) -> BlobHash {
        let hash = sha256(&bytes);
        self.blobs.insert(hash, bytes);
        hash
    }

    pub fn blob(&self, hash: &BlobHash) -> Option<&[u8]> {
        self.blobs.get(hash).map(Vec::as_slice)
    }

    /// The hashes of the complete blobs.
    pub fn blob_hashes(&self) -> BTreeSet<BlobHash> {
        self.blobs.keys().copied().collect()
    }

    /// How many bytes of a blob are held: its length when complete, else the partial prefix.
    pub fn blob_have(&self, hash: &BlobHash) -> u64 {
        let held = self.blobs.get(hash).or_else(|| self.partial.get(hash));
        held.map_or(0, |b| b.len() as u64)
    }

    /// Writes a chunk at `offset` (only contiguous growth is kept). When the blob is complete
    /// and its hash matches, it becomes a blob; a mismatch is discarded. Returns whether the
    /// blob is now complete.
    pub fn put_blob_chunk(
        &mut self,
        hash: &BlobHash,
        offset: u64,
        total: u64,
        bytes: &[u8],
    ) -> bool {
        if self.blobs.contains_key(hash) {
            return true;
        }
        let part = self.partial.entry(*hash).or_default();
        if offset == part.len() as u64 {
            part.extend_from_slice(bytes);
        }
        if (part.len() as u64) < total {
            return false;
        }
        let done = self.partial.remove(hash).unwrap_or_default();
        if sha256(&done) == *hash {
            self.blobs.insert(*hash, done);
            true
        } else {
            false
        }
    }
}

impl ReplicaStore for MemStore {
    type Error = Infallible;

    fn feed_since(&self, since: FeedSeq, limit: usize) -> Result<Vec<FeedEntry>, Infallible> {
        Ok(self
            .feed
            .range(since.saturating_add(1)..)
            .take(limit)
            .map(|(&seq, id)| FeedEntry {
                seq,
                doc_id: id.clone(),
            })
            .collect())
    }

    fn feed_head(&self) -> Result<FeedSeq, Infallible> {
        Ok(self.head)
    }

    fn doc_heads(&self, doc_id: &str) -> Result<Option<Vec<ChangeHash>>, Infallible> {
        Ok(self
            .docs
            .get(doc_id)
            .map(|d| d.changes.keys().copied().collect()))
    }

    fn changes_after(&self, doc_id: &str, have: &[ChangeHash]) -> Result<Vec<Vec<u8>>, Infallible> {
        let have: BTreeSet<&ChangeHash> = have.iter().collect();
        Ok(self
            .docs
            .get(doc_id)
            .map(|d| {
                d.changes
                    .iter()
                    .filter(|(h, _)| !have.contains(h))
                    .map(|(_, c)| c.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    // Heads here name every change, so the tip is the set before it plus its own hash.
    fn tip(
        &self,
        doc_id: &str,
        heads: &[ChangeHash],
    ) -> Result<Option<(Vec<ChangeHash>, Vec<u8>)>, Infallible> {
        Ok(self.docs.get(doc_id).and_then(|d| {
            let (base, change) = d.tip.as_ref()?;
            let mut made: Vec<ChangeHash> = base.clone();
            made.push(sha256(change));
            made.sort_unstable();
            let mut heads = heads.to_vec();
            heads.sort_unstable();
            (made == heads).then(|| (base.clone(), change.clone()))
        }))
    }

    fn has_heads(&self, doc_id: &str, heads: &[ChangeHash]) -> Result<bool, Infallible> {
        Ok(match self.docs.get(doc_id) {
            Some(d) => heads.iter().all(|h| d.changes.contains_key(h)),
            None => heads.is_empty(),
        })
    }

    fn blob_len(&self, hash: &BlobHash) -> Result<Option<u64>, Infallible> {
        Ok(self.blobs.get(hash).map(|b| b.len() as u64))
    }

    fn blob_chunk(
        &self,
        hash: &BlobHash,
        offset: u64,
        max: usize,
    ) -> Result<Option<Vec<u8>>, Infallible> {
        Ok(self.blobs.get(hash).and_then(|b| {
            let start = usize::try_from(offset).ok()?;
            let end = start.saturating_add(max).min(b.len());
            b.get(start..end).map(<[u8]>::to_vec)
        }))
    }
}
