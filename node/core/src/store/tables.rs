//! Table definitions. Names carry a version (`-1`); a new layout gets a new name and a
//! numbered migration in [`super::migrations`].

use redb::TableDefinition;

/// Case id → the case's saved Automerge document. Schemas 1–17 only: migration 18 moved its
/// rows into `case_log-1` and deleted it.
pub const CASE_DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("case_docs-1");
/// Feed sequence → the saved Automerge document of the case at that sequence: a case's bytes
/// live at its `doc_pos-1` sequence, and a write that moves it up the feed appends them at the
/// new one. A run of writes fills consecutive pages at the end of the table instead of one
/// random leaf page (and its branch pages) a case (docs/bench.md, session 17). The rows at
/// older sequences are listed in `feed_stale-1` by the move, and removed with the feed's.
pub const CASE_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("case_log-1");
/// Case id → JSON [`crate::summary::CaseSummary`], the projection lists read.
pub const CASE_SUMMARIES: TableDefinition<&str, &[u8]> = TableDefinition::new("case_summaries-1");
/// `status \x1f accepted_at \x1f id` → (); the list by status and date.
pub const CASE_BY_STATUS: TableDefinition<&str, ()> = TableDefinition::new("case_by_status-1");
/// The status part of a `case_by_status-1` key.
pub fn status_of_key(key: &str) -> &str {
    key.split(SEP).next().unwrap_or(key)
}
/// Status → how many rows of `case_by_status-1` it has: the health page's counts, kept by the
/// writer with the index rows (counting the index took ~1 ms a request at 10,000 cases).
pub const CASE_STATUS_COUNTS: TableDefinition<&str, u64> =
    TableDefinition::new("case_status_counts-1");
/// `accepted_at \x1f id` → (); the list by date, all statuses.
pub const CASE_BY_DATE: TableDefinition<&str, ()> = TableDefinition::new("case_by_date-1");
/// Receipt number → case id.
pub const CASE_BY_RECEIPT: TableDefinition<&str, &str> = TableDefinition::new("case_by_receipt-1");
/// `applicant name \x1f id` → (); lookup by name or name prefix.
pub const CASE_BY_NAME: TableDefinition<&str, ()> = TableDefinition::new("case_by_name-1");
/// `last 4 of the ID number \x1f id` → ().
pub const CASE_BY_ID_TAIL: TableDefinition<&str, ()> = TableDefinition::new("case_by_id_tail-1");
/// Queue key → (): the open cases whose baton is at this node's tier, in the review queue's
/// order (`crate::queue`: `{class}{date} \x1f accepted_at \x1f receipt_no \x1f id`, class `d`
/// dated, `u` undated, `l` waiting on a supplement). Its keys were computed with the clock
/// whose fingerprint `meta-1.queue_clock` holds; an empty or missing one means rebuild.
pub const CASE_QUEUE: TableDefinition<&str, ()> = TableDefinition::new("case_queue-1");
/// Case id → its key in `case_queue-1`, so the old key goes whatever clock computed it.
pub const CASE_QUEUE_POS: TableDefinition<&str, &str> = TableDefinition::new("case_queue_pos-1");
/// Supervision's index (`crate::supervision`): `watch date \x1f accepted_at \x1f id` → `item
/// \x1f step \x1f holder division`, every open case with a date to watch. Computed with the
/// clock `meta-1.queue_clock` names, rebuilt with `case_queue-1`.
pub const CASE_WATCH: TableDefinition<&str, &str> = TableDefinition::new("case_watch-1");
/// The open follow-ups of bad ratings (`crate::followups`): `rating stamp \x1f rating event
/// id \x1f case id` → (), kept from each case's summary.
pub const CASE_FOLLOW_UPS: TableDefinition<&str, ()> = TableDefinition::new("case_follow_ups-1");
/// The statistics' counters (`crate::stats::contributions`): row key (`i \x1f MZ001`, `a`,
/// `p \x1f MZ001 \x1f 0001 \x1f town:review`, …) → five u64 little-endian counters. Moved by
/// the writer with every case write, computed with the clock `meta-1.queue_clock` names and
/// rebuilt with `case_queue-1`.
pub const STATS: TableDefinition<&str, &[u8]> = TableDefinition::new("stats-1");
/// Document id → JSON `super::quarantine::Quarantined`: a document refused for good, by this
/// node from a peer or by a peer from this node, with the reason.
pub const QUARANTINE: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine-1");
/// `peer \x1f at_ms (20 digits) \x1f doc id \x1f event id` → JSON
/// `super::quarantine::Refusal`: at the county, what a node sent that was refused or kept as
/// not counting, the newest `REFUSALS_PER_PEER` a node.
pub const REFUSALS: TableDefinition<&str, &[u8]> = TableDefinition::new("refusals-1");
/// Receipt date `YYYYMMDD` → highest sequence number used that day.
pub const RECEIPT_SEQ: TableDefinition<&str, u64> = TableDefinition::new("receipt_seq-1");
/// SHA-256 hex → blob bytes (photos of materials).
pub const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs-1");
/// Username → JSON [`crate::users::User`].
pub const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users-1");
/// Feed sequence → document id: the change feed peers read with a cursor.
pub const FEED: TableDefinition<u64, &str> = TableDefinition::new("feed-1");
/// Document id → its current feed sequence. Schemas 1–16 only: migration 17 moved its rows
/// into `doc_pos-1` and deleted it.
pub const FEED_POS: TableDefinition<&str, u64> = TableDefinition::new("feed_pos-1");
/// Document id → its current feed sequence (so a document holds one live feed entry) and,
/// when the writer had loaded it, its current heads, so sync reads a document's heads without
/// loading it (`super::doc_pos`). One row for both, written with every feed bump: a random
/// leaf page a moved document fewer than two tables. Heads "not known" mean "load the
/// document"; known heads always equal its current ones.
pub const DOC_POS: TableDefinition<&str, &[u8]> = TableDefinition::new("doc_pos-1");
/// (sequence, prefix) → (): feed entries a later write of their document left behind, to be
/// removed by the writer when it is idle (`writer::sweep_stale`). The prefix is empty for a
/// row of `feed-1`, else that of a row of `feed_scoped-1`. Readers skip a listed entry.
/// Removing it in the write itself cost a random page per feed for every document a sync
/// run moved (three of seven in a run of comments at the county: docs/bench.md).
pub const FEED_STALE: TableDefinition<(u64, &str), ()> = TableDefinition::new("feed_stale-1");
/// Document id → its current heads, 32 bytes each. Schemas 13–16 only: migration 17 moved
/// its rows into `doc_pos-1` and deleted it.
pub const DOC_HEADS: TableDefinition<&str, &[u8]> = TableDefinition::new("doc_heads-1");
/// Case id → the change a local event just made and the heads the document had before it
/// (`super::tip`): a peer holding those heads is sent the change without loading the
/// document (`Store::changes_after`). A row is used only after checking its change is the
/// document's one head in `doc_pos-1`; one another write left behind is removed by the idle
/// sweep (`writer::tip_left_behind`).
pub const DOC_TIPS: TableDefinition<&str, &[u8]> = TableDefinition::new("doc_tips-1");
/// Peer node id → 16 bytes: the epoch and sequence of that peer's feed applied here.
pub const SYNC_CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("sync_cursors-1");
/// Peer node id → how far that peer acknowledged this node's feed ([`super::AckedRecord`]:
/// this store's epoch, the peer's, the sequence, the scope it was offered in), so the next
/// session offers from there at once, behind its hello.
pub const SYNC_ACKED: TableDefinition<&str, &[u8]> = TableDefinition::new("sync_acked-1");
/// `{v|t} \x1f division \x1f seq (20 digits)` → document id: the change feed of one village
/// or one town, so a scoped peer's resync reads only its own rows (see `crate::scope`).
pub const FEED_SCOPED: TableDefinition<&str, &str> = TableDefinition::new("feed_scoped-1");
/// `{v|t} \x1f division \x1f blob hash (hex)` → (): the blobs a village's or town's cases
/// reference, so a scoped peer receives no other blob.
pub const BLOB_SCOPE: TableDefinition<&str, ()> = TableDefinition::new("blob_scope-1");
/// Enrolment token id → JSON `crate::enrol::TokenRecord` (county only).
pub const ENROL_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("enrol_tokens-1");
/// Audit sequence number (1, 2, 3, … with no gap) → one [`crate::audit::AuditEntry`] in its
/// chained binary form (see `crate::audit` for the bytes and the hash rule). Append-only: only
/// the writer inserts, nothing removes or rewrites. `meta-1.audit_head` holds the last
/// sequence number (u64 big-endian) and its hash (32 bytes).
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit-1");
/// County-wide document id (`county:calendar`) → its saved Automerge document: what the
/// county publishes for every node (see `crate::county_doc`). Not a case: no projections.
pub const COUNTY_DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("county_docs-1");
/// Audit segment id (`audit:{node}:{segment:06}`) → its saved Automerge document: this
/// node's own trail as exported for the county, and at the county the copies of every node's
/// (see `crate::audit_doc`). Not a case: no projections, only in the global feed.
pub const AUDIT_DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_docs-1");
/// At the county: the id of another node's full audit segment → the hash (32 bytes) of its
/// last entry, as checked when it filled, so the next segment's link is checked without
/// loading this one (a 512-entry document, ~3 ms). A full segment held without a row (from
/// before the table) is loaded once and gets its row.
pub const AUDIT_TAILS: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_tails-1");
/// `health:{node}:{yyyymmdd}` → that node's health document of the day (`crate::health`):
/// this node's own, and at the county every node's.
pub const HEALTH_DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("health_docs-1");
/// `users:{node}` → that node's user directory (`crate::user_dir`): at the county every
/// enrolled node's, at a village or town its own. Not a case: no projections.
pub const USER_DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("user_docs-1");
/// Node id → JSON [`crate::health::Recent`]: its newest health report and the backlog of its
/// newest [`crate::health::RECENT`] reports, the projection the county's node table reads,
/// kept in the same transaction as the documents in `health_docs-1`. A row written as the
/// list of the reports themselves still reads.
pub const HEALTH_RECENT: TableDefinition<&str, &[u8]> = TableDefinition::new("health_recent-1");
/// Key → value: `schema_version` and other node facts.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-1");

/// Separator inside composite index keys; never appears in names, ids or stamps.
pub const SEP: char = '\u{1f}';
