//! The store trait the replication protocol reads and writes through.
//!
//! Documents are opaque to this crate: a document has an id, a set of heads (32-byte change
//! hashes) and changes (bytes). The node's store keeps a change feed: every time a document
//! changes it gets a new, strictly increasing feed sequence number, so a peer that remembers
//! the last sequence it saw (its cursor, like CouchDB's `since`) asks only for what is newer.
//!
//! The trait is read-only on purpose: the session never writes. It returns effects
//! ([`crate::session::Effect`]) and the node's shell performs them through its own writer, so
//! there is one owner for writes.

/// A 32-byte Automerge change hash.
pub type ChangeHash = [u8; 32];

/// The SHA-256 of a blob's bytes.
pub type BlobHash = [u8; 32];

/// A position in a store's change feed. `0` is "before everything".
pub type FeedSeq = u64;

/// What an offer says of one document ([`ReplicaStore::offer_rows`]): its heads (`None`: not
/// held, or not shown to the peer) and its tip on those heads, when at hand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfferRow {
    pub heads: Option<Vec<ChangeHash>>,
    pub tip: Option<(Vec<ChangeHash>, Vec<u8>)>,
}

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

    /// What this store holds of a document, whether or not the peer may read it here: the
    /// `have` of a want. A document that only ever flows from the peer to this store (a
    /// node's audit trail or health reports, at the county) is hidden from the peer by
    /// [`ReplicaStore::doc_heads`], and a want saying it holds nothing of it is answered
    /// with the whole document every time it grows. The default is `doc_heads`.
    fn held_heads(&self, doc_id: &str) -> Result<Option<Vec<ChangeHash>>, Self::Error> {
        self.doc_heads(doc_id)
    }

    /// The changes of a document that a peer holding `have` heads lacks; none when the store
    /// does not hold the document.
    fn changes_after(&self, doc_id: &str, have: &[ChangeHash])
    -> Result<Vec<Vec<u8>>, Self::Error>;

    /// Whether the store holds every change named in `heads` (and so all of their history).
    ///
    /// The default compares against the current heads, which is exact when heads name every
    /// change (the in-memory store) but too strict for a DAG: a document that has moved past
    /// `heads` no longer lists them. A DAG store should look each hash up instead, or the
    /// receiver keeps asking for changes it already holds.
    fn has_heads(&self, doc_id: &str, heads: &[ChangeHash]) -> Result<bool, Self::Error> {
        let Some(local) = self.doc_heads(doc_id)? else {
            return Ok(heads.is_empty());
        };
        Ok(heads.iter().all(|h| local.contains(h)))
    }

    /// [`ReplicaStore::has_heads`] of several documents, in order. The default asks one by
    /// one; a store whose reads each cost a transaction may answer the usual case (heads that
    /// are the current ones) for all of them in one.
    fn has_heads_many(&self, asks: &[(&str, &[ChangeHash])]) -> Result<Vec<bool>, Self::Error> {
        asks.iter()
            .map(|&(doc_id, heads)| self.has_heads(doc_id, heads))
            .collect()
    }

    /// The answers to many wants, in order: `None` for a document the store does not hold
    /// (or does not show the peer, as [`ReplicaStore::doc_heads`]), else the changes a holder
    /// of its `have` lacks. The default answers one by one; a store whose answers cost a
    /// document load each may spread them over its cores.
    #[allow(clippy::type_complexity)]
    fn changes_after_many(
        &self,
        wants: &[(&str, &[ChangeHash])],
    ) -> Result<Vec<Option<Vec<Vec<u8>>>>, Self::Error> {
        wants
            .iter()
            .map(|&(doc_id, have)| match self.doc_heads(doc_id)? {
                None => Ok(None),
                Some(_) => self.changes_after(doc_id, have).map(Some),
            })
            .collect()
    }

    /// Whether the store holds every change named in `heads`, answered cheaply: it may say
    /// no for heads the store holds but has moved past, where [`ReplicaStore::has_heads`]
    /// would look each hash up. The puller decides what to want with it (a new change from
    /// the peer, the usual case, is answered without loading the document); a want it sends
    /// needlessly is answered with changes the store already holds, and the exact check
    /// settles the entry once they are applied. The default is `has_heads`.
    fn heads_cover(&self, doc_id: &str, heads: &[ChangeHash]) -> Result<bool, Self::Error> {
        self.has_heads(doc_id, heads)
    }

    /// The change that made a document's `heads` (as [`ReplicaStore::doc_heads`] just gave
    /// them) and the heads the document had before it, when the store keeps that change at
    /// hand: a local edit on top of what it held, with nothing written since. The pusher
    /// sends it with its offer ([`crate::proto::OfferTip`]), so a puller holding the heads
    /// before applies it without a want. `None` (the default) when the store has no such
    /// change ready, or it would cost a document load to find.
    #[allow(clippy::type_complexity)]
    fn tip(
        &self,
        doc_id: &str,
        heads: &[ChangeHash],
    ) -> Result<Option<(Vec<ChangeHash>, Vec<u8>)>, Self::Error> {
        let _ = (doc_id, heads);
        Ok(None)
    }

    /// Whether a derived tip depending on `deps` applies here ([`crate::proto::OfferTip`]):
    /// the store holds the document with every one of its current heads among `deps`, or,
    /// for a document's first change (no `deps`), does not hold it at all. Else it falls
    /// short and is wanted after. The default asks `doc_heads`.
    fn heads_within(&self, doc_id: &str, deps: &[ChangeHash]) -> Result<bool, Self::Error> {
        Ok(match self.doc_heads(doc_id)? {
            None => deps.is_empty(),
            Some(held) => !held.is_empty() && held.iter().all(|h| deps.contains(h)),
        })
    }

    /// What `change` says of itself, when this store's changes say it: its hash and the
    /// changes it depends on (Automerge: the heads it was made on, and its author's previous
    /// change). A tip that is its document's one head, made on heads all among those, is
    /// offered without them ([`crate::proto::OfferTip::derived`]).
    /// `None` (the default) when the change format does not name its dependencies, or the
    /// bytes are no change.
    fn change_id(&self, change: &[u8]) -> Option<(ChangeHash, Vec<ChangeHash>)> {
        let _ = change;
        None
    }

    /// What an offer of these documents says of each, in order: its heads
    /// ([`ReplicaStore::doc_heads`]) and, with `with_tips`, its tip on them
    /// ([`ReplicaStore::tip`]). The default asks document by document; a store whose reads
    /// each cost a transaction may read them all in one.
    fn offer_rows(&self, doc_ids: &[&str], with_tips: bool) -> Result<Vec<OfferRow>, Self::Error> {
        doc_ids
            .iter()
            .map(|&doc_id| {
                let heads = self.doc_heads(doc_id)?;
                let tip = match &heads {
                    Some(heads) if with_tips => self.tip(doc_id, heads)?,
                    _ => None,
                };
                Ok(OfferRow { heads, tip })
            })
            .collect()
    }

    /// The length of a complete blob, or `None` when the store does not hold all of it.
    fn blob_len(&self, hash: &BlobHash) -> Result<Option<u64>, Self::Error> {
        let _ = hash;
        Ok(None)
    }

    /// Up to `max` bytes of a complete blob from `offset`; `None` when the blob is not held.
    fn blob_chunk(
        &self,
        hash: &BlobHash,
        offset: u64,
        max: usize,
    ) -> Result<Option<Vec<u8>>, Self::Error> {
        let _ = (hash, offset, max);
        Ok(None)
    }
}
