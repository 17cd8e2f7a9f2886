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

/// The bytes every Automerge chunk starts with.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// The chunk type of an uncompressed change.
const CHANGE_CHUNK: u8 = 1;

/// What an uncompressed Automerge change chunk says of itself, read without parsing its
/// operations: its hash (Automerge's: SHA-256 of the chunk type, the body's length and the
/// body, whose first four bytes the header carries as its checksum) and the hashes it
/// depends on (the body's first field). `None` for anything else: a compressed change, a
/// document, trailing bytes, a checksum that does not match; the caller then asks Automerge.
/// Offers read it of every tip they carry, where parsing the change cost most of a new
/// case's offer.
pub(crate) fn change_id(raw: &[u8]) -> Option<([u8; 32], Vec<[u8; 32]>)> {
    use sha2::{Digest, Sha256};
    let rest = raw.strip_prefix(&MAGIC)?;
    let (checksum, rest) = rest.split_at_checked(4)?;
    let (&kind, rest) = rest.split_first()?;
    if kind != CHANGE_CHUNK {
        return None;
    }
    let (len, rest) = uleb(rest)?;
    if u64::try_from(rest.len()).ok()? != len {
        return None;
    }
    let body = rest;
    let mut hasher = Sha256::new();
    hasher.update([kind]);
    hasher.update(leb_bytes(len));
    hasher.update(body);
    let hash: [u8; 32] = hasher.finalize().into();
    if hash[..4] != *checksum {
        return None;
    }
    let (count, mut deps_bytes) = uleb(body)?;
    let count = usize::try_from(count).ok()?;
    if count > deps_bytes.len() / 32 {
        return None;
    }
    let mut deps = Vec::with_capacity(count);
    for _ in 0..count {
        let (dep, rest) = deps_bytes.split_first_chunk::<32>()?;
        deps.push(*dep);
        deps_bytes = rest;
    }
    Some((hash, deps))
}

/// [`change_id`], or, for a change it cannot read so (a compressed one), what Automerge
/// parses of it; `None` when the bytes are no change.
pub(crate) fn change_id_or_parse(raw: &[u8]) -> Option<([u8; 32], Vec<[u8; 32]>)> {
    if let Some(id) = change_id(raw) {
        return Some(id);
    }
    let change = automerge::Change::from_bytes(raw.to_vec()).ok()?;
    Some((change.hash().0, change.deps().iter().map(|h| h.0).collect()))
}

/// An unsigned LEB128 integer at the start of `bytes`, and the bytes after it; `None` if it
/// runs past ten bytes, past `bytes` or past 64 bits.
fn uleb(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        let shift = 7 * u32::try_from(i).ok()?;
        if shift == 63 && part > 1 {
            return None;
        }
        value |= part << shift;
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// `value` as the shortest unsigned LEB128, as Automerge writes a chunk's length.
fn leb_bytes(mut value: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    loop {
        let b = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
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

    #[test]
    fn a_change_says_its_hash_and_dependencies_as_automerge_reads_them() {
        use automerge::transaction::Transactable;
        let mut doc = automerge::AutoCommit::new();
        let mut changes = Vec::new();
        for i in 0..3 {
            // Large enough for Automerge to keep a compressed form too.
            doc.put(automerge::ROOT, format!("k{i}"), "x".repeat(600))
                .unwrap();
            doc.commit();
            changes.push(doc.get_last_local_change().unwrap());
        }
        let mut other = automerge::AutoCommit::new().with_actor(automerge::ActorId::random());
        other.put(automerge::ROOT, "o", 1).unwrap();
        other.commit();
        doc.merge(&mut other).unwrap();
        doc.put(automerge::ROOT, "after", 2).unwrap();
        doc.commit();
        changes.push(doc.get_last_local_change().unwrap());
        for change in &changes {
            let deps: Vec<[u8; 32]> = change.deps().iter().map(|h| h.0).collect();
            assert_eq!(
                change_id(change.raw_bytes()),
                Some((change.hash().0, deps)),
                "{} deps",
                change.deps().len()
            );
        }
        assert_eq!(
            changes[3].deps().len(),
            2,
            "a merge's change names both heads"
        );
        let mut compressed = changes[1].clone();
        assert_eq!(change_id(compressed.bytes().as_ref()), None, "compressed");
        let raw = changes[1].raw_bytes();
        let mut flipped = raw.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(change_id(&flipped), None, "checksum");
        assert_eq!(change_id(&raw[..raw.len() - 1]), None, "cut short");
        let mut longer = raw.to_vec();
        longer.push(0);
        assert_eq!(change_id(&longer), None, "trailing bytes");
        assert_eq!(change_id(&doc.save()), None, "a document");
        assert_eq!(uleb(&[0xff; 11]), None);
        assert_eq!(uleb(&[0x80, 0x01]), Some((128, &[][..])));
        assert_eq!(leb_bytes(300), vec![0xac, 0x02]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_chunks_never_panic(row in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut chunk = MAGIC.to_vec();
            chunk.extend_from_slice(&row);
            let _ = change_id(&chunk);
            let _ = change_id(&row);
        }

        #[test]
        fn random_rows_never_panic(row in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Some(tip) = decode(&row) {
                prop_assert_eq!(1 + 32 * tip.base.len() + tip.change.len(), row.len());
            }
        }
    }
}
