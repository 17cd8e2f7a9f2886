//! The audit trail's copy at the county (DESIGN.md §10): each village's and town's chain
//! (`crate::audit`) travels up as append-only segment documents of the same `yiciban/1`
//! replication as cases, the way `crate::county_doc` carries the calendar down.
//!
//! # Segments
//!
//! Entry `seq` of node `N` lives in segment `(seq - 1) / SEGMENT_ENTRIES`, a document with id
//! `audit:{N}:{segment:06}` (in `audit_docs-1`, not among the cases). Automerge schema: root
//! map `{kind: "audit", schema: 1, node: N, segment: K, entries: [BYTES, …]}`, where each
//! `BYTES` is one entry exactly as `audit-1` stores it (canonical || prev || hash), so the
//! county re-checks the hash chain byte for byte. Only the node itself writes its segments,
//! and only by appending: a segment is full at `SEGMENT_ENTRIES` entries, and the next entry
//! opens the next segment.
//!
//! # Export
//!
//! [`run_exporter`] (every village and town) asks the writer every [`EXPORT_EVERY`] to append
//! the entries after the export cursor (`meta-1.audit_exported`) to their segments, bump each
//! segment in the node's global feed only, and move the cursor, all in one transaction. The
//! export writes no audit entry of its own, so the trail does not feed itself.
//!
//! # Who receives them
//!
//! The global feed is what a peer with `Scope::All` reads: the county. No segment is in a
//! village's or town's feed, and `scope::ScopedStore` hides `audit:` ids from every scope but
//! the county's, so a town never receives a village's trail and the county sends none down.
//! The county takes changes to `audit:{N}:…` only from the peer whose certificate names `N`,
//! and only when the merged segment still extends what it held, decodes, chains entry to
//! entry, and chains to its neighbouring segments where it holds them; otherwise nothing is
//! written. `yiciban audit verify --node N` at the county walks N's segments with
//! [`verify_replica`]: a segment not held, or short before a later one, is entries missing.

use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{
    AutoCommit, ObjType, ReadDoc, ScalarValue, ScalarValueRef, Value, ValueRef, hydrate,
};

use crate::audit::{AuditEntry, ChainProblem, ChainReport};
use crate::case_doc::DocError;

/// Entries per segment document.
pub const SEGMENT_ENTRIES: u64 = 512;
/// How often the exporter looks for new entries.
pub const EXPORT_EVERY: Duration = Duration::from_secs(2);
/// Most entries one export transaction appends.
pub const EXPORT_MAX: u64 = 2048;

const PREFIX: &str = "audit:";
const KIND: &str = "audit";

/// Whether `doc_id` names an audit segment rather than a case.
pub fn is_audit_doc(doc_id: &str) -> bool {
    doc_id.starts_with(PREFIX)
}

/// The id of segment `segment` of `node`'s trail.
pub fn segment_id(node: &str, segment: u64) -> String {
    format!("{PREFIX}{node}:{segment:06}")
}

/// The prefix every segment id of `node` starts with.
pub fn node_prefix(node: &str) -> String {
    format!("{PREFIX}{node}:")
}

/// `(node, segment)` of a segment id; `None` unless it is exactly as [`segment_id`] writes it.
pub fn parse_id(doc_id: &str) -> Option<(&str, u64)> {
    let rest = doc_id.strip_prefix(PREFIX)?;
    let (node, segment) = rest.rsplit_once(':')?;
    let n: u64 = segment.parse().ok()?;
    (!node.is_empty() && segment_id(node, n) == doc_id).then_some((node, n))
}

/// The segment that holds entry `seq` (1, 2, 3, …).
pub fn segment_of(seq: u64) -> u64 {
    seq.saturating_sub(1) / SEGMENT_ENTRIES
}

/// The sequence number of the first entry of `segment`.
pub fn first_seq(segment: u64) -> u64 {
    segment.saturating_mul(SEGMENT_ENTRIES).saturating_add(1)
}

/// One segment as a document holds it: entries in their stored bytes, not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub node: String,
    pub segment: u64,
    pub entries: Vec<Vec<u8>>,
}

impl Segment {
    /// The sequence number of its last entry (that of the segment before it when empty).
    pub fn last_seq(&self) -> u64 {
        first_seq(self.segment) - 1 + self.entries.len() as u64
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() as u64 == SEGMENT_ENTRIES
    }
}

fn malformed(reason: &str) -> DocError {
    DocError::Malformed {
        field: "audit".into(),
        reason: reason.into(),
    }
}

/// Reads a segment document; bounds the entry count, never panics. A document with two
/// histories merged (a key with conflicting values) is refused.
pub fn read(doc: &AutoCommit) -> Result<Segment, DocError> {
    // One writer, appending: a key with concurrent values means another history was merged.
    for key in ["kind", "node", "segment", "entries"] {
        if doc.get_all(automerge::ROOT, key)?.len() > 1 {
            return Err(malformed(&format!("{key} has conflicting values")));
        }
    }
    let text = |key: &str| -> Result<String, DocError> {
        match doc.get(automerge::ROOT, key)? {
            Some((Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Str(t) => Ok(t.to_string()),
                _ => Err(malformed(&format!("{key} is not text"))),
            },
            _ => Err(malformed(&format!("{key} is missing"))),
        }
    };
    if text("kind")? != KIND {
        return Err(malformed("not an audit segment"));
    }
    let node = text("node")?;
    let segment = match doc.get(automerge::ROOT, "segment")? {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Uint(n) => *n,
            _ => return Err(malformed("segment is not a number")),
        },
        _ => return Err(malformed("segment is missing")),
    };
    let list = match doc.get(automerge::ROOT, "entries")? {
        Some((Value::Object(ObjType::List), id)) => id,
        _ => return Err(malformed("entries is not a list")),
    };
    let len = doc.length(&list);
    if len as u64 > SEGMENT_ENTRIES {
        return Err(malformed(&format!(
            "{len} entries, more than {SEGMENT_ENTRIES}"
        )));
    }
    // One pass over the list: a `get` per index took 0.69 ms for a segment of 476 entries
    // (this, 0.09 ms), and the county reads a segment twice for every receipt.
    let mut entries = Vec::with_capacity(len);
    for item in doc.list_range(&list, ..) {
        match item.value {
            ValueRef::Scalar(ScalarValueRef::Bytes(b)) => entries.push(b.into_owned()),
            _ => return Err(malformed(&format!("entry {} is not bytes", item.index))),
        }
    }
    if entries.len() != len {
        return Err(malformed(&format!(
            "{} of {len} entries readable",
            entries.len()
        )));
    }
    Ok(Segment {
        node,
        segment,
        entries,
    })
}

/// Loads and reads a saved segment document.
pub fn load(bytes: &[u8]) -> Result<Segment, DocError> {
    read(&AutoCommit::load(bytes)?)
}

/// Appends `entries` (stored bytes, in order) to segment `segment` of `node` (`existing`, its
/// saved bytes, if any) and returns the saved document. Refused when they would not fit.
pub fn append(
    existing: Option<&[u8]>,
    node: &str,
    segment: u64,
    entries: &[Vec<u8>],
    actor: automerge::ActorId,
) -> Result<Vec<u8>, DocError> {
    append_change(existing, node, segment, entries, actor).map(|a| a.bytes)
}

/// A segment after [`append_change`]: what the store keeps of it.
#[derive(Debug)]
pub struct Appended {
    /// The saved document.
    pub bytes: Vec<u8>,
    /// Its heads before the append (empty for a new segment) and after.
    pub heads_before: Vec<automerge::ChangeHash>,
    pub heads: Vec<automerge::ChangeHash>,
    /// The append's change (the one change it made).
    pub change: Option<automerge::Change>,
}

/// [`append`], also giving the heads before and after and the change it made: the writer
/// keeps the heads in `doc_pos-1` and the change as the segment's tip (`store::tip`).
pub fn append_change(
    existing: Option<&[u8]>,
    node: &str,
    segment: u64,
    entries: &[Vec<u8>],
    actor: automerge::ActorId,
) -> Result<Appended, DocError> {
    let mut doc = match existing {
        Some(bytes) => AutoCommit::load(bytes)?,
        None => AutoCommit::new(),
    }
    .with_actor(actor);
    let heads_before = doc.get_heads();
    let list = if existing.is_some() {
        let held = read(&doc)?;
        if held.node != node || held.segment != segment {
            return Err(malformed("another node's or another segment's document"));
        }
        match doc.get(automerge::ROOT, "entries")? {
            Some((Value::Object(ObjType::List), id)) => id,
            _ => return Err(malformed("entries is not a list")),
        }
    } else {
        doc.put(automerge::ROOT, "kind", KIND)?;
        doc.put(automerge::ROOT, "schema", 1u64)?;
        doc.put(automerge::ROOT, "node", node)?;
        doc.put(automerge::ROOT, "segment", segment)?;
        doc.put_object(automerge::ROOT, "entries", ObjType::List)?
    };
    let len = doc.length(&list);
    if (len + entries.len()) as u64 > SEGMENT_ENTRIES {
        return Err(malformed("the segment would hold too many entries"));
    }
    // One splice, not an insert per entry: each insert looks up its place and splices the
    // op columns again (perf of the 32-client ingest burst: 13% of the writer thread in
    // this loop, exporting every 2 s). The ops are the same.
    doc.splice(
        &list,
        len,
        0,
        entries
            .iter()
            .map(|bytes| hydrate::Value::Scalar(ScalarValue::Bytes(bytes.clone()))),
    )?;
    doc.commit();
    let change = doc.get_last_local_change();
    Ok(Appended {
        bytes: doc.save_nocompress(),
        heads_before,
        heads: doc.get_heads(),
        change,
    })
}

/// Checks one segment of `node`: every entry decodes, matches its hash, is entry
/// `first_seq(segment) + i` written by `node`, and follows the entry before it; the first
/// follows `prev` when given (the last hash of the segment before). Returns the last hash.
pub fn check_segment(
    node: &str,
    seg: &Segment,
    prev: Option<[u8; 32]>,
) -> Result<Option<[u8; 32]>, ChainProblem> {
    let mut prev = prev;
    for (seq, bytes) in (first_seq(seg.segment)..).zip(&seg.entries) {
        let entry = AuditEntry::decode(bytes)
            .map_err(|reason| ChainProblem::Undecodable { seq, reason })?;
        if entry.expected_hash() != entry.hash {
            return Err(ChainProblem::Altered { seq });
        }
        if entry.seq > seq {
            return Err(ChainProblem::Missing { seq });
        }
        if entry.seq != seq {
            return Err(ChainProblem::Moved {
                key: seq,
                claims: entry.seq,
            });
        }
        if entry.node != node {
            return Err(ChainProblem::OtherNode {
                seq,
                node: entry.node,
            });
        }
        if seq == 1 && entry.prev != [0; 32] {
            return Err(ChainProblem::BrokenLink { seq });
        }
        if prev.is_some_and(|p| p != entry.prev) {
            return Err(ChainProblem::BrokenLink { seq });
        }
        prev = Some(entry.hash);
    }
    Ok(prev)
}

/// Walks the segments of `node` that the county holds, `(segment, saved bytes)` in any order,
/// and names the first problem: a segment that does not load (altered), entries missing (a
/// segment not held, or one short of full before a later one), or an entry altered, moved,
/// by another node or out of chain. An intact replica reports its count and last hash.
pub fn verify_replica<I, E>(node: &str, segments: I) -> Result<Result<ChainReport, ChainProblem>, E>
where
    I: IntoIterator<Item = Result<(u64, Vec<u8>), E>>,
{
    let mut held = Vec::new();
    for item in segments {
        held.push(item?);
    }
    held.sort_by_key(|(n, _)| *n);
    let mut next_seq = 1u64;
    let mut prev = [0u8; 32];
    for (number, bytes) in held {
        let first = first_seq(number);
        if first > next_seq {
            return Ok(Err(ChainProblem::MissingRange {
                first: next_seq,
                last: first - 1,
            }));
        }
        let seg = match load(&bytes) {
            Ok(seg) => seg,
            Err(e) => {
                return Ok(Err(ChainProblem::SegmentUnreadable {
                    segment: number,
                    reason: e.to_string(),
                }));
            }
        };
        if seg.segment != number || seg.node != node {
            return Ok(Err(ChainProblem::SegmentUnreadable {
                segment: number,
                reason: format!("it says it is segment {} of {}", seg.segment, seg.node),
            }));
        }
        match check_segment(node, &seg, Some(prev)) {
            Ok(last) => prev = last.unwrap_or(prev),
            Err(problem) => return Ok(Err(problem)),
        }
        next_seq = seg.last_seq() + 1;
    }
    Ok(Ok(ChainReport {
        count: next_seq - 1,
        head: prev,
    }))
}

/// Exports this node's new audit entries to its segment documents every [`EXPORT_EVERY`],
/// for as long as the task runs (villages and towns; the county keeps the copies).
pub async fn run_exporter(store: crate::store::Store) {
    let mut tick = tokio::time::interval(EXPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match export_pending(&store).await {
            Ok(n) if n > 0 => tracing::debug!(entries = n, "audit entries exported for the county"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "audit export failed; trying again later"),
        }
    }
}

/// Exports every audit entry not yet in a segment document, [`EXPORT_MAX`] at a time;
/// returns how many. Run by [`run_exporter`], and once more when a node stops cleanly, so
/// the trail of its last seconds goes up with the next link instead of being exported (a
/// segment loaded and saved) while that link's catch-up runs.
pub async fn export_pending(store: &crate::store::Store) -> Result<u64, crate::store::StoreError> {
    let mut total = 0;
    loop {
        let n = store.export_audit(EXPORT_MAX).await?;
        total += n;
        if n < EXPORT_MAX {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditRecord;

    fn chain(node: &str, n: u64) -> Vec<Vec<u8>> {
        let mut prev = [0u8; 32];
        (1..=n)
            .map(|seq| {
                let rec = AuditRecord::new(node, "clerk", "case.filed", Some("c1"), "x");
                let e = AuditEntry::seal(seq, 1_700_000_000_000 + seq, &rec, prev);
                prev = e.hash;
                e.encode()
            })
            .collect()
    }

    /// Segment documents of `entries`, appended in batches of `batch` as the exporter would.
    fn segments(node: &str, entries: &[Vec<u8>], batch: usize) -> Vec<(u64, Vec<u8>)> {
        let actor = crate::case_doc::node_actor(node);
        let mut docs: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut seq = 1u64;
        for chunk in entries.chunks(batch) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let seg = segment_of(seq);
                let room = (first_seq(seg + 1) - seq) as usize;
                let (now, later) = rest.split_at(room.min(rest.len()));
                let existing = docs.iter().position(|(n, _)| *n == seg);
                let bytes = append(
                    existing.map(|i| docs[i].1.as_slice()),
                    node,
                    seg,
                    now,
                    actor.clone(),
                )
                .unwrap();
                match existing {
                    Some(i) => docs[i].1 = bytes,
                    None => docs.push((seg, bytes)),
                }
                seq += now.len() as u64;
                rest = later;
            }
        }
        docs
    }

    fn verify(node: &str, docs: &[(u64, Vec<u8>)]) -> Result<ChainReport, ChainProblem> {
        verify_replica::<_, ()>(node, docs.iter().cloned().map(Ok)).unwrap()
    }

    #[test]
    fn ids_round_trip_and_only_canonical_ones_parse() {
        assert_eq!(segment_id("v1", 3), "audit:v1:000003");
        assert_eq!(parse_id("audit:v1:000003"), Some(("v1", 3)));
        assert_eq!(parse_id("audit:v1:3"), None);
        assert_eq!(parse_id("audit::000003"), None);
        assert_eq!(parse_id("county:calendar"), None);
        assert!(is_audit_doc("audit:v1:000000") && !is_audit_doc("c-1"));
        assert_eq!((segment_of(1), segment_of(512), segment_of(513)), (0, 0, 1));
        assert_eq!(first_seq(2), 1025);
    }

    #[test]
    fn segments_built_in_batches_hold_the_exact_bytes_and_verify() {
        let entries = chain("v1", 1100);
        let docs = segments("v1", &entries, 300);
        assert_eq!(docs.len(), 3);
        let all: Vec<Vec<u8>> = docs
            .iter()
            .flat_map(|(_, b)| load(b).unwrap().entries)
            .collect();
        assert_eq!(all, entries);
        let report = verify("v1", &docs).unwrap();
        assert_eq!(report.count, 1100);
        assert_eq!(
            report.head,
            AuditEntry::decode(&entries[1099]).unwrap().hash
        );
        // Appending past the end of a segment is refused.
        let actor = crate::case_doc::node_actor("v1");
        assert!(append(Some(&docs[0].1), "v1", 0, &entries[..1], actor).is_err());
    }

    #[test]
    fn an_altered_byte_a_missing_entry_or_segment_and_another_node_are_found() {
        let entries = chain("v1", 600);
        // One byte of entry 5's detail changed.
        let mut altered = entries.clone();
        let n = altered[4].len();
        altered[4][n - 65] ^= 1;
        assert_eq!(
            verify("v1", &segments("v1", &altered, 600)),
            Err(ChainProblem::Altered { seq: 5 })
        );
        // Entry 7 left out: entry 8 sits where 7 should.
        let mut gap = entries.clone();
        gap.remove(6);
        assert_eq!(
            verify("v1", &segments("v1", &gap, 600)),
            Err(ChainProblem::Missing { seq: 7 })
        );

        // Segment 0 short of full before segment 1: entries 500 to 512 missing.
        let mut docs = segments("v1", &entries[..499], 499);
        docs.extend(
            segments("v1", &entries, 600)
                .into_iter()
                .filter(|(n, _)| *n == 1),
        );
        assert_eq!(
            verify("v1", &docs),
            Err(ChainProblem::MissingRange {
                first: 500,
                last: 512
            })
        );
        // Segment 0 not held at all.
        let only_second: Vec<_> = segments("v1", &entries, 600)
            .into_iter()
            .filter(|(n, _)| *n == 1)
            .collect();
        assert_eq!(
            verify("v1", &only_second),
            Err(ChainProblem::MissingRange {
                first: 1,
                last: 512
            })
        );
        // v1's segments checked as v2's trail; and v2's entries in a segment named v1.
        assert!(matches!(
            verify("v2", &segments("v1", &entries, 600)),
            Err(ChainProblem::SegmentUnreadable { segment: 0, .. })
        ));
        let forged = chain("v2", 3);
        let actor = crate::case_doc::node_actor("v1");
        let doc = append(None, "v1", 0, &forged, actor).unwrap();
        assert_eq!(
            verify("v1", &[(0, doc)]),
            Err(ChainProblem::OtherNode {
                seq: 1,
                node: "v2".into()
            })
        );
        // A raw byte of the stored document flipped: it no longer loads.
        let mut raw = segments("v1", &entries[..10], 10);
        let mid = raw[0].1.len() / 2;
        raw[0].1[mid] ^= 0x40;
        assert!(matches!(
            verify("v1", &raw),
            Err(ChainProblem::SegmentUnreadable { segment: 0, .. }
                | ChainProblem::Altered { .. }
                | ChainProblem::Undecodable { .. })
        ));
    }

    #[test]
    fn a_segment_checks_against_the_last_hash_before_it() {
        let entries = chain("v1", 520);
        let docs = segments("v1", &entries, 520);
        let second = load(&docs[1].1).unwrap();
        let last_of_first = AuditEntry::decode(&entries[511]).unwrap().hash;
        assert!(check_segment("v1", &second, Some(last_of_first)).is_ok());
        assert_eq!(
            check_segment("v1", &second, Some([9; 32])),
            Err(ChainProblem::BrokenLink { seq: 513 })
        );
        assert!(check_segment("v1", &second, None).is_ok());
    }
}
