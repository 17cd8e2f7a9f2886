//! The audit trail: an append-only, hash-chained log per node of every state change and every
//! full view of personal data.
//!
//! # What is written, and when
//!
//! The store's writer thread appends one [`AuditEntry`] for each write it performs, in the same
//! write transaction as the change itself, so a change is never on disk without its entry and
//! the chain is strictly serial (one writer, one transaction at a time). The entries written:
//!
//! | action | written by | case | detail |
//! |---|---|---|---|
//! | `case.filed` | a clerk filing an application | yes | receipt number, item code |
//! | `event.recorded` | a user recording an event | yes | event kind, event id |
//! | `case.merged` | changes of a case applied from a peer (`user` is `peer:NODE`) | yes | number of changes |
//! | `personal_data.viewed` | a full, unmasked view of an applicant's personal data | yes | what was shown |
//! | `user.added` | `yiciban user add` | no | username, role |
//! | `token.created` | `yiciban token` at the county | no | token id, node id, role, division |
//! | `node.enrolled` | a node enrolling with a token at the county | no | token id |
//! | `blob.stored` | a photo stored (uploaded or received from a peer), new bytes only | no | its hash |
//! | `audit.received` | at the county: a node's audit segment grew (`user` is `peer:NODE`) | no | segment id, number of changes |
//!
//! Not audited: sync cursors (a replication position, rewritten on every resync, which changes
//! nothing anyone can see), the export of the node's own entries for the county (else the
//! trail would feed itself) and writes that changed nothing (a peer's changes already held, a
//! photo already stored). Full views are entries with no state change, appended through their
//! own writer op. A `detail` never carries a full ID number: [`AuditRecord::new`] masks any
//! run that looks like one and bounds the length.
//!
//! # The chain rule
//!
//! Table `audit-1`: key = `seq` (u64, 1, 2, 3, … with no gap), value = the entry's bytes:
//!
//! ```text
//! canonical = 0x01 (format version)
//!           || seq (u64 big-endian) || at_ms (u64 big-endian, Unix milliseconds)
//!           || str(node) || str(user) || str(action)
//!           || 0x00 (no case) | 0x01 || str(case_id)
//!           || str(detail)
//! str(s)    = length of s in bytes (u16 big-endian) || s (UTF-8)
//! hash      = SHA-256(prev || canonical)
//! value     = canonical || prev (32 bytes) || hash (32 bytes)
//! ```
//!
//! `prev` of entry 1 is 32 zero bytes; `prev` of entry N is the `hash` of entry N-1. The writer
//! also keeps the head (`seq`, `hash`) in `meta-1.audit_head`, in the same transaction, so a
//! truncated tail is caught too. [`verify_chain`] walks the table and names the first problem:
//! an entry whose hash does not match its contents (altered), a missing sequence number, an
//! entry whose `prev` is not its predecessor's hash, an entry stored under another key
//! (moved), an entry that does not decode, or a head that does not match the last entry.
//!
//! The chain proves order and integrity against edits of single entries; someone who rewrites
//! the whole file can recompute every hash. What stops that is the copy at the county.
//!
//! # Replication to the county
//!
//! Each village's and town's chain goes up to the county, which keeps it and checks it
//! (`crate::audit_doc`): the entries travel in their stored bytes as append-only segment
//! documents `audit:{node}:{segment:06}` of the existing `yiciban/1` protocol (the sync crate
//! is unchanged), exported by a background task in batches, in the node's global feed only,
//! so only the county receives them. The county takes a segment only from the node it
//! belongs to (by its certificate) and only when it still extends what was held and chains;
//! `yiciban audit verify --node NODE` at the county walks the copy, and a node's chain edited
//! after it was replicated no longer matches the county's copy.

use std::fmt;

use sha2::{Digest, Sha256};

/// Longest `detail`, in characters.
pub const MAX_DETAIL_CHARS: usize = 200;
/// Longest node, user, action or case id, in bytes.
pub const MAX_FIELD_BYTES: usize = 256;
/// The largest entry a reader decodes: every field at its bound, with room to spare.
pub const MAX_ENTRY_BYTES: usize = 4096;

const FORMAT: u8 = 1;

/// What a write asks to be logged: who did what to which case. The writer turns it into an
/// [`AuditEntry`] with the sequence number, time and chain hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub node: String,
    pub user: String,
    pub action: String,
    pub case_id: Option<String>,
    pub detail: String,
}

impl AuditRecord {
    /// A record with its fields bounded and any full ID number in `detail` masked.
    pub fn new(node: &str, user: &str, action: &str, case_id: Option<&str>, detail: &str) -> Self {
        Self {
            node: bound(node),
            user: bound(user),
            action: bound(action),
            case_id: case_id.map(bound),
            detail: mask_id_numbers(detail)
                .chars()
                .take(MAX_DETAIL_CHARS)
                .collect(),
        }
    }
}

fn bound(s: &str) -> String {
    let mut end = s.len().min(MAX_FIELD_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Masks every run of 17 digits followed by a digit or X (an 18-character ID number).
fn mask_id_numbers(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let window = chars.get(i..i + 18);
        let is_id = window.is_some_and(|w| {
            w[..17].iter().all(char::is_ascii_digit)
                && (w[17].is_ascii_digit() || w[17] == 'X' || w[17] == 'x')
                && (i == 0 || !chars[i - 1].is_ascii_digit())
                && chars.get(i + 18).is_none_or(|c| !c.is_ascii_digit())
        });
        if let (true, Some(w)) = (is_id, window) {
            out.push_str(&crate::idcard::mask(&w.iter().collect::<String>()));
            i += 18;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// One entry of the chain (see the module doc for its bytes and hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_ms: u64,
    pub node: String,
    pub user: String,
    pub action: String,
    pub case_id: Option<String>,
    pub detail: String,
    pub prev: [u8; 32],
    pub hash: [u8; 32],
}

impl AuditEntry {
    /// Entry `seq` for `record`, chained to `prev`.
    pub fn seal(seq: u64, at_ms: u64, record: &AuditRecord, prev: [u8; 32]) -> Self {
        let mut entry = Self {
            seq,
            at_ms,
            node: record.node.clone(),
            user: record.user.clone(),
            action: record.action.clone(),
            case_id: record.case_id.clone(),
            detail: record.detail.clone(),
            prev,
            hash: [0; 32],
        };
        entry.hash = entry.expected_hash();
        entry
    }

    /// The canonical bytes of the entry's fields (everything but `prev` and `hash`).
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.detail.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.at_ms.to_be_bytes());
        for s in [&self.node, &self.user, &self.action] {
            put_str(&mut out, s);
        }
        match &self.case_id {
            Some(id) => {
                out.push(1);
                put_str(&mut out, id);
            }
            None => out.push(0),
        }
        put_str(&mut out, &self.detail);
        out
    }

    /// SHA-256(prev || canonical): what `hash` must be.
    pub fn expected_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.prev);
        h.update(self.canonical());
        h.finalize().into()
    }

    /// The stored value: canonical || prev || hash.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.canonical();
        out.extend_from_slice(&self.prev);
        out.extend_from_slice(&self.hash);
        out
    }

    /// Decodes a stored value; bounds every length before it reads, never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(format!(
                "{} bytes, more than the limit of {MAX_ENTRY_BYTES}",
                bytes.len()
            ));
        }
        let mut r = Reader { bytes, at: 0 };
        let format = r.u8()?;
        if format != FORMAT {
            return Err(format!("unknown format {format}"));
        }
        let seq = r.u64()?;
        let at_ms = r.u64()?;
        let node = r.str()?;
        let user = r.str()?;
        let action = r.str()?;
        let case_id = match r.u8()? {
            0 => None,
            1 => Some(r.str()?),
            other => return Err(format!("bad case marker {other}")),
        };
        let detail = r.str()?;
        let prev = r.hash()?;
        let hash = r.hash()?;
        if r.at != bytes.len() {
            return Err(format!("{} trailing bytes", bytes.len() - r.at));
        }
        Ok(Self {
            seq,
            at_ms,
            node,
            user,
            action,
            case_id,
            detail,
            prev,
            hash,
        })
    }
}

impl fmt::Display for AuditEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = chrono::DateTime::from_timestamp_millis(i64::try_from(self.at_ms).unwrap_or(0))
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_else(|| self.at_ms.to_string());
        write!(
            f,
            "{} {at} {} {} {} {} {} {}",
            self.seq,
            self.node,
            self.user,
            self.action,
            self.case_id.as_deref().unwrap_or("-"),
            if self.detail.is_empty() {
                "-"
            } else {
                &self.detail
            },
            hex::encode(&self.hash[..8]),
        )
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Fields are bounded by `AuditRecord::new` far below u16::MAX; cut, never wrap.
    let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!("truncated at byte {}", self.at));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
    fn hash(&mut self) -> Result<[u8; 32], String> {
        let mut b = [0u8; 32];
        b.copy_from_slice(self.take(32)?);
        Ok(b)
    }
    fn str(&mut self) -> Result<String, String> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        let len = usize::from(u16::from_be_bytes(b));
        let at = self.at;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| format!("bad UTF-8 at byte {at}"))
    }
}

/// The first problem [`verify_chain`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// The entry's hash does not match its contents.
    Altered { seq: u64 },
    /// No entry with this sequence number, though a later one (or the head) exists.
    Missing { seq: u64 },
    /// The entry's `prev` is not the hash of the entry before it.
    BrokenLink { seq: u64 },
    /// The value under key `key` claims to be entry `claims`.
    Moved { key: u64, claims: u64 },
    /// The value under key `seq` does not decode.
    Undecodable { seq: u64, reason: String },
    /// The head the writer recorded does not match the last entry.
    HeadMismatch { seq: u64, reason: String },
    /// The entry names another node than the trail it is in (a county's copy).
    OtherNode { seq: u64, node: String },
    /// Entries `first` to `last` are not held (a county's copy: a segment not held, or one
    /// short of full before a later one).
    MissingRange { first: u64, last: u64 },
    /// A segment document of a county's copy does not load or is not the segment its id says.
    SegmentUnreadable { segment: u64, reason: String },
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Altered { seq } => write!(
                f,
                "entry {seq} was altered: its hash does not match its contents"
            ),
            Self::Missing { seq } => write!(f, "entry {seq} is missing"),
            Self::BrokenLink { seq } => write!(
                f,
                "entry {seq} does not follow entry {}: its prev is not that entry's hash",
                seq.saturating_sub(1)
            ),
            Self::Moved { key, claims } => write!(
                f,
                "entry {key} was altered: the value stored as entry {key} is entry {claims}"
            ),
            Self::Undecodable { seq, reason } => {
                write!(f, "entry {seq} was altered: it does not decode ({reason})")
            }
            Self::HeadMismatch { seq, reason } => write!(f, "entry {seq}: {reason}"),
            Self::OtherNode { seq, node } => {
                write!(f, "entry {seq} was altered: it names another node, {node}")
            }
            Self::MissingRange { first, last } if first == last => {
                write!(f, "entry {first} is missing")
            }
            Self::MissingRange { first, last } => {
                write!(f, "entries {first} to {last} are missing")
            }
            Self::SegmentUnreadable { segment, reason } => {
                let first = crate::audit_doc::first_seq(*segment);
                let last = first + crate::audit_doc::SEGMENT_ENTRIES - 1;
                write!(
                    f,
                    "segment {segment} (entries {first} to {last}) was altered: {reason}"
                )
            }
        }
    }
}

/// An intact chain: how many entries, and the hash of the last one (zeros when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub count: u64,
    pub head: [u8; 32],
}

impl ChainReport {
    pub fn head_hex(&self) -> String {
        hex::encode(self.head)
    }
}

/// Walks `(key, value)` pairs in key order and checks the chain; `head` is the
/// `(seq, hash)` the writer recorded last, if any.
pub fn verify_chain<I, E>(
    entries: I,
    head: Option<(u64, [u8; 32])>,
) -> Result<Result<ChainReport, ChainProblem>, E>
where
    I: IntoIterator<Item = Result<(u64, Vec<u8>), E>>,
{
    let mut expect_seq = 1u64;
    let mut prev = [0u8; 32];
    for item in entries {
        let (key, bytes) = item?;
        if key > expect_seq {
            return Ok(Err(ChainProblem::Missing { seq: expect_seq }));
        }
        let entry = match AuditEntry::decode(&bytes) {
            Ok(e) => e,
            Err(reason) => return Ok(Err(ChainProblem::Undecodable { seq: key, reason })),
        };
        if entry.expected_hash() != entry.hash {
            return Ok(Err(ChainProblem::Altered { seq: key }));
        }
        if entry.seq != key {
            return Ok(Err(ChainProblem::Moved {
                key,
                claims: entry.seq,
            }));
        }
        if entry.prev != prev {
            return Ok(Err(ChainProblem::BrokenLink { seq: key }));
        }
        prev = entry.hash;
        expect_seq = key + 1;
    }
    let count = expect_seq - 1;
    if let Some((head_seq, head_hash)) = head {
        if head_seq > count {
            return Ok(Err(ChainProblem::Missing { seq: count + 1 }));
        }
        if head_seq < count {
            return Ok(Err(ChainProblem::HeadMismatch {
                seq: head_seq + 1,
                reason: format!(
                    "the recorded head is entry {head_seq}, yet the chain goes on to entry {count}"
                ),
            }));
        }
        if head_hash != prev {
            return Ok(Err(ChainProblem::HeadMismatch {
                seq: count,
                reason: "its hash is not the head the writer recorded".into(),
            }));
        }
    } else if count > 0 {
        return Ok(Err(ChainProblem::HeadMismatch {
            seq: count,
            reason: "the chain has entries but no recorded head".into(),
        }));
    }
    Ok(Ok(ChainReport { count, head: prev }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = [0u8; 32];
        (1..=n)
            .map(|seq| {
                let rec = AuditRecord::new("v1", "clerk", "case.filed", Some("c1"), "x");
                let e = AuditEntry::seal(seq, 1_700_000_000_000 + seq, &rec, prev);
                prev = e.hash;
                e
            })
            .collect()
    }

    fn verify(
        values: &[(u64, Vec<u8>)],
        head: Option<(u64, [u8; 32])>,
    ) -> Result<ChainReport, ChainProblem> {
        verify_chain::<_, ()>(values.iter().cloned().map(Ok), head).unwrap()
    }

    #[test]
    fn entries_round_trip_and_decoding_never_panics() {
        let e = &chain(1)[0];
        let bytes = e.encode();
        assert_eq!(&AuditEntry::decode(&bytes).unwrap(), e);
        for cut in 0..bytes.len() {
            assert!(AuditEntry::decode(&bytes[..cut]).is_err());
        }
        assert!(AuditEntry::decode(&vec![1u8; MAX_ENTRY_BYTES + 1]).is_err());
    }

    #[test]
    fn details_never_carry_a_full_id_number() {
        let r = AuditRecord::new("v", "u", "a", None, "viewed 11010519491231002X and more");
        assert_eq!(r.detail, "viewed 1101**********002X and more");
        let long = "字".repeat(500);
        assert_eq!(
            AuditRecord::new("v", "u", "a", None, &long)
                .detail
                .chars()
                .count(),
            MAX_DETAIL_CHARS
        );
    }

    #[test]
    fn an_intact_chain_and_each_kind_of_damage() {
        let entries = chain(4);
        let values: Vec<(u64, Vec<u8>)> = entries.iter().map(|e| (e.seq, e.encode())).collect();
        let head = Some((4, entries[3].hash));
        assert_eq!(
            verify(&values, head),
            Ok(ChainReport {
                count: 4,
                head: entries[3].hash
            })
        );
        // One byte of entry 2's detail changed.
        let mut altered = values.clone();
        let n = altered[1].1.len();
        altered[1].1[n - 65] ^= 1;
        assert_eq!(
            verify(&altered, head),
            Err(ChainProblem::Altered { seq: 2 })
        );
        // Entry 3 deleted; the last one deleted.
        let mut gap = values.clone();
        gap.remove(2);
        assert_eq!(verify(&gap, head), Err(ChainProblem::Missing { seq: 3 }));
        assert_eq!(
            verify(&values[..3], head),
            Err(ChainProblem::Missing { seq: 4 })
        );
        // Entries 2 and 3 swapped.
        let mut swapped = values.clone();
        let (a, b) = (swapped[1].1.clone(), swapped[2].1.clone());
        swapped[1].1 = b;
        swapped[2].1 = a;
        assert_eq!(
            verify(&swapped, head),
            Err(ChainProblem::Moved { key: 2, claims: 3 })
        );
        // Garbage under a key.
        let mut garbage = values.clone();
        garbage[0].1 = b"junk".to_vec();
        assert!(matches!(
            verify(&garbage, head),
            Err(ChainProblem::Undecodable { seq: 1, .. })
        ));
        // An entry rebuilt with a correct hash of its own but chained to nothing.
        let mut relinked = values.clone();
        let rec = AuditRecord::new("v1", "mallory", "case.filed", Some("c1"), "x");
        relinked[2].1 = AuditEntry::seal(3, 1, &rec, [7; 32]).encode();
        assert_eq!(
            verify(&relinked, head),
            Err(ChainProblem::BrokenLink { seq: 3 })
        );
        assert!(verify(&[], None).is_ok_and(|r| r.count == 0));
    }
}
