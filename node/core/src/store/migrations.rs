//! Numbered migrations, run in order at open. Each one runs once; `meta-1.schema_version`
//! records the last applied.

use redb::{Database, ReadableTable};

use super::StoreError;
use super::tables::*;

type Migration = fn(&redb::WriteTransaction) -> Result<(), StoreError>;

/// All migrations; the store's schema version is their count.
/// The schema version this build writes: the number of migrations.
pub const SCHEMA_VERSION: u64 = MIGRATIONS.len() as u64;

const MIGRATIONS: [Migration; 23] = [
    migration_001_initial_tables,
    migration_002_store_epoch,
    migration_003_sync_cursors,
    migration_004_scoped_feed,
    migration_005_enrol_tokens,
    migration_006_audit,
    migration_007_county_docs,
    migration_008_audit_docs,
    migration_009_health_docs,
    migration_010_user_docs,
    migration_011_health_recent,
    migration_012_case_queue,
    migration_013_doc_heads,
    migration_014_audit_tails,
    migration_015_doc_tips,
    migration_016_feed_stale,
    migration_017_doc_pos,
    migration_018_case_log,
    migration_019_status_counts,
    migration_020_sync_acked,
    migration_021_legal_projections,
    migration_022_health_recent_compact,
    migration_023_quarantine,
];

/// Quarantined documents (`quarantine-1`) and the county's record of what each node sent
/// that was refused (`refusals-1`), empty until something is refused.
fn migration_023_quarantine(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(QUARANTINE)?;
    txn.open_table(REFUSALS)?;
    Ok(())
}

/// The node table's projection (`health_recent-1`) as [`crate::health::Recent`]: a node's
/// newest report and the backlog of the others, instead of the 30 reports themselves.
fn migration_022_health_recent_compact(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut recent = txn.open_table(HEALTH_RECENT)?;
    let mut rows = Vec::new();
    for entry in recent.iter()? {
        let (k, v) = entry?;
        match crate::health::read_recent(v.value()) {
            Ok(r) => rows.push((k.value().to_string(), r)),
            Err(e) => {
                tracing::warn!(node = k.value(), error = %e, "health row unreadable: left as it was")
            }
        }
    }
    for (node, r) in rows {
        let json = serde_json::to_vec(&r).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        recent.insert(node.as_str(), json.as_slice())?;
    }
    Ok(())
}

/// Supervision's index (`case_watch-1`), the open follow-ups (`case_follow_ups-1`) and the
/// statistics' counters (`stats-1`). Every summary is made again from its document, for the
/// fields they are computed from (step visits, the rating, open follow-ups); the follow-up
/// index is filled from them. The other two need the node's clock: `queue_clock` goes, so
/// the node rebuilds them with the queue on its first look (`queue::ensure_fresh`).
fn migration_021_legal_projections(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(CASE_WATCH)?;
    txn.open_table(STATS)?;
    let mut follow_ups = txn.open_table(CASE_FOLLOW_UPS)?;
    let mut summaries = txn.open_table(CASE_SUMMARIES)?;
    let doc_pos = txn.open_table(DOC_POS)?;
    let log = txn.open_table(CASE_LOG)?;
    let ids: Vec<String> = summaries
        .iter()?
        .map(|e| e.map(|(k, _)| k.value().to_string()))
        .collect::<Result<_, _>>()?;
    for id in ids {
        let seq = doc_pos
            .get(id.as_str())?
            .and_then(|row| super::doc_pos::seq_of(row.value()));
        let Some(bytes) = seq.map(|seq| log.get(seq)).transpose()?.flatten() else {
            continue;
        };
        let Ok(doc) = automerge::AutoCommit::load(bytes.value()) else {
            tracing::warn!(case = %id, "unreadable document: its summary stays as it was");
            continue;
        };
        let Ok(case) = crate::case_doc::read(&doc) else {
            tracing::warn!(case = %id, "unreadable case: its summary stays as it was");
            continue;
        };
        let summary = crate::summary::CaseSummary::of(&case, &case.state());
        for key in crate::summary::IndexKeys::of(&summary).follow_ups {
            follow_ups.insert(key.as_str(), ())?;
        }
        let json = serde_json::to_vec(&summary).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        summaries.insert(id.as_str(), json.as_slice())?;
    }
    txn.open_table(META)?.remove(super::QUEUE_CLOCK_KEY)?;
    Ok(())
}

/// How far each peer acknowledged this node's feed (`sync_acked-1`), empty until a session
/// writes it.
fn migration_020_sync_acked(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(SYNC_ACKED)?;
    Ok(())
}

/// Cases per status (`case_status_counts-1`), counted once from `case_by_status-1`.
fn migration_019_status_counts(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let index = txn.open_table(CASE_BY_STATUS)?;
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for entry in index.iter()? {
        let (key, _) = entry?;
        *counts
            .entry(status_of_key(key.value()).to_string())
            .or_default() += 1;
    }
    let mut table = txn.open_table(CASE_STATUS_COUNTS)?;
    for (status, n) in counts {
        table.insert(status.as_str(), n)?;
    }
    Ok(())
}

/// Case documents at their feed sequence (`case_log-1`), from `case_docs-1`, which goes. A
/// case without a `doc_pos-1` row (none is written without one) gets a new position at the
/// head of the county-wide feed, with its heads not known.
fn migration_018_case_log(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    {
        let docs = txn.open_table(CASE_DOCS)?;
        let mut log = txn.open_table(CASE_LOG)?;
        let mut doc_pos = txn.open_table(DOC_POS)?;
        let mut feed = txn.open_table(FEED)?;
        let mut head = feed.last()?.map_or(0, |(k, _)| k.value());
        for entry in docs.iter()? {
            let (id, bytes) = entry?;
            let seq = doc_pos
                .get(id.value())?
                .and_then(|row| super::doc_pos::seq_of(row.value()));
            let seq = match seq {
                Some(seq) => seq,
                None => {
                    head += 1;
                    tracing::warn!(
                        case = id.value(),
                        seq = head,
                        "case without a feed position"
                    );
                    feed.insert(head, id.value())?;
                    let row = super::doc_pos::encode(head, None);
                    doc_pos.insert(id.value(), row.as_slice())?;
                    head
                }
            };
            log.insert(seq, bytes.value())?;
        }
    }
    txn.delete_table(CASE_DOCS)?;
    Ok(())
}

/// A document's feed position and heads in one row (`doc_pos-1`, `super::doc_pos`), from
/// `feed_pos-1` and `doc_heads-1`, which go. A heads row of a bad length becomes "not known"
/// (the document is loaded, as before); a heads row without a position had no feed entry to
/// keep and is dropped.
fn migration_017_doc_pos(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    {
        let feed_pos = txn.open_table(FEED_POS)?;
        let doc_heads = txn.open_table(DOC_HEADS)?;
        let mut doc_pos = txn.open_table(DOC_POS)?;
        for entry in feed_pos.iter()? {
            let (id, seq) = entry?;
            let heads = doc_heads
                .get(id.value())?
                .and_then(|row| super::heads_row(row.value()))
                .map(|h| h.into_iter().map(automerge::ChangeHash).collect::<Vec<_>>());
            let row = super::doc_pos::encode(seq.value(), heads.as_deref());
            doc_pos.insert(id.value(), row.as_slice())?;
        }
    }
    txn.delete_table(FEED_POS)?;
    txn.delete_table(DOC_HEADS)?;
    Ok(())
}

/// Feed entries left behind, to be swept (`feed_stale-1`). Starts empty: every entry in
/// the feeds before it is live, as writes removed the old one themselves.
fn migration_016_feed_stale(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(FEED_STALE)?;
    Ok(())
}

/// The changes of local events kept for sync (`doc_tips-1`). Starts empty: a document
/// without a row is loaded to answer a want, as before.
fn migration_015_doc_tips(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(DOC_TIPS)?;
    Ok(())
}

/// The last hashes of full audit segments held at the county (`audit_tails-1`). Starts
/// empty: a full segment without a row is loaded when the next one arrives, and gets its row.
fn migration_014_audit_tails(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(AUDIT_TAILS)?;
    Ok(())
}

/// Documents' heads (`doc_heads-1`). Starts empty: a document without a row is loaded, and
/// gets its row the next time the writer changes it.
fn migration_013_doc_heads(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(DOC_HEADS)?;
    Ok(())
}

/// The review queue's index (`crate::queue`). Its keys need the calendar and the catalogue,
/// which a migration does not have: it starts empty with no `queue_clock`, and the node
/// fills it from the summaries on its first look at the queue (`queue::ensure_fresh`).
fn migration_012_case_queue(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(CASE_QUEUE)?;
    txn.open_table(CASE_QUEUE_POS)?;
    txn.open_table(META)?.remove(super::QUEUE_CLOCK_KEY)?;
    Ok(())
}

/// The node table's projection of health reports, filled from the documents already held.
fn migration_011_health_recent(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let docs = txn.open_table(HEALTH_DOCS)?;
    let mut recent = txn.open_table(HEALTH_RECENT)?;
    for entry in docs.iter()? {
        let (k, v) = entry?;
        let Ok(doc) = automerge::AutoCommit::load(v.value()) else {
            continue;
        };
        let Ok((node, reports)) = crate::health::read(&doc) else {
            continue;
        };
        let held = recent.get(node.as_str())?.map(|v| v.value().to_vec());
        let merged = crate::health::merge_recent(held.as_deref(), &reports)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", k.value())))?;
        recent.insert(node.as_str(), merged.as_slice())?;
    }
    Ok(())
}

/// User directories (`crate::user_dir`); none exist before this.
fn migration_010_user_docs(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(USER_DOCS)?;
    Ok(())
}

/// Health documents (`crate::health`): each node's reports, and at the county every node's.
fn migration_009_health_docs(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(HEALTH_DOCS)?;
    Ok(())
}

/// The audit trail's segment documents for the county; the exporter starts from entry 1, so a
/// store from before this sends its whole chain.
fn migration_008_audit_docs(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(AUDIT_DOCS)?;
    Ok(())
}

/// County-wide documents (the published working-day calendar); none exist before this.
fn migration_007_county_docs(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(COUNTY_DOCS)?;
    Ok(())
}

fn migration_001_initial_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(CASE_DOCS)?;
    txn.open_table(CASE_SUMMARIES)?;
    txn.open_table(CASE_BY_STATUS)?;
    txn.open_table(CASE_BY_DATE)?;
    txn.open_table(CASE_BY_RECEIPT)?;
    txn.open_table(CASE_BY_NAME)?;
    txn.open_table(CASE_BY_ID_TAIL)?;
    txn.open_table(RECEIPT_SEQ)?;
    txn.open_table(BLOBS)?;
    txn.open_table(USERS)?;
    txn.open_table(FEED)?;
    txn.open_table(FEED_POS)?;
    Ok(())
}

/// The store's epoch: a random number drawn once, which sync cursors are tied to.
fn migration_002_store_epoch(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    if meta.get("store_epoch")?.is_none() {
        let epoch: u64 = rand::random();
        meta.insert("store_epoch", epoch.to_be_bytes().as_slice())?;
    }
    Ok(())
}

fn migration_003_sync_cursors(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(SYNC_CURSORS)?;
    Ok(())
}

/// The per-village and per-town feeds and blob scopes, filled from the cases already held.
fn migration_004_scoped_feed(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut scoped = txn.open_table(FEED_SCOPED)?;
    let mut blob_scope = txn.open_table(BLOB_SCOPE)?;
    let feed = txn.open_table(FEED)?;
    let docs = txn.open_table(CASE_DOCS)?;
    for entry in feed.iter()? {
        let (seq, id) = entry?;
        let Some(bytes) = docs.get(id.value())? else {
            continue;
        };
        let doc = automerge::AutoCommit::load(bytes.value())
            .map_err(|e| StoreError::Corrupt(format!("case {}: {e}", id.value())))?;
        let case = crate::case_doc::read(&doc)?;
        for prefix in crate::scope::Scope::prefixes_of(&case.division) {
            scoped.insert(format!("{prefix}{:020}", seq.value()).as_str(), id.value())?;
            for m in &case.materials {
                if let Some(blob) = &m.blob {
                    blob_scope.insert(format!("{prefix}{blob}").as_str(), ())?;
                }
            }
        }
    }
    Ok(())
}

fn migration_005_enrol_tokens(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ENROL_TOKENS)?;
    Ok(())
}

/// The audit chain. A store from before it starts its chain empty: what happened earlier was
/// never logged, and the chain claims nothing about it.
fn migration_006_audit(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(AUDIT)?;
    Ok(())
}

/// Brings the database to the newest schema; refuses a database from a newer build.
pub fn run(db: &Database) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    let current = {
        let meta = txn.open_table(META)?;
        let version = meta.get("schema_version")?.map(|v| {
            let mut bytes = [0u8; 8];
            let value = v.value();
            if value.len() == 8 {
                bytes.copy_from_slice(value);
            }
            u64::from_be_bytes(bytes)
        });
        version.unwrap_or(0)
    };
    let known = SCHEMA_VERSION;
    if current > known {
        return Err(StoreError::NewerSchema {
            found: current,
            known,
        });
    }
    for migration in &MIGRATIONS[current as usize..] {
        migration(&txn)?;
    }
    txn.open_table(META)?
        .insert("schema_version", known.to_be_bytes().as_slice())?;
    txn.commit()?;
    Ok(())
}
