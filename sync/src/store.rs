//! The store trait the replication protocol reads and writes through.
//!
//! Documents are opaque to this crate: a document has an id, a set of heads (32-byte change
//! hashes) and changes (bytes). The node's store keeps a change feed: every time a document
//! changes it gets a new, strictly increasing feed sequence number, so a peer that remembers
//! the last sequence it saw (its cursor, like CouchDB's `since`) asks only for what is newer.

/// A 32-byte Automerge change hash.
pub type ChangeHash = [u8; 32];

/// A position in a store's change feed. `0` is "before everything".
pub type FeedSeq = u64;

/// One entry of the change feed: the document changed at `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    pub seq: FeedSeq,
    pub doc_id: String,
}

/// What a node's storage offers the replication protocol.
pub trait ReplicaStore {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Documents whose latest change has a feed sequence greater than `since`, in feed order,
    /// at most `limit` of them. A document appears once, at its latest sequence.
    fn feed_since(&self, since: FeedSeq, limit: usize) -> Result<Vec<FeedEntry>, Self::Error>;

    /// The highest feed sequence number handed out so far.
    fn feed_head(&self) -> Result<FeedSeq, Self::Error>;

    /// The heads of a document, or `None` when the store does not hold it.
    fn doc_heads(&self, doc_id: &str) -> Result<Option<Vec<ChangeHash>>, Self::Error>;

    /// The changes of a document that a peer holding `have` heads lacks.
    fn changes_after(&self, doc_id: &str, have: &[ChangeHash])
    -> Result<Vec<Vec<u8>>, Self::Error>;
}
