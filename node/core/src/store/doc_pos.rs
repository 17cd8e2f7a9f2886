//! A document's row of `doc_pos-1`: where it stands in the change feed and, when the writer
//! knew them, its current heads. One row for both, so a write that moves a document up the
//! feed rewrites one random leaf page instead of two (the feed position and the heads were two
//! tables before schema 17, `feed_pos-1` and `doc_heads-1`; docs/bench.md, session 17).
//!
//! Row layout: the feed sequence (8 bytes, big-endian), a flag byte (0: heads not known here,
//! a reader loads the document; 1: heads follow), then the heads, 32 bytes each.

/// A decoded row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DocPos {
    /// The document's one live entry in `feed-1`.
    pub seq: u64,
    /// Its current heads; `None`: not known here, load the document.
    pub heads: Option<Vec<[u8; 32]>>,
}

const HEADER: usize = 9;

/// The row for a document at feed sequence `seq` with `heads` (`None`: not known).
pub(crate) fn encode(seq: u64, heads: Option<&[automerge::ChangeHash]>) -> Vec<u8> {
    let n = heads.map_or(0, <[_]>::len);
    let mut row = Vec::with_capacity(HEADER + 32 * n);
    row.extend_from_slice(&seq.to_be_bytes());
    match heads {
        Some(heads) => {
            row.push(1);
            for h in heads {
                row.extend_from_slice(&h.0);
            }
        }
        None => row.push(0),
    }
    row
}

/// The sequence alone, `None` if the row is shorter than its header.
pub(crate) fn seq_of(row: &[u8]) -> Option<u64> {
    let seq: [u8; 8] = row.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(seq))
}

/// The row's parts, `None` if it is damaged: shorter than its header, an unknown flag, heads
/// that are not a whole number of hashes, or bytes after a "not known" flag.
pub(crate) fn decode(row: &[u8]) -> Option<DocPos> {
    let seq = seq_of(row)?;
    let (&flag, heads) = row.get(8..)?.split_first()?;
    let heads = match flag {
        0 if heads.is_empty() => None,
        1 => Some(super::heads_row(heads)?),
        _ => return None,
    };
    Some(DocPos { seq, heads })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_row_says_what_was_written() {
        let heads = [
            automerge::ChangeHash([7; 32]),
            automerge::ChangeHash([9; 32]),
        ];
        let row = encode(42, Some(&heads));
        assert_eq!(row.len(), HEADER + 64);
        assert_eq!(
            decode(&row),
            Some(DocPos {
                seq: 42,
                heads: Some(vec![[7; 32], [9; 32]])
            })
        );
        assert_eq!(seq_of(&row), Some(42));
        let unknown = encode(u64::MAX, None);
        assert_eq!(
            decode(&unknown),
            Some(DocPos {
                seq: u64::MAX,
                heads: None
            })
        );
        // Known to have no heads (an empty document) is not "not known".
        assert_eq!(decode(&encode(1, Some(&[]))).unwrap().heads, Some(vec![]));
    }

    #[test]
    fn damaged_rows_are_refused() {
        let good = encode(5, Some(&[automerge::ChangeHash([1; 32])]));
        assert_eq!(decode(&good[..8]), None, "no flag");
        assert_eq!(decode(&good[..good.len() - 1]), None, "a partial hash");
        let mut flag = good.clone();
        flag[8] = 2;
        assert_eq!(decode(&flag), None, "an unknown flag");
        let mut extra = encode(5, None);
        extra.push(0);
        assert_eq!(decode(&extra), None, "bytes after 'not known'");
        assert_eq!(seq_of(&good[..7]), None);
    }

    proptest! {
        // Fuzz: any bytes decode or are refused, never panic; what decodes encodes back.
        #[test]
        fn any_row_decodes_or_is_refused(row in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(pos) = decode(&row) {
                let heads: Option<Vec<automerge::ChangeHash>> = pos
                    .heads
                    .as_ref()
                    .map(|h| h.iter().map(|h| automerge::ChangeHash(*h)).collect());
                prop_assert_eq!(encode(pos.seq, heads.as_deref()), row);
            }
        }
    }
}
