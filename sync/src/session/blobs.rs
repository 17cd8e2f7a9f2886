//! Blob transfer: after the documents, one chunk in flight per blob, resumable by offset.
//!
//! The session does not know which blobs a document references (documents are opaque); the
//! shell finds missing ones after applying changes and calls [`super::Session::want_blob`]
//! with the length it already holds, so a transfer cut half-way resumes where it stopped.

use std::collections::{BTreeMap, VecDeque};

use super::{Effect, Output, ProtoError, store_err};
use crate::proto::{MAX_BLOB_CHUNK, Message};
use crate::store::{BlobHash, ReplicaStore};

/// Blobs transferred at once.
const MAX_BLOBS_INFLIGHT: usize = 4;
/// Blobs a session queues before refusing more.
const MAX_BLOBS_QUEUED: usize = 65_536;

#[derive(Debug, Default)]
pub(super) struct Blobs {
    queued: VecDeque<(BlobHash, u64)>,
    /// Blob -> the offset of the chunk asked for.
    inflight: BTreeMap<BlobHash, u64>,
}

impl Blobs {
    pub(super) fn is_idle(&self) -> bool {
        self.queued.is_empty() && self.inflight.is_empty()
    }

    pub(super) fn want(&mut self, hash: BlobHash, offset: u64) -> Result<(), ProtoError> {
        if self.inflight.contains_key(&hash) || self.queued.iter().any(|(h, _)| *h == hash) {
            return Ok(());
        }
        if self.queued.len() >= MAX_BLOBS_QUEUED {
            return Err(ProtoError::BlobQueueFull);
        }
        self.queued.push_back((hash, offset));
        Ok(())
    }

    /// Starts queued transfers; called only once the documents are caught up.
    pub(super) fn pump(&mut self, out: &mut Output) {
        while self.inflight.len() < MAX_BLOBS_INFLIGHT {
            let Some((hash, offset)) = self.queued.pop_front() else {
                return;
            };
            self.inflight.insert(hash, offset);
            out.send.push(Message::BlobWant { hash, offset });
        }
    }

    pub(super) fn on_chunk(
        &mut self,
        hash: BlobHash,
        offset: u64,
        total_len: u64,
        bytes: Vec<u8>,
        out: &mut Output,
    ) -> Result<(), ProtoError> {
        if self.inflight.get(&hash) != Some(&offset) {
            return Ok(()); // not asked for, or a duplicate
        }
        let end = offset
            .checked_add(bytes.len() as u64)
            .filter(|&end| end <= total_len)
            .ok_or(ProtoError::BadBlobChunk(
                "chunk runs past the blob's length",
            ))?;
        if bytes.is_empty() && end < total_len {
            return Err(ProtoError::BadBlobChunk("empty chunk before the end"));
        }
        out.effects.push(Effect::StoreBlobChunk {
            hash,
            offset,
            total_len,
            bytes,
        });
        if end < total_len {
            self.inflight.insert(hash, end);
            out.send.push(Message::BlobWant { hash, offset: end });
        } else {
            self.inflight.remove(&hash);
        }
        Ok(())
    }

    pub(super) fn on_missing(&mut self, hash: BlobHash, out: &mut Output) {
        if self.inflight.remove(&hash).is_some() {
            out.effects.push(Effect::BlobMissing { hash });
        }
    }
}

/// Answers a `BlobWant` with one chunk, or `BlobMissing`.
pub(super) fn serve(
    store: &impl ReplicaStore,
    hash: BlobHash,
    offset: u64,
    out: &mut Output,
) -> Result<(), ProtoError> {
    let total_len = store.blob_len(&hash).map_err(store_err)?;
    let chunk = match total_len {
        Some(total) if offset <= total => store
            .blob_chunk(&hash, offset, MAX_BLOB_CHUNK)
            .map_err(store_err)?
            .map(|bytes| (total, bytes)),
        _ => None,
    };
    out.send.push(match chunk {
        Some((total_len, mut bytes)) => {
            bytes.truncate(MAX_BLOB_CHUNK);
            Message::BlobChunk {
                hash,
                offset,
                total_len,
                bytes,
            }
        }
        None => Message::BlobMissing { hash },
    });
    Ok(())
}
