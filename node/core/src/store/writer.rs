//! The single writer: owns every write transaction and commits requests in groups.
//!
//! It takes the first waiting request, then whatever else is already queued (up to the group
//! limit), applies them all in one transaction and commits once with `Durability::Immediate`:
//! many submissions, one fsync. If the group fails, each request is retried alone, so one bad
//! request never takes its neighbours down with it.

use std::sync::Arc;

use automerge::{ActorId, AutoCommit};
use redb::{Database, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::tables::*;
use crate::case_doc::{self, Case, DocError};
use crate::event::Event;
use crate::hlc::Hlc;
use crate::summary::{CaseSummary, IndexKeys};
use crate::users::User;

#[derive(Debug)]
pub(super) enum WriteOp {
    PutCase {
        id: String,
        doc: Vec<u8>,
        summary: Box<CaseSummary>,
        /// Receipt date and sequence to record.
        receipt: (String, u64),
        blobs: Vec<(String, Vec<u8>)>,
        at: Hlc,
    },
    AppendEvent {
        case_id: String,
        event: Box<Event>,
        actor: ActorId,
    },
    PutBlob {
        hash: String,
        bytes: Vec<u8>,
    },
    PutUser {
        user: Box<User>,
        replace: bool,
    },
}

/// What a write produced.
#[derive(Debug)]
pub enum WriteOutcome {
    Done,
    Case(Box<Case>),
}

#[derive(Debug)]
pub(super) struct WriteRequest {
    pub op: WriteOp,
    pub reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

pub(super) fn spawn(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<WriteRequest>,
    group_max: usize,
) -> Result<(), StoreError> {
    let mut feed_head = {
        let txn = redb::ReadableDatabase::begin_read(&*db)?;
        let feed = txn.open_table(FEED)?;
        feed.last()?.map_or(0, |(k, _)| k.value())
    };
    std::thread::Builder::new()
        .name("yiciban-store-writer".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut group = vec![first];
                while group.len() < group_max {
                    match rx.try_recv() {
                        Ok(req) => group.push(req),
                        Err(_) => break,
                    }
                }
                commit_group(&db, group, &mut feed_head);
            }
            tracing::debug!("store writer stopped: every sender is gone");
        })
        .map_err(|e| StoreError::Refused(format!("cannot start the store writer: {e}")))?;
    Ok(())
}

fn commit_group(db: &Database, group: Vec<WriteRequest>, feed_head: &mut u64) {
    let started = *feed_head;
    let attempt = (|| {
        let txn = begin(db)?;
        let mut outcomes = Vec::with_capacity(group.len());
        for req in &group {
            outcomes.push(apply(&txn, &req.op, feed_head)?);
        }
        txn.commit()?;
        Ok::<_, StoreError>(outcomes)
    })();
    match attempt {
        Ok(outcomes) => {
            for (req, outcome) in group.into_iter().zip(outcomes) {
                let _ = req.reply.send(Ok(outcome));
            }
        }
        Err(_) if group.len() > 1 => {
            // Retry one by one so only the failing request gets the error.
            *feed_head = started;
            for req in group {
                commit_group(db, vec![req], feed_head);
            }
        }
        Err(e) => {
            *feed_head = started;
            if let Some(req) = group.into_iter().next() {
                let _ = req.reply.send(Err(e));
            }
        }
    }
}

fn begin(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    Ok(txn)
}

fn apply(
    txn: &WriteTransaction,
    op: &WriteOp,
    feed_head: &mut u64,
) -> Result<WriteOutcome, StoreError> {
    match op {
        WriteOp::PutCase {
            id,
            doc,
            summary,
            receipt,
            blobs,
            at,
        } => {
            let mut docs = txn.open_table(CASE_DOCS)?;
            if docs.get(id.as_str())?.is_some() {
                return Err(StoreError::Exists(format!("case {id}")));
            }
            if txn
                .open_table(CASE_BY_RECEIPT)?
                .get(summary.receipt_no.as_str())?
                .is_some()
            {
                return Err(StoreError::Exists(format!(
                    "receipt {}",
                    summary.receipt_no
                )));
            }
            docs.insert(id.as_str(), doc.as_slice())?;
            let mut seqs = txn.open_table(RECEIPT_SEQ)?;
            let current = seqs.get(receipt.0.as_str())?.map_or(0, |v| v.value());
            seqs.insert(receipt.0.as_str(), current.max(receipt.1))?;
            let mut blob_table = txn.open_table(BLOBS)?;
            for (hash, bytes) in blobs {
                blob_table.insert(hash.as_str(), bytes.as_slice())?;
            }
            put_projections(txn, None, summary)?;
            bump_feed(txn, id, feed_head)?;
            raise_hlc(txn, *at)?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::AppendEvent {
            case_id,
            event,
            actor,
        } => {
            let mut docs = txn.open_table(CASE_DOCS)?;
            let bytes = docs
                .get(case_id.as_str())?
                .map(|v| v.value().to_vec())
                .ok_or_else(|| StoreError::NotFound(format!("case {case_id}")))?;
            let mut doc = AutoCommit::load(&bytes)
                .map_err(DocError::from)?
                .with_actor(actor.clone());
            let before = case_doc::read(&doc)?;
            let old_summary = CaseSummary::of(&before, &before.state());
            case_doc::append_event(&mut doc, event)?;
            let case = case_doc::read(&doc)?;
            let state = case.state();
            if let Some(s) = state.superseded.iter().find(|s| s.event_id == event.id) {
                return Err(StoreError::Refused(s.reason.clone()));
            }
            docs.insert(case_id.as_str(), doc.save().as_slice())?;
            put_projections(txn, Some(&old_summary), &CaseSummary::of(&case, &state))?;
            bump_feed(txn, case_id, feed_head)?;
            raise_hlc(txn, event.at)?;
            Ok(WriteOutcome::Case(Box::new(case)))
        }
        WriteOp::PutBlob { hash, bytes } => {
            txn.open_table(BLOBS)?
                .insert(hash.as_str(), bytes.as_slice())?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::PutUser { user, replace } => {
            let mut users = txn.open_table(USERS)?;
            if !replace && users.get(user.username.as_str())?.is_some() {
                return Err(StoreError::Exists(format!("user {}", user.username)));
            }
            let json = serde_json::to_vec(user).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            users.insert(user.username.as_str(), json.as_slice())?;
            Ok(WriteOutcome::Done)
        }
    }
}

/// Replaces a case's projection rows: the old keys out, the new ones in, same transaction.
fn put_projections(
    txn: &WriteTransaction,
    old: Option<&CaseSummary>,
    new: &CaseSummary,
) -> Result<(), StoreError> {
    let mut by_status = txn.open_table(CASE_BY_STATUS)?;
    let mut by_date = txn.open_table(CASE_BY_DATE)?;
    let mut by_receipt = txn.open_table(CASE_BY_RECEIPT)?;
    let mut by_name = txn.open_table(CASE_BY_NAME)?;
    let mut by_tail = txn.open_table(CASE_BY_ID_TAIL)?;
    if let Some(old) = old {
        let k = IndexKeys::of(old);
        by_status.remove(k.by_status.as_str())?;
        by_date.remove(k.by_date.as_str())?;
        by_receipt.remove(k.receipt.as_str())?;
        by_name.remove(k.by_name.as_str())?;
        by_tail.remove(k.by_id_tail.as_str())?;
    }
    let k = IndexKeys::of(new);
    by_status.insert(k.by_status.as_str(), ())?;
    by_date.insert(k.by_date.as_str(), ())?;
    by_receipt.insert(k.receipt.as_str(), new.id.as_str())?;
    by_name.insert(k.by_name.as_str(), ())?;
    by_tail.insert(k.by_id_tail.as_str(), ())?;
    let json = serde_json::to_vec(new).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    txn.open_table(CASE_SUMMARIES)?
        .insert(new.id.as_str(), json.as_slice())?;
    Ok(())
}

/// Gives the document a new feed position and drops its old one.
fn bump_feed(txn: &WriteTransaction, doc_id: &str, feed_head: &mut u64) -> Result<(), StoreError> {
    let mut pos = txn.open_table(FEED_POS)?;
    let mut feed = txn.open_table(FEED)?;
    if let Some(old) = pos.get(doc_id)?.map(|v| v.value()) {
        feed.remove(old)?;
    }
    *feed_head += 1;
    feed.insert(*feed_head, doc_id)?;
    pos.insert(doc_id, *feed_head)?;
    Ok(())
}

fn raise_hlc(txn: &WriteTransaction, at: Hlc) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    let current = meta
        .get("hlc_last")?
        .and_then(|v| std::str::from_utf8(v.value()).ok().and_then(Hlc::parse))
        .unwrap_or_default();
    if at > current {
        meta.insert("hlc_last", at.to_string().as_bytes())?;
    }
    Ok(())
}
