//! The redb store: case documents with their projections, blobs, users, the change feed.
//!
//! One writer task owns every write transaction and commits in groups ([`writer`]); readers
//! open their own read transactions. Every commit is `Durability::Immediate`: a write is
//! acknowledged only once it is on disk. Every write that changes something is logged in the
//! audit chain (`audit-1`, see [`crate::audit`]) in the same transaction.

pub mod admit;
mod doc_pos;
mod migrations;
pub mod quarantine;
pub use migrations::SCHEMA_VERSION;
mod tables;
mod tip;
mod writer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use automerge::AutoCommit;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::audit::{AuditEntry, AuditRecord, ChainProblem, ChainReport};
use crate::case_doc::{self, Case, DocError};
use crate::event::Event;
use crate::fold::Status;
use crate::hlc::Hlc;
use crate::scope::Scope;
use crate::summary::CaseSummary;
use crate::users::User;

pub use tables::SEP;
use tables::*;
pub use writer::WriteOutcome;

/// How far a peer acknowledged this node's feed (`sync_acked-1`): what the next session's
/// early offer starts from (`yiciban_sync::proto::EarlyOffer`), if this store's epoch and
/// the peer's scope are still those it was saved with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedRecord {
    /// This store's epoch when the peer acknowledged.
    pub own_epoch: u64,
    /// The peer's store epoch then.
    pub peer_epoch: u64,
    /// The acknowledged position of this node's feed (as seen in `scope`).
    pub seq: u64,
    /// The feed's scope for that peer (`Scope::key_prefix`, empty for the whole feed).
    pub scope: String,
}

impl AckedRecord {
    /// Longest scope tag a row may hold.
    const MAX_SCOPE: usize = 512;

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24 + self.scope.len());
        v.extend_from_slice(&self.own_epoch.to_be_bytes());
        v.extend_from_slice(&self.peer_epoch.to_be_bytes());
        v.extend_from_slice(&self.seq.to_be_bytes());
        v.extend_from_slice(self.scope.as_bytes());
        v
    }

    /// `None` unless `bytes` are three integers and a UTF-8 scope of bounded length.
    fn decode(bytes: &[u8]) -> Option<Self> {
        let (ints, scope) = bytes.split_at_checked(24)?;
        if scope.len() > Self::MAX_SCOPE {
            return None;
        }
        let int = |i: usize| -> Option<u64> {
            Some(u64::from_be_bytes(
                ints.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        Some(Self {
            own_epoch: int(0)?,
            peer_epoch: int(1)?,
            seq: int(2)?,
            scope: std::str::from_utf8(scope).ok()?.to_string(),
        })
    }
}
use writer::{WriteOp, WriteRequest};

/// `meta-1` key of the audit chain's head: last sequence number (u64 big-endian) || its hash.
const AUDIT_HEAD_KEY: &str = "audit_head";

/// `meta-1` key of the audit export cursor: the last entry (u64 big-endian) appended to this
/// node's segment documents for the county (`crate::audit_doc`).
const AUDIT_EXPORTED_KEY: &str = "audit_exported";

/// `meta-1` key of the fingerprint of the queue clock every key of `case_queue-1` was computed
/// with (`crate::queue`); absent: the index must be rebuilt before it is read.
const QUEUE_CLOCK_KEY: &str = "queue_clock";

/// The queue clock the writer computes `case_queue-1` keys with, set by the node.
type SharedClock = Arc<std::sync::RwLock<Option<Arc<crate::legal_clock::Clock>>>>;

/// The user an audit entry names for what an operator did on the node's command line.
pub const CONSOLE_USER: &str = "(console)";

/// The audit chain's head as the writer recorded it.
fn read_audit_head(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<(u64, [u8; 32])>, StoreError> {
    let Some(v) = meta.get(AUDIT_HEAD_KEY)? else {
        return Ok(None);
    };
    let bytes = v.value();
    let (Some(seq), Some(hash)) = (bytes.get(..8), bytes.get(8..)) else {
        return Err(StoreError::Corrupt("audit head".into()));
    };
    let (Ok(seq), Ok(hash)) = (<[u8; 8]>::try_from(seq), <[u8; 32]>::try_from(hash)) else {
        return Err(StoreError::Corrupt("audit head".into()));
    };
    Ok(Some((u64::from_be_bytes(seq), hash)))
}

/// Messages (one request, or a sync run's merges) the writer queue holds before senders wait.
const WRITE_QUEUE_CAPACITY: usize = 1024;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("storage: {0}")]
    Redb(Box<redb::Error>),
    #[error("the store {0} is in use by another process (is a node already running on it?)")]
    InUse(PathBuf),
    #[error("the store has schema version {found}; this build knows up to {known}")]
    NewerSchema { found: u64, known: u64 },
    #[error("case document: {0}")]
    Doc(#[from] DocError),
    #[error("photo of {size} bytes is larger than the limit of {max} bytes")]
    BlobTooLarge { size: usize, max: usize },
    #[error("the upload is not a JPEG, PNG, WebP or GIF image")]
    NotAnImage,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    /// Refused for good: the document breaks a rule of the trust model or its bounds
    /// ([`admit`]); the sync shell quarantines it.
    #[error("{}", .0.en)]
    Rejected(crate::message::Msg),
    /// The fold would not let the event move the case now ([`crate::fold::Why`]).
    #[error("{en}")]
    NotLegal { zh: String, en: String },
    #[error("already exists: {0}")]
    Exists(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the store's writer has stopped")]
    Closed,
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Redb(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// A case document as the store takes it: its saved bytes and its heads, which go to
/// `doc_pos-1` so that sync offers the case without loading it.
#[derive(Debug, Clone)]
pub struct SavedDoc {
    pub bytes: Vec<u8>,
    /// `None` only for bytes that do not load (the store then keeps no heads row).
    pub heads: Option<Vec<automerge::ChangeHash>>,
    /// The document's one change, when it has only one: kept as its tip (`tip`), so a new
    /// case is offered with it and a peer holding nothing of it applies it without a want.
    pub first_change: Option<Vec<u8>>,
}

impl SavedDoc {
    /// `doc` in the stored form (`save_nocompress`, see ARCHITECTURE.md) with the heads it
    /// already knows. Loading the saved bytes again to learn them cost ~7% of the request
    /// workers' time in perf of the 32-client ingest burst.
    pub fn of(doc: &mut AutoCommit) -> Self {
        let bytes = doc.save_nocompress();
        let heads = doc.get_heads();
        let first_change = match heads.as_slice() {
            [head] => doc
                .get_change_by_hash(head)
                .filter(|c| c.deps().is_empty())
                .map(|c| c.raw_bytes().to_vec()),
            _ => None,
        };
        Self {
            bytes,
            heads: Some(heads),
            first_change,
        }
    }

    /// Bytes saved elsewhere (in any saved form): loaded once to learn their heads.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let heads = automerge::Automerge::load(&bytes)
            .ok()
            .map(|d| d.get_heads());
        Self {
            bytes,
            heads,
            first_change: None,
        }
    }
}

/// A new case as [`Store::put_new_cases`] takes it: the case, its saved document, its list
/// projection, its receipt date and sequence, and the photos it brings.
#[derive(Debug)]
pub struct NewCase<'a> {
    pub case: &'a Case,
    pub doc: SavedDoc,
    pub summary: CaseSummary,
    pub receipt: (String, u64),
    pub blobs: Vec<(String, Vec<u8>)>,
}

/// How many waiting documents [`Store::waiting`] measures; the size of the rest is scaled.
pub const WAITING_SIZED: usize = 256;

/// A search over the case projections.
#[derive(Debug, Clone, Default)]
pub struct CaseQuery {
    /// Receipt number (or its prefix), applicant name (or its prefix), or the last 4 of the ID.
    pub q: Option<String>,
    pub status: Option<Status>,
    pub limit: usize,
}

/// Merges a streamed run hands the writer at a time ([`RunMode::Streamed`]).
const STREAM_CHUNK: usize = 16;

/// Verifies together the signatures the prepared merges of `requests` counted before
/// verifying them ([`writer::prepare_case`] with `defer`). A merge whose own signatures do
/// not all verify goes to the writer unprepared: the writer merges it again and screens it
/// one signature at a time, so exactly its bad events are marked.
fn settle_signatures(requests: &mut [WriteRequest]) {
    let mut sets = Vec::new();
    for (i, req) in requests.iter_mut().enumerate() {
        if let WriteOp::ApplyChanges {
            prepared: Some(p), ..
        } = &mut req.op
            && !p.deferred.is_empty()
        {
            sets.push((i, std::mem::take(&mut p.deferred)));
        }
    }
    let all: Vec<&crate::authorship::Deferred> = sets.iter().map(|(_, d)| d).collect();
    if crate::authorship::verify_deferred(&all) {
        return;
    }
    for (i, d) in &sets {
        if !crate::authorship::verify_deferred(&[d])
            && let WriteOp::ApplyChanges { prepared, .. } = &mut requests[*i].op
        {
            *prepared = None;
        }
    }
}

/// How a run of merges reaches the writer ([`Store::apply_changes_many`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// The merges in chunks of [`STREAM_CHUNK`] as they are ready: the writer inserts beside
    /// the merges and commits right after the last. For a run alone, whose Ack waits on it
    /// (a 1% resync).
    Streamed,
    /// All in one message once every merge is done: the writer, busy with the runs before,
    /// may commit this one with them. For a run behind others (a resync of many cases): with
    /// every run streamed, each committed alone, and sync-new 10,000 measured slower (pooled
    /// interleaved runs, median 0.86 -> 0.92 s).
    Whole,
}

/// The open store. Cheap to clone: clones share the database and the writer.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Database>,
    writer: mpsc::Sender<writer::Submission>,
    receipts: Arc<Mutex<HashMap<String, u64>>>,
    blob_max_bytes: usize,
    /// The node id audit entries carry ([`Store::for_node`]).
    node_id: Arc<str>,
    /// Bumped by the writer after every commit that added feed entries, so sync links offer
    /// them at once ([`Store::watch_feed`]).
    feed_moved: Arc<tokio::sync::watch::Sender<()>>,
    /// The review queue's clock, shared with the writer ([`Store::set_queue_clock`]).
    queue_clock: SharedClock,
    /// The registry of nodes as last read, and the writer's count of its changes.
    registry: Arc<RegistryCache>,
    /// The catalogue merges are bounded by ([`Store::set_catalog`]).
    catalog: Arc<std::sync::RwLock<Option<Arc<crate::catalog::Catalog>>>>,
}

/// The county's registry of nodes ([`crate::registry`]) as this store last read it: read
/// again when the writer has changed it since ([`RegistryCache::generation`]).
#[derive(Debug, Default)]
struct RegistryCache {
    generation: Arc<std::sync::atomic::AtomicU64>,
    read: std::sync::RwLock<Option<(u64, Arc<crate::registry::Registry>)>>,
}

impl Store {
    /// Opens (or creates) the store, runs migrations and starts the writer thread.
    pub fn open(
        path: &Path,
        group_commit_max: usize,
        blob_max_bytes: usize,
    ) -> Result<Self, StoreError> {
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::InUse(path.to_path_buf()));
            }
            Err(e) => return Err(e.into()),
        };
        migrations::run(&db)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let queue_clock = SharedClock::default();
        let feed_moved = Arc::new(tokio::sync::watch::Sender::new(()));
        let registry = Arc::new(RegistryCache::default());
        writer::spawn(
            db.clone(),
            rx,
            group_commit_max.max(1),
            queue_clock.clone(),
            feed_moved.clone(),
            registry.generation.clone(),
        )?;
        Ok(Self {
            db,
            writer: tx,
            receipts: Arc::new(Mutex::new(HashMap::new())),
            blob_max_bytes,
            node_id: Arc::from(""),
            feed_moved,
            queue_clock,
            registry,
            catalog: Arc::default(),
        })
    }

    /// The county's registry of nodes as this node holds it (empty before one arrives).
    pub fn registry(&self) -> Arc<crate::registry::Registry> {
        use std::sync::atomic::Ordering;
        let generation = self.registry.generation.load(Ordering::Acquire);
        if let Some((g, r)) = self
            .registry
            .read
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && *g == generation
        {
            return r.clone();
        }
        let read = self
            .county_doc_bytes(crate::registry::REGISTRY_DOC)
            .ok()
            .flatten()
            .and_then(|bytes| AutoCommit::load(&bytes).ok())
            .map(|doc| crate::registry::Registry::read(&doc));
        let registry = match read {
            Some(Ok(r)) => Arc::new(r),
            Some(Err(e)) => {
                tracing::error!(error = %e, "the registry of nodes is unreadable");
                Arc::default()
            }
            None => Arc::default(),
        };
        *self
            .registry
            .read
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some((generation, registry.clone()));
        registry
    }

    /// The catalogue whose bounds merges are checked against ([`crate::bounds`]).
    pub fn set_catalog(&self, catalog: Arc<crate::catalog::Catalog>) {
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = Some(catalog);
    }

    /// What a merge is checked against here; `first_hop`: the sender's id and scope when
    /// this node checks the first hop (the county, for a village's or a town's changes).
    pub fn merge_check(&self, first_hop: Option<(String, Scope)>) -> admit::MergeCheck {
        admit::MergeCheck {
            registry: self.registry(),
            catalog: self
                .catalog
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            first_hop,
        }
    }

    /// A receiver that sees a change after every commit that added feed entries
    /// (coalesced: a burst of commits may wake it once).
    pub fn watch_feed(&self) -> tokio::sync::watch::Receiver<()> {
        self.feed_moved.subscribe()
    }

    /// The store of node `id`: its audit entries carry that id.
    pub fn for_node(mut self, id: &str) -> Self {
        self.node_id = Arc::from(id);
        self
    }

    fn record(&self, user: &str, action: &str, case_id: Option<&str>, detail: &str) -> AuditRecord {
        AuditRecord::new(&self.node_id, user, action, case_id, detail)
    }

    /// [`Store::write`] of an op whose outcome is a count.
    async fn write_count(
        &self,
        op: WriteOp,
        audit: Option<AuditRecord>,
    ) -> Result<u64, StoreError> {
        match self.write(op, audit).await? {
            WriteOutcome::Count(n) => Ok(n),
            _ => Err(StoreError::Corrupt("writer returned no count".into())),
        }
    }

    async fn write(
        &self,
        op: WriteOp,
        audit: Option<AuditRecord>,
    ) -> Result<WriteOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(vec![WriteRequest { op, audit, reply }].into())
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Reserves the next receipt sequence number of `date` (`YYYYMMDD`). The number becomes
    /// durable with the case that carries it; a number reserved but never committed was never
    /// shown to anyone, and the next start resumes after the highest committed one.
    pub fn reserve_receipt_seq(&self, date: &str) -> Result<u64, StoreError> {
        let mut receipts = self.receipts.lock().unwrap_or_else(|e| e.into_inner());
        let next = match receipts.get(date) {
            Some(last) => last + 1,
            None => {
                let txn = self.db.begin_read()?;
                let table = txn.open_table(RECEIPT_SEQ)?;
                table.get(date)?.map_or(0, |v| v.value()) + 1
            }
        };
        receipts.insert(date.to_string(), next);
        Ok(next)
    }

    /// Stores a new case: its document, projections, receipt sequence and photos, in one commit.
    pub async fn put_new_case(
        &self,
        case: &Case,
        doc: SavedDoc,
        summary: CaseSummary,
        receipt: (String, u64),
        blobs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let (op, audit) = self.put_case_op(NewCase {
            case,
            doc,
            summary,
            receipt,
            blobs,
        });
        self.write(op, Some(audit)).await.map(|_| ())
    }

    /// Stores several new cases (the sub-cases of a 一件事 bundle) in one commit: all or none.
    pub async fn put_new_cases(&self, cases: Vec<NewCase<'_>>) -> Result<(), StoreError> {
        let ops = cases.into_iter().map(|c| self.put_case_op(c)).collect();
        self.write(WriteOp::All(ops), None).await.map(|_| ())
    }

    fn put_case_op(&self, new: NewCase<'_>) -> (WriteOp, AuditRecord) {
        let case = new.case;
        let at = case.events.iter().map(|e| e.at).max().unwrap_or_default();
        let by = case.events.first().map_or("", |e| e.user.as_str());
        let audit = self.record(
            by,
            "case.filed",
            Some(&case.id),
            &format!("receipt {}, item {}", case.receipt_no, case.item_code),
        );
        let op = WriteOp::PutCase {
            id: case.id.clone(),
            heads: new.doc.heads,
            first_change: new.doc.first_change,
            doc: new.doc.bytes,
            summary: Box::new(new.summary),
            receipt: new.receipt,
            blobs: new.blobs,
            at,
            division: case.division.clone(),
            blob_refs: case
                .materials
                .iter()
                .filter_map(|m| m.blob.clone())
                .collect(),
        };
        (op, audit)
    }

    /// Appends events to several cases (or several to one, in order) in one commit: all or
    /// none. Refused, with nothing written, if the fold would mark any of them superseded.
    pub async fn append_events(
        &self,
        events: Vec<(String, Event)>,
        actor: automerge::ActorId,
    ) -> Result<Vec<Case>, StoreError> {
        let ops = events
            .into_iter()
            .map(|(case_id, event)| {
                let audit = self.record(
                    &event.user,
                    "event.recorded",
                    Some(&case_id),
                    &format!("{} {}", event.kind.as_str(), event.id),
                );
                let op = WriteOp::AppendEvent {
                    case_id,
                    event: Box::new(event),
                    actor: actor.clone(),
                    registry: self.registry(),
                };
                (op, audit)
            })
            .collect();
        match self.write(WriteOp::All(ops), None).await? {
            WriteOutcome::All(outcomes) => {
                outcomes.into_iter().map(WriteOutcome::into_case).collect()
            }
            _ => Err(StoreError::Corrupt("writer returned no cases".into())),
        }
    }

    /// Appends an event to a case. Refused, with nothing written, if the fold would mark the
    /// event superseded: a local action must be legal where it falls.
    pub async fn append_event(
        &self,
        case_id: &str,
        event: Event,
        actor: automerge::ActorId,
    ) -> Result<Case, StoreError> {
        let audit = self.record(
            &event.user,
            "event.recorded",
            Some(case_id),
            &format!("{} {}", event.kind.as_str(), event.id),
        );
        self.write(
            WriteOp::AppendEvent {
                case_id: case_id.to_string(),
                event: Box::new(event),
                actor,
                registry: self.registry(),
            },
            Some(audit),
        )
        .await?
        .into_case()
    }

    /// Merges Automerge changes of one case from a peer (what a sync session's `Apply` effect
    /// asks for). Refused, with nothing written, if the result is not a complete, readable case
    /// document with that id.
    pub async fn apply_changes(
        &self,
        doc_id: &str,
        changes: Vec<Vec<u8>>,
    ) -> Result<Case, StoreError> {
        self.apply_changes_in(doc_id, changes, Vec::new()).await
    }

    /// [`Store::apply_changes`], refused unless the merged case falls in every one of `scopes`
    /// (the sending peer's and this node's own).
    pub async fn apply_changes_in(
        &self,
        doc_id: &str,
        changes: Vec<Vec<u8>>,
        scopes: Vec<Scope>,
    ) -> Result<Case, StoreError> {
        self.apply_changes_from("", doc_id, changes, scopes, None)
            .await
    }

    /// [`Store::apply_changes_in`] for changes sent by node `peer`, whom the audit entry
    /// names; `first_hop`: the peer's scope when this node checks the first hop
    /// ([`admit`]).
    pub async fn apply_changes_from(
        &self,
        peer: &str,
        doc_id: &str,
        changes: Vec<Vec<u8>>,
        scopes: Vec<Scope>,
        first_hop: Option<Scope>,
    ) -> Result<Case, StoreError> {
        let check = Arc::new(self.merge_check(first_hop.map(|s| (peer.to_string(), s))));
        let audit = self.record(
            &format!("peer:{peer}"),
            "case.merged",
            Some(doc_id),
            &format!("{} changes", changes.len()),
        );
        // The merge itself runs here, on the caller's task, so the merges of a batch use
        // both cores; the writer only checks the stored document did not move meanwhile.
        // A merge that fails here is refused here, with nothing written.
        let prepared =
            writer::prepare_case(self.held_case(doc_id)?, doc_id, &changes, &check, false)?;
        self.write(
            WriteOp::ApplyChanges {
                doc_id: doc_id.to_string(),
                changes,
                scopes,
                prepared: Some(Box::new(prepared)),
                check,
                peer: peer.to_string(),
            },
            Some(audit),
        )
        .await?
        .into_case()
    }

    /// [`Store::apply_changes_from`] for the cases of one sync run: merged concurrently and
    /// committed in one transaction (one fsync for the run instead of one per few cases),
    /// [`RunMode::Streamed`] or [`RunMode::Whole`]. Each case keeps its own outcome, in
    /// order: a refused one is refused alone.
    pub async fn apply_changes_many(
        &self,
        peer: &str,
        docs: Vec<(String, Vec<Vec<u8>>)>,
        scopes: Vec<Scope>,
        first_hop: Option<Scope>,
        mode: RunMode,
    ) -> Vec<Result<Arc<Case>, StoreError>> {
        let count = docs.len();
        let check = Arc::new(self.merge_check(first_hop.map(|s| (peer.to_string(), s))));
        let started = std::time::Instant::now();
        // Streamed, the writer takes the run as one group: it applies the merges as they come,
        // in one transaction, and commits once every merge has sent its request or failed.
        // Whole, the requests go in one message at the end.
        let (run, more) = mpsc::unbounded_channel();
        if mode == RunMode::Streamed {
            let open = writer::Submission {
                requests: Vec::new(),
                more: Some(more),
            };
            if self.writer.send(open).await.is_err() {
                return (0..count).map(|_| Err(StoreError::Closed)).collect();
            }
        }
        let mut merges = tokio::task::JoinSet::new();
        for (i, (doc_id, changes)) in docs.into_iter().enumerate() {
            let (store, peer, scopes) = (self.clone(), peer.to_string(), scopes.clone());
            let check = check.clone();
            merges.spawn(async move {
                let prepared = store
                    .held_case(&doc_id)
                    .and_then(|held| writer::prepare_case(held, &doc_id, &changes, &check, true));
                let answer = prepared.map(|prepared| {
                    let audit = store.record(
                        &format!("peer:{peer}"),
                        "case.merged",
                        Some(&doc_id),
                        &format!("{} changes", changes.len()),
                    );
                    let (reply, rx) = oneshot::channel();
                    let req = WriteRequest {
                        op: WriteOp::ApplyChanges {
                            doc_id,
                            changes,
                            scopes,
                            prepared: Some(Box::new(prepared)),
                            check,
                            peer,
                        },
                        audit: Some(audit),
                        reply,
                    };
                    (req, rx)
                });
                (i, answer)
            });
        }
        let mut outcomes: Vec<Option<Result<Arc<Case>, StoreError>>> =
            (0..count).map(|_| None).collect();
        let mut replies = Vec::new();
        let mut ready = Vec::new();
        while let Some(joined) = merges.join_next().await {
            match joined {
                Ok((i, Ok((req, rx)))) => {
                    ready.push(req);
                    replies.push((i, rx));
                }
                Ok((i, Err(e))) => outcomes[i] = Some(Err(e)),
                // A merge that panicked: its case stays unanswered, asked again.
                Err(_) => {}
            }
            // Streamed, the merges go on in chunks: the writer then wakes once a chunk, not
            // once a merge. Woken every ~0.1 ms, it kept the other core's idle spells too
            // short for the kernel to move a waiting merge worker there (docs/bench.md,
            // session 21). A writer that is gone fails the replies, which say so.
            if mode == RunMode::Streamed && (ready.len() >= STREAM_CHUNK || merges.is_empty()) {
                settle_signatures(&mut ready);
                for req in ready.drain(..) {
                    let _ = run.send(req);
                }
            }
        }
        drop(run);
        // With the writer's "group committed", the timeline of a sync run's merges.
        tracing::debug!(
            cases = count,
            prepare_us = started.elapsed().as_micros() as u64,
            ?mode,
            "sync merges prepared"
        );
        settle_signatures(&mut ready);
        if !ready.is_empty() && self.writer.send(ready.into()).await.is_err() {
            return (0..count).map(|_| Err(StoreError::Closed)).collect();
        }
        for (i, rx) in replies {
            outcomes[i] = Some(match rx.await {
                Ok(outcome) => outcome.and_then(WriteOutcome::into_shared_case),
                Err(_) => Err(StoreError::Closed),
            });
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(StoreError::Refused("merge task failed".into()))))
            .collect()
    }

    /// Publishes here a change to county-wide document `doc_id`: `make` gets its saved
    /// bytes (if any) and returns the changes to apply on top, `None` for none; `true` when
    /// some were written. One publication at a time in this process: each commits as the
    /// county's actor on the document it read, and two at once would both make the same
    /// sequence number of that actor, which no replica accepts.
    pub async fn publish_county_doc(
        &self,
        doc_id: &str,
        make: impl FnOnce(Option<&[u8]>) -> Result<Option<Vec<Vec<u8>>>, StoreError>,
    ) -> Result<bool, StoreError> {
        static PUBLISHING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one = PUBLISHING.lock().await;
        let existing = self.county_doc_bytes(doc_id)?;
        let Some(changes) = make(existing.as_deref())? else {
            return Ok(false);
        };
        self.apply_county_changes("", true, doc_id, changes).await?;
        Ok(true)
    }

    /// Merges changes of a county-wide document (`crate::county_doc`) sent by `peer`;
    /// refused unless `from_county` (the peer's certificate says county) or published here
    /// (`peer` empty). Nothing is written when the changes add nothing.
    pub async fn apply_county_changes(
        &self,
        peer: &str,
        from_county: bool,
        doc_id: &str,
        changes: Vec<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let by = if peer.is_empty() {
            "(county)".to_string()
        } else {
            format!("peer:{peer}")
        };
        let audit = self.record(
            &by,
            "county_doc.merged",
            Some(doc_id),
            &format!("{} changes", changes.len()),
        );
        self.write(
            WriteOp::ApplyCountyDoc {
                doc_id: doc_id.to_string(),
                changes,
                from_county: from_county || peer.is_empty(),
            },
            Some(audit),
        )
        .await
        .map(|_| ())
    }

    /// Appends this node's audit entries after the export cursor (at most `max`) to its
    /// segment documents for the county; returns how many. Writes no audit entry.
    pub async fn export_audit(&self, max: u64) -> Result<u64, StoreError> {
        let op = WriteOp::ExportAudit {
            node: self.node_id.to_string(),
            actor: case_doc::node_actor(&self.node_id),
            max,
        };
        self.write_count(op, None).await
    }

    /// Merges changes of an audit segment sent by `peer` (`crate::audit_doc`); refused unless
    /// this node is the county (`at_county`), the segment is `peer`'s own and the result
    /// chains. Returns the last entry of `peer`'s trail the segment now holds.
    pub async fn apply_audit_changes(
        &self,
        peer: &str,
        at_county: bool,
        doc_id: &str,
        changes: Vec<Vec<u8>>,
    ) -> Result<u64, StoreError> {
        let audit = self.record(
            &format!("peer:{peer}"),
            "audit.received",
            None,
            &format!("{doc_id}, {} changes", changes.len()),
        );
        // The Automerge work on this task, not on the writer thread; refusals are left to
        // the writer, which merges again and says why.
        let started = std::time::Instant::now();
        let prepared = match crate::audit_doc::parse_id(doc_id) {
            Some((node, segment)) if at_county => self
                .audit_doc_bytes(doc_id)
                .and_then(|base| writer::prepare_audit(base, doc_id, &changes, node, segment))
                .ok()
                .map(Box::new),
            _ => None,
        };
        // With "sync merges prepared": the timeline of a catch-up that carries a segment.
        tracing::debug!(
            doc = doc_id,
            changes = changes.len(),
            prepare_us = started.elapsed().as_micros() as u64,
            "audit merge prepared"
        );
        let op = WriteOp::ApplyAuditDoc {
            doc_id: doc_id.to_string(),
            changes,
            peer: peer.to_string(),
            at_county,
            own: self.node_id.to_string(),
            prepared,
        };
        self.write_count(op, Some(audit)).await
    }

    /// Appends this node's `report` to its health document of the day (`crate::health`).
    pub async fn record_health(
        &self,
        report: &crate::health::HealthReport,
    ) -> Result<(), StoreError> {
        let day = chrono::DateTime::from_timestamp_millis(i64::try_from(report.at_ms).unwrap_or(0))
            .unwrap_or_default()
            .format("%Y%m%d")
            .to_string();
        let op = WriteOp::RecordHealth {
            doc_id: crate::health::doc_id(&self.node_id, &day),
            report: Box::new(report.clone()),
            actor: case_doc::node_actor(&self.node_id),
        };
        self.write(op, None).await.map(|_| ())
    }

    /// Drops health documents of days before `keep_from` (`yyyymmdd`); returns how many.
    pub async fn prune_health(&self, keep_from: &str) -> Result<u64, StoreError> {
        let op = WriteOp::PruneHealth {
            keep_from: keep_from.to_string(),
        };
        self.write_count(op, None).await
    }

    /// Merges changes of `peer`'s health document (at the county only).
    pub async fn apply_health_changes(
        &self,
        peer: &str,
        at_county: bool,
        doc_id: &str,
        changes: Vec<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let op = WriteOp::ApplyHealthDoc {
            doc_id: doc_id.to_string(),
            changes,
            peer: peer.to_string(),
            at_county,
        };
        self.write(op, None).await.map(|_| ())
    }

    /// A health document's saved bytes.
    pub fn health_doc_bytes(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HEALTH_DOCS)?;
        Ok(table.get(id)?.map(|v| v.value().to_vec()))
    }

    /// Every node's newest health reports (at most [`crate::health::RECENT`], oldest first),
    /// from the `health_recent-1` projection: no document is loaded.
    pub fn latest_health(&self) -> Result<BTreeMap<String, crate::health::Recent>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HEALTH_RECENT)?;
        let mut out = BTreeMap::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let recent = crate::health::read_recent(v.value())
                .map_err(|e| StoreError::Corrupt(format!("health_recent {}: {e}", k.value())))?;
            out.insert(k.value().to_string(), recent);
        }
        Ok(out)
    }

    /// At the county: adds or replaces `user` in the directory of `node`, a `role` node of
    /// `division` (`crate::user_dir`), on behalf of `by`; it replicates to that node only.
    pub async fn put_directory_user(
        &self,
        node: &str,
        role: crate::catalog::Tier,
        division: &str,
        user: User,
        by: &str,
    ) -> Result<(), StoreError> {
        let audit = self.record(
            by,
            "user_dir.put",
            None,
            &format!(
                "{} ({}{}) for {node}",
                user.username,
                user.role.as_str(),
                if user.disabled { ", disabled" } else { "" }
            ),
        );
        let op = WriteOp::PutDirUser {
            node: node.to_string(),
            role,
            division: division.to_string(),
            user: Box::new(user),
            actor: case_doc::node_actor(&self.node_id),
        };
        self.write(op, Some(audit)).await.map(|_| ())
    }

    /// Merges changes of a user directory sent by `peer`; refused unless `from_county` and
    /// the directory is this node's own. Its users are upserted in the same transaction.
    pub async fn apply_user_dir_changes(
        &self,
        peer: &str,
        from_county: bool,
        doc_id: &str,
        changes: Vec<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let audit = self.record(
            &format!("peer:{peer}"),
            "user_dir.merged",
            None,
            &format!("{doc_id}, {} changes", changes.len()),
        );
        let op = WriteOp::ApplyUserDir {
            doc_id: doc_id.to_string(),
            changes,
            from_county,
            own: self.node_id.to_string(),
        };
        self.write(op, Some(audit)).await.map(|_| ())
    }

    /// A user directory's saved bytes.
    pub fn user_doc_bytes(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(USER_DOCS)?;
        Ok(table.get(id)?.map(|v| v.value().to_vec()))
    }

    /// The directory of `node` held here, if any.
    pub fn user_dir(&self, node: &str) -> Result<Option<crate::user_dir::Directory>, StoreError> {
        let Some(bytes) = self.user_doc_bytes(&crate::user_dir::doc_id(node))? else {
            return Ok(None);
        };
        let doc = AutoCommit::load(&bytes).map_err(DocError::from)?;
        Ok(Some(crate::user_dir::read(&doc)?))
    }

    /// An audit segment's saved bytes.
    pub fn audit_doc_bytes(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AUDIT_DOCS)?;
        Ok(table.get(id)?.map(|v| v.value().to_vec()))
    }

    /// The nodes whose audit segments this store holds (at the county: the copies; anywhere:
    /// its own exported trail), in order.
    pub fn audit_doc_nodes(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AUDIT_DOCS)?;
        let mut nodes = BTreeSet::new();
        for entry in table.iter()? {
            let (k, _) = entry?;
            if let Some((node, _)) = crate::audit_doc::parse_id(k.value()) {
                nodes.insert(node.to_string());
            }
        }
        Ok(nodes.into_iter().collect())
    }

    /// Walks the copy of `node`'s audit trail held here (`crate::audit_doc::verify_replica`);
    /// `None` when no segment of it is held.
    pub fn verify_audit_replica(
        &self,
        node: &str,
    ) -> Result<Option<Result<ChainReport, ChainProblem>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AUDIT_DOCS)?;
        let prefix = crate::audit_doc::node_prefix(node);
        let mut segments = Vec::new();
        for entry in table.range(prefix.as_str()..)? {
            let (k, v) = entry?;
            let Some(rest) = k.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            // Another node whose id extends this one's with `:` shares the prefix.
            let Some((n, segment)) = crate::audit_doc::parse_id(k.value()) else {
                continue;
            };
            if n != node || rest.contains(':') {
                continue;
            }
            segments.push(Ok::<_, StoreError>((segment, v.value().to_vec())));
        }
        if segments.is_empty() {
            return Ok(None);
        }
        crate::audit_doc::verify_replica(node, segments).map(Some)
    }

    /// A county-wide document's saved bytes.
    pub fn county_doc_bytes(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(COUNTY_DOCS)?;
        Ok(table.get(id)?.map(|v| v.value().to_vec()))
    }

    /// Where a document stands in the change feed (moves on every change); `None` if not held.
    pub fn feed_pos(&self, id: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DOC_POS)?;
        Ok(table.get(id)?.and_then(|v| doc_pos::seq_of(v.value())))
    }

    /// The table that holds document `id` by id, by the form of its id; `None` for a case,
    /// whose bytes are in `case_log-1` at its feed position ([`Store::with_doc`]).
    fn doc_table(id: &str) -> Option<TableDefinition<'static, &'static str, &'static [u8]>> {
        if crate::county_doc::is_county_doc(id) {
            Some(COUNTY_DOCS)
        } else if crate::audit_doc::is_audit_doc(id) {
            Some(AUDIT_DOCS)
        } else if crate::health::is_health_doc(id) {
            Some(HEALTH_DOCS)
        } else if crate::user_dir::is_user_dir_doc(id) {
            Some(USER_DOCS)
        } else {
            None
        }
    }

    /// `f` of any document's saved bytes as `txn` holds them (a case, a county-wide document,
    /// an audit segment, ...), without copying them; `None` if the document is not held.
    fn with_doc<R>(
        txn: &redb::ReadTransaction,
        id: &str,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        if let Some(table) = Self::doc_table(id) {
            return Ok(txn.open_table(table)?.get(id)?.map(|v| f(v.value())));
        }
        let seq = txn
            .open_table(DOC_POS)?
            .get(id)?
            .and_then(|row| doc_pos::seq_of(row.value()));
        Ok(match seq {
            Some(seq) => txn.open_table(CASE_LOG)?.get(seq)?.map(|v| f(v.value())),
            None => None,
        })
    }

    /// Any document's saved bytes: a case, a county-wide document or an audit segment.
    fn doc_bytes(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        Self::with_doc(&txn, id, <[u8]>::to_vec)
    }

    /// The change a holder of `have` lacks, from `doc_tips-1`, when that is exactly the tip:
    /// `have` is the heads the document had before the tip's change, and that change is the
    /// document's one head now (so nothing else was written since). Found without loading the
    /// document. `None`: load it.
    fn tip_after(&self, doc_id: &str, have: &[[u8; 32]]) -> Result<Option<Vec<u8>>, StoreError> {
        if have.is_empty() {
            return Ok(None);
        }
        let mut have = have.to_vec();
        have.sort_unstable();
        have.dedup();
        let txn = self.db.begin_read()?;
        let Some(tip) = Self::held_tip(&txn, doc_id)?.filter(|tip| tip.base == have) else {
            return Ok(None);
        };
        let heads = Self::known_heads(&txn.open_table(DOC_POS)?, doc_id)?;
        Ok((heads == Some(vec![tip.hash])).then_some(tip.change))
    }

    /// A document's tip as `doc_tips-1` keeps it, its change parsed (the hash computed from
    /// its bytes, not trusted from the row). Not checked against any heads: each caller
    /// compares it with the heads it goes by. `None` when there is no row, or it is damaged.
    fn held_tip(txn: &redb::ReadTransaction, doc_id: &str) -> Result<Option<HeldTip>, StoreError> {
        Ok(match txn.open_table(DOC_TIPS)?.get(doc_id)? {
            Some(row) => Self::parse_tip(doc_id, row.value()),
            None => None,
        })
    }

    /// A `doc_tips-1` row parsed ([`Store::held_tip`]); `None`, with a warning, if damaged.
    fn parse_tip(doc_id: &str, row: &[u8]) -> Option<HeldTip> {
        let Some(tip::Tip { base, change }) = tip::decode(row) else {
            tracing::warn!(doc = doc_id, "doc_tips row too short; loading the document");
            return None;
        };
        let Some((hash, _)) = tip::change_id_or_parse(change) else {
            tracing::warn!(
                doc = doc_id,
                "doc_tips row unreadable; loading the document"
            );
            return None;
        };
        Some(HeldTip {
            base,
            hash,
            change: change.to_vec(),
        })
    }

    /// A document's heads as `doc_pos-1` knows them: `None` when it has no row, its row does
    /// not know them, or the row is damaged (with a warning).
    fn known_heads(
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        id: &str,
    ) -> Result<Option<Vec<[u8; 32]>>, StoreError> {
        let Some(row) = table.get(id)? else {
            return Ok(None);
        };
        let bytes = row.value();
        match doc_pos::decode(bytes) {
            Some(pos) => Ok(pos.heads),
            None => {
                tracing::warn!(doc = id, len = bytes.len(), "damaged doc_pos row");
                Ok(None)
            }
        }
    }

    /// A document's current heads from `doc_pos-1`, or by loading it where that does not know
    /// them (`None`: the document is not held).
    fn heads(&self, id: &str) -> Result<Option<Vec<[u8; 32]>>, StoreError> {
        let txn = self.db.begin_read()?;
        if let Some(heads) = Self::known_heads(&txn.open_table(DOC_POS)?, id)? {
            return Ok(Some(heads));
        }
        let Some(loaded) = Self::with_doc(&txn, id, automerge::Automerge::load)? else {
            return Ok(None);
        };
        let doc = loaded.map_err(DocError::from)?;
        Ok(Some(doc.get_heads().into_iter().map(|h| h.0).collect()))
    }

    /// The feed a scoped peer reads after `since`: its own rows and the county-wide ones,
    /// merged in sequence order.
    pub(crate) fn scope_feed_since(
        &self,
        scope: &Scope,
        since: u64,
        limit: usize,
    ) -> Result<Vec<yiciban_sync::store::FeedEntry>, StoreError> {
        let Some(prefix) = scope.key_prefix() else {
            return yiciban_sync::store::ReplicaStore::feed_since(self, since, limit);
        };
        let mut out = self.scoped_feed_since(&prefix, since, limit)?;
        out.extend(self.scoped_feed_since(&Scope::county_wide_prefix(), since, limit)?);
        out.sort_by_key(|e| e.seq);
        out.truncate(limit);
        Ok(out)
    }

    /// The newest sequence of [`Store::scope_feed_since`]'s feed.
    pub(crate) fn scope_feed_head(&self, scope: &Scope) -> Result<u64, StoreError> {
        let Some(prefix) = scope.key_prefix() else {
            return yiciban_sync::store::ReplicaStore::feed_head(self);
        };
        Ok(self
            .scoped_feed_head(&prefix)?
            .max(self.scoped_feed_head(&Scope::county_wide_prefix())?))
    }

    /// Persists the cursor held for `peer`'s feed.
    pub async fn save_cursor(&self, peer: &str, epoch: u64, seq: u64) -> Result<(), StoreError> {
        self.save_link(peer, Some((epoch, seq)), None).await
    }

    /// Saves what a sync link keeps for `peer` between sessions, in one commit: the cursor
    /// held for its feed and how far it acknowledged ours (either may be `None`: unchanged).
    pub async fn save_link(
        &self,
        peer: &str,
        cursor: Option<(u64, u64)>,
        acked: Option<AckedRecord>,
    ) -> Result<(), StoreError> {
        if cursor.is_none() && acked.is_none() {
            return Ok(());
        }
        let op = WriteOp::SaveLink {
            peer: peer.to_string(),
            cursor,
            acked,
        };
        self.write(op, None).await.map(|_| ())
    }

    /// Forgets how far `peer` acknowledged this node's feed (its store changed epoch).
    pub async fn forget_acked(&self, peer: &str) -> Result<(), StoreError> {
        let op = WriteOp::ForgetAcked {
            peer: peer.to_string(),
        };
        self.write(op, None).await.map(|_| ())
    }

    /// How far `peer` acknowledged this node's feed, as last saved.
    pub fn acked(&self, peer: &str) -> Result<Option<AckedRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SYNC_ACKED)?;
        let Some(v) = table.get(peer)? else {
            return Ok(None);
        };
        AckedRecord::decode(v.value())
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("acknowledged position of {peer}")))
    }

    /// The cursor held for `peer`'s feed: `(epoch, seq)`.
    pub fn cursor(&self, peer: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SYNC_CURSORS)?;
        let Some(v) = table.get(peer)? else {
            return Ok(None);
        };
        let bytes = v.value();
        let (Some(e), Some(s)) = (bytes.get(..8), bytes.get(8..16)) else {
            return Err(StoreError::Corrupt(format!("cursor of {peer}")));
        };
        let mut epoch = [0u8; 8];
        let mut seq = [0u8; 8];
        epoch.copy_from_slice(e);
        seq.copy_from_slice(s);
        Ok(Some((u64::from_be_bytes(epoch), u64::from_be_bytes(seq))))
    }

    /// Stores a complete blob received from node `peer`, after checking its content hash.
    pub async fn put_peer_blob(
        &self,
        peer: &str,
        hash: &str,
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        if bytes.len() > self.blob_max_bytes {
            return Err(StoreError::BlobTooLarge {
                size: bytes.len(),
                max: self.blob_max_bytes,
            });
        }
        if hex::encode(Sha256::digest(&bytes)) != hash {
            return Err(StoreError::Refused(format!(
                "blob {hash} does not match its hash"
            )));
        }
        let audit = self.record(&format!("peer:{peer}"), "blob.stored", None, hash);
        self.write(
            WriteOp::PutBlob {
                hash: hash.to_string(),
                bytes,
            },
            Some(audit),
        )
        .await
        .map(|_| ())
    }

    /// A random number this store drew when it was created. A store restored from a backup
    /// must draw a new one, so peers' cursors into the old feed are known to be stale.
    pub fn epoch(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let value = meta.get("store_epoch")?;
        let bytes: [u8; 8] = value
            .as_ref()
            .and_then(|v| v.value().try_into().ok())
            .ok_or_else(|| StoreError::Corrupt("store has no epoch".into()))?;
        Ok(u64::from_be_bytes(bytes))
    }

    /// Checks a photo and returns its content hash; stores nothing.
    pub fn check_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        if bytes.len() > self.blob_max_bytes {
            return Err(StoreError::BlobTooLarge {
                size: bytes.len(),
                max: self.blob_max_bytes,
            });
        }
        if !is_image(bytes) {
            return Err(StoreError::NotAnImage);
        }
        Ok(hex::encode(Sha256::digest(bytes)))
    }

    /// Stores a photo uploaded by user `by` under its content hash (idempotent) and returns
    /// the hash.
    pub async fn put_blob(&self, bytes: Vec<u8>, by: &str) -> Result<String, StoreError> {
        let hash = self.check_blob(&bytes)?;
        let audit = self.record(by, "blob.stored", None, &hash);
        self.write(
            WriteOp::PutBlob {
                hash: hash.clone(),
                bytes,
            },
            Some(audit),
        )
        .await?;
        Ok(hash)
    }

    pub fn blob_max_bytes(&self) -> usize {
        self.blob_max_bytes
    }

    /// Creates a user (on behalf of `by`); refused if the username exists and `replace` is
    /// false.
    pub async fn put_user(&self, user: User, replace: bool, by: &str) -> Result<(), StoreError> {
        let audit = self.record(
            by,
            if replace {
                "user.replaced"
            } else {
                "user.added"
            },
            None,
            &format!("{} ({})", user.username, user.role.as_str()),
        );
        self.write(
            WriteOp::PutUser {
                user: Box::new(user),
                replace,
            },
            Some(audit),
        )
        .await
        .map(|_| ())
    }

    pub fn blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BLOBS)?;
        Ok(table.get(hash)?.map(|v| v.value().to_vec()))
    }

    pub fn blob_exists(&self, hash: &str) -> bool {
        self.db
            .begin_read()
            .ok()
            .and_then(|txn| txn.open_table(BLOBS).ok())
            .and_then(|t| t.get(hash).ok().flatten().map(|_| ()))
            .is_some()
    }

    /// A case's document bytes and summary row, read together: what a merge starts from.
    pub(crate) fn held_case(&self, id: &str) -> Result<Option<writer::HeldCase>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(bytes) = Self::with_doc(&txn, id, <[u8]>::to_vec)? else {
            return Ok(None);
        };
        let summaries = txn.open_table(CASE_SUMMARIES)?;
        let row = summaries.get(id)?;
        let summary = writer::HeldCase::summary_of(row.as_ref().map(|v| v.value()));
        Ok(Some(writer::HeldCase { bytes, summary }))
    }

    /// The case document's saved bytes.
    pub fn case_doc_bytes(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if Self::doc_table(id).is_some() {
            return Ok(None);
        }
        self.doc_bytes(id)
    }

    /// Loads one case from its document.
    /// Case `id` as its events count ([`crate::authorship::screen`]: the others are in
    /// [`Case::forged`]).
    pub fn case(&self, id: &str) -> Result<Option<Case>, StoreError> {
        let Some(bytes) = self.case_doc_bytes(id)? else {
            return Ok(None);
        };
        let doc = AutoCommit::load(&bytes).map_err(DocError::from)?;
        let (mut case, writers) = case_doc::read_with_writers(&doc)?;
        crate::authorship::screen(&mut case, &writers, &self.registry());
        Ok(Some(case))
    }

    pub fn case_id_by_receipt(&self, receipt_no: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CASE_BY_RECEIPT)?;
        Ok(table.get(receipt_no)?.map(|v| v.value().to_string()))
    }

    /// How many cases the store holds: one summary row each, written with the case.
    pub fn case_count(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(CASE_SUMMARIES)?.len()?)
    }

    /// Cases per status, from `case_status_counts-1` (kept with the status index).
    pub fn status_counts(&self) -> Result<Vec<(Status, u64)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CASE_STATUS_COUNTS)?;
        let mut out = Vec::with_capacity(Status::ALL.len());
        for status in Status::ALL {
            let n = table.get(status.as_str())?.map_or(0, |v| v.value());
            out.push((status, n));
        }
        Ok(out)
    }

    /// Hands the writer the clock it computes review queue keys with (`crate::queue`).
    pub fn set_queue_clock(&self, clock: Arc<crate::legal_clock::Clock>) {
        *self.queue_clock.write().unwrap_or_else(|e| e.into_inner()) = Some(clock);
    }

    /// The clock set by [`Store::set_queue_clock`], if any.
    pub fn queue_clock(&self) -> Option<Arc<crate::legal_clock::Clock>> {
        self.queue_clock
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The fingerprint of the clock `case_queue-1` was computed with; `None`: to rebuild.
    pub fn queue_fingerprint(&self) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta
            .get(QUEUE_CLOCK_KEY)?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
    }

    /// Recomputes `case_queue-1` with the writer's clock unless it is fresh; returns the
    /// number of cases in the queue. Reads every summary: for a new calendar or catalogue.
    pub async fn rebuild_queue(&self) -> Result<u64, StoreError> {
        self.write_count(WriteOp::RebuildQueue, None).await
    }

    /// Cases in this node's review queue (no scan: the table's length).
    pub fn queue_len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(CASE_QUEUE)?.len()?)
    }

    /// The queue's cases waiting on a supplement (class `l`), whose place depends on today.
    pub fn queue_live(&self) -> Result<Vec<CaseSummary>, StoreError> {
        let txn = self.db.begin_read()?;
        let queue = txn.open_table(CASE_QUEUE)?;
        let summaries = txn.open_table(CASE_SUMMARIES)?;
        let mut out = Vec::new();
        for key in prefix_range(&queue, &format!("l{SEP}"))? {
            let id = key.rsplit(SEP).next().unwrap_or_default();
            if let Some(s) = load_summary(&summaries, id)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Places `skip..skip + n` of the queue apart from the live ones: dated (class `d`) in key
    /// order, then undated (`u`). The skipped keys are stepped over, not parsed.
    pub fn queue_stored(
        &self,
        skip: usize,
        n: usize,
    ) -> Result<Vec<crate::queue::Place>, StoreError> {
        let txn = self.db.begin_read()?;
        let queue = txn.open_table(CASE_QUEUE)?;
        let mut out = Vec::with_capacity(n.min(4096));
        let mut skip = skip;
        for range in [queue.range("d".."e")?, queue.range("u"..)?] {
            for entry in range {
                if out.len() >= n {
                    return Ok(out);
                }
                let (k, _) = entry?;
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                let place = crate::queue::Place::parse(k.value())
                    .ok_or_else(|| StoreError::Corrupt(format!("queue key {:?}", k.value())))?;
                out.push(place);
            }
        }
        Ok(out)
    }

    /// Every row of supervision's index (`crate::supervision`) dated on or before `last`, in
    /// order. A damaged row is skipped with a warning.
    pub fn watched_until(
        &self,
        last: chrono::NaiveDate,
    ) -> Result<Vec<crate::supervision::Watched>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CASE_WATCH)?;
        // Keys start with the date: every key of `last` sorts before the next day's.
        let end = last.succ_opt().unwrap_or(last).to_string();
        let mut out = Vec::new();
        for entry in table.range(..end.as_str())? {
            let (k, v) = entry?;
            match crate::supervision::Watched::parse(k.value(), v.value()) {
                Some(w) => out.push(w),
                None => tracing::warn!(key = k.value(), "damaged supervision row skipped"),
            }
        }
        Ok(out)
    }

    /// One read of supervision's index for its page: the rows dated on or before `last`
    /// counted by their value, red (dated before `today`) and yellow apart, and the rows
    /// `skip..skip + take` of them parsed. Counting borrows each row; only the page's rows
    /// and each distinct value are copied out.
    pub fn watch_scan(
        &self,
        today: chrono::NaiveDate,
        last: chrono::NaiveDate,
        skip: usize,
        take: usize,
    ) -> Result<crate::supervision::Scan, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CASE_WATCH)?;
        let end = last.succ_opt().unwrap_or(last).to_string();
        let today = today.to_string();
        let mut scan = crate::supervision::Scan::default();
        for (at, entry) in table.range(..end.as_str())?.enumerate() {
            let (k, v) = entry?;
            let (key, value) = (k.value(), v.value());
            // Keys start with the ISO date: before today's text is before today.
            let red = key.get(..today.len()).is_some_and(|d| d < today.as_str());
            let slot = match scan.counts.get_mut(value) {
                Some(slot) => slot,
                None => scan.counts.entry(value.to_string()).or_default(),
            };
            if red {
                slot.red += 1;
            } else {
                slot.yellow += 1;
            }
            if at >= skip && scan.rows.len() < take {
                match crate::supervision::Watched::parse(key, value) {
                    Some(w) => scan.rows.push(w),
                    None => tracing::warn!(key, "damaged supervision row skipped"),
                }
            }
        }
        Ok(scan)
    }

    /// Quarantines document `doc_id`: refused by this node from `peer` (`received`; at the
    /// county also recorded under `peer`, whom the alert names) or by `peer` from this node
    /// (`sent`). Audited.
    pub async fn quarantine(
        &self,
        doc_id: &str,
        peer: &str,
        direction: quarantine::Direction,
        reason: &crate::message::Msg,
        record_under_peer: bool,
    ) -> Result<(), StoreError> {
        let receipt_no = self
            .summaries(&[doc_id])?
            .pop()
            .flatten()
            .map(|s| s.receipt_no)
            .unwrap_or_default();
        let at_ms = quarantine::now_ms();
        let entry = quarantine::Quarantined {
            doc_id: doc_id.to_string(),
            receipt_no: receipt_no.clone(),
            peer: peer.to_string(),
            direction,
            reason: reason.zh.clone(),
            reason_en: reason.en.clone(),
            at_ms,
        };
        let refusal = record_under_peer.then(|| {
            Box::new(quarantine::Refusal {
                peer: peer.to_string(),
                doc_id: doc_id.to_string(),
                receipt_no,
                event_id: None,
                reason: reason.zh.clone(),
                reason_en: reason.en.clone(),
                at_ms,
            })
        });
        let audit = self.record(
            &format!("peer:{peer}"),
            "doc.quarantined",
            Some(doc_id),
            &format!("{direction:?}: {}", reason.en),
        );
        self.write(
            WriteOp::Quarantine {
                entry: Box::new(entry),
                refusal,
            },
            Some(audit),
        )
        .await
        .map(|_| ())
    }

    /// Every quarantined document, newest first.
    pub fn quarantined(&self) -> Result<Vec<quarantine::Quarantined>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(QUARANTINE)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            match serde_json::from_slice::<quarantine::Quarantined>(v.value()) {
                Ok(q) => out.push(q),
                Err(e) => tracing::warn!(doc = k.value(), error = %e, "quarantine row unreadable"),
            }
        }
        out.sort_by_key(|q| std::cmp::Reverse(q.at_ms));
        Ok(out)
    }

    /// At the county: what each node sent that was refused or kept as not counting, newest
    /// last, by node.
    pub fn refusals(&self) -> Result<BTreeMap<String, Vec<quarantine::Refusal>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REFUSALS)?;
        let mut out: BTreeMap<String, Vec<quarantine::Refusal>> = BTreeMap::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            if let Ok(r) = serde_json::from_slice::<quarantine::Refusal>(v.value()) {
                out.entry(r.peer.clone()).or_default().push(r);
            }
        }
        Ok(out)
    }

    /// Every key of the open follow-ups' index (`crate::followups`), the oldest rating first.
    pub fn follow_up_keys(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CASE_FOLLOW_UPS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(entry?.0.value().to_string());
        }
        Ok(out)
    }

    /// How many follow-ups of bad ratings are open (the index's length).
    pub fn open_follow_ups(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(CASE_FOLLOW_UPS)?.len()?)
    }

    /// Every row of the statistics' counters (`crate::stats`).
    pub fn stats_rows(&self) -> Result<Vec<(String, crate::stats::Counters)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(STATS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), writer::decode_counters(v.value())));
        }
        Ok(out)
    }

    /// The summaries of `ids`, in order (`None` for a case not held).
    pub fn summaries(&self, ids: &[&str]) -> Result<Vec<Option<CaseSummary>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CASE_SUMMARIES)?;
        ids.iter().map(|id| load_summary(&table, id)).collect()
    }

    /// [`CaseSummary::notices_pending`] of each of `ids`, in order: `None` where the row is
    /// missing, damaged or older than the field (then only the document can tell).
    pub fn notices_pending(&self, ids: &[&str]) -> Result<Vec<Option<u32>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CASE_SUMMARIES)?;
        ids.iter()
            .map(|id| {
                let row = table.get(*id)?;
                let summary = writer::HeldCase::summary_of(row.as_ref().map(|v| v.value()));
                Ok(summary.and_then(|s| s.notices_pending))
            })
            .collect()
    }

    /// Lists case summaries, newest first. Reads projections only, never documents.
    pub fn list_cases(&self, query: &CaseQuery) -> Result<Vec<CaseSummary>, StoreError> {
        let txn = self.db.begin_read()?;
        let summaries = txn.open_table(CASE_SUMMARIES)?;
        let limit = query.limit.max(1);
        let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
        let mut out = Vec::new();
        let Some(q) = q else {
            // Newest first from the date or status index.
            let keys: Vec<String> = match query.status {
                Some(status) => {
                    // The newest `limit` keys of the status, read from its end: a status of
                    // a million cases costs no more than one of ten.
                    let table = txn.open_table(CASE_BY_STATUS)?;
                    let (from, to) = (
                        format!("{}{SEP}", status.as_str()),
                        format!("{}{}", status.as_str(), char::from(SEP as u8 + 1)),
                    );
                    let mut keys = Vec::new();
                    for entry in table.range(from.as_str()..to.as_str())?.rev().take(limit) {
                        keys.push(entry?.0.value().to_string());
                    }
                    keys
                }
                None => {
                    let table = txn.open_table(CASE_BY_DATE)?;
                    let mut keys = Vec::new();
                    for entry in table.iter()?.rev().take(limit) {
                        keys.push(entry?.0.value().to_string());
                    }
                    keys
                }
            };
            for key in keys {
                let id = key.rsplit(SEP).next().unwrap_or_default();
                if let Some(s) = load_summary(&summaries, id)? {
                    out.push(s);
                }
            }
            return Ok(out);
        };
        let mut ids = BTreeSet::new();
        let upper = q.to_uppercase();
        let receipts = txn.open_table(CASE_BY_RECEIPT)?;
        for entry in receipts.range(upper.as_str()..)? {
            let (k, v) = entry?;
            if !k.value().starts_with(upper.as_str()) || ids.len() >= limit * 4 {
                break;
            }
            ids.insert(v.value().to_string());
        }
        let names = txn.open_table(CASE_BY_NAME)?;
        for key in prefix_range(&names, q)?.into_iter().take(limit * 4) {
            ids.insert(key.rsplit(SEP).next().unwrap_or_default().to_string());
        }
        if upper.chars().count() == 4 {
            let tails = txn.open_table(CASE_BY_ID_TAIL)?;
            for key in prefix_range(&tails, &format!("{upper}{SEP}"))?
                .into_iter()
                .take(limit * 4)
            {
                ids.insert(key.rsplit(SEP).next().unwrap_or_default().to_string());
            }
        }
        for id in ids {
            if let Some(s) = load_summary(&summaries, &id)?
                && query.status.is_none_or(|st| st == s.status)
            {
                out.push(s);
            }
        }
        out.sort_by(|a, b| {
            b.accepted_at
                .cmp(&a.accepted_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        out.truncate(limit);
        Ok(out)
    }

    pub fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(USERS)?;
        match table.get(username)? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("user {username}: {e}"))),
            None => Ok(None),
        }
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(USERS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let user = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Corrupt(format!("user {}: {e}", k.value())))?;
            out.push(user);
        }
        Ok(out)
    }

    /// The newest HLC stamp this store has written, so a restarted clock never goes back.
    pub fn hlc_floor(&self) -> Result<Hlc, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta
            .get("hlc_last")?
            .and_then(|v| std::str::from_utf8(v.value()).ok().and_then(Hlc::parse))
            .unwrap_or_default())
    }

    /// Bytes the store file takes on disk.
    /// The divisions of a held case, from its projection (no document load).
    pub fn case_divisions(&self, id: &str) -> Result<Option<case_doc::Divisions>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CASE_SUMMARIES)?;
        Ok(load_summary(&table, id)?.map(|s| case_doc::Divisions {
            village: s.village,
            town: s.town,
            county: s.county,
        }))
    }

    /// One village's or town's feed after `since` (`prefix` from [`Scope`]).
    pub(crate) fn scoped_feed_since(
        &self,
        prefix: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<yiciban_sync::store::FeedEntry>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FEED_SCOPED)?;
        let stale = StaleEntries::open(&txn)?;
        let start = format!("{prefix}{:020}", since.saturating_add(1));
        let mut out = Vec::new();
        for entry in table.range(start.as_str()..)? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry?;
            let Some(seq) = k.value().strip_prefix(prefix) else {
                break;
            };
            let seq = seq
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("scoped feed key {:?}", k.value())))?;
            if stale.lists(seq, prefix)? {
                continue;
            }
            out.push(yiciban_sync::store::FeedEntry {
                seq,
                doc_id: v.value().to_string(),
            });
        }
        Ok(out)
    }

    /// The newest sequence in one village's or town's feed (0 when it is empty).
    pub(crate) fn scoped_feed_head(&self, prefix: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FEED_SCOPED)?;
        let end = format!("{prefix}{}", "9".repeat(20));
        let last = table.range(prefix..=end.as_str())?.next_back();
        match last {
            Some(entry) => {
                let (k, _) = entry?;
                k.value()
                    .strip_prefix(prefix)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("scoped feed key {:?}", k.value())))
            }
            None => Ok(0),
        }
    }

    /// A case document's heads as sorted hex: equal on two nodes exactly when they hold the
    /// same changes.
    pub fn heads_hex(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let heads = yiciban_sync::store::ReplicaStore::doc_heads(self, id)?.unwrap_or_default();
        let mut hex: Vec<String> = heads.iter().map(hex::encode).collect();
        hex.sort();
        Ok(hex)
    }

    /// Documents in `scope`'s feed after `after` (at most `cap`), and their stored size: exact
    /// up to [`WAITING_SIZED`] documents, beyond that scaled from the first ones. The health
    /// page asks for this on every refresh; measuring all 10,000 documents of a big catch-up
    /// each time took a core away from the catch-up itself (perf, sync-new at 10,000).
    pub fn waiting(&self, scope: &Scope, after: u64, cap: usize) -> Result<(u64, u64), StoreError> {
        let entries = self.scope_feed_since(scope, after, cap)?;
        let sized = entries.len().min(WAITING_SIZED);
        let mut bytes = 0u64;
        let txn = self.db.begin_read()?;
        for e in &entries[..sized] {
            // The length only: no copy of the document.
            bytes += Self::with_doc(&txn, &e.doc_id, <[u8]>::len)?.unwrap_or(0) as u64;
        }
        if sized > 0 && entries.len() > sized {
            bytes = bytes * entries.len() as u64 / sized as u64;
        }
        Ok((entries.len() as u64, bytes))
    }

    /// Whether a peer with `scope` may receive the blob.
    pub fn blob_in_scope(&self, scope: &Scope, hash: &[u8; 32]) -> Result<bool, StoreError> {
        let Some(prefix) = scope.key_prefix() else {
            return Ok(true);
        };
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BLOB_SCOPE)?;
        Ok(table
            .get(format!("{prefix}{}", hex::encode(hash)).as_str())?
            .is_some())
    }

    /// Stores a new enrolment token, issued by `by` (a console user, or [`CONSOLE_USER`]).
    pub async fn put_token(
        &self,
        id: &str,
        record: &crate::enrol::TokenRecord,
        by: &str,
    ) -> Result<(), StoreError> {
        let audit = self.record(
            by,
            "token.created",
            None,
            &format!(
                "token {id} for {} ({} {})",
                record.node_id, record.role, record.division
            ),
        );
        let record = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.write(
            WriteOp::PutToken {
                id: id.to_string(),
                record,
            },
            Some(audit),
        )
        .await
        .map(|_| ())
    }

    /// An enrolment token, used or not.
    pub fn token(&self, id: &str) -> Result<Option<crate::enrol::TokenRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENROL_TOKENS)?;
        match table.get(id)? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("token {id}: {e}"))),
            None => Ok(None),
        }
    }

    /// Every enrolment token held (the county's list of nodes, used or not).
    pub fn tokens(&self) -> Result<Vec<crate::enrol::TokenRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENROL_TOKENS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push(
                serde_json::from_slice(v.value())
                    .map_err(|e| StoreError::Corrupt(format!("token {}: {e}", k.value())))?,
            );
        }
        Ok(out)
    }

    /// Marks a token used; refused if it was used before or has expired.
    pub async fn use_token(&self, id: &str, now_ms: u64) -> Result<(), StoreError> {
        let node = self.token(id)?.map(|t| t.node_id).unwrap_or_default();
        let audit = self.record(
            &format!("peer:{node}"),
            "node.enrolled",
            None,
            &format!("token {id}"),
        );
        self.write(
            WriteOp::UseToken {
                id: id.to_string(),
                now_ms,
            },
            Some(audit),
        )
        .await
        .map(|_| ())
    }

    /// Logs a full view of a case's personal data by `user` (no state change; an entry alone).
    pub async fn audit_view(
        &self,
        user: &str,
        case_id: &str,
        what: &str,
    ) -> Result<(), StoreError> {
        let audit = self.record(user, "personal_data.viewed", Some(case_id), what);
        self.write(WriteOp::Audit, Some(audit)).await.map(|_| ())
    }

    /// Writes an audit entry alone, for an action whose effect lives outside the store (a
    /// node revoked from the console: `revoked.tsv` and `crl.der` in the TLS folder).
    pub async fn audit_note(
        &self,
        user: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let audit = self.record(user, action, None, detail);
        self.write(WriteOp::Audit, Some(audit)).await.map(|_| ())
    }

    /// Walks the audit chain and reports the first problem, or the count and head hash.
    pub fn verify_audit(&self) -> Result<Result<ChainReport, ChainProblem>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let head = read_audit_head(&txn.open_table(META)?)?;
        let iter = table.iter()?.map(|entry| {
            let (k, v) = entry?;
            Ok::<_, StoreError>((k.value(), v.value().to_vec()))
        });
        crate::audit::verify_chain(iter, head)
    }

    /// The last `n` audit entries, oldest first; an entry that does not decode is an error.
    pub fn audit_tail(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for entry in table.iter()?.rev().take(n) {
            let (k, v) = entry?;
            let e = AuditEntry::decode(v.value())
                .map_err(|e| StoreError::Corrupt(format!("audit entry {}: {e}", k.value())))?;
            out.push(e);
        }
        out.reverse();
        Ok(out)
    }

    pub fn file_size(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

fn load_summary(
    table: &redb::ReadOnlyTable<&str, &[u8]>,
    id: &str,
) -> Result<Option<CaseSummary>, StoreError> {
    match table.get(id)? {
        Some(v) => serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("summary of {id}: {e}"))),
        None => Ok(None),
    }
}

/// Keys of `table` that start with `prefix`, in order.
fn prefix_range<V: redb::Value + 'static>(
    table: &redb::ReadOnlyTable<&str, V>,
    prefix: &str,
) -> Result<Vec<String>, StoreError> {
    let mut keys = Vec::new();
    for entry in table.range(prefix..)? {
        let (k, _) = entry?;
        let key = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        keys.push(key.to_string());
    }
    Ok(keys)
}

/// Magic bytes of the image formats a camera or phone produces.
fn is_image(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
        || bytes.starts_with(b"\x89PNG\r\n\x1a\n")
        || bytes.starts_with(b"GIF87a")
        || bytes.starts_with(b"GIF89a")
        || (bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP")
}

impl yiciban_sync::store::ReplicaStore for Store {
    type Error = StoreError;

    fn feed_since(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<Vec<yiciban_sync::store::FeedEntry>, StoreError> {
        let txn = self.db.begin_read()?;
        let feed = txn.open_table(FEED)?;
        let stale = StaleEntries::open(&txn)?;
        let mut out = Vec::new();
        for entry in feed.range(since.saturating_add(1)..)? {
            if out.len() >= limit {
                break;
            }
            let (seq, id) = entry?;
            if stale.lists(seq.value(), "")? {
                continue;
            }
            out.push(yiciban_sync::store::FeedEntry {
                seq: seq.value(),
                doc_id: id.value().to_string(),
            });
        }
        Ok(out)
    }

    fn feed_head(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let feed = txn.open_table(FEED)?;
        Ok(feed.last()?.map_or(0, |(k, _)| k.value()))
    }

    fn doc_heads(&self, doc_id: &str) -> Result<Option<Vec<[u8; 32]>>, StoreError> {
        self.heads(doc_id)
    }

    fn changes_after(&self, doc_id: &str, have: &[[u8; 32]]) -> Result<Vec<Vec<u8>>, StoreError> {
        if let Some(tip) = self.tip_after(doc_id, have)? {
            return Ok(vec![tip]);
        }
        let Some(bytes) = self.doc_bytes(doc_id)? else {
            return Ok(Vec::new());
        };
        if have.is_empty() {
            // A peer that holds nothing of it gets the saved, compacted document as it is
            // stored (about half the bytes of its changes, and nothing to load here).
            return Ok(vec![bytes]);
        }
        let mut doc = AutoCommit::load(&bytes).map_err(DocError::from)?;
        let have: Vec<automerge::ChangeHash> =
            have.iter().map(|h| automerge::ChangeHash(*h)).collect();
        Ok(doc
            .get_changes(&have)
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect())
    }

    // An Automerge change lists the changes it depends on: a tip made on heads all among
    // them is offered without its heads and base.
    fn change_id(&self, change: &[u8]) -> Option<([u8; 32], Vec<[u8; 32]>)> {
        tip::change_id_or_parse(change)
    }

    // The tip of a local event, while it is the document's one head: sent with the offer.
    fn tip(
        &self,
        doc_id: &str,
        heads: &[[u8; 32]],
    ) -> Result<Option<(Vec<[u8; 32]>, Vec<u8>)>, StoreError> {
        // Checked against the heads offered with it, which the pusher has just read.
        let txn = self.db.begin_read()?;
        Ok(Self::held_tip(&txn, doc_id)?.and_then(|tip| tip.on(heads)))
    }

    // One read transaction for a whole batch instead of two a document. (The village's
    // offer of 100 edited cases took 1.2-1.4 ms before and after: the transactions were not
    // its cost.)
    fn offer_rows(
        &self,
        doc_ids: &[&str],
        with_tips: bool,
    ) -> Result<Vec<yiciban_sync::store::OfferRow>, StoreError> {
        use yiciban_sync::store::OfferRow;
        let txn = self.db.begin_read()?;
        let pos_table = txn.open_table(DOC_POS)?;
        let tips = if with_tips {
            Some(txn.open_table(DOC_TIPS)?)
        } else {
            None
        };
        let mut rows = Vec::with_capacity(doc_ids.len());
        for &doc_id in doc_ids {
            let heads = match Self::known_heads(&pos_table, doc_id)? {
                Some(heads) => Some(heads),
                // Not known, or a damaged row: as `doc_heads` answers it (the document loaded).
                None => self.heads(doc_id)?,
            };
            let tip = match (&heads, &tips) {
                (Some(heads), Some(tips)) => match tips.get(doc_id)? {
                    Some(row) => Self::parse_tip(doc_id, row.value()).and_then(|t| t.on(heads)),
                    None => None,
                },
                _ => None,
            };
            rows.push(OfferRow { heads, tip });
        }
        Ok(rows)
    }

    // A document that moved past `heads` no longer lists them, so look each change up.
    fn has_heads(&self, doc_id: &str, heads: &[[u8; 32]]) -> Result<bool, StoreError> {
        // Most often the heads asked about are the current ones: no load needed.
        if self.heads_cover(doc_id, heads)? {
            return Ok(true);
        }
        let Some(bytes) = self.doc_bytes(doc_id)? else {
            return Ok(heads.is_empty());
        };
        let mut doc = AutoCommit::load(&bytes).map_err(DocError::from)?;
        Ok(heads
            .iter()
            .all(|h| doc.get_change_by_hash(&automerge::ChangeHash(*h)).is_some()))
    }

    // The usual case, heads that are the current ones, for all of them in one read
    // transaction; the others as `has_heads` answers them (the document loaded).
    fn has_heads_many(&self, asks: &[(&str, &[[u8; 32]])]) -> Result<Vec<bool>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DOC_POS)?;
        asks.iter()
            .map(
                |&(doc_id, heads)| match Self::known_heads(&table, doc_id)? {
                    Some(current) if heads.iter().all(|h| current.contains(h)) => Ok(true),
                    _ => self.has_heads(doc_id, heads),
                },
            )
            .collect()
    }

    // The current heads only: an offered head that is new (the usual case) is wanted
    // without loading the document to look it up.
    fn heads_cover(&self, doc_id: &str, heads: &[[u8; 32]]) -> Result<bool, StoreError> {
        Ok(match self.heads(doc_id)? {
            None => heads.is_empty(),
            Some(current) => heads.iter().all(|h| current.contains(h)),
        })
    }

    fn blob_len(&self, hash: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        Ok(self.blob(&hex::encode(hash))?.map(|b| b.len() as u64))
    }

    // Blobs are bounded by `blob_max_bytes`, so reading the whole one per chunk is acceptable.
    fn blob_chunk(
        &self,
        hash: &[u8; 32],
        offset: u64,
        max: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.blob(&hex::encode(hash))?.and_then(|b| {
            let start = usize::try_from(offset).ok()?;
            let end = start.saturating_add(max).min(b.len());
            b.get(start..end).map(<[u8]>::to_vec)
        }))
    }
}

/// How many of the newest feed entries [`Store::warm_feed_tail`] reads.
pub const WARM_TAIL_ENTRIES: usize = 1024;

impl Store {
    /// Reads the rows the first offer to a peer most likely reads (the newest
    /// [`WARM_TAIL_ENTRIES`] of the feed, their heads and tips), so they are in the store's
    /// cache when the peer's hello comes: a village that restarts offers what changed while
    /// it was away, the tail of its feed. Returns how many entries it read.
    pub fn warm_feed_tail(&self) -> Result<usize, StoreError> {
        use yiciban_sync::store::ReplicaStore;
        let head = self.feed_head()?;
        let feed = self.feed_since(
            head.saturating_sub(WARM_TAIL_ENTRIES as u64),
            WARM_TAIL_ENTRIES,
        )?;
        let ids: Vec<&str> = feed.iter().map(|e| e.doc_id.as_str()).collect();
        Ok(self.offer_rows(&ids, true)?.len())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
impl Store {
    /// Rewrites the summary row of `id` as JSON, as damage or an older build would leave it.
    pub(crate) fn rewrite_summary_row(&self, id: &str, f: impl FnOnce(&mut serde_json::Value)) {
        let txn = self.db.begin_write().unwrap();
        {
            let mut table = txn.open_table(CASE_SUMMARIES).unwrap();
            let mut row: serde_json::Value =
                serde_json::from_slice(table.get(id).unwrap().unwrap().value()).unwrap();
            f(&mut row);
            let bytes = serde_json::to_vec(&row).unwrap();
            table.insert(id, bytes.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
}

/// A document's tip as [`Store::held_tip`] read it.
/// Hashes laid end to end, 32 bytes each (a `doc_heads-1` row of schemas 13–16, the heads of
/// a `doc_pos-1` row or of a tip), `None` if the length is not a whole number of hashes.
fn heads_row(bytes: &[u8]) -> Option<Vec<[u8; 32]>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect(),
    )
}

struct HeldTip {
    /// The heads before the change, sorted.
    base: Vec<[u8; 32]>,
    change: Vec<u8>,
    /// The change's hash, computed from its bytes.
    hash: [u8; 32],
}

impl HeldTip {
    /// The tip as an offer carries it (the heads before, the change), if it made `heads`.
    fn on(self, heads: &[[u8; 32]]) -> Option<(Vec<[u8; 32]>, Vec<u8>)> {
        (heads == [self.hash]).then_some((self.base, self.change))
    }
}

/// `feed_stale-1` as a reader sees it: entries listed there are left behind by a later
/// write of their document and are skipped. Nothing is looked up while the list is empty.
struct StaleEntries(Option<redb::ReadOnlyTable<(u64, &'static str), ()>>);

impl StaleEntries {
    fn open(txn: &redb::ReadTransaction) -> Result<Self, StoreError> {
        let table = txn.open_table(FEED_STALE)?;
        Ok(Self((!table.is_empty()?).then_some(table)))
    }

    /// Whether the entry at `seq` of the feed under `prefix` (empty: `feed-1`) is stale.
    fn lists(&self, seq: u64, prefix: &str) -> Result<bool, StoreError> {
        match &self.0 {
            Some(table) => Ok(table.get((seq, prefix))?.is_some()),
            None => Ok(false),
        }
    }
}
