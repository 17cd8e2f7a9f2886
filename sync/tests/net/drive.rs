//! Driving sessions: connecting, sending through the faulty wire, performing effects.

use std::collections::VecDeque;

use yiciban_sync::proto::{self, Cursor, Message};
use yiciban_sync::session::{Effect, NodeInfo, Output, ProtoError, Session};
use yiciban_sync::store::ReplicaStore;

use super::{BLOB_RETRY_STEPS, Conn, Packet, Sim, parse_blob_ref};

impl Sim {
    pub(super) fn connect(&mut self, l: usize) {
        let id = self.next_id;
        self.next_id += 1;
        let ends = self.links[l].ends;
        let session = |me: usize, peer: usize, nodes: &[super::Node]| {
            let n = &nodes[me];
            let info = NodeInfo {
                node_id: n.id.clone(),
                store_epoch: n.store.epoch(),
            };
            // An acknowledgement of this store's feed, not of one restored since.
            let early = n
                .acked
                .get(&nodes[peer].id)
                .filter(|(own, _)| *own == n.store.epoch())
                .map(|(_, acked)| *acked);
            Session::new(info, n.cursors.get(&nodes[peer].id).copied()).with_early_offer(early)
        };
        let mut sessions = [
            session(ends[0], ends[1], &self.nodes),
            session(ends[1], ends[0], &self.nodes),
        ];
        let mut hellos = Vec::new();
        for (side, session) in sessions.iter_mut().enumerate() {
            let store = &self.nodes[ends[side]].store;
            match session.start(store, self.now_ms) {
                Ok(msgs) => {
                    if matches!(msgs.first(), Some(Message::Hello(h)) if h.early.is_some()) {
                        self.stats.early_offers += 1;
                    }
                    hellos.push(msgs);
                }
                Err(_) => {
                    self.stats.session_errors += 1;
                    return;
                }
            }
        }
        self.links[l].conn = Some(Conn {
            id,
            sessions,
            started_step: self.step_no,
        });
        for (side, hello) in hellos.into_iter().enumerate() {
            self.send(l, side, hello);
        }
        for side in 0..2 {
            self.want_missing_blobs(l, side);
        }
    }

    fn send(&mut self, l: usize, from_side: usize, msgs: Vec<Message>) {
        let Some(conn) = self.links[l].conn.as_ref().map(|c| c.id) else {
            return;
        };
        for msg in msgs {
            let bytes = proto::encode(&msg);
            self.stats.messages += 1;
            self.stats.bytes += bytes.len() as u64;
            if matches!(msg, Message::Digest { .. }) {
                self.stats.digests += 1;
            }
            if matches!(msg, Message::Want { .. } | Message::WantMany { .. }) {
                self.stats.wants += 1;
            }
            if self.rng.chance(self.faults.loss) {
                continue;
            }
            let copies = if self.rng.chance(self.faults.dup) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let mut delay = self.faults.delay_ms;
                if self.rng.chance(self.faults.reorder) {
                    delay += self.rng.below(self.faults.reorder_ms + 1);
                }
                self.next_id += 1;
                self.queue.push(Packet {
                    at: self.now_ms + delay,
                    order: self.next_id,
                    link: l,
                    conn,
                    to_side: 1 - from_side,
                    bytes: bytes.clone(),
                });
            }
        }
    }

    pub(super) fn deliver_due(&mut self) {
        let now = self.now_ms;
        let mut due: Vec<Packet> = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            if self.queue[i].at <= now {
                due.push(self.queue.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|p| (p.at, p.order));
        for p in due {
            self.deliver(p);
        }
    }

    fn deliver(&mut self, p: Packet) {
        let link = &mut self.links[p.link];
        let Some(conn) = link.conn.as_mut().filter(|c| c.id == p.conn) else {
            return; // the connection it belonged to is gone
        };
        let node = link.ends[p.to_side];
        let peer_node = link.ends[1 - p.to_side];
        let result = proto::decode(&p.bytes).map_err(Into::into).and_then(|msg| {
            conn.sessions[p.to_side].handle(&self.nodes[node].store, self.now_ms, msg)
        });
        match result {
            Ok(out) => self.perform(p.link, p.to_side, out),
            Err(ProtoError::EarlyOfferStale { .. }) => {
                // The shell forgets the acknowledgement and starts again without it.
                self.stats.early_refused += 1;
                let peer = self.nodes[peer_node].id.clone();
                self.nodes[node].acked.remove(&peer);
                self.links[p.link].conn = None;
            }
            Err(_) => {
                // A protocol error ends the connection; the next step reconnects.
                self.stats.session_errors += 1;
                self.links[p.link].conn = None;
            }
        }
    }

    pub(super) fn tick(&mut self, l: usize, side: usize) {
        let link = &mut self.links[l];
        let Some(conn) = link.conn.as_mut() else {
            return;
        };
        let node = link.ends[side];
        let retry = (self.step_no - conn.started_step).checked_rem(BLOB_RETRY_STEPS) == Some(0);
        match conn.sessions[side].tick(&self.nodes[node].store, self.now_ms) {
            Ok(out) => self.perform(l, side, out),
            Err(_) => self.links[l].conn = None,
        }
        if retry {
            self.want_missing_blobs(l, side);
        }
    }

    /// The shell's part of blobs: ask for every referenced blob the store lacks, from the
    /// length already held.
    fn want_missing_blobs(&mut self, l: usize, side: usize) {
        let node = &self.nodes[self.links[l].ends[side]];
        let wants: Vec<_> = node
            .referenced
            .difference(&node.store.blob_hashes())
            .map(|h| (*h, node.store.blob_have(h)))
            .collect();
        for (hash, have) in wants {
            let Some(conn) = self.links[l].conn.as_mut() else {
                return;
            };
            if let Ok(out) = conn.sessions[side].want_blob(hash, have) {
                self.perform(l, side, out);
            }
        }
    }

    /// Sends and performs one output, and everything that follows from it.
    fn perform(&mut self, l: usize, side: usize, out: Output) {
        let mut work = VecDeque::from([out]);
        while let Some(out) = work.pop_front() {
            self.send(l, side, out.send);
            for effect in out.effects {
                if let Some(next) = self.effect(l, side, effect) {
                    work.push_back(next);
                }
            }
        }
    }

    fn effect(&mut self, l: usize, side: usize, effect: Effect) -> Option<Output> {
        let me = self.links[l].ends[side];
        let peer = self.links[l].ends[1 - side];
        match effect {
            // The county refuses a rogue's document for good: not stored, the entry settled,
            // the sender told; the session goes on.
            Effect::Apply { doc_id, changes } if me == 0 && self.county_refuses(&changes) => {
                self.stats.refused += 1;
                self.nodes[me].quarantined.insert(doc_id.clone());
                let conn = self.links[l].conn.as_mut()?;
                Some(conn.sessions[side].refused(&doc_id, "refused for good"))
            }
            Effect::Refused { doc_id, .. } => {
                self.stats.refusals_heard += 1;
                self.nodes[me].quarantined.insert(doc_id);
                None
            }
            Effect::Apply { doc_id, changes } => {
                let node = &mut self.nodes[me];
                node.store.apply(&doc_id, &changes);
                node.referenced
                    .extend(changes.iter().filter_map(|c| parse_blob_ref(c)));
                if self.rng.chance(self.faults.crash) {
                    // Crash after the merge, before `applied`: the cursor was not saved.
                    self.drop_conns_of(me);
                    return None;
                }
                let conn = self.links[l].conn.as_mut()?;
                let Ok(mut out) = conn.sessions[side].applied(&self.nodes[me].store, &doc_id)
                else {
                    self.stats.session_errors += 1;
                    self.links[l].conn = None;
                    return None;
                };
                // New blob references: ask this peer for them now.
                let node = &self.nodes[me];
                for hash in node.referenced.difference(&node.store.blob_hashes()) {
                    if let Ok(more) =
                        conn.sessions[side].want_blob(*hash, node.store.blob_have(hash))
                    {
                        out.send.extend(more.send);
                    }
                }
                Some(out)
            }
            Effect::SaveCursor { peer: name, cursor } => {
                assert_eq!(name, self.nodes[peer].id, "cursor saved for the wrong peer");
                if self.violation.is_none() {
                    self.violation = self.cursor_violation(me, peer, cursor);
                }
                self.nodes[me].cursors.insert(name, cursor);
                None
            }
            Effect::SaveAcked { peer: name, acked } => {
                assert_eq!(
                    name, self.nodes[peer].id,
                    "acknowledgement saved for the wrong peer"
                );
                // What an early offer will rely on: the peer's store, at that epoch, holds
                // everything of this feed up to the acknowledged position.
                if self.violation.is_none() && self.nodes[peer].store.epoch() == acked.peer_epoch {
                    let mine = Cursor {
                        epoch: self.nodes[me].store.epoch(),
                        seq: acked.after,
                    };
                    self.violation = self.cursor_violation(peer, me, mine);
                }
                let own = self.nodes[me].store.epoch();
                self.nodes[me].acked.insert(name, (own, acked));
                None
            }
            Effect::StoreBlobChunk {
                hash,
                offset,
                total_len,
                bytes,
            } => {
                let node = &mut self.nodes[me];
                node.blob_bytes += bytes.len() as u64;
                node.store.put_blob_chunk(&hash, offset, total_len, &bytes);
                None
            }
            Effect::BlobMissing { .. } => None,
        }
    }

    /// The cursor rule, checked against the stores: every document in `peer`'s feed at or
    /// below the cursor is held by `me` with at least the peer's heads.
    fn cursor_violation(&self, me: usize, peer: usize, cursor: Cursor) -> Option<String> {
        let theirs = &self.nodes[peer].store;
        if theirs.epoch() != cursor.epoch {
            return None;
        }
        let mine = &self.nodes[me].store;
        let feed = theirs.feed_since(0, usize::MAX).ok()?;
        feed.into_iter()
            .take_while(|e| e.seq <= cursor.seq)
            // A document this node refused for good is passed without being held.
            .filter(|e| !self.nodes[me].quarantined.contains(&e.doc_id))
            .find(|e| {
                let heads = theirs
                    .doc_heads(&e.doc_id)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                !mine.has_heads(&e.doc_id, &heads).unwrap_or(false)
            })
            .map(|e| {
                format!(
                    "{} saved cursor {cursor:?} for {} but lacks {} (seq {})",
                    self.nodes[me].id, self.nodes[peer].id, e.doc_id, e.seq
                )
            })
    }
}
