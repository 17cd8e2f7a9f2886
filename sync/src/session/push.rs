//! The pushing half: walk the local feed from the peer's cursor, answer wants, honour acks.

use std::collections::VecDeque;

use super::pull::PeerHolds;
use super::{BATCH_ENTRIES, MAX_INFLIGHT_BATCHES, Output, ProtoError, store_err};
use crate::proto::{
    Cursor, DigestEntry, DocChanges, MAX_CHANGES, MAX_CHANGES_BYTES, MAX_HEADS,
    MAX_OFFER_TIP_BYTES, MAX_TIP_BYTES, Message, OfferEntry, OfferTip, WantEntry,
};
use crate::store::{ChangeHash, FeedSeq, ReplicaStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The peer's cursor is valid: offers with sequences.
    Offer,
    /// The cursor is missing or names another epoch: the whole set, as digests.
    Digest,
}

#[derive(Debug)]
pub(super) struct Push {
    mode: Mode,
    /// The local feed has been offered up to here.
    sent_upto: FeedSeq,
    acked: FeedSeq,
    /// The ends of batches not yet acknowledged.
    inflight: VecDeque<FeedSeq>,
    /// The head the last `FeedEnd` announced.
    end_sent: Option<FeedSeq>,
}

impl Push {
    /// Starts the walk at the peer's cursor (from zero when it has none: a first session),
    /// or from zero in digest mode when the cursor names another epoch (a restore from
    /// backup) or lies beyond the feed's head.
    pub(super) fn start(
        store: &impl ReplicaStore,
        local_epoch: u64,
        since: Option<Cursor>,
        peer_holds: &PeerHolds,
        out: &mut Output,
    ) -> Result<Self, ProtoError> {
        let head = store.feed_head().map_err(store_err)?;
        // A peer with no cursor holds nothing it learnt from this feed: offered from the
        // start, the new documents' first changes ride with their entries as tips. A cursor
        // of another epoch may stand for anything, so that peer gets the whole set as digests.
        let (mode, from) = match since {
            None => (Mode::Offer, 0),
            Some(c) if c.epoch == local_epoch && c.seq <= head => (Mode::Offer, c.seq),
            Some(_) => (Mode::Digest, 0),
        };
        let mut push = Self {
            mode,
            sent_upto: from,
            acked: from,
            inflight: VecDeque::new(),
            end_sent: None,
        };
        push.fill(store, peer_holds, out)?;
        Ok(push)
    }

    /// How far the peer has durably taken the local feed.
    pub(super) fn acked(&self) -> FeedSeq {
        self.acked
    }

    /// The peer's hello says it holds the feed up to `seq` (an early walk started below
    /// that): counted as acknowledged as far as offered.
    pub(super) fn peer_holds_up_to(&mut self, seq: FeedSeq) {
        self.acked = self.acked.max(seq.min(self.sent_upto));
        while self.inflight.front().is_some_and(|&u| u <= self.acked) {
            self.inflight.pop_front();
        }
    }

    /// Whether batches await acknowledgement.
    pub(super) fn busy(&self) -> bool {
        !self.inflight.is_empty()
    }

    pub(super) fn on_ack(&mut self, seq: FeedSeq) -> Result<(), ProtoError> {
        if seq > self.sent_upto {
            return Err(ProtoError::AckBeyondSent {
                acked: seq,
                sent: self.sent_upto,
            });
        }
        self.acked = self.acked.max(seq);
        while self.inflight.front().is_some_and(|&u| u <= self.acked) {
            self.inflight.pop_front();
        }
        Ok(())
    }

    /// Sends batches while the window allows, then `FeedEnd` once caught up.
    pub(super) fn fill(
        &mut self,
        store: &impl ReplicaStore,
        peer_holds: &PeerHolds,
        out: &mut Output,
    ) -> Result<(), ProtoError> {
        while self.inflight.len() < MAX_INFLIGHT_BATCHES {
            let feed = store
                .feed_since(self.sent_upto, BATCH_ENTRIES)
                .map_err(store_err)?;
            let Some(last) = feed.last().map(|e| e.seq) else {
                if self.end_sent != Some(self.sent_upto) {
                    self.end_sent = Some(self.sent_upto);
                    // The fallback is over; what changes from now on is offered as usual.
                    self.mode = Mode::Offer;
                    out.send.push(Message::FeedEnd {
                        head_seq: self.sent_upto,
                    });
                }
                return Ok(());
            };
            let after = self.sent_upto;
            let mut offers = Vec::with_capacity(feed.len());
            let mut tip_bytes = 0usize;
            // The document's last change rides along when it is at hand (a digest has no
            // room for it: the fallback knows nothing of what the peer holds).
            let ids: Vec<&str> = feed.iter().map(|e| e.doc_id.as_str()).collect();
            let rows = store
                .offer_rows(&ids, self.mode == Mode::Offer)
                .map_err(store_err)?;
            if rows.len() != feed.len() {
                return Err(store_err(std::io::Error::other(format!(
                    "offer_rows gave {} rows for {} documents",
                    rows.len(),
                    feed.len()
                ))));
            }
            for (e, row) in feed.into_iter().zip(rows) {
                let heads = row.heads.unwrap_or_default();
                if self.mode == Mode::Offer && peer_holds.holds(&e.doc_id, &heads) {
                    // The echo of what the peer itself sent this session: nothing to offer.
                    continue;
                }
                let tip = match self.mode {
                    Mode::Offer => row
                        .tip
                        .filter(|(base, change)| {
                            base.len() <= MAX_HEADS
                                && change.len() <= MAX_TIP_BYTES
                                && tip_bytes + change.len() <= MAX_OFFER_TIP_BYTES
                        })
                        .map(|(base, change)| {
                            let derived = derivable(store, &base, &heads, &change);
                            OfferTip {
                                base,
                                change,
                                derived,
                            }
                        })
                        // A document's first change (made on no heads) goes only derived:
                        // a tip sent with its base has one.
                        .filter(|tip| tip.derived || !tip.base.is_empty())
                        .inspect(|tip| tip_bytes += tip.change.len()),
                    Mode::Digest => None,
                };
                offers.push(OfferEntry {
                    doc_id: e.doc_id,
                    seq: e.seq,
                    heads,
                    tip,
                });
            }
            out.send.push(match self.mode {
                Mode::Offer => Message::Offer {
                    after,
                    upto: last,
                    entries: offers,
                },
                Mode::Digest => Message::Digest {
                    after,
                    upto: last,
                    entries: offers
                        .into_iter()
                        .map(|o| DigestEntry {
                            doc_id: o.doc_id,
                            heads: o.heads,
                        })
                        .collect(),
                },
            });
            self.sent_upto = last;
            self.inflight.push_back(last);
        }
        Ok(())
    }
}

/// Answers a `Want` with the changes the peer lacks, split so no message passes
/// [`MAX_CHANGES_BYTES`] (a single larger change travels alone).
pub(super) fn answer_want(
    store: &impl ReplicaStore,
    doc_id: String,
    have: &[ChangeHash],
    out: &mut Output,
) -> Result<(), ProtoError> {
    if store.doc_heads(&doc_id).map_err(store_err)?.is_none() {
        // Nothing to give; the peer's cursor waits, and the next offer settles it.
        return Ok(());
    }
    let changes = store.changes_after(&doc_id, have).map_err(store_err)?;
    let mut part: Vec<Vec<u8>> = Vec::new();
    let mut part_bytes = 0usize;
    for change in changes {
        let full = part.len() >= MAX_CHANGES || part_bytes + change.len() > MAX_CHANGES_BYTES;
        if full && !part.is_empty() {
            out.send.push(Message::Changes {
                doc_id: doc_id.clone(),
                changes: std::mem::take(&mut part),
            });
            part_bytes = 0;
        }
        part_bytes += change.len();
        part.push(change);
    }
    out.send.push(Message::Changes {
        doc_id,
        changes: part,
    });
    Ok(())
}

/// Answers a `WantMany` with `Docs` messages, each within [`MAX_CHANGES_BYTES`] and
/// [`MAX_CHANGES`] (a single larger document travels alone), one entry per held document.
/// Documents the store does not hold (or does not show this peer) are left out; the peer's
/// cursor waits for them.
pub(super) fn answer_wants(
    store: &impl ReplicaStore,
    wants: Vec<WantEntry>,
    out: &mut Output,
) -> Result<(), ProtoError> {
    let mut docs: Vec<DocChanges> = Vec::new();
    let (mut bytes, mut count) = (0usize, 0usize);
    let asked: Vec<(&str, &[crate::store::ChangeHash])> = wants
        .iter()
        .map(|w| (w.doc_id.as_str(), w.have.as_slice()))
        .collect();
    let answers = store.changes_after_many(&asked).map_err(store_err)?;
    drop(asked);
    if answers.len() != wants.len() {
        let said = format!("{} answers to {} wants", answers.len(), wants.len());
        return Err(ProtoError::Store(said.into()));
    }
    for (w, answer) in wants.into_iter().zip(answers) {
        // A held document is always answered, even with no changes (the peer may name a
        // change not here yet): the puller then checks its store and asks again, instead of
        // waiting for an answer that never comes.
        let Some(changes) = answer else {
            continue;
        };
        let size: usize = changes.iter().map(Vec::len).sum();
        if changes.len() > MAX_CHANGES || size > MAX_CHANGES_BYTES {
            // Too big for one batch: alone, split the way `Want` answers are.
            answer_want(store, w.doc_id, &w.have, out)?;
            continue;
        }
        if !docs.is_empty()
            && (bytes + size > MAX_CHANGES_BYTES || count + changes.len() > MAX_CHANGES)
        {
            out.send.push(Message::Docs {
                docs: std::mem::take(&mut docs),
            });
            (bytes, count) = (0, 0);
        }
        bytes += size;
        count += changes.len();
        docs.push(DocChanges {
            doc_id: w.doc_id,
            changes,
        });
    }
    if !docs.is_empty() {
        out.send.push(Message::Docs { docs });
    }
    Ok(())
}

/// Whether the puller can tell a tip's `base` and the entry's `heads` from its `change`
/// alone: the change is the one head, and depends on every head of `base` (its other
/// dependencies are their ancestors; the puller applies it where its own heads are all
/// among them).
fn derivable(
    store: &impl ReplicaStore,
    base: &[ChangeHash],
    heads: &[ChangeHash],
    change: &[u8],
) -> bool {
    let Some((hash, deps)) = store.change_id(change) else {
        return false;
    };
    heads == [hash] && base.iter().all(|b| deps.contains(b))
}
