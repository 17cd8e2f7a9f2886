//! [`Session`]: the IO-less state machine for one peer connection, one per side.
//!
//! The shell (QUIC in the node, queues in the simulation) feeds it decoded messages and the
//! time, and does what it returns: messages to send and [`Effect`]s on the local store. The
//! session never writes to the store itself and never reads a clock, so every run is
//! reproducible from its inputs.
//!
//! Each session both *pulls* the peer's feed ([`pull`]) and *pushes* its own ([`push`]).
//!
//! **The cursor rule.** The cursor the puller holds for the peer's feed advances past a feed
//! entry only once the local store holds that entry's heads: either it held them when the
//! offer arrived (no `Want`, which is also what stops a node's own changes echoing back to it
//! forever), or the changes were applied and the shell said so with [`Session::applied`],
//! after which the session checks the store again. The cursor is emitted as
//! [`Effect::SaveCursor`] only after that, so a crash between applying and saving costs a
//! re-offer, never a loss.
//!
//! **Ordering.** The session assumes the ordered stream QUIC gives. Batches name the feed
//! range they cover, so a lost, duplicated or reordered batch is detected and refused with a
//! [`ProtoError`] (the shell then drops the connection and starts a new session from the
//! saved cursor) rather than silently skipped.

mod blobs;
mod pull;
mod push;
#[cfg(all(test, feature = "test-utils"))]
mod tests;

use thiserror::Error;

use crate::proto::{Cursor, DecodeError, EarlyOffer, Hello, Message};
use crate::store::{BlobHash, FeedSeq, ReplicaStore};

/// Feed batches a pusher sends ahead of the peer's `Ack`: enough that a puller merging one
/// run of cases while its writer commits the one before still has offers to answer. Their
/// entries stay under the puller's bound on pending entries (`4 × MAX_BATCH`, unchanged
/// since the first version, so an older puller takes this window too).
pub const MAX_INFLIGHT_BATCHES: usize = 6;
/// Entries per `Offer` or `Digest` batch the pusher sends (at most [`crate::proto::MAX_BATCH`]).
pub const BATCH_ENTRIES: usize = 128;
/// Without a message for this long while work is outstanding, the shell should restart.
pub const STALL_TIMEOUT_MS: u64 = 30_000;

/// Who this side is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: String,
    /// The local store's epoch: random at creation and again at every restore from backup.
    pub store_epoch: u64,
}

/// What the shell must do to its store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Merge these changes into the document, then call [`Session::applied`].
    Apply {
        doc_id: String,
        changes: Vec<Vec<u8>>,
    },
    /// Persist the cursor for `peer`'s feed; everything it covers is already applied.
    SaveCursor { peer: String, cursor: Cursor },
    /// Remember how far `peer` has acknowledged the local feed, for the next session's
    /// early offer ([`Session::with_early_offer`]). Losing it costs only that round trip.
    SaveAcked { peer: String, acked: EarlyOffer },
    /// The peer refused `doc_id` for good, saying why: keep it aside (quarantine) and show
    /// it; the peer settled its entries, so it is not offered again unless it changes.
    Refused { doc_id: String, reason: String },
    /// Write a piece of a blob; verify the hash when it is complete.
    StoreBlobChunk {
        hash: BlobHash,
        offset: u64,
        total_len: u64,
        bytes: Vec<u8>,
    },
    /// The peer does not hold this blob; ask another peer.
    BlobMissing { hash: BlobHash },
}

/// Messages to send and effects to perform, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Output {
    pub send: Vec<Message>,
    pub effects: Vec<Effect>,
}

/// Why a session must end. The shell closes the connection and may start a new session.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProtoError {
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    #[error("store: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
    #[error("peer speaks {0:?}, not {PROTOCOL}", PROTOCOL = crate::PROTOCOL)]
    WrongProtocol(String),
    #[error("message before the peer's hello")]
    BeforeHello,
    #[error("second hello")]
    DuplicateHello,
    #[error("feed batch from {got} does not continue from {expected:?}")]
    OutOfOrder { expected: Option<u64>, got: u64 },
    #[error("malformed feed batch: {0}")]
    BadBatch(&'static str),
    #[error("ack of {acked} beyond what was offered ({sent})")]
    AckBeyondSent { acked: u64, sent: u64 },
    #[error("bad blob chunk: {0}")]
    BadBlobChunk(&'static str),
    #[error("too many blobs queued")]
    BlobQueueFull,
    #[error("applied changes of {0} keep falling short of the offered heads")]
    NoProgress(String),
    /// The peer's store is not the one that acknowledged our early offer's start (it was
    /// restored from a backup): the shell forgets that position and starts again without.
    #[error("early offer made on store epoch {held}, but the peer's store is now epoch {now}")]
    EarlyOfferStale { held: u64, now: u64 },
}

fn store_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> ProtoError {
    ProtoError::Store(Box::new(e))
}

/// The peer, once its hello has arrived.
#[derive(Debug, Clone)]
struct Peer {
    node_id: String,
    epoch: u64,
}

/// One side of one connection.
#[derive(Debug)]
pub struct Session {
    local: NodeInfo,
    /// The saved cursor for the peer's feed (only ever moved forward by the cursor rule).
    cursor: Option<Cursor>,
    peer: Option<Peer>,
    pull: pull::Pull,
    push: Option<push::Push>,
    blobs: blobs::Blobs,
    last_heard_ms: u64,
    /// Where our offers start before the peer's hello, if we know ([`EarlyOffer`]).
    early: Option<EarlyOffer>,
}

impl Session {
    /// A session that will pull the peer's feed from `cursor_for_peer`.
    pub fn new(local: NodeInfo, cursor_for_peer: Option<Cursor>) -> Self {
        Self {
            local,
            cursor: cursor_for_peer,
            peer: None,
            pull: pull::Pull::default(),
            push: None,
            blobs: blobs::Blobs::default(),
            last_heard_ms: 0,
            early: None,
        }
    }

    /// Offers our feed from `acked` at once, behind our hello, instead of after the peer's
    /// hello: `acked` is what the shell saved from an earlier session's
    /// [`Effect::SaveAcked`] for this peer. If the peer's store has since changed epoch, the
    /// session ends with [`ProtoError::EarlyOfferStale`] once its hello says so.
    pub fn with_early_offer(mut self, acked: Option<EarlyOffer>) -> Self {
        self.early = acked;
        self
    }

    /// The first messages: our hello, carrying the cursor we hold for the peer's feed, and
    /// with an early offer ([`Session::with_early_offer`]) our first offers behind it.
    pub fn start(
        &mut self,
        store: &impl ReplicaStore,
        now_ms: u64,
    ) -> Result<Vec<Message>, ProtoError> {
        self.last_heard_ms = now_ms;
        // An acknowledged position beyond the feed's head is not ours to offer from.
        if let Some(e) = self.early
            && e.after > store.feed_head().map_err(store_err)?
        {
            self.early = None;
        }
        let mut out = Output::default();
        out.send.push(Message::Hello(Hello {
            protocol: crate::PROTOCOL.to_string(),
            node_id: self.local.node_id.clone(),
            store_epoch: self.local.store_epoch,
            since: self.cursor,
            early: self.early,
        }));
        if let Some(e) = self.early {
            let from = Cursor {
                epoch: self.local.store_epoch,
                seq: e.after,
            };
            let push = push::Push::start(
                store,
                self.local.store_epoch,
                Some(from),
                &self.pull.peer_holds,
                &mut out,
            )?;
            self.push = Some(push);
        }
        Ok(out.send)
    }

    /// Handles one message from the peer.
    pub fn handle(
        &mut self,
        store: &impl ReplicaStore,
        now_ms: u64,
        msg: Message,
    ) -> Result<Output, ProtoError> {
        self.last_heard_ms = now_ms;
        let mut out = Output::default();
        if let Message::Hello(hello) = msg {
            self.on_hello(store, hello, &mut out)?;
            return Ok(out);
        }
        if self.peer.is_none() {
            return Err(ProtoError::BeforeHello);
        }
        match msg {
            Message::Offer {
                after,
                upto,
                entries,
            } => self.on_offer(store, after, upto, entries, &mut out)?,
            Message::Digest {
                after,
                upto,
                entries,
            } => self.on_digest(store, after, upto, entries, &mut out)?,
            Message::FeedEnd { head_seq } => self.on_feed_end(head_seq, &mut out)?,
            Message::Changes { doc_id, changes } => self.pull.on_changes(doc_id, changes, &mut out),
            Message::Docs { docs } => {
                for d in docs {
                    self.pull.on_changes(d.doc_id, d.changes, &mut out);
                }
            }
            Message::Want { doc_id, have } => push::answer_want(store, doc_id, &have, &mut out)?,
            Message::WantMany { wants } => push::answer_wants(store, wants, &mut out)?,
            Message::Ack { seq } => self.on_ack(store, seq, &mut out)?,
            Message::BlobWant { hash, offset } => blobs::serve(store, hash, offset, &mut out)?,
            Message::BlobChunk {
                hash,
                offset,
                total_len,
                bytes,
            } => self
                .blobs
                .on_chunk(hash, offset, total_len, bytes, &mut out)?,
            Message::BlobMissing { hash } => self.blobs.on_missing(hash, &mut out),
            Message::Refused { doc_id, reason } => {
                out.effects.push(Effect::Refused { doc_id, reason })
            }
            Message::Hello(_) => return Err(ProtoError::DuplicateHello),
        }
        self.pump_blobs(&mut out);
        Ok(out)
    }

    /// The shell has durably merged the changes of the last [`Effect::Apply`] for `doc_id`.
    pub fn applied(
        &mut self,
        store: &impl ReplicaStore,
        doc_id: &str,
    ) -> Result<Output, ProtoError> {
        let mut out = Output::default();
        self.pull.on_applied(store, &[doc_id], &mut out)?;
        self.advance_cursor(&mut out);
        self.pump_blobs(&mut out);
        Ok(out)
    }

    /// The shell's store refused the changes of `doc_id` for good (`reason`, for the peer's
    /// people): its entries are settled, so the cursor moves past it and the session goes
    /// on with the rest, and the peer is told ([`Message::Refused`]).
    pub fn refused(&mut self, doc_id: &str, reason: &str) -> Output {
        let mut out = Output::default();
        self.pull.on_refused(doc_id);
        let mut reason = reason.to_string();
        while reason.len() > crate::proto::MAX_REASON_LEN {
            reason.pop();
        }
        out.send.push(Message::Refused {
            doc_id: doc_id.to_string(),
            reason,
        });
        self.advance_cursor(&mut out);
        out
    }

    /// [`Session::applied`] for several documents at once: one cursor move (one
    /// `SaveCursor`, one `Ack`) for the lot, so a batch costs the shell one cursor write.
    pub fn applied_all<'a>(
        &mut self,
        store: &impl ReplicaStore,
        doc_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<Output, ProtoError> {
        let mut out = Output::default();
        let doc_ids: Vec<&str> = doc_ids.into_iter().collect();
        self.pull.on_applied(store, &doc_ids, &mut out)?;
        self.advance_cursor(&mut out);
        self.pump_blobs(&mut out);
        Ok(out)
    }

    /// Offers whatever the local feed gained since the last call (local writes, changes
    /// applied from other peers). Cheap when nothing changed: one `feed_head` read.
    pub fn tick(&mut self, store: &impl ReplicaStore, now_ms: u64) -> Result<Output, ProtoError> {
        let _ = now_ms;
        let mut out = Output::default();
        if let Some(push) = &mut self.push {
            push.fill(store, &self.pull.peer_holds, &mut out)?;
        }
        Ok(out)
    }

    /// Asks the peer for a blob the shell found missing, from `offset` (what it already
    /// holds, so a cut transfer resumes). Sent once the documents are caught up.
    pub fn want_blob(&mut self, hash: BlobHash, offset: u64) -> Result<Output, ProtoError> {
        self.blobs.want(hash, offset)?;
        let mut out = Output::default();
        self.pump_blobs(&mut out);
        Ok(out)
    }

    /// How far the peer holds the local feed (from its hello's cursor and its acks); `None`
    /// before the hello.
    pub fn peer_position(&self) -> Option<FeedSeq> {
        self.push.as_ref().map(push::Push::acked)
    }

    /// The cursor this session holds for the peer's feed.
    pub fn cursor(&self) -> Option<Cursor> {
        self.cursor
    }

    /// Whether the peer's feed has been pulled up to its last `FeedEnd` and applied, and
    /// no blob transfer is under way.
    pub fn is_caught_up(&self) -> bool {
        self.pull.caught_up() && self.blobs.is_idle()
    }

    /// Whether work is outstanding and the peer has been silent for [`STALL_TIMEOUT_MS`]:
    /// the shell should drop the connection and start again from the saved cursor.
    pub fn is_stalled(&self, now_ms: u64) -> bool {
        let outstanding = !self.is_caught_up() || self.push.as_ref().is_some_and(|p| p.busy());
        outstanding && now_ms.saturating_sub(self.last_heard_ms) > STALL_TIMEOUT_MS
    }

    fn on_hello(
        &mut self,
        store: &impl ReplicaStore,
        hello: Hello,
        out: &mut Output,
    ) -> Result<(), ProtoError> {
        if self.peer.is_some() {
            return Err(ProtoError::DuplicateHello);
        }
        if hello.protocol != crate::PROTOCOL {
            return Err(ProtoError::WrongProtocol(hello.protocol));
        }
        // Our offers went out early: only the store that acknowledged their start holds
        // what lies before it.
        if let Some(e) = self.early
            && e.peer_epoch != hello.store_epoch
        {
            return Err(ProtoError::EarlyOfferStale {
                held: e.peer_epoch,
                now: hello.store_epoch,
            });
        }
        // The peer's offers come early: taken from where they start if we are the store
        // that acknowledged it, else ignored until the peer sees our epoch and starts again.
        match hello.early {
            Some(e) if e.peer_epoch == self.local.store_epoch => {
                self.pull.early_from = Some(e.after);
            }
            Some(_) => self.pull.ignore_batches = true,
            None => {}
        }
        self.peer = Some(Peer {
            node_id: hello.node_id,
            epoch: hello.store_epoch,
        });
        match &mut self.push {
            Some(push) => {
                if let Some(c) = hello.since.filter(|c| c.epoch == self.local.store_epoch) {
                    push.peer_holds_up_to(c.seq);
                }
            }
            None => {
                let push = push::Push::start(
                    store,
                    self.local.store_epoch,
                    hello.since,
                    &self.pull.peer_holds,
                    out,
                )?;
                self.push = Some(push);
            }
        }
        Ok(())
    }

    fn on_ack(
        &mut self,
        store: &impl ReplicaStore,
        seq: u64,
        out: &mut Output,
    ) -> Result<(), ProtoError> {
        if let Some(push) = &mut self.push {
            let before = push.acked();
            push.on_ack(seq)?;
            if push.acked() > before
                && let Some(peer) = &self.peer
            {
                out.effects.push(Effect::SaveAcked {
                    peer: peer.node_id.clone(),
                    acked: EarlyOffer {
                        peer_epoch: peer.epoch,
                        after: push.acked(),
                    },
                });
            }
            push.fill(store, &self.pull.peer_holds, out)?;
        }
        Ok(())
    }

    fn pump_blobs(&mut self, out: &mut Output) {
        if self.pull.caught_up() {
            self.blobs.pump(out);
        }
    }
}
