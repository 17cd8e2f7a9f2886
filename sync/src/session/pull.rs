//! The pulling half: offers and digests in, wants out, the cursor moved by the cursor rule.

use std::collections::VecDeque;

use super::{Effect, Output, ProtoError, Session, store_err};
use crate::proto::{Cursor, DigestEntry, Message, OfferEntry, OfferTip, WantEntry};
use crate::store::{ChangeHash, FeedSeq, ReplicaStore};

/// Most feed entries awaiting their changes; a pusher keeps within it by its window.
const MAX_PENDING: usize = 4 * crate::proto::MAX_BATCH;
const _: () = assert!(super::MAX_INFLIGHT_BATCHES * super::BATCH_ENTRIES < MAX_PENDING);
/// `Want`s for one entry before the session gives up: changes that never supply the offered
/// heads (a peer or store bug) must not loop at network speed.
const MAX_WANTS_PER_ENTRY: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A `Want` is out (or another entry of the same document has one out).
    Wanted,
    /// Changes arrived and an `Apply` effect was emitted; waiting for `applied`.
    Applying,
    Settled,
}

/// A feed entry of the peer the cursor cannot pass yet.
#[derive(Debug)]
struct Pending {
    doc_id: String,
    heads: Vec<ChangeHash>,
    /// Where the cursor may stand while this entry is the first unsettled one.
    floor: FeedSeq,
    state: State,
    /// `Want`s sent again for this entry after applied changes fell short.
    rewants: u8,
}

/// Most documents whose peer-held heads a session remembers (about 100 bytes each).
const MAX_PEER_HOLDS: usize = 200_000;

/// What the peer holds, as it said in this session's offers and digests: the heads it
/// offered per document. The pusher skips a feed entry whose heads are exactly these, so a
/// batch a peer sent does not come back to it as offers (the echo).
#[derive(Debug, Default)]
pub(super) struct PeerHolds(std::collections::HashMap<String, Vec<ChangeHash>>);

impl PeerHolds {
    fn note(&mut self, doc_id: &str, heads: &[ChangeHash]) {
        if self.0.len() >= MAX_PEER_HOLDS && !self.0.contains_key(doc_id) {
            return;
        }
        let mut heads = heads.to_vec();
        heads.sort_unstable();
        self.0.insert(doc_id.to_string(), heads);
    }

    /// Whether the peer said it holds exactly `heads` of `doc_id`.
    pub(super) fn holds(&self, doc_id: &str, heads: &[ChangeHash]) -> bool {
        self.0.get(doc_id).is_some_and(|held| {
            let mut heads = heads.to_vec();
            heads.sort_unstable();
            *held == heads
        })
    }
}

#[derive(Debug, Default)]
pub(super) struct Pull {
    /// The heads the peer offered, per document.
    pub(super) peer_holds: PeerHolds,
    /// The end of the last accepted batch: the peer's feed has been offered up to here.
    frontier: Option<FeedSeq>,
    pending: VecDeque<Pending>,
    /// The last `FeedEnd` matched the frontier.
    at_end: bool,
    /// The peer's walk did not start at our cursor (fallback): replace it, even backwards.
    reset: bool,
    /// The peer's offers came early from here, a position this store acknowledged: the
    /// first batch may start here instead of at our cursor ([`crate::proto::EarlyOffer`]).
    pub(super) early_from: Option<FeedSeq>,
    /// The peer's offers came early on another store's word: ignored (the peer ends the
    /// session when it reads our hello).
    pub(super) ignore_batches: bool,
}

impl Pull {
    pub(super) fn caught_up(&self) -> bool {
        self.at_end && self.pending.is_empty()
    }

    pub(super) fn on_changes(&mut self, doc_id: String, changes: Vec<Vec<u8>>, out: &mut Output) {
        let mut wanted = false;
        for p in self.pending.iter_mut() {
            if p.doc_id == doc_id && p.state == State::Wanted {
                p.state = State::Applying;
                wanted = true;
            }
        }
        // Changes nobody asked for (a duplicate) are dropped; the cursor rule does not
        // depend on them.
        if wanted {
            out.effects.push(Effect::Apply { doc_id, changes });
        }
    }

    /// The shell has durably merged the changes of the last `Apply` of each of `doc_ids`:
    /// their entries are settled where the store now holds the offered heads, else wanted
    /// again (at most [`MAX_WANTS_PER_ENTRY`] times an entry).
    pub(super) fn on_applied(
        &mut self,
        store: &impl ReplicaStore,
        doc_ids: &[&str],
        out: &mut Output,
    ) -> Result<(), ProtoError> {
        let applied: std::collections::HashSet<&str> = doc_ids.iter().copied().collect();
        // `Wanted` entries of these documents were offered after their changes arrived (the
        // shell handles every frame it has read before it applies anything); they rode on
        // this apply, with no want of their own, so they are checked here too.
        let checked: Vec<usize> = (0..self.pending.len())
            .filter(|&i| {
                let p = &self.pending[i];
                p.state != State::Settled && applied.contains(p.doc_id.as_str())
            })
            .collect();
        // Check the store itself: the changes may have answered an older offer. One call for
        // the lot (the county's Ack for a 1% run waited on a read transaction a case).
        let asks: Vec<(&str, &[ChangeHash])> = checked
            .iter()
            .map(|&i| {
                (
                    self.pending[i].doc_id.as_str(),
                    self.pending[i].heads.as_slice(),
                )
            })
            .collect();
        let held = store.has_heads_many(&asks).map_err(store_err)?;
        if held.len() != checked.len() {
            return Err(store_err(std::io::Error::other(format!(
                "has_heads_many answered {} of {}",
                held.len(),
                checked.len()
            ))));
        }
        let mut rewant = std::collections::HashSet::new();
        for (&i, held) in checked.iter().zip(held) {
            let p = &mut self.pending[i];
            if held {
                p.state = State::Settled;
            } else if p.rewants >= MAX_WANTS_PER_ENTRY {
                return Err(ProtoError::NoProgress(p.doc_id.clone()));
            } else {
                p.state = State::Wanted;
                p.rewants += 1;
                rewant.insert(p.doc_id.clone());
            }
        }
        // One want a document, in the order the documents were applied.
        for doc_id in doc_ids {
            if rewant.remove(*doc_id) {
                out.send.push(want(store, doc_id)?);
            }
        }
        Ok(())
    }

    /// The shell will not hold `doc_id` (the store refused its changes for good): every
    /// unsettled entry of it is settled, so the cursor passes it and the backlog drains.
    pub(super) fn on_refused(&mut self, doc_id: &str) {
        for p in self.pending.iter_mut() {
            if p.doc_id == doc_id {
                p.state = State::Settled;
            }
        }
    }

    /// Settles, applies or wants one entry; one want per document at a time, gathered in
    /// `wants` (the caller sends them as one `WantMany`). An entry whose tip was made on
    /// heads this store holds is applied from the tip: no want, no round trip.
    fn add(
        &mut self,
        store: &impl ReplicaStore,
        entry: (String, Vec<ChangeHash>, Option<OfferTip>),
        floor: FeedSeq,
        wants: &mut Vec<WantEntry>,
        out: &mut Output,
    ) -> Result<(), ProtoError> {
        let (doc_id, heads, tip) = entry;
        self.peer_holds.note(&doc_id, &heads);
        let state = if store.heads_cover(&doc_id, &heads).map_err(store_err)? {
            State::Settled
        } else if self
            .pending
            .iter()
            .any(|p| p.doc_id == doc_id && p.state != State::Settled)
        {
            // Its outstanding Want or Apply is checked against these heads when applied.
            State::Wanted
        } else if let Some(tip) = tip
            && if tip.derived {
                store.heads_within(&doc_id, &tip.base)
            } else {
                store.heads_cover(&doc_id, &tip.base)
            }
            .map_err(store_err)?
        {
            // Holding the heads it was made on, we hold every change it depends on. If it
            // still falls short of `heads` once applied, the entry is wanted then.
            out.effects.push(Effect::Apply {
                doc_id: doc_id.clone(),
                changes: vec![tip.change],
            });
            State::Applying
        } else {
            wants.push(WantEntry {
                have: have_of(store, &doc_id)?,
                doc_id: doc_id.clone(),
            });
            State::Wanted
        };
        self.pending.push_back(Pending {
            doc_id,
            heads,
            floor,
            state,
            rewants: 0,
        });
        Ok(())
    }

    /// The cursor position the rule allows now.
    fn candidate(&mut self) -> Option<FeedSeq> {
        while self
            .pending
            .front()
            .is_some_and(|p| p.state == State::Settled)
        {
            self.pending.pop_front();
        }
        match self.pending.front() {
            Some(p) => Some(p.floor),
            None => self.frontier,
        }
    }
}

fn have_of(store: &impl ReplicaStore, doc_id: &str) -> Result<Vec<ChangeHash>, ProtoError> {
    Ok(store
        .held_heads(doc_id)
        .map_err(store_err)?
        .unwrap_or_default())
}

fn want(store: &impl ReplicaStore, doc_id: &str) -> Result<Message, ProtoError> {
    Ok(Message::Want {
        doc_id: doc_id.to_string(),
        have: have_of(store, doc_id)?,
    })
}

/// One `WantMany` for the wants a batch gathered, if any.
fn send_wants(wants: Vec<WantEntry>, out: &mut Output) {
    if !wants.is_empty() {
        out.send.push(Message::WantMany { wants });
    }
}

impl Session {
    /// Checks that a batch from `after` continues the feed where the last one ended.
    fn accept_batch(&mut self, after: FeedSeq, upto: FeedSeq) -> Result<(), ProtoError> {
        if upto < after {
            return Err(ProtoError::BadBatch("range ends before it starts"));
        }
        let peer_epoch = self.peer.as_ref().map(|p| p.epoch);
        match self.pull.frontier {
            Some(f) if f == after => {}
            Some(f) => {
                return Err(ProtoError::OutOfOrder {
                    expected: Some(f),
                    got: after,
                });
            }
            None => {
                let held = self.cursor.filter(|c| Some(c.epoch) == peer_epoch);
                // The first batch starts at our cursor, at the early offer's start (below
                // our cursor if it was saved later, above it if the save was lost: either way
                // this store holds what lies before it), or at 0 when the peer fell back.
                let expected = held.map(|c| c.seq) == Some(after);
                let early = self.pull.early_from == Some(after);
                if after != 0 && !expected && !early {
                    return Err(ProtoError::OutOfOrder {
                        expected: held.map(|c| c.seq),
                        got: after,
                    });
                }
                // A reset: the held cursor is replaced by the next one the rule allows.
                self.pull.reset = !expected && !early;
            }
        }
        if self.pull.pending.len() >= MAX_PENDING {
            return Err(ProtoError::BadBatch("peer ignored the ack window"));
        }
        self.pull.frontier = Some(upto);
        self.pull.at_end = false;
        Ok(())
    }

    pub(super) fn on_offer(
        &mut self,
        store: &impl ReplicaStore,
        after: FeedSeq,
        upto: FeedSeq,
        entries: Vec<OfferEntry>,
        out: &mut Output,
    ) -> Result<(), ProtoError> {
        if self.pull.ignore_batches {
            return Ok(());
        }
        let mut prev = after;
        for e in &entries {
            if e.seq <= prev {
                return Err(ProtoError::BadBatch("offer sequences not increasing"));
            }
            prev = e.seq;
        }
        if prev > upto {
            return Err(ProtoError::BadBatch("offer entry beyond the batch's end"));
        }
        if upto == after {
            return Err(ProtoError::BadBatch("empty offer"));
        }
        self.accept_batch(after, upto)?;
        let mut wants = Vec::new();
        for mut e in entries {
            let floor = e.seq - 1; // e.seq > after >= 0, checked above
            if let Some(tip) = e.tip.as_mut().filter(|t| t.derived) {
                // Sent without its heads and base: they are what the change says.
                let (hash, deps) = store
                    .change_id(&tip.change)
                    .ok_or(ProtoError::BadBatch("a derived tip this store cannot read"))?;
                // The base is every change it depends on, which may include ancestors of
                // the heads it was made on (Automerge lists its author's previous change too):
                // `add` applies it where this store's heads are all among them, and a
                // document's first change (no dependencies) where it holds nothing of it.
                tip.base = deps;
                e.heads = vec![hash];
            }
            let entry = (e.doc_id, e.heads, e.tip);
            self.pull.add(store, entry, floor, &mut wants, out)?;
        }
        send_wants(wants, out);
        self.advance_cursor(out);
        Ok(())
    }

    pub(super) fn on_digest(
        &mut self,
        store: &impl ReplicaStore,
        after: FeedSeq,
        upto: FeedSeq,
        entries: Vec<DigestEntry>,
        out: &mut Output,
    ) -> Result<(), ProtoError> {
        if self.pull.ignore_batches {
            return Ok(());
        }
        self.accept_batch(after, upto)?;
        let mut wants = Vec::new();
        for e in entries {
            // A digest entry has no sequence of its own: it holds the cursor at the batch start.
            let entry = (e.doc_id, e.heads, None);
            self.pull.add(store, entry, after, &mut wants, out)?;
        }
        send_wants(wants, out);
        self.advance_cursor(out);
        Ok(())
    }

    pub(super) fn on_feed_end(
        &mut self,
        head_seq: FeedSeq,
        out: &mut Output,
    ) -> Result<(), ProtoError> {
        if self.pull.ignore_batches {
            return Ok(());
        }
        if self.pull.frontier != Some(head_seq) {
            self.accept_batch(head_seq, head_seq)?;
        }
        self.pull.at_end = true;
        self.advance_cursor(out);
        Ok(())
    }

    /// Emits `SaveCursor` and `Ack` when the cursor rule lets the cursor move forward.
    pub(super) fn advance_cursor(&mut self, out: &mut Output) {
        let (Some(seq), Some(peer)) = (self.pull.candidate(), self.peer.as_ref()) else {
            return;
        };
        let next = Cursor {
            epoch: peer.epoch,
            seq,
        };
        // A cursor at 0 says no more than no cursor at all.
        let moved = seq > 0
            && match self.cursor {
                Some(c) => {
                    c != next && (self.pull.reset || c.epoch != next.epoch || c.seq < next.seq)
                }
                None => true,
            };
        if moved {
            self.cursor = Some(next);
            out.effects.push(Effect::SaveCursor {
                peer: peer.node_id.clone(),
                cursor: next,
            });
            out.send.push(Message::Ack { seq });
        }
    }
}
