//! The messages of `yiciban/1` and their binary codec.
//!
//! A session exchanges these messages over one ordered stream (a QUIC stream in the node,
//! an in-memory queue in the simulation); each encoded message is the payload of one
//! [`crate::frame::FrameKind::Message`] frame.
//!
//! The flow, per direction (both sides run it at once, each pulling the other's feed):
//!
//! 1. `Hello` carries the cursor the sender holds for the receiver's feed: `(epoch, seq)`.
//!    A sender that knows how far the receiver acknowledged its feed last time says so in
//!    its hello ([`EarlyOffer`]) and sends its offers right behind it, without waiting for
//!    the receiver's hello: a reconnection costs no round trip before the first offer.
//! 2. The feed owner walks its feed from that cursor and sends `Offer` batches
//!    (`doc_id, seq, heads`), then `FeedEnd` when it has caught up. An entry whose last
//!    change the owner keeps at hand (a local edit on top of what it held, or a new
//!    document's first change: its tip) carries that change and the heads it was made on
//!    ([`OfferTip`]); a puller that holds those heads (for a first change, nothing of the
//!    document) applies it at once instead of wanting it, which saves the want's round trip.
//!    A receiver with no cursor is offered the feed from its start. If the cursor names
//!    another store epoch (the store was restored from a backup, so its sequence numbers
//!    mean something else now), it falls back to `Digest` batches: its whole set as
//!    `(doc_id, heads)`. That costs O(documents), but only on fallback; a range-based set
//!    reconciliation (fingerprints of key ranges) can replace `Digest` without touching the
//!    rest of the protocol.
//! 3. The puller answers the entries of a batch whose heads it lacks with one `WantMany`
//!    (`doc_id, have` each), gets `Docs` (the changes of many documents in one message; for a
//!    document the puller does not hold at all, its saved compact form), and once they are
//!    durable acknowledges the feed position with `Ack`. A document whose applied changes
//!    fell short is asked for again alone, with `Want`, answered by `Changes`.
//! 4. Blobs follow the documents: `BlobWant { offset }` and `BlobChunk`s of at most
//!    [`MAX_BLOB_CHUNK`] bytes, resumable from any offset.

mod codec;
#[cfg(test)]
mod tests;

pub use codec::{DecodeError, decode, encode};

use crate::store::{BlobHash, ChangeHash, FeedSeq};

/// The wire version byte every encoded message starts with.
pub const WIRE_VERSION: u8 = 1;
/// Longest protocol name, node id or document id, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Most heads one document may list.
pub const MAX_HEADS: usize = 1024;
/// Most entries in one `Offer` or `Digest` batch.
pub const MAX_BATCH: usize = 256;
/// Most changes in one `Changes` message.
pub const MAX_CHANGES: usize = 65_536;
/// Most change bytes a sender puts in one `Changes` message; more are split over several.
pub const MAX_CHANGES_BYTES: usize = 8 * 1024 * 1024;
/// Largest blob chunk.
pub const MAX_BLOB_CHUNK: usize = 64 * 1024;
/// Largest change an offer entry carries ([`OfferTip`]); a larger one is wanted as usual.
pub const MAX_TIP_BYTES: usize = 64 * 1024;
/// Most change bytes the tips of one `Offer` carry together; the entries past it go without.
pub const MAX_OFFER_TIP_BYTES: usize = 1024 * 1024;

/// A position in one store's feed: the store's epoch and a sequence in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// The random id the store got at creation or at its last restore from backup.
    pub epoch: u64,
    /// Everything at or below this sequence has been applied.
    pub seq: FeedSeq,
}

/// The handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Always [`crate::PROTOCOL`]; anything else is refused.
    pub protocol: String,
    pub node_id: String,
    pub store_epoch: u64,
    /// The cursor the sender holds for the receiver's feed.
    pub since: Option<Cursor>,
    /// The sender's feed follows at once from here, without waiting for the receiver's
    /// hello ([`EarlyOffer`]). Encoded only in a hello with an early offer (tag 14).
    pub early: Option<EarlyOffer>,
}

/// Where a sender's offers start before it has the receiver's hello: the position the
/// receiver's store (epoch `peer_epoch`) last acknowledged of the sender's feed, which it
/// holds durably. The receiver takes the offers from `after` if its store still has that
/// epoch, whatever cursor it saved; otherwise it ignores them and the sender, seeing the new
/// epoch in the receiver's hello, ends the session and starts the next one without.
/// It saves a round trip (and the sender's walk after it) on every reconnection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EarlyOffer {
    /// The receiver's store epoch when it acknowledged `after`.
    pub peer_epoch: u64,
    /// The sender's feed position acknowledged; the first offer starts after it.
    pub after: FeedSeq,
}

/// One document of an `Offer` batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferEntry {
    pub doc_id: String,
    pub seq: FeedSeq,
    pub heads: Vec<ChangeHash>,
    /// The change that made `heads`, when the sender has it at hand.
    pub tip: Option<OfferTip>,
}

/// The last change of an offered document and the heads it was made on: a puller holding
/// `base` lacks exactly `change` (when `heads` is that change alone) and applies it without
/// a want. Encoded only in an offer with tips (tag 13, or 16 with a derived one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferTip {
    /// The document's heads before the change; empty only for a derived tip that is the
    /// document's first change.
    pub base: Vec<ChangeHash>,
    /// The change's bytes, at most [`MAX_TIP_BYTES`].
    pub change: Vec<u8>,
    /// `base` and the entry's heads follow from the change itself: the heads are its own
    /// hash, and every head of `base` is among its dependencies
    /// ([`crate::store::ReplicaStore::change_id`]). Sent without them (tag 16: 64 bytes less
    /// a tipped entry on one head), so decoded with both empty; the puller's session fills
    /// them in before it uses the entry (the base: the dependencies, and the tip applies
    /// where the puller's heads are all among them).
    pub derived: bool,
}

/// One document of a `Digest` batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestEntry {
    pub doc_id: String,
    pub heads: Vec<ChangeHash>,
}

/// One document of a `WantMany`: send me what a holder of `have` lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantEntry {
    pub doc_id: String,
    pub have: Vec<ChangeHash>,
}

/// One document of a `Docs` message: its changes, or its saved form (an Automerge saved
/// document is a valid input wherever changes are: the receiver loads it incrementally).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocChanges {
    pub doc_id: String,
    pub changes: Vec<Vec<u8>>,
}

/// A `yiciban/1` message. The tag bytes are wire format: never reuse one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Tag 1; tag 14 when it carries an early offer (the same fields, then the
    /// [`EarlyOffer`]'s two integers).
    Hello(Hello),
    /// Tag 2: the feed entries in `(after, upto]`, in order, except those the receiver is
    /// known to hold already (it offered the same heads in this session); `entries` may be
    /// empty when it holds them all. Tag 13 when an entry carries its tip (the same fields,
    /// each entry followed by a flag and, when set, its [`OfferTip`]). Tag 16 when a tip is
    /// [`OfferTip::derived`]: each entry is its id, seq, then a flag: 0 and its heads; 1 and
    /// its heads, the tip's base and change; 2 and the change alone.
    Offer {
        after: FeedSeq,
        upto: FeedSeq,
        entries: Vec<OfferEntry>,
    },
    /// Tag 3: the feed has been offered up to `head_seq`, its head when this was sent.
    FeedEnd { head_seq: FeedSeq },
    /// Tag 4: the fallback; every document whose feed entry lies in `(after, upto]`.
    Digest {
        after: FeedSeq,
        upto: FeedSeq,
        entries: Vec<DigestEntry>,
    },
    /// Tag 5: send me the changes of `doc_id` that a holder of `have` lacks.
    Want {
        doc_id: String,
        have: Vec<ChangeHash>,
    },
    /// Tag 6: changes of one document (opaque bytes).
    Changes {
        doc_id: String,
        changes: Vec<Vec<u8>>,
    },
    /// Tag 7: the receiver's cursor in the sender's feed has reached `seq`.
    Ack { seq: FeedSeq },
    /// Tag 8: send me the blob from `offset`.
    BlobWant { hash: BlobHash, offset: u64 },
    /// Tag 9: `bytes` of the blob at `offset`; the blob is `total_len` long.
    BlobChunk {
        hash: BlobHash,
        offset: u64,
        total_len: u64,
        bytes: Vec<u8>,
    },
    /// Tag 10: the sender does not hold the whole blob.
    BlobMissing { hash: BlobHash },
    /// Tag 11: `Want` for many documents at once (at most [`MAX_BATCH`]).
    WantMany { wants: Vec<WantEntry> },
    /// Tag 12: the answer to a `WantMany`, split so no message passes [`MAX_CHANGES_BYTES`]
    /// (a single larger document travels alone).
    Docs { docs: Vec<DocChanges> },
    /// Tag 15: the receiver refused this document (it will not hold it) and settled its feed
    /// entries; `reason` says why, for the sender's people (at most [`MAX_REASON_LEN`]
    /// bytes). The sender quarantines it rather than offering it again.
    Refused { doc_id: String, reason: String },
}

/// The longest reason a [`Message::Refused`] carries, in bytes.
pub const MAX_REASON_LEN: usize = 1024;

impl Message {
    /// The encoded size, for accounting in tests and metrics.
    pub fn wire_len(&self) -> usize {
        encode(self).len()
    }
}
