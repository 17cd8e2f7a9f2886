//! A document's tip (`doc_tips-1`): the change a local event just made and the heads the
//! document had before it. A peer that holds exactly those heads lacks exactly that change,
//! so it is answered without loading the document (`Store::changes_after`).
//!
//! Row layout: the number of base heads (one byte), the base heads (32 bytes each), then the
//! change's raw bytes.

/// Most base heads a row records; a document with more gets no tip.
const MAX_BASE: usize = u8::MAX as usize;

/// A decoded row: borrowed from the stored bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Tip<'a> {
    /// The heads of the document before the change, sorted.
    pub base: Vec<[u8; 32]>,
    pub change: &'a [u8],
}

/// The row for `change` made on a document whose heads were `base`; `None` when `base` has
/// more heads than a row records.
pub(crate) fn encode(base: &[automerge::ChangeHash], change: &[u8]) -> Option<Vec<u8>> {
    let n = u8::try_from(base.len()).ok()?;
    let mut sorted: Vec<[u8; 32]> = base.iter().map(|h| h.0).collect();
    sorted.sort_unstable();
    let mut row = Vec::with_capacity(1 + 32 * sorted.len() + change.len());
    row.push(n);
    for h in &sorted {
        row.extend_from_slice(h);
    }
    row.extend_from_slice(change);
    Some(row)
}

/// The row's parts, `None` if it is too short for what its first byte says or has no change.
pub(crate) fn decode(row: &[u8]) -> Option<Tip<'_>> {
    let (&n, rest) = row.split_first()?;
    let n = usize::from(n);
    debug_assert!(n <= MAX_BASE);
    let heads_len = n.checked_mul(32)?;
    if rest.len() <= heads_len {
        return None;
    }
    let (heads, change) = rest.split_at(heads_len);
    let base = super::heads_row(heads)?;
    Some(Tip { base, change })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_row_round_trips_with_its_base_sorted() {
        let base = [
            automerge::ChangeHash([9; 32]),
            automerge::ChangeHash([1; 32]),
        ];
        let row = encode(&base, b"change").unwrap();
        assert_eq!(
            decode(&row),
            Some(Tip {
                base: vec![[1; 32], [9; 32]],
                change: b"change"
            })
        );
        assert_eq!(decode(&row[..row.len() - 6]), None, "no change bytes");
        assert_eq!(decode(&[]), None);
        let many = vec![automerge::ChangeHash([0; 32]); 256];
        assert_eq!(encode(&many, b"c"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_rows_never_panic(row in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Some(tip) = decode(&row) {
                prop_assert_eq!(1 + 32 * tip.base.len() + tip.change.len(), row.len());
            }
        }
    }
}
