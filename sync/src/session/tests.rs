//! Focused session cases; the seeded simulation in `tests/sim.rs` covers the rest.

use super::*;
use crate::mem::MemStore;
use crate::proto::{Message, OfferEntry};

fn info(id: &str, epoch: u64) -> NodeInfo {
    NodeInfo {
        node_id: id.into(),
        store_epoch: epoch,
    }
}

fn hello(id: &str, epoch: u64, since: Option<Cursor>) -> Message {
    Message::Hello(Hello {
        protocol: crate::PROTOCOL.into(),
        node_id: id.into(),
        store_epoch: epoch,
        since,
        early: None,
    })
}

fn offer(store: &MemStore, after: u64) -> Message {
    let entries = store
        .feed_since(after, 100)
        .unwrap()
        .into_iter()
        .map(|e| OfferEntry {
            heads: store.doc_heads(&e.doc_id).unwrap().unwrap(),
            doc_id: e.doc_id,
            seq: e.seq,
            tip: None,
        })
        .collect::<Vec<_>>();
    Message::Offer {
        after,
        upto: entries.last().map_or(after, |e| e.seq),
        entries,
    }
}

fn has_cursor_save(out: &Output) -> bool {
    out.effects
        .iter()
        .any(|e| matches!(e, Effect::SaveCursor { .. }))
}

#[test]
fn refuses_other_protocols_and_messages_before_hello() {
    let store = MemStore::new(1);
    let mut s = Session::new(info("a", 1), None);
    let err = s.handle(&store, 0, Message::Ack { seq: 0 }).unwrap_err();
    assert!(matches!(err, ProtoError::BeforeHello));
    let mut bad = hello("b", 2, None);
    if let Message::Hello(h) = &mut bad {
        h.protocol = "yiciban/0".into();
    }
    assert!(matches!(
        s.handle(&store, 0, bad),
        Err(ProtoError::WrongProtocol(_))
    ));
}

#[test]
fn held_heads_are_not_wanted_and_move_the_cursor() {
    // The peer's feed holds a document we already have: the echo of our own write.
    let mut peer = MemStore::new(2);
    let mut mine = MemStore::new(1);
    peer.apply("d", &[b"x".to_vec()]);
    mine.apply("d", &[b"x".to_vec()]);
    let mut s = Session::new(info("a", 1), None);
    s.handle(&mine, 0, hello("b", 2, None)).unwrap();
    let out = s.handle(&mine, 0, offer(&peer, 0)).unwrap();
    assert!(
        !out.send
            .iter()
            .any(|m| matches!(m, Message::Want { .. } | Message::WantMany { .. }))
    );
    assert!(has_cursor_save(&out));
    assert_eq!(s.cursor(), Some(Cursor { epoch: 2, seq: 1 }));
}

#[test]
fn cursor_waits_for_applied_so_a_crash_only_costs_a_reoffer() {
    let mut peer = MemStore::new(2);
    let mut mine = MemStore::new(1);
    peer.apply("d", &[b"change".to_vec()]);
    let mut s = Session::new(info("a", 1), None);
    s.handle(&mine, 0, hello("b", 2, None)).unwrap();
    let out = s.handle(&mine, 0, offer(&peer, 0)).unwrap();
    let [Message::WantMany { wants }] = out.send.as_slice() else {
        panic!("expected one WantMany, got {:?}", out.send);
    };
    assert_eq!(wants.len(), 1);
    assert!(wants[0].have.is_empty());
    let changes = peer.changes_after("d", &[]).unwrap();
    let out = s
        .handle(
            &mine,
            0,
            Message::Docs {
                docs: vec![crate::proto::DocChanges {
                    doc_id: "d".into(),
                    changes: changes.clone(),
                }],
            },
        )
        .unwrap();
    assert!(matches!(out.effects.as_slice(), [Effect::Apply { .. }]));
    assert!(!has_cursor_save(&out));
    // Applied but "crashed" before `applied`: the cursor never moved.
    mine.apply("d", &changes);
    assert_eq!(s.cursor(), None);
    let out = s.applied(&mine, "d").unwrap();
    assert!(has_cursor_save(&out));
    assert!(out.send.contains(&Message::Ack { seq: 1 }));
}

#[test]
fn a_gap_in_the_feed_is_refused() {
    let mut peer = MemStore::new(2);
    peer.apply("d", &[b"1".to_vec()]);
    peer.apply("e", &[b"2".to_vec()]);
    let mine = MemStore::new(1);
    let mut s = Session::new(info("a", 1), None);
    s.handle(&mine, 0, hello("b", 2, None)).unwrap();
    // Starts at 1, but we hold no cursor, so only 0 is acceptable.
    let err = s.handle(&mine, 0, offer(&peer, 1)).unwrap_err();
    assert!(matches!(err, ProtoError::OutOfOrder { .. }));
}

#[test]
fn idle_peer_gets_one_feed_end_and_bad_acks_are_refused() {
    let mut mine = MemStore::new(1);
    mine.apply("d", &[b"1".to_vec()]);
    let mut s = Session::new(info("a", 1), None);
    let cursor = Cursor { epoch: 1, seq: 1 };
    let out = s.handle(&mine, 0, hello("b", 2, Some(cursor))).unwrap();
    assert_eq!(out.send, vec![Message::FeedEnd { head_seq: 1 }]);
    assert!(s.tick(&mine, 1).unwrap().send.is_empty());
    let err = s.handle(&mine, 0, Message::Ack { seq: 9 }).unwrap_err();
    assert!(matches!(err, ProtoError::AckBeyondSent { .. }));
}

#[test]
fn a_stale_epoch_gets_a_digest() {
    let mut mine = MemStore::new(5);
    mine.apply("d", &[b"1".to_vec()]);
    let mut s = Session::new(info("a", 5), None);
    let old = Cursor { epoch: 4, seq: 1 };
    let out = s.handle(&mine, 0, hello("b", 2, Some(old))).unwrap();
    assert!(matches!(
        out.send.first(),
        Some(Message::Digest { after: 0, .. })
    ));
}

#[test]
fn blob_chunks_are_bounded_by_the_blob() {
    let store = MemStore::new(1);
    let mut s = Session::new(info("a", 1), None);
    s.handle(&store, 0, hello("b", 2, None)).unwrap();
    s.handle(&store, 0, Message::FeedEnd { head_seq: 0 })
        .unwrap();
    let out = s.want_blob([7; 32], 10).unwrap();
    assert_eq!(
        out.send,
        vec![Message::BlobWant {
            hash: [7; 32],
            offset: 10
        }]
    );
    let chunk = Message::BlobChunk {
        hash: [7; 32],
        offset: 10,
        total_len: 12,
        bytes: vec![0; 5],
    };
    assert!(matches!(
        s.handle(&store, 0, chunk),
        Err(ProtoError::BadBlobChunk(_))
    ));
}

#[test]
fn changes_that_never_supply_the_heads_end_the_session() {
    let mut peer = MemStore::new(2);
    peer.apply("d", &[b"real".to_vec()]);
    let mine = MemStore::new(1);
    let mut s = Session::new(info("a", 1), None);
    s.handle(&mine, 0, hello("b", 2, None)).unwrap();
    s.handle(&mine, 0, offer(&peer, 0)).unwrap();
    let bogus = || Message::Changes {
        doc_id: "d".into(),
        changes: vec![],
    };
    let mut ended = false;
    for _ in 0..20 {
        s.handle(&mine, 0, bogus()).unwrap();
        if let Err(e) = s.applied(&mine, "d") {
            assert!(matches!(e, ProtoError::NoProgress(_)));
            ended = true;
            break;
        }
    }
    assert!(ended, "the session must give up");
}

#[test]
fn large_documents_are_split_over_several_changes_messages() {
    let mut store = MemStore::new(1);
    let big = |b: u8| vec![b; 5 * 1024 * 1024];
    store.apply("d", &[big(1), big(2), b"small".to_vec()]);
    let mut s = Session::new(info("a", 1), None);
    s.handle(&store, 0, hello("b", 2, None)).unwrap();
    let want = Message::Want {
        doc_id: "d".into(),
        have: vec![],
    };
    let out = s.handle(&store, 0, want).unwrap();
    let parts: Vec<usize> = out
        .send
        .iter()
        .filter_map(|m| match m {
            Message::Changes { changes, .. } => Some(changes.len()),
            _ => None,
        })
        .collect();
    assert_eq!(parts.iter().sum::<usize>(), 3);
    assert!(parts.len() >= 2);
    for m in &out.send {
        assert!(crate::proto::encode(m).len() < crate::frame::MAX_FRAME_LEN);
    }
}

#[test]
fn want_many_is_answered_in_docs_batches_within_the_limit() {
    let mut store = MemStore::new(1);
    // Three 3 MiB documents, a 10 MiB one and a small one: the big one goes alone as
    // `Changes`, the others share `Docs` messages of at most MAX_CHANGES_BYTES each.
    for (i, len) in [3usize, 3, 3, 0].iter().enumerate() {
        store.apply(&format!("d{i}"), &[vec![i as u8; len * 1024 * 1024 + 1]]);
    }
    store.apply(
        "huge",
        &[vec![9; 5 * 1024 * 1024], vec![8; 5 * 1024 * 1024]],
    );
    let mut s = Session::new(info("a", 1), None);
    s.handle(&store, 0, hello("b", 2, None)).unwrap();
    let wants = ["d0", "d1", "huge", "d2", "d3", "missing"]
        .iter()
        .map(|d| crate::proto::WantEntry {
            doc_id: d.to_string(),
            have: vec![],
        })
        .collect();
    let out = s.handle(&store, 0, Message::WantMany { wants }).unwrap();
    let mut got = Vec::new();
    for m in &out.send {
        assert!(crate::proto::encode(m).len() < crate::frame::MAX_FRAME_LEN);
        match m {
            Message::Docs { docs } => {
                let bytes: usize = docs
                    .iter()
                    .flat_map(|d| d.changes.iter().map(Vec::len))
                    .sum();
                assert!(bytes <= crate::proto::MAX_CHANGES_BYTES, "{bytes}");
                got.extend(docs.iter().map(|d| d.doc_id.clone()));
            }
            Message::Changes { doc_id, .. } => got.push(doc_id.clone()),
            other => panic!("unexpected {other:?}"),
        }
    }
    got.sort();
    got.dedup();
    assert_eq!(got, ["d0", "d1", "d2", "d3", "huge"]);
    assert!(
        out.send
            .iter()
            .filter(|m| matches!(m, Message::Docs { .. }))
            .count()
            >= 2
    );
}

#[test]
fn what_the_peer_just_sent_is_not_offered_back() {
    // b offers two documents; a applies them. a's feed now holds both (its own copies), but
    // b said it holds exactly those heads: a's next offer covers the range with no entries.
    let mut peer = MemStore::new(2);
    let mut mine = MemStore::new(1);
    peer.apply("d1", &[b"one".to_vec()]);
    peer.apply("d2", &[b"two".to_vec()]);
    let mut s = Session::new(info("a", 1), None);
    s.handle(&mine, 0, hello("b", 2, Some(Cursor { epoch: 1, seq: 0 })))
        .unwrap();
    s.handle(&mine, 0, offer(&peer, 0)).unwrap();
    for d in ["d1", "d2"] {
        let changes = peer.changes_after(d, &[]).unwrap();
        mine.apply(d, &changes);
    }
    s.applied_all(&mine, ["d1", "d2"]).unwrap();
    // A local change to d2 after that is offered; d1 is not.
    mine.apply("d2", &[b"local".to_vec()]);
    let out = s.tick(&mine, 0).unwrap();
    let offered: Vec<&str> = out
        .send
        .iter()
        .filter_map(|m| match m {
            Message::Offer { entries, .. } => Some(entries),
            _ => None,
        })
        .flatten()
        .map(|e| e.doc_id.as_str())
        .collect();
    assert_eq!(offered, ["d2"]);
}

#[test]
fn a_held_document_is_answered_even_when_nothing_is_new() {
    // The peer may name a change this side does not hold yet: its want must still get an
    // answer (here an empty one), or the peer's entry waits for ever and its cursor with it.
    let mut store = MemStore::new(1);
    store.apply("d", &[b"x".to_vec()]);
    let heads = store.doc_heads("d").unwrap().unwrap();
    let mut s = Session::new(info("a", 1), None);
    s.handle(&store, 0, hello("b", 2, None)).unwrap();
    let wants = vec![
        crate::proto::WantEntry {
            doc_id: "d".into(),
            have: heads,
        },
        crate::proto::WantEntry {
            doc_id: "not-held".into(),
            have: vec![],
        },
    ];
    let out = s.handle(&store, 0, Message::WantMany { wants }).unwrap();
    let [Message::Docs { docs }] = out.send.as_slice() else {
        panic!("expected one Docs, got {:?}", out.send);
    };
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].doc_id, "d");
    assert!(docs[0].changes.is_empty());
}

#[test]
fn an_offer_that_arrives_while_its_document_is_applying_is_not_orphaned() {
    // Docs for d arrive, then (in the same read, before the shell applies) a newer offer
    // of d. Once the apply is done the newer entry must be settled or wanted again, never
    // left waiting for an answer nobody will send.
    let mut peer = MemStore::new(2);
    let mut mine = MemStore::new(1);
    peer.apply("d", &[b"one".to_vec()]);
    let mut s = Session::new(info("a", 1), None);
    s.handle(&mine, 0, hello("b", 2, None)).unwrap();
    s.handle(&mine, 0, offer(&peer, 0)).unwrap();
    let first = peer.changes_after("d", &[]).unwrap();
    let out = s
        .handle(
            &mine,
            0,
            Message::Docs {
                docs: vec![crate::proto::DocChanges {
                    doc_id: "d".into(),
                    changes: first.clone(),
                }],
            },
        )
        .unwrap();
    assert!(matches!(out.effects.as_slice(), [Effect::Apply { .. }]));
    // The peer's d moves on and is offered again before the apply is done.
    peer.apply("d", &[b"two".to_vec()]);
    s.handle(&mine, 0, offer(&peer, 1)).unwrap();
    mine.apply("d", &first);
    let out = s.applied(&mine, "d").unwrap();
    assert!(
        out.send
            .iter()
            .any(|m| matches!(m, Message::Want { doc_id, .. } if doc_id == "d")),
        "the newer offer of d must be wanted again: {:?}",
        out.send
    );
}

/// A pusher (epoch 2) with three documents whose peer (epoch 1) acknowledged the first two.
fn early_pair() -> (MemStore, MemStore) {
    let mut pusher = MemStore::new(2);
    let mut puller = MemStore::new(1);
    for (doc, change) in [("d", b"1"), ("e", b"2"), ("f", b"3")] {
        pusher.apply(doc, &[change.to_vec()]);
        if doc != "f" {
            puller.apply(doc, &[change.to_vec()]);
        }
    }
    (pusher, puller)
}

/// The pusher's session (epoch 2) offering early from `after`, acknowledged by the store of
/// epoch `peer_epoch`, and what its start sends.
fn start_early(pusher: &MemStore, peer_epoch: u64, after: u64) -> (Session, Vec<Message>) {
    let early = EarlyOffer { peer_epoch, after };
    let mut p = Session::new(info("p", 2), None).with_early_offer(Some(early));
    let sent = p.start(pusher, 0).unwrap();
    (p, sent)
}

#[test]
fn an_early_offer_goes_out_behind_the_hello_and_is_taken_whatever_cursor_was_saved() {
    let (pusher, puller) = early_pair();
    // The cursor the puller saved: none (its save was lost), behind, or at the position.
    for saved in [None, Some(1), Some(2)] {
        let (mut p, sent) = start_early(&pusher, 1, 2);
        // Hello with the early offer, then the offer of `f` and the feed's end: no waiting.
        let [
            Message::Hello(h),
            offer @ Message::Offer { after: 2, .. },
            end,
        ] = sent.as_slice()
        else {
            panic!("expected hello, offer, feed end; got {sent:?}");
        };
        assert_eq!(
            h.early,
            Some(EarlyOffer {
                peer_epoch: 1,
                after: 2
            })
        );
        assert_eq!(*end, Message::FeedEnd { head_seq: 3 });
        let cursor = saved.map(|seq| Cursor { epoch: 2, seq });
        let mut q = Session::new(info("q", 1), cursor);
        q.handle(&puller, 0, sent[0].clone()).unwrap();
        let out = q.handle(&puller, 0, offer.clone()).unwrap();
        // Only the document past the acknowledged position is wanted; a cursor saved behind
        // it (or lost) moves up to it at once.
        let Some(Message::WantMany { wants }) = out.send.first() else {
            panic!("expected a WantMany, got {:?}", out.send);
        };
        assert_eq!(wants.len(), 1);
        assert_eq!(wants[0].doc_id, "f");
        let moved = out.send.contains(&Message::Ack { seq: 2 });
        assert_eq!(moved, saved != Some(2), "{:?}", out.send);
        q.handle(&puller, 0, end.clone()).unwrap();
        // The puller's own hello reaches the pusher after its offers: nothing sent twice.
        let reply = p.handle(&pusher, 0, hello("q", 1, cursor)).unwrap();
        assert!(reply.send.is_empty(), "{:?}", reply.send);
        let mut puller = puller.clone();
        puller.apply("f", &pusher.changes("f"));
        let out = q.applied(&puller, "f").unwrap();
        assert!(out.send.contains(&Message::Ack { seq: 3 }));
        assert_eq!(q.cursor(), Some(Cursor { epoch: 2, seq: 3 }));
        // The pusher remembers the acknowledgement for the next session.
        let out = p.handle(&pusher, 0, Message::Ack { seq: 3 }).unwrap();
        assert_eq!(
            out.effects,
            vec![Effect::SaveAcked {
                peer: "q".into(),
                acked: EarlyOffer {
                    peer_epoch: 1,
                    after: 3
                }
            }]
        );
    }
}

#[test]
fn an_early_offer_to_a_restored_store_is_ignored_and_ends_the_session() {
    let (pusher, puller) = early_pair();
    // Acknowledged by epoch 9; the peer's store is now epoch 1 (restored from a backup).
    let (mut p, sent) = start_early(&pusher, 9, 2);
    assert_eq!(sent.len(), 3);
    let mut q = Session::new(info("q", 1), Some(Cursor { epoch: 2, seq: 1 }));
    let mut sent = sent.into_iter();
    if let Some(pusher_hello) = sent.next() {
        q.handle(&puller, 0, pusher_hello).unwrap();
    }
    // The offer and the feed's end are ignored: no want, no cursor move.
    for msg in sent {
        let out = q.handle(&puller, 0, msg).unwrap();
        assert!(out.send.is_empty() && out.effects.is_empty(), "{out:?}");
    }
    assert_eq!(q.cursor(), Some(Cursor { epoch: 2, seq: 1 }));
    assert!(!q.is_caught_up());
    let err = p.handle(&pusher, 0, hello("q", 1, q.cursor())).unwrap_err();
    assert!(matches!(
        err,
        ProtoError::EarlyOfferStale { held: 9, now: 1 }
    ));
}

#[test]
fn an_acknowledged_position_beyond_the_feed_is_not_offered_from() {
    let (pusher, _) = early_pair();
    let (_, sent) = start_early(&pusher, 1, 7);
    let [Message::Hello(h)] = sent.as_slice() else {
        panic!("expected the hello alone, got {sent:?}");
    };
    assert_eq!(h.early, None);
}
