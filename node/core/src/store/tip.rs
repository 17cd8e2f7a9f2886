//! A document's tip (`doc_heads-2`): what sync asks of a document, answered without loading it.
//!
//! Loading an Automerge document is the dearest step of a small catch-up: a puller loaded
//! each offered case to learn whether it already held the offered heads, and a pusher loaded
//! it again to cut the changes the puller lacked. The writer has the document loaded anyway
//! when it stores it, so it stores beside it, in one row:
//!
//! - the heads;
//! - the hashes of every change while there are at most [`MAX_HISTORY`] (a case has a handful;
//!   an audit segment has hundreds and keeps none): "do I hold these heads?" is a lookup;
//! - the last change, with the heads the document had without it, while the document has one
//!   head, few changes and the change is neither its first nor over [`MAX_LAST_BYTES`]: a peer whose heads are
//!   exactly those lacks that change and nothing else, so it is the whole answer. (Not the
//!   change's deps: Automerge adds an actor's previous change to them even when another
//!   change already depends on it, so a village's comment on a case the county touched lists
//!   both the filing and the county's change.)
//!
//! Row layout (integers little-endian): `u16` heads count, the heads; `u16` history count or
//! [`NO_HISTORY`], the hashes; `u8` count of the heads below the last change or [`NO_LAST`],
//! those heads, `u32` length, the change's bytes. Nothing may follow.

use automerge::{Automerge, ReadDoc};
use thiserror::Error;

/// Most change hashes a tip keeps; a document with more keeps none and is loaded to look one up.
pub(crate) const MAX_HISTORY: usize = 64;
/// Largest last change a tip keeps.
pub(crate) const MAX_LAST_BYTES: usize = 16 * 1024;
/// Most heads or deps a row may list (the sync protocol's own bound).
const MAX_HASHES: usize = yiciban_sync::proto::MAX_HEADS;
const NO_HISTORY: u16 = u16::MAX;
const NO_LAST: u8 = u8::MAX;

/// What sync reads of a document without loading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tip {
    pub(crate) heads: Vec<[u8; 32]>,
    /// Every change's hash, sorted; `None` when the document has more than [`MAX_HISTORY`].
    history: Option<Vec<[u8; 32]>>,
    last: Option<LastChange>,
}

/// The change that is the document's only head.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LastChange {
    /// The heads of the document without this change, sorted.
    below: Vec<[u8; 32]>,
    bytes: Vec<u8>,
}

/// A `doc_heads-2` row that does not parse: the reader loads the document instead.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum TipError {
    #[error("tip row truncated at byte {0}")]
    Truncated(usize),
    #[error("tip row lists {0} hashes, more than allowed")]
    TooMany(usize),
    #[error("tip row has {0} bytes after its end")]
    Trailing(usize),
    #[error("tip row lists hashes out of order")]
    Unsorted,
}

/// Strictly increasing: what `Tip::holds` and `Tip::changes_after` compare against.
fn sorted(hashes: &[[u8; 32]]) -> bool {
    hashes.windows(2).all(|w| w[0] < w[1])
}

impl Tip {
    /// The tip of a loaded document; `None` for one with more heads than a row lists (it
    /// gets no row, and readers load it).
    pub(crate) fn of(doc: &Automerge) -> Option<Self> {
        let heads = doc.get_heads();
        if heads.len() > MAX_HASHES {
            return None;
        }
        let metas = doc.get_changes_meta(&[]);
        let history = (metas.len() <= MAX_HISTORY).then(|| {
            let mut h: Vec<[u8; 32]> = metas.iter().map(|m| m.hash.0).collect();
            h.sort_unstable();
            h
        });
        let last = match heads.as_slice() {
            [head] if history.is_some() => {
                // The heads below the last change: the other changes no other one depends on.
                let depended: std::collections::HashSet<[u8; 32]> = metas
                    .iter()
                    .filter(|m| m.hash != *head)
                    .flat_map(|m| m.deps.iter().map(|d| d.0))
                    .collect();
                let mut below: Vec<[u8; 32]> = metas
                    .iter()
                    .map(|m| m.hash.0)
                    .filter(|h| *h != head.0 && !depended.contains(h))
                    .collect();
                below.sort_unstable();
                // Not the first change: a peer that holds nothing is sent the whole
                // document, so a copy of it here would only double what a new case writes.
                let kept = !below.is_empty() && below.len() < usize::from(NO_LAST);
                doc.get_change_by_hash(head)
                    .filter(|c| kept && c.raw_bytes().len() <= MAX_LAST_BYTES)
                    .map(|c| LastChange {
                        below,
                        bytes: c.raw_bytes().to_vec(),
                    })
            }
            _ => None,
        };
        Some(Self {
            heads: heads.into_iter().map(|h| h.0).collect(),
            history,
            last,
        })
    }

    /// Whether the document holds every change `hashes` names; `None` when the tip cannot
    /// tell (it keeps no history) and the document must be loaded.
    pub(crate) fn holds(&self, hashes: &[[u8; 32]]) -> Option<bool> {
        if hashes.iter().all(|h| self.heads.contains(h)) {
            return Some(true);
        }
        let history = self.history.as_ref()?;
        Some(hashes.iter().all(|h| history.binary_search(h).is_ok()))
    }

    /// The changes a holder of `have` lacks, when the tip alone answers: none when `have`
    /// are the heads, the last change when `have` are the heads below it. `None`: load the
    /// document.
    pub(crate) fn changes_after(&self, have: &[[u8; 32]]) -> Option<Vec<Vec<u8>>> {
        let mut have = have.to_vec();
        have.sort_unstable();
        have.dedup();
        let mut heads = self.heads.clone();
        heads.sort_unstable();
        if have == heads {
            return Some(Vec::new());
        }
        let last = self.last.as_ref()?;
        (have == last.below).then(|| vec![last.bytes.clone()])
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let history_len = self.history.as_ref().map_or(0, Vec::len);
        let last_len = self
            .last
            .as_ref()
            .map_or(0, |l| 32 * l.below.len() + l.bytes.len());
        let mut out = Vec::with_capacity(8 + 32 * (self.heads.len() + history_len) + last_len);
        put_hashes_u16(&mut out, &self.heads);
        match &self.history {
            Some(h) => put_hashes_u16(&mut out, h),
            None => out.extend_from_slice(&NO_HISTORY.to_le_bytes()),
        }
        match &self.last {
            Some(l) => {
                // Both bounded when the tip was made ([`Tip::of`]): fewer than NO_LAST heads
                // and at most MAX_LAST_BYTES.
                out.push(l.below.len() as u8);
                for d in &l.below {
                    out.extend_from_slice(d);
                }
                out.extend_from_slice(&(l.bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(&l.bytes);
            }
            None => out.push(NO_LAST),
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, TipError> {
        let mut r = Reader { bytes, at: 0 };
        let heads = r
            .hashes_u16()?
            .ok_or(TipError::TooMany(usize::from(NO_HISTORY)))?;
        let history = r.hashes_u16()?;
        if let Some(h) = &history {
            if h.len() > MAX_HISTORY {
                return Err(TipError::TooMany(h.len()));
            }
            if !sorted(h) {
                return Err(TipError::Unsorted);
            }
        }
        let below_n = r.take(1)?[0];
        let last = if below_n == NO_LAST {
            None
        } else {
            let below = r.hashes(usize::from(below_n))?;
            if !sorted(&below) {
                return Err(TipError::Unsorted);
            }
            let len = u32::from_le_bytes(r.array()?) as usize;
            if len > MAX_LAST_BYTES {
                return Err(TipError::TooMany(len));
            }
            let bytes = r.take(len)?.to_vec();
            Some(LastChange { below, bytes })
        };
        if r.at != bytes.len() {
            return Err(TipError::Trailing(bytes.len() - r.at));
        }
        Ok(Self {
            heads,
            history,
            last,
        })
    }

    /// The heads alone, without reading the rest of the row.
    pub(crate) fn decode_heads(bytes: &[u8]) -> Result<Vec<[u8; 32]>, TipError> {
        Reader { bytes, at: 0 }
            .hashes_u16()?
            .ok_or(TipError::TooMany(usize::from(NO_HISTORY)))
    }
}

fn put_hashes_u16(out: &mut Vec<u8>, hashes: &[[u8; 32]]) {
    // Heads are bounded by MAX_HASHES and history by MAX_HISTORY ([`Tip::of`]), both far
    // under NO_HISTORY.
    out.extend_from_slice(&(hashes.len() as u16).to_le_bytes());
    for h in hashes {
        out.extend_from_slice(h);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TipError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(TipError::Truncated(self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TipError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// `n` hashes, bounded by the bytes left before anything is allocated.
    fn hashes(&mut self, n: usize) -> Result<Vec<[u8; 32]>, TipError> {
        if n > MAX_HASHES {
            return Err(TipError::TooMany(n));
        }
        let raw = self.take(n * 32)?;
        Ok(raw
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect())
    }

    /// A `u16` count and that many hashes; `None` for [`NO_HISTORY`].
    fn hashes_u16(&mut self) -> Result<Option<Vec<[u8; 32]>>, TipError> {
        let n = u16::from_le_bytes(self.array()?);
        if n == NO_HISTORY {
            return Ok(None);
        }
        self.hashes(usize::from(n)).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT};
    use proptest::prelude::*;

    fn doc_with(changes: usize) -> AutoCommit {
        let mut doc = AutoCommit::new();
        for i in 0..changes {
            doc.put(ROOT, "n", i as i64).unwrap();
            doc.commit();
        }
        doc
    }

    #[test]
    fn a_tip_answers_what_loading_would() {
        let mut doc = doc_with(3);
        let all = doc.get_changes(&[]);
        let tip = Tip::of(doc.document()).unwrap();
        assert_eq!(Tip::decode(&tip.encode()).unwrap(), tip);
        let hash = |i: usize| all[i].hash().0;
        // Every change is held; a stranger is not.
        assert_eq!(tip.holds(&[hash(0)]), Some(true));
        assert_eq!(tip.holds(&[hash(0), hash(2)]), Some(true));
        assert_eq!(tip.holds(&[[9u8; 32]]), Some(false));
        // A holder of the second change lacks exactly the third; a holder of the heads nothing.
        assert_eq!(
            tip.changes_after(&[hash(1)]),
            Some(vec![all[2].raw_bytes().to_vec()])
        );
        assert_eq!(tip.changes_after(&[hash(2)]), Some(vec![]));
        // Anything else is left to a load.
        assert_eq!(tip.changes_after(&[hash(0)]), None);
        assert_eq!(tip.changes_after(&[]), None);
        assert_eq!(Tip::decode_heads(&tip.encode()).unwrap(), vec![hash(2)]);
    }

    #[test]
    fn the_last_change_answers_a_peer_at_the_heads_below_it_not_at_its_deps() {
        // The village files, the county adds a change, the village comments: Automerge lists
        // both the filing and the county's change as the comment's deps.
        let village = automerge::ActorId::from(b"village-actor-01".as_slice());
        let mut v = AutoCommit::new().with_actor(village.clone());
        v.put(ROOT, "filed", 1).unwrap();
        v.commit();
        let mut c = v
            .fork()
            .with_actor(automerge::ActorId::from(b"county-actor-001".as_slice()));
        c.put(ROOT, "noticed", 1).unwrap();
        c.commit();
        v.merge(&mut c).unwrap();
        let county_heads: Vec<[u8; 32]> = c.get_heads().iter().map(|h| h.0).collect();
        v.put(ROOT, "comment", 1).unwrap();
        v.commit();
        let comment = v.get_last_local_change().unwrap();
        assert_eq!(comment.deps().len(), 2, "the shape this test is about");
        let tip = Tip::of(v.document()).unwrap();
        assert_eq!(
            tip.changes_after(&county_heads),
            Some(vec![comment.raw_bytes().to_vec()])
        );
        assert_eq!(Tip::decode(&tip.encode()).unwrap(), tip);
    }

    #[test]
    fn a_long_history_is_not_kept_and_two_heads_keep_no_last_change() {
        let mut long = doc_with(MAX_HISTORY + 1);
        let tip = Tip::of(long.document()).unwrap();
        assert_eq!(tip.holds(&[[9u8; 32]]), None);
        assert_eq!(Tip::decode(&tip.encode()).unwrap(), tip);

        let mut a = doc_with(1);
        let mut b = a.fork();
        a.put(ROOT, "a", 1).unwrap();
        b.put(ROOT, "b", 1).unwrap();
        a.merge(&mut b).unwrap();
        let tip = Tip::of(a.document()).unwrap();
        assert_eq!(tip.heads.len(), 2);
        let first = a.get_changes(&[])[0].hash().0;
        assert_eq!(tip.changes_after(&[first]), None);
        assert_eq!(Tip::decode(&tip.encode()).unwrap(), tip);
    }

    #[test]
    fn a_new_documents_tip_holds_no_copy_of_its_only_change() {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "text", "x".repeat(2000)).unwrap();
        doc.commit();
        let tip = Tip::of(doc.document()).unwrap();
        assert!(tip.last.is_none());
        // Heads and one hash: the row stays a few dozen bytes beside a 2 KB document.
        assert!(tip.encode().len() < 100, "{} bytes", tip.encode().len());
        assert_eq!(tip.holds(&[tip.heads[0]]), Some(true));
    }

    #[test]
    fn cut_rows_are_errors() {
        let bytes = Tip::of(doc_with(2).document()).unwrap().encode();
        for cut in 0..bytes.len() {
            assert!(Tip::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Tip::decode(&longer), Err(TipError::Trailing(1)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_rows_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(tip) = Tip::decode(&bytes) {
                prop_assert_eq!(tip.encode(), bytes.clone());
            }
            let _ = Tip::decode_heads(&bytes);
        }

        #[test]
        fn mutated_rows_never_panic(
            cuts in proptest::collection::vec((0usize..400, any::<u8>()), 1..4)
        ) {
            let mut b = Tip::of(doc_with(2).document()).unwrap().encode();
            for (pos, val) in cuts {
                let pos = pos % b.len();
                b[pos] = val;
            }
            let _ = Tip::decode(&b);
        }
    }
}
