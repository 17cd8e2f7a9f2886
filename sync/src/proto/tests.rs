//! Fuzz properties of the codec: no input panics it, every message survives a roundtrip.

use super::*;
use proptest::collection::vec;
use proptest::prelude::*;

fn hash() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn id() -> impl Strategy<Value = String> {
    "[a-z0-9/\\-一二三]{0,24}"
}

fn message() -> impl Strategy<Value = Message> {
    let cursor = (any::<u64>(), any::<u64>()).prop_map(|(epoch, seq)| Cursor { epoch, seq });
    // A derived tip travels without its base and its entry's heads: decoded, both are empty.
    let tip = (vec(hash(), 1..3), vec(any::<u8>(), 0..40), any::<bool>()).prop_map(
        |(base, change, derived)| OfferTip {
            base: if derived { Vec::new() } else { base },
            change,
            derived,
        },
    );
    let offer = (
        id(),
        any::<u64>(),
        vec(hash(), 0..4),
        proptest::option::of(tip),
    )
        .prop_map(|(doc_id, seq, heads, tip)| OfferEntry {
            doc_id,
            seq,
            heads: if tip.as_ref().is_some_and(|t| t.derived) {
                Vec::new()
            } else {
                heads
            },
            tip,
        });
    let digest =
        (id(), vec(hash(), 0..4)).prop_map(|(doc_id, heads)| DigestEntry { doc_id, heads });
    prop_oneof![
        (
            id(),
            id(),
            any::<u64>(),
            proptest::option::of(cursor),
            proptest::option::of((any::<u64>(), any::<u64>()))
        )
            .prop_map(|(p, n, e, s, early)| {
                Message::Hello(Hello {
                    protocol: p,
                    node_id: n,
                    store_epoch: e,
                    since: s,
                    early: early.map(|(peer_epoch, after)| EarlyOffer { peer_epoch, after }),
                })
            }),
        (any::<u64>(), any::<u64>(), vec(offer, 0..5)).prop_map(|(after, upto, entries)| {
            Message::Offer {
                after,
                upto,
                entries,
            }
        }),
        any::<u64>().prop_map(|head_seq| Message::FeedEnd { head_seq }),
        (any::<u64>(), any::<u64>(), vec(digest, 0..5)).prop_map(|(after, upto, entries)| {
            Message::Digest {
                after,
                upto,
                entries,
            }
        }),
        (id(), vec(hash(), 0..4)).prop_map(|(doc_id, have)| Message::Want { doc_id, have }),
        (id(), vec(vec(any::<u8>(), 0..40), 0..4))
            .prop_map(|(doc_id, changes)| Message::Changes { doc_id, changes }),
        any::<u64>().prop_map(|seq| Message::Ack { seq }),
        (hash(), any::<u64>()).prop_map(|(hash, offset)| Message::BlobWant { hash, offset }),
        (hash(), any::<u64>(), any::<u64>(), vec(any::<u8>(), 0..100)).prop_map(
            |(hash, offset, total_len, bytes)| Message::BlobChunk {
                hash,
                offset,
                total_len,
                bytes
            }
        ),
        hash().prop_map(|hash| Message::BlobMissing { hash }),
        vec(
            (id(), vec(hash(), 0..3)).prop_map(|(doc_id, have)| WantEntry { doc_id, have }),
            0..5
        )
        .prop_map(|wants| Message::WantMany { wants }),
        vec(
            (id(), vec(vec(any::<u8>(), 0..40), 0..3))
                .prop_map(|(doc_id, changes)| DocChanges { doc_id, changes }),
            0..5
        )
        .prop_map(|docs| Message::Docs { docs }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        if let Ok(msg) = decode(&bytes) {
            prop_assert_eq!(encode(&msg), bytes);
        }
    }

    #[test]
    fn prefixed_bytes_never_panic(tag in 1u8..=13, bytes in vec(any::<u8>(), 0..128)) {
        let mut input = vec![WIRE_VERSION, tag];
        input.extend_from_slice(&bytes);
        let _ = decode(&input);
    }

    #[test]
    fn roundtrip(msg in message()) {
        let bytes = encode(&msg);
        prop_assert_eq!(decode(&bytes), Ok(msg.clone()));
        for cut in 0..bytes.len() {
            prop_assert!(decode(&bytes[..cut]).is_err());
        }
    }
}

#[test]
fn hostile_counts_are_refused_before_allocation() {
    // An offer (tag, after, upto) claiming u32::MAX entries, and one claiming the limit with
    // no bytes behind it.
    let mut huge = vec![WIRE_VERSION, 2];
    huge.extend_from_slice(&[0; 16]);
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode(&huge), Err(DecodeError::TooLong { .. })));
    let mut short = vec![WIRE_VERSION, 2];
    short.extend_from_slice(&[0; 16]);
    short.extend_from_slice(&(MAX_BATCH as u32).to_be_bytes());
    assert_eq!(decode(&short), Err(DecodeError::Truncated));
    let mut chunk = vec![WIRE_VERSION, 9];
    chunk.extend_from_slice(&[0; 48]);
    chunk.extend_from_slice(&((MAX_BLOB_CHUNK + 1) as u32).to_be_bytes());
    assert!(matches!(decode(&chunk), Err(DecodeError::TooLong { .. })));
    assert_eq!(decode(&[2, 1]), Err(DecodeError::Version(2)));
    assert_eq!(
        decode(&[WIRE_VERSION, 99]),
        Err(DecodeError::UnknownTag(99))
    );
}

/// An offer entry with its tip: one document, one head, the tip on one base head.
fn offer_with_tip(change_len: usize) -> Vec<u8> {
    encode(&Message::Offer {
        after: 0,
        upto: 1,
        entries: vec![OfferEntry {
            doc_id: "d".into(),
            seq: 1,
            heads: vec![[1; 32]],
            tip: Some(OfferTip {
                base: vec![[2; 32]],
                change: vec![7; change_len],
                derived: false,
            }),
        }],
    })
}

#[test]
fn an_offer_with_tips_is_tag_13_and_bounds_its_changes() {
    let ok = offer_with_tip(10);
    assert_eq!(ok[1], 13);
    assert!(decode(&ok).is_ok());
    // A tip over the limit is refused before its bytes are read.
    let big = offer_with_tip(MAX_TIP_BYTES + 1);
    assert!(matches!(
        decode(&big),
        Err(DecodeError::TooLong {
            what: "tip change",
            ..
        })
    ));
    // Without a tip the same offer is tag 2; tag 13 carrying none is not canonical.
    let plain = Message::Offer {
        after: 0,
        upto: 1,
        entries: vec![OfferEntry {
            doc_id: "d".into(),
            seq: 1,
            heads: vec![],
            tip: None,
        }],
    };
    let mut bytes = encode(&plain);
    assert_eq!(bytes[1], 2);
    bytes[1] = 13;
    bytes.push(0);
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::BadValue("offer with tips carries none"))
    );
    // A tip on no base heads would apply to nothing: refused.
    let mut empty_base = encode(&plain);
    empty_base[1] = 13;
    empty_base.push(1);
    empty_base.extend_from_slice(&0u32.to_be_bytes());
    empty_base.extend_from_slice(&0u32.to_be_bytes());
    assert_eq!(decode(&empty_base), Err(DecodeError::BadValue("tip base")));
}

#[test]
fn a_derived_tip_is_tag_16_and_sends_no_heads() {
    let entry = |derived: bool| OfferEntry {
        doc_id: "d".into(),
        seq: 1,
        heads: if derived { vec![] } else { vec![[1; 32]] },
        tip: Some(OfferTip {
            base: if derived { vec![] } else { vec![[2; 32]] },
            change: vec![7; 10],
            derived,
        }),
    };
    let offer = |entries| Message::Offer {
        after: 0,
        upto: 2,
        entries,
    };
    let full = encode(&offer(vec![entry(false)]));
    let derived = encode(&offer(vec![entry(true)]));
    assert_eq!(full[1], 13);
    assert_eq!(derived[1], 16);
    // The two hashes and their counts are what it saves.
    assert_eq!(full.len() - derived.len(), 64 + 8);
    assert_eq!(decode(&derived), Ok(offer(vec![entry(true)])));
    // With a full tip and a plain entry beside it, each keeps its heads.
    let mixed = offer(vec![
        entry(true),
        OfferEntry {
            seq: 2,
            ..entry(false)
        },
    ]);
    assert_eq!(decode(&encode(&mixed)), Ok(mixed));
    // Tag 16 must carry a derived tip; an unknown flag is refused.
    let mut none = encode(&offer(vec![entry(false)]));
    none[1] = 16;
    assert!(decode(&none).is_err());
    let mut bad_flag = derived.clone();
    let flag_at = 2 + 8 + 8 + 4 + 4 + 1 + 8;
    assert_eq!(bad_flag[flag_at], 2);
    bad_flag[flag_at] = 3;
    assert_eq!(decode(&bad_flag), Err(DecodeError::BadValue("tip flag")));
    // Truncated anywhere: an error, never a panic.
    for cut in 0..derived.len() {
        assert!(decode(&derived[..cut]).is_err());
    }
}
