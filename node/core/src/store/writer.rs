//! The single writer: owns every write transaction and commits requests in groups.
//!
//! It takes the first waiting request, then whatever else is already queued (up to the group
//! limit), applies them all in one transaction and commits once with `Durability::Immediate`:
//! many submissions, one fsync. If the group fails, each request is retried alone, so one bad
//! request never takes its neighbours down with it.
//!
//! Each request may carry an [`AuditRecord`]: when the request changed something, the writer
//! appends its audit entry (the next sequence number, chained to the last hash) in the same
//! transaction, so the chain is serial and no change is on disk without its entry.

use std::sync::Arc;

use automerge::{ActorId, AutoCommit};
use redb::{Database, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::tables::*;
use crate::audit::{AuditEntry, AuditRecord};
use crate::audit_doc;
use crate::case_doc::{self, Case, Divisions, DocError};
use crate::event::Event;
use crate::hlc::Hlc;
use crate::legal_clock::Clock;
use crate::scope::Scope;
use crate::summary::{CaseSummary, IndexKeys};
use crate::users::User;

#[derive(Debug)]
pub(super) enum WriteOp {
    PutCase {
        id: String,
        /// The document's heads, if the caller could load it (`doc_pos-1`).
        heads: Option<Vec<automerge::ChangeHash>>,
        /// The document's one change, kept as its tip ([`super::SavedDoc::first_change`]).
        first_change: Option<Vec<u8>>,
        doc: Vec<u8>,
        summary: Box<CaseSummary>,
        /// Receipt date and sequence to record.
        receipt: (String, u64),
        blobs: Vec<(String, Vec<u8>)>,
        at: Hlc,
        /// Whose scope the case is in, and the blobs it references.
        division: Divisions,
        blob_refs: Vec<String>,
    },
    AppendEvent {
        case_id: String,
        event: Box<Event>,
        actor: ActorId,
        /// The registry the case is screened with ([`crate::authorship`]): an event that
        /// would not count is refused.
        registry: Arc<crate::registry::Registry>,
    },
    /// Automerge changes of a county-wide document (`crate::county_doc`), from the county
    /// (`from_county`) or published here; refused from anyone else.
    ApplyCountyDoc {
        doc_id: String,
        changes: Vec<Vec<u8>>,
        from_county: bool,
    },
    /// Automerge changes of an audit segment (`crate::audit_doc`) from node `peer`; taken
    /// only `at_county`, only for `peer`'s own trail (never `own`, this node's), and only
    /// when the merged segment extends what was held and chains.
    ApplyAuditDoc {
        doc_id: String,
        changes: Vec<Vec<u8>>,
        peer: String,
        at_county: bool,
        own: String,
        /// The merge worked out off the writer thread (`prepare_audit`); taken only if the
        /// stored segment is still the one it was merged onto.
        prepared: Option<Box<PreparedAudit>>,
    },
    /// Appends this node's report to its health document of the day (global feed only).
    RecordHealth {
        doc_id: String,
        report: Box<crate::health::HealthReport>,
        actor: ActorId,
    },
    /// Drops the health documents of days before `keep_from` (`yyyymmdd`) with their feed
    /// entries: reports are kept for [`crate::health::KEEP_DAYS`] days.
    PruneHealth {
        keep_from: String,
    },
    /// Automerge changes of a health document from node `peer`; taken only at the county
    /// (`at_county`) and only for `peer`'s own documents.
    ApplyHealthDoc {
        doc_id: String,
        changes: Vec<Vec<u8>>,
        peer: String,
        at_county: bool,
    },
    /// At the county: adds or replaces `user` in the directory of `node` (a `role` node of
    /// `division`), in that node's scoped feed only.
    PutDirUser {
        node: String,
        role: crate::catalog::Tier,
        division: String,
        user: Box<User>,
        actor: ActorId,
    },
    /// Automerge changes of a user directory (`crate::user_dir`); taken only `from_county`,
    /// only for `own` (this node's) directory; its users are upserted into `users-1`.
    ApplyUserDir {
        doc_id: String,
        changes: Vec<Vec<u8>>,
        from_county: bool,
        own: String,
    },
    /// Appends this node's (`node`) audit entries after the export cursor, at most `max`, to
    /// its segment documents (written by `actor`), bumps each in the global feed only and
    /// moves the cursor. Never audited itself.
    ExportAudit {
        node: String,
        actor: ActorId,
        max: u64,
    },
    /// Automerge changes of one case from a peer, merged into the local document.
    ApplyChanges {
        doc_id: String,
        changes: Vec<Vec<u8>>,
        /// Every scope the merged case must fall in (the sending peer's, this node's).
        scopes: Vec<Scope>,
        /// The merge worked out by the caller, used if the stored document is unchanged.
        prepared: Option<Box<PreparedCase>>,
        /// What the merge is checked against, for a merge done again here.
        check: Arc<super::admit::MergeCheck>,
        /// The sending peer's node id (empty: merged locally); the county records the
        /// events of its that do not count, naming it.
        peer: String,
    },
    /// Stores a new enrolment token (refused if the id exists).
    PutToken {
        id: String,
        record: Vec<u8>,
    },
    /// Marks a token used; refused unless it exists, is unused and has not expired.
    UseToken {
        id: String,
        now_ms: u64,
    },
    PutBlob {
        hash: String,
        bytes: Vec<u8>,
    },
    /// What a sync link keeps for a peer, either part or both: the cursor this node holds
    /// for the peer's feed (`epoch`, `seq`) and how far the peer acknowledged this node's.
    SaveLink {
        peer: String,
        cursor: Option<(u64, u64)>,
        acked: Option<super::AckedRecord>,
    },
    /// Forgets how far a peer acknowledged this node's feed.
    ForgetAcked {
        peer: String,
    },
    PutUser {
        user: Box<User>,
        replace: bool,
    },
    /// Changes nothing: the request's audit record is the whole write (a full view of
    /// personal data).
    Audit,
    /// A document refused for good (`super::quarantine`), and at the county the refusal
    /// under the node that sent it.
    Quarantine {
        entry: Box<super::quarantine::Quarantined>,
        refusal: Option<Box<super::quarantine::Refusal>>,
    },
    /// Recomputes every key of `case_queue-1` from the summaries with the writer's queue
    /// clock and records its fingerprint; nothing when the index is already fresh or the
    /// writer has no clock. Not audited: it derives, it changes no case.
    RebuildQueue,
    /// Several ops in one transaction, all or none, each with its own audit entry (the
    /// sub-cases of a 一件事 bundle, filed or handed out together).
    All(Vec<(WriteOp, AuditRecord)>),
}

/// What a write produced.
#[derive(Debug)]
pub enum WriteOutcome {
    Done,
    /// The case as written. Shared with the merge that prepared it (`PreparedCase`), so a
    /// sync merge is never cloned.
    Case(Arc<Case>),
    /// A number: audit entries exported ([`WriteOp::ExportAudit`]), or the last entry of a
    /// node's trail a received segment holds ([`WriteOp::ApplyAuditDoc`]).
    Count(u64),
    /// The outcomes of [`WriteOp::All`], in order.
    All(Vec<WriteOutcome>),
}

impl WriteOutcome {
    /// The case of a write that returns one, taken without a copy when nothing else holds it
    /// (a merge's op may still hold it: see [`WriteOutcome::into_shared_case`]).
    pub fn into_case(self) -> Result<Case, StoreError> {
        self.into_shared_case().map(Arc::unwrap_or_clone)
    }

    /// The case of a write that returns one, as shared with the op that wrote it: the
    /// writer may still be dropping the op when the reply arrives.
    pub fn into_shared_case(self) -> Result<Arc<Case>, StoreError> {
        match self {
            WriteOutcome::Case(case) => Ok(case),
            _ => Err(StoreError::Corrupt("writer returned no case".into())),
        }
    }
}

/// What the writer's channel carries: requests to commit together and, for a sync run whose
/// merges are still being worked out, the rest of the run. The writer applies each request of
/// `more` as it arrives, in the same transaction, and commits once the sender is gone: the
/// run's inserts go on beside its merges instead of after them.
#[derive(Debug)]
pub(super) struct Submission {
    pub requests: Vec<WriteRequest>,
    pub more: Option<mpsc::UnboundedReceiver<WriteRequest>>,
}

impl From<Vec<WriteRequest>> for Submission {
    fn from(requests: Vec<WriteRequest>) -> Self {
        Self {
            requests,
            more: None,
        }
    }
}

#[derive(Debug)]
pub(super) struct WriteRequest {
    pub op: WriteOp,
    /// What to log if the op changes something (always, for [`WriteOp::Audit`]).
    pub audit: Option<AuditRecord>,
    pub reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

pub(super) fn spawn(
    db: Arc<Database>,
    rx: mpsc::Receiver<Submission>,
    group_max: usize,
    queue_clock: super::SharedClock,
    feed_moved: Arc<tokio::sync::watch::Sender<()>>,
    registry_gen: Arc<std::sync::atomic::AtomicU64>,
) -> Result<(), StoreError> {
    let (mut feed_head, mut stale) = {
        let txn = redb::ReadableDatabase::begin_read(&*db)?;
        let feed = txn.open_table(FEED)?;
        let stale = txn.open_table(FEED_STALE)?;
        (feed.last()?.map_or(0, |(k, _)| k.value()), stale.len()?)
    };
    // Only to wait for a request with a time limit (the idle sweep).
    let idle = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| StoreError::Refused(format!("cannot start the store writer: {e}")))?;
    std::thread::Builder::new()
        .name("yiciban-store-writer".into())
        .spawn(move || {
            // A message is one request, or the merges of a sync run sent together so that
            // they share one commit, or a run still arriving; a group may pass `group_max` by
            // the last message taken.
            let mut intake = Intake {
                rx,
                idle,
                group_max,
                closed: false,
                next: None,
            };
            loop {
                let next = if let Some(run) = intake.next.take() {
                    Some(run)
                } else if stale == 0 {
                    intake.rx.blocking_recv()
                } else {
                    let rx = &mut intake.rx;
                    match intake
                        .idle
                        .block_on(async { tokio::time::timeout(SWEEP_IDLE, rx.recv()).await })
                    {
                        Ok(next) => next,
                        Err(_) => {
                            stale = sweep_or_keep(&db, stale);
                            continue;
                        }
                    }
                };
                let Some(first) = next else { break };
                let mut group = Group::default();
                group.take(first);
                while group.requests.len() < group_max {
                    match intake.rx.try_recv() {
                        // A second run starts the next group ([`Intake::next`]).
                        Ok(next) if next.more.is_some() && !group.runs.is_empty() => {
                            intake.next = Some(next);
                            break;
                        }
                        Ok(next) => group.take(next),
                        Err(_) => break,
                    }
                }
                let clock = queue_clock
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                GROUP_CLOCK.with(|c| *c.borrow_mut() = clock);
                let before = feed_head;
                stale += commit_group(&db, group, &mut intake, &mut feed_head, &registry_gen);
                // Only a committed feed entry wakes the sync links (`Store::watch_feed`).
                if feed_head != before {
                    feed_moved.send_replace(());
                }
                if stale >= SWEEP_AT {
                    stale = sweep_or_keep(&db, stale);
                }
            }
            tracing::debug!("store writer stopped: every sender is gone");
        })
        .map_err(|e| StoreError::Refused(format!("cannot start the store writer: {e}")))?;
    Ok(())
}

thread_local! {
    /// The queue clock (`crate::queue`) of the group being committed on the writer thread,
    /// read once per group from the store's shared one.
    static GROUP_CLOCK: std::cell::RefCell<Option<Arc<Clock>>> = const { std::cell::RefCell::new(None) };
}

/// The writer's side of its channel, and what it needs to wait on runs still arriving.
struct Intake {
    rx: mpsc::Receiver<Submission>,
    /// Only to wait with a time limit (the idle sweep), or on two channels at once.
    idle: tokio::runtime::Runtime,
    group_max: usize,
    /// Every sender of `rx` is gone.
    closed: bool,
    /// A run that arrived while another was open: it starts the next group, so the first
    /// run's commit never waits for the second's merges.
    next: Option<Submission>,
}

/// The requests of one transaction, and the runs still sending theirs ([`Submission`]).
#[derive(Default)]
struct Group {
    requests: Vec<WriteRequest>,
    runs: std::collections::VecDeque<mpsc::UnboundedReceiver<WriteRequest>>,
}

impl Group {
    fn take(&mut self, s: Submission) {
        self.requests.extend(s.requests);
        self.runs.extend(s.more);
    }

    /// The next request of the oldest run still arriving, or, while the group has room,
    /// whatever else is sent meanwhile (a request waiting for a run's commit would only wait
    /// longer, and pay for an fsync of its own). `false` once no run is left.
    fn wait(&mut self, intake: &mut Intake) -> bool {
        enum Next {
            Run(Option<Box<WriteRequest>>),
            Other(Option<Submission>),
        }
        let Some(run) = self.runs.front_mut() else {
            return false;
        };
        let room =
            !intake.closed && intake.next.is_none() && self.requests.len() < intake.group_max;
        let rx = &mut intake.rx;
        let next = intake.idle.block_on(async {
            tokio::select! {
                biased;
                req = run.recv() => Next::Run(req.map(Box::new)),
                other = rx.recv(), if room => Next::Other(other),
            }
        });
        match next {
            Next::Run(Some(req)) => self.requests.push(*req),
            Next::Run(None) => {
                self.runs.pop_front();
            }
            Next::Other(Some(s)) if s.more.is_some() => intake.next = Some(s),
            Next::Other(Some(s)) => self.take(s),
            Next::Other(None) => intake.closed = true,
        }
        true
    }

    /// Every request of the runs still arriving, waited for: a failed attempt is retried
    /// with all of them.
    fn drain(&mut self) {
        while let Some(mut run) = self.runs.pop_front() {
            while let Some(req) = run.blocking_recv() {
                self.requests.push(req);
            }
        }
    }
}

/// Commits `group`, taking the requests of its runs as they arrive (or, if that fails, each
/// request alone), and returns the rows it added to `feed_stale-1`.
fn commit_group(
    db: &Database,
    mut group: Group,
    intake: &mut Intake,
    feed_head: &mut u64,
    registry_gen: &std::sync::atomic::AtomicU64,
) -> u64 {
    let started = *feed_head;
    let clock = std::time::Instant::now();
    let attempt = apply_group(db, &mut group, intake, feed_head);
    group.drain();
    let group = group.requests;
    let size = group.len();
    match attempt {
        Ok(Applied {
            outcomes,
            writes_us,
            wait_us,
            tail_us,
            commit_us,
            stale_rows,
            registry_moved,
        }) => {
            if registry_moved {
                registry_gen.fetch_add(1, std::sync::atomic::Ordering::Release);
            }
            // `writes_us` the inserts (and, for a run still arriving, `wait_us` of waiting for
            // its merges), the rest of `total_us` the commit (pages out, fsync).
            tracing::debug!(
                size,
                writes_us,
                wait_us,
                tail_us,
                commit_us,
                total_us = clock.elapsed().as_micros() as u64,
                "group committed"
            );
            // Every reply goes before any op is dropped: freeing a merge's op (its documents'
            // bytes, two summaries) took ~4 µs, and dropped between the replies a 100-case
            // run waited 0.4 ms for its last one. A merge's case is shared with its outcome,
            // so the receiver holds it without a copy either way.
            let mut spent = Vec::with_capacity(size);
            for (req, outcome) in group.into_iter().zip(outcomes) {
                let WriteRequest { op, reply, .. } = req;
                let _ = reply.send(Ok(outcome));
                spent.push(op);
            }
            drop(spent);
            stale_rows
        }
        Err(_) if group.len() > 1 => {
            // Retry one by one so only the failing request gets the error.
            *feed_head = started;
            group
                .into_iter()
                .map(|req| {
                    let alone = Group {
                        requests: vec![req],
                        ..Group::default()
                    };
                    commit_group(db, alone, intake, feed_head, registry_gen)
                })
                .sum()
        }
        Err(e) => {
            *feed_head = started;
            if let Some(req) = group.into_iter().next() {
                let _ = req.reply.send(Err(e));
            }
            0
        }
    }
}

/// A group [`apply_group`] committed.
struct Applied {
    /// One a request, in the order of the group.
    outcomes: Vec<WriteOutcome>,
    /// µs of inserts, and of waiting for the rest of a run still arriving.
    writes_us: u64,
    wait_us: u64,
    /// µs of the inserts after the last wait (what the commit waited for once every merge
    /// was in), and of the commit itself (pages out, fsync).
    tail_us: u64,
    commit_us: u64,
    /// Rows added to `feed_stale-1`.
    stale_rows: u64,
    /// The group changed the registry of nodes.
    registry_moved: bool,
}

/// Applies `group`, and each request of its runs as it arrives, in one transaction, and
/// commits it.
fn apply_group(
    db: &Database,
    group: &mut Group,
    intake: &mut Intake,
    feed_head: &mut u64,
) -> Result<Applied, StoreError> {
    let clock = std::time::Instant::now();
    let txn = begin(db)?;
    let mut outcomes = Vec::with_capacity(group.requests.len());
    let mut wait = std::time::Duration::ZERO;
    let mut last_in;
    let (stale_rows, registry_moved) = {
        // Tables are opened once per group: opening them per request cost more than the
        // inserts (measured in the ingest benchmark's commit times).
        let mut t = Tables::open(&txn)?;
        loop {
            while let Some(req) = group.requests.get(outcomes.len()) {
                let (outcome, changed) = apply(&mut t, &req.op, feed_head)?;
                if let (true, Some(record)) = (changed, &req.audit) {
                    t.append_audit(record)?;
                }
                outcomes.push(outcome);
            }
            let waiting = std::time::Instant::now();
            let more = group.wait(intake);
            last_in = std::time::Instant::now();
            wait += last_in - waiting;
            if !more {
                break;
            }
        }
        t.flush_stats()?;
        (t.stale_rows, t.registry_moved)
    };
    let writes_us = (clock.elapsed() - wait).as_micros() as u64;
    let committing = std::time::Instant::now();
    let tail_us = (committing - last_in).as_micros() as u64;
    // A run whose every merge failed brought nothing: no commit, no fsync.
    if outcomes.is_empty() {
        txn.abort()?;
    } else {
        txn.commit()?;
    }
    Ok(Applied {
        outcomes,
        writes_us,
        tail_us,
        commit_us: committing.elapsed().as_micros() as u64,
        wait_us: wait.as_micros() as u64,
        stale_rows,
        registry_moved,
    })
}

/// How long the writer waits with nothing to do before it sweeps stale feed entries, so a
/// burst of writes shares one sweep. Longer in unit tests, so a test sees the entries listed
/// before the sweep.
const SWEEP_IDLE: std::time::Duration = if cfg!(test) {
    std::time::Duration::from_secs(2)
} else {
    std::time::Duration::from_millis(200)
};
/// Stale rows past which the writer sweeps after a group even when requests are waiting,
/// so a writer that is never idle keeps its feeds from growing.
const SWEEP_AT: u64 = 20_000;
/// Rows one sweep removes at most: a bound on how long a request can wait behind it.
const SWEEP_MAX: usize = 4_096;

/// [`sweep_stale`], or on failure `stale` as it was (readers skip the entries meanwhile).
fn sweep_or_keep(db: &Database, stale: u64) -> u64 {
    sweep_stale(db).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "stale feed entries not swept");
        stale
    })
}

/// Removes up to [`SWEEP_MAX`] stale feed entries and their rows of `feed_stale-1` in one
/// commit; returns the rows left.
fn sweep_stale(db: &Database) -> Result<u64, StoreError> {
    let clock = std::time::Instant::now();
    let txn = begin(db)?;
    let (swept, left) = {
        let mut stale = txn.open_table(FEED_STALE)?;
        let mut feed = txn.open_table(FEED)?;
        let mut log = txn.open_table(CASE_LOG)?;
        let mut scoped = txn.open_table(FEED_SCOPED)?;
        let mut tips = txn.open_table(DOC_TIPS)?;
        let doc_pos = txn.open_table(DOC_POS)?;
        let rows = stale
            .iter()?
            .take(SWEEP_MAX)
            .map(|row| row.map(|(k, _)| (k.value().0, k.value().1.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        for (seq, prefix) in &rows {
            // A stale position is never reused: new entries go above every held one.
            if prefix.is_empty() {
                let moved = feed.remove(*seq)?.map(|id| id.value().to_string());
                // The bytes a case had at that position (none for other documents).
                log.remove(*seq)?;
                // The write that moved the document left its tip behind (`bump_feed_under`).
                if let Some(id) = moved
                    && tip_left_behind(&tips, &doc_pos, &id)?
                {
                    tips.remove(id.as_str())?;
                }
            } else {
                scoped.remove(format!("{prefix}{seq:020}").as_str())?;
            }
            stale.remove((*seq, prefix.as_str()))?;
        }
        (rows.len(), stale.len()?)
    };
    txn.commit()?;
    tracing::debug!(
        swept,
        left,
        total_us = clock.elapsed().as_micros() as u64,
        "stale feed entries swept"
    );
    Ok(left)
}

/// Whether document `id`'s row in `doc_tips-1` is one no reader uses any more: its change is
/// not the document's one head in `doc_pos-1` (heads only move on, so it never is again),
/// the document is gone, or the row is damaged. Kept where the row does not know the heads.
fn tip_left_behind(
    tips: &impl ReadableTable<&'static str, &'static [u8]>,
    doc_pos: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<bool, StoreError> {
    let Some(row) = tips.get(id)? else {
        return Ok(false);
    };
    let Some(tip) = super::Store::parse_tip(id, row.value()) else {
        return Ok(true);
    };
    let Some(pos) = doc_pos.get(id)? else {
        return Ok(true);
    };
    // A damaged row, or heads it does not know: kept (readers load the document then).
    Ok(super::doc_pos::decode(pos.value())
        .and_then(|p| p.heads)
        .is_some_and(|heads| heads != [tip.hash]))
}

fn begin(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    Ok(txn)
}

/// Every table a write touches, opened once for a group.
struct Tables<'txn> {
    case_log: Table<'txn, u64, &'static [u8]>,
    summaries: Table<'txn, &'static str, &'static [u8]>,
    by_status: Table<'txn, &'static str, ()>,
    status_counts: Table<'txn, &'static str, u64>,
    by_date: Table<'txn, &'static str, ()>,
    by_receipt: Table<'txn, &'static str, &'static str>,
    by_name: Table<'txn, &'static str, ()>,
    by_tail: Table<'txn, &'static str, ()>,
    receipt_seq: Table<'txn, &'static str, u64>,
    blobs: Table<'txn, &'static str, &'static [u8]>,
    users: Table<'txn, &'static str, &'static [u8]>,
    feed: Table<'txn, u64, &'static str>,
    doc_pos: Table<'txn, &'static str, &'static [u8]>,
    feed_stale: Table<'txn, (u64, &'static str), ()>,
    doc_tips: Table<'txn, &'static str, &'static [u8]>,
    feed_scoped: Table<'txn, &'static str, &'static str>,
    blob_scope: Table<'txn, &'static str, ()>,
    tokens: Table<'txn, &'static str, &'static [u8]>,
    meta: Table<'txn, &'static str, &'static [u8]>,
    cursors: Table<'txn, &'static str, &'static [u8]>,
    acked: Table<'txn, &'static str, &'static [u8]>,
    audit: Table<'txn, u64, &'static [u8]>,
    county_docs: Table<'txn, &'static str, &'static [u8]>,
    audit_docs: Table<'txn, &'static str, &'static [u8]>,
    audit_tails: Table<'txn, &'static str, &'static [u8]>,
    health_docs: Table<'txn, &'static str, &'static [u8]>,
    health_recent: Table<'txn, &'static str, &'static [u8]>,
    user_docs: Table<'txn, &'static str, &'static [u8]>,
    queue: Table<'txn, &'static str, ()>,
    queue_pos: Table<'txn, &'static str, &'static str>,
    watch: Table<'txn, &'static str, &'static str>,
    quarantine: Table<'txn, &'static str, &'static [u8]>,
    refusals: Table<'txn, &'static str, &'static [u8]>,
    /// This transaction changed the registry of nodes (`crate::registry`).
    registry_moved: bool,
    follow_ups: Table<'txn, &'static str, ()>,
    stats: Table<'txn, &'static str, &'static [u8]>,
    /// Moves of the statistics' counters in this transaction, written once before it commits
    /// ([`Tables::flush_stats`]): a run of merges touches the same few rows over and over.
    stats_delta: std::collections::BTreeMap<String, [i64; 5]>,
    /// The clock legal-time projections are computed with in this group (none outside a
    /// node: they are then marked for a rebuild, not kept).
    queue_clock: Option<Arc<Clock>>,
    /// Whether `meta-1.queue_clock` was checked against `queue_clock` in this group.
    queue_checked: bool,
    /// Newest stamp already written in this group.
    hlc: Option<Hlc>,
    /// The audit chain's head (`seq`, hash) as of this transaction, once read.
    audit_head: Option<(u64, [u8; 32])>,
    /// Rows this transaction added to `feed_stale-1`.
    stale_rows: u64,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            case_log: txn.open_table(CASE_LOG)?,
            summaries: txn.open_table(CASE_SUMMARIES)?,
            by_status: txn.open_table(CASE_BY_STATUS)?,
            status_counts: txn.open_table(CASE_STATUS_COUNTS)?,
            by_date: txn.open_table(CASE_BY_DATE)?,
            by_receipt: txn.open_table(CASE_BY_RECEIPT)?,
            by_name: txn.open_table(CASE_BY_NAME)?,
            by_tail: txn.open_table(CASE_BY_ID_TAIL)?,
            receipt_seq: txn.open_table(RECEIPT_SEQ)?,
            blobs: txn.open_table(BLOBS)?,
            users: txn.open_table(USERS)?,
            feed: txn.open_table(FEED)?,
            doc_pos: txn.open_table(DOC_POS)?,
            feed_stale: txn.open_table(FEED_STALE)?,
            doc_tips: txn.open_table(DOC_TIPS)?,
            feed_scoped: txn.open_table(FEED_SCOPED)?,
            blob_scope: txn.open_table(BLOB_SCOPE)?,
            tokens: txn.open_table(ENROL_TOKENS)?,
            meta: txn.open_table(META)?,
            cursors: txn.open_table(SYNC_CURSORS)?,
            acked: txn.open_table(SYNC_ACKED)?,
            audit: txn.open_table(AUDIT)?,
            county_docs: txn.open_table(COUNTY_DOCS)?,
            audit_docs: txn.open_table(AUDIT_DOCS)?,
            audit_tails: txn.open_table(AUDIT_TAILS)?,
            health_docs: txn.open_table(HEALTH_DOCS)?,
            health_recent: txn.open_table(HEALTH_RECENT)?,
            user_docs: txn.open_table(USER_DOCS)?,
            queue: txn.open_table(CASE_QUEUE)?,
            queue_pos: txn.open_table(CASE_QUEUE_POS)?,
            watch: txn.open_table(CASE_WATCH)?,
            quarantine: txn.open_table(QUARANTINE)?,
            refusals: txn.open_table(REFUSALS)?,
            registry_moved: false,
            follow_ups: txn.open_table(CASE_FOLLOW_UPS)?,
            stats: txn.open_table(STATS)?,
            stats_delta: std::collections::BTreeMap::new(),
            queue_clock: GROUP_CLOCK.with(|c| c.borrow().clone()),
            queue_checked: false,
            hlc: None,
            audit_head: None,
            stale_rows: 0,
        })
    }

    /// Appends the next audit entry for `record` and moves the recorded head.
    fn append_audit(&mut self, record: &AuditRecord) -> Result<(), StoreError> {
        let (seq, prev) = match self.audit_head {
            Some(head) => head,
            None => super::read_audit_head(&self.meta)?.unwrap_or((0, [0; 32])),
        };
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let entry = AuditEntry::seal(seq + 1, at_ms, record, prev);
        self.audit.insert(entry.seq, entry.encode().as_slice())?;
        let mut head = entry.seq.to_be_bytes().to_vec();
        head.extend_from_slice(&entry.hash);
        self.meta.insert(super::AUDIT_HEAD_KEY, head.as_slice())?;
        self.audit_head = Some((entry.seq, entry.hash));
        Ok(())
    }

    /// A case's summary row, `None` if missing or damaged ([`HeldCase::summary_of`]).
    fn summary_row(&self, id: &str) -> Result<Option<CaseSummary>, StoreError> {
        Ok(HeldCase::summary_of(
            self.summaries.get(id)?.as_ref().map(|v| v.value()),
        ))
    }

    /// Replaces a case's projection rows: the old keys out, the new ones in.
    fn put_projections(
        &mut self,
        old: Option<&OldSummary>,
        new: &CaseSummary,
    ) -> Result<(), StoreError> {
        // A summary row that would be written as it is stays (most comments change none of
        // it): a random leaf page fewer in the commit.
        let unchanged = old.is_some_and(|o| o.stored && o.summary == *new);
        // What the projections counted the case as: its stored row (one read from the
        // document was never counted).
        let old_summary = old.filter(|o| o.stored).map(|o| &o.summary);
        let old = old.map(|o| &o.summary);
        // Only the keys that moved: most events (a comment, a notice mark, a step of the
        // route) change none of them, and each row left alone is a removal and an insertion
        // fewer in the B-trees.
        let k = IndexKeys::of(new);
        let old = old.map(IndexKeys::of);
        let was = |key: fn(&IndexKeys) -> &str| old.as_ref().map(key);
        self.move_status_row(was(|k| &k.by_status), &k.by_status)?;
        move_row(&mut self.by_date, was(|k| &k.by_date), &k.by_date, ())?;
        move_row(
            &mut self.by_receipt,
            was(|k| &k.receipt),
            &k.receipt,
            new.id.as_str(),
        )?;
        move_row(&mut self.by_name, was(|k| &k.by_name), &k.by_name, ())?;
        move_row(&mut self.by_tail, was(|k| &k.by_id_tail), &k.by_id_tail, ())?;
        if let Some(o) = &old {
            for key in o
                .follow_ups
                .iter()
                .filter(|key| !k.follow_ups.contains(key))
            {
                self.follow_ups.remove(key.as_str())?;
            }
        }
        for key in &k.follow_ups {
            self.follow_ups.insert(key.as_str(), ())?;
        }
        if !unchanged {
            let json = serde_json::to_vec(new).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            self.summaries.insert(new.id.as_str(), json.as_slice())?;
        }
        self.put_queue(new)?;
        self.put_watch(old_summary, new)?;
        if !unchanged {
            self.count_stats(old_summary, new);
        }
        Ok(())
    }

    /// Records what a node sent that was refused or kept as not counting, keeping its
    /// newest [`super::quarantine::REFUSALS_PER_PEER`].
    fn record_refusal(&mut self, r: &super::quarantine::Refusal) -> Result<(), StoreError> {
        let key = super::quarantine::refusal_key(r);
        self.refusals
            .insert(key.as_str(), super::quarantine::encode(r)?.as_slice())?;
        let prefix = format!("{}{SEP}", r.peer);
        let end = format!("{}{}", r.peer, char::from(SEP as u8 + 1));
        let n = self.refusals.range(prefix.as_str()..end.as_str())?.count();
        if n > super::quarantine::REFUSALS_PER_PEER {
            let oldest: Vec<String> = self
                .refusals
                .range(prefix.as_str()..end.as_str())?
                .take(n - super::quarantine::REFUSALS_PER_PEER)
                .map(|e| e.map(|(k, _)| k.value().to_string()))
                .collect::<Result<_, _>>()?;
            for k in oldest {
                self.refusals.remove(k.as_str())?;
            }
        }
        Ok(())
    }

    /// Moves the case's row in `case_watch-1` (`crate::supervision`) to the one the group's
    /// clock gives it. Without a clock nothing moves: [`Tables::put_queue`] has marked the
    /// legal-time projections for a rebuild.
    fn put_watch(
        &mut self,
        old: Option<&CaseSummary>,
        new: &CaseSummary,
    ) -> Result<(), StoreError> {
        let Some(clock) = self.queue_clock.clone() else {
            return Ok(());
        };
        let old = old.and_then(|o| crate::supervision::key(&clock, o));
        let new = crate::supervision::key(&clock, new);
        if old == new {
            return Ok(());
        }
        if let Some((key, _)) = old {
            self.watch.remove(key.as_str())?;
        }
        if let Some((key, value)) = new {
            self.watch.insert(key.as_str(), value.as_str())?;
        }
        Ok(())
    }

    /// Moves the statistics' counters from the case's old rows to its new ones
    /// (`crate::stats::contributions`), in [`Tables::stats_delta`] until the commit.
    fn count_stats(&mut self, old: Option<&CaseSummary>, new: &CaseSummary) {
        let Some(clock) = self.queue_clock.clone() else {
            return;
        };
        let mut add = |summary: &CaseSummary, sign: i64| {
            for (key, counters) in crate::stats::contributions(summary, &clock) {
                let row = self.stats_delta.entry(key).or_default();
                for (d, c) in row.iter_mut().zip(counters) {
                    *d += sign * i64::try_from(c).unwrap_or(i64::MAX);
                }
            }
        };
        if let Some(old) = old {
            add(old, -1);
        }
        add(new, 1);
    }

    /// Writes [`Tables::stats_delta`] into `stats-1`: once a transaction, before its commit.
    fn flush_stats(&mut self) -> Result<(), StoreError> {
        for (key, delta) in std::mem::take(&mut self.stats_delta) {
            if delta == [0; 5] {
                continue;
            }
            let held = self
                .stats
                .get(key.as_str())?
                .map_or([0; 5], |v| decode_counters(v.value()));
            let mut next = [0u64; 5];
            for ((n, h), d) in next.iter_mut().zip(held).zip(delta) {
                *n = h.saturating_add_signed(d);
            }
            if next[0] == 0 {
                self.stats.remove(key.as_str())?;
            } else {
                self.stats
                    .insert(key.as_str(), encode_counters(&next).as_slice())?;
            }
        }
        Ok(())
    }

    /// [`move_row`] for `case_by_status-1`, with `case_status_counts-1` kept to its rows: a
    /// count moves only with a row that was really removed or added.
    fn move_status_row(&mut self, old: Option<&str>, new: &str) -> Result<(), StoreError> {
        if old == Some(new) {
            return Ok(());
        }
        if let Some(old) = old
            && self.by_status.remove(old)?.is_some()
        {
            self.count_status(status_of_key(old), -1)?;
        }
        if self.by_status.insert(new, ())?.is_none() {
            self.count_status(status_of_key(new), 1)?;
        }
        Ok(())
    }

    fn count_status(&mut self, status: &str, by: i64) -> Result<(), StoreError> {
        let held = self.status_counts.get(status)?.map_or(0, |v| v.value());
        let n = held.saturating_add_signed(by);
        if n == 0 {
            self.status_counts.remove(status)?;
        } else {
            self.status_counts.insert(status, n)?;
        }
        Ok(())
    }

    /// Moves the case's row in `case_queue-1` (`crate::queue`) to the key the group's clock
    /// gives it. Written with another clock than the one the index records, or with none,
    /// the index is marked for a rebuild.
    fn put_queue(&mut self, s: &CaseSummary) -> Result<(), StoreError> {
        if !self.queue_checked {
            self.queue_checked = true;
            let fresh = match (&self.queue_clock, self.meta.get(super::QUEUE_CLOCK_KEY)?) {
                (Some(clock), Some(held)) => held.value() == clock.fingerprint().as_bytes(),
                _ => false,
            };
            if !fresh {
                self.meta.remove(super::QUEUE_CLOCK_KEY)?;
            }
        }
        let key = self
            .queue_clock
            .as_ref()
            .and_then(|c| crate::queue::key(c, s));
        let old = self
            .queue_pos
            .get(s.id.as_str())?
            .map(|v| v.value().to_string());
        if old == key {
            return Ok(());
        }
        if let Some(old) = old {
            self.queue.remove(old.as_str())?;
        }
        match key {
            Some(key) => {
                self.queue.insert(key.as_str(), ())?;
                self.queue_pos.insert(s.id.as_str(), key.as_str())?;
            }
            None => {
                self.queue_pos.remove(s.id.as_str())?;
            }
        }
        Ok(())
    }

    /// [`WriteOp::RebuildQueue`]: every legal-time projection again, from the summaries —
    /// the queue's keys, supervision's, the statistics' counters, and the open follow-ups
    /// with them; returns how many cases the queue holds.
    fn rebuild_queue(&mut self) -> Result<u64, StoreError> {
        let Some(clock) = self.queue_clock.clone() else {
            return Ok(0);
        };
        let held = self
            .meta
            .get(super::QUEUE_CLOCK_KEY)?
            .map(|v| v.value().to_vec());
        if held.as_deref() == Some(clock.fingerprint().as_bytes()) {
            return Ok(redb::ReadableTableMetadata::len(&self.queue)?);
        }
        self.queue.retain(|_, _| false)?;
        self.queue_pos.retain(|_, _| false)?;
        self.watch.retain(|_, _| false)?;
        self.follow_ups.retain(|_, _| false)?;
        self.stats.retain(|_, _| false)?;
        // Counted again from the rows below, which hold this transaction's writes too.
        self.stats_delta.clear();
        let mut queue = Vec::new();
        let mut watch = Vec::new();
        let mut follow_ups = Vec::new();
        let mut stats: std::collections::BTreeMap<String, [u64; 5]> = Default::default();
        for entry in self.summaries.iter()? {
            let (k, v) = entry?;
            let s: CaseSummary = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Corrupt(format!("summary of {}: {e}", k.value())))?;
            if let Some(key) = crate::queue::key(&clock, &s) {
                queue.push((s.id.clone(), key));
            }
            watch.extend(crate::supervision::key(&clock, &s));
            follow_ups.extend(IndexKeys::of(&s).follow_ups);
            for (key, counters) in crate::stats::contributions(&s, &clock) {
                let row = stats.entry(key).or_default();
                for (a, b) in row.iter_mut().zip(counters) {
                    *a += b;
                }
            }
        }
        for (id, key) in &queue {
            self.queue.insert(key.as_str(), ())?;
            self.queue_pos.insert(id.as_str(), key.as_str())?;
        }
        for (key, value) in &watch {
            self.watch.insert(key.as_str(), value.as_str())?;
        }
        for key in &follow_ups {
            self.follow_ups.insert(key.as_str(), ())?;
        }
        for (key, counters) in &stats {
            self.stats
                .insert(key.as_str(), encode_counters(counters).as_slice())?;
        }
        self.meta
            .insert(super::QUEUE_CLOCK_KEY, clock.fingerprint().as_bytes())?;
        self.queue_checked = true;
        Ok(queue.len() as u64)
    }

    /// Where document `id` stands in the feed (`doc_pos-1`); `None` if it is not held.
    fn doc_seq(&self, id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .doc_pos
            .get(id)?
            .and_then(|row| super::doc_pos::seq_of(row.value())))
    }

    /// The stored case `id` is the one `p` was merged onto: by the heads of its `doc_pos-1`
    /// row (no read of the document), or by its bytes where the row does not know them.
    fn still_holds(&self, id: &str, p: &PreparedCase) -> Result<bool, StoreError> {
        if let (Some(mut held), Some(base)) =
            (super::Store::known_heads(&self.doc_pos, id)?, &p.base_heads)
        {
            let mut base: Vec<[u8; 32]> = base.iter().map(|h| h.0).collect();
            base.sort_unstable();
            held.sort_unstable();
            return Ok(base == held);
        }
        Ok(self.case_doc(id)? == p.base)
    }

    /// Case `id`'s saved document (`case_log-1` at its feed position).
    fn case_doc(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(match self.doc_seq(id)? {
            Some(seq) => self.case_log.get(seq)?.map(|v| v.value().to_vec()),
            None => None,
        })
    }

    /// Stores case `id`'s document `bytes`: moves it up the feed ([`Tables::bump_feed`]) and
    /// appends the bytes at its new position, so a group's documents fill consecutive pages.
    fn put_case_doc(
        &mut self,
        id: &str,
        bytes: &[u8],
        division: &Divisions,
        heads: Option<&[automerge::ChangeHash]>,
        feed_head: &mut u64,
    ) -> Result<(), StoreError> {
        self.bump_feed(id, division, heads, feed_head)?;
        self.case_log.insert(*feed_head, bytes)?;
        Ok(())
    }

    /// Gives the document a new feed position, in the county-wide feed and in its village's
    /// and town's feeds, and drops its old one. A case's divisions never change.
    fn bump_feed(
        &mut self,
        doc_id: &str,
        division: &Divisions,
        heads: Option<&[automerge::ChangeHash]>,
        feed_head: &mut u64,
    ) -> Result<(), StoreError> {
        self.bump_feed_under(doc_id, &Scope::prefixes_of(division), heads, feed_head)
    }

    /// Keeps `change`, the one change of new document `doc_id`, as its tip on no heads: a
    /// peer that holds nothing of the document lacks exactly that change. Readers check it
    /// is the document's one head before they use it.
    fn keep_first_tip(&mut self, doc_id: &str, change: &[u8]) -> Result<(), StoreError> {
        if let Some(row) = super::tip::encode(&[], change) {
            self.doc_tips.insert(doc_id, row.as_slice())?;
        }
        Ok(())
    }

    /// Keeps `change`, a local write made on `heads_before`, as `doc_id`'s tip
    /// (`super::tip`), when it is the document's one head now (`heads`) and was made on
    /// something a peer can hold (a new case's first change: [`Tables::keep_first_tip`]).
    /// Called after the document's feed bump; the row replaces the one of an earlier tip.
    fn keep_tip(
        &mut self,
        doc_id: &str,
        heads_before: &[automerge::ChangeHash],
        heads: &[automerge::ChangeHash],
        change: &automerge::Change,
    ) -> Result<(), StoreError> {
        if !heads_before.is_empty()
            && heads == [change.hash()]
            && let Some(row) = super::tip::encode(heads_before, change.raw_bytes())
        {
            self.doc_tips.insert(doc_id, row.as_slice())?;
        }
        Ok(())
    }

    /// Moves `doc_id` to the head of the feed and of the scoped feeds under `prefixes`, and
    /// records its new position and `heads` in `doc_pos-1` (`None`: not known here, so a
    /// reader loads the document).
    fn bump_feed_under(
        &mut self,
        doc_id: &str,
        prefixes: &[String],
        heads: Option<&[automerge::ChangeHash]>,
        feed_head: &mut u64,
    ) -> Result<(), StoreError> {
        // A tip the document had stays: readers use it only while its change is the one
        // head in `doc_pos-1`, which this write ends, and the sweep removes it with the old
        // feed entry. Removed here, each of a run of 100 merges onto cases the county had
        // marked (`notice_sent`) dirtied a random leaf of `doc_tips-1`: the run's commit wrote
        // 384 pages, 239 without. A write that keeps a tip overwrites the row after this
        // (`AppendEvent`).
        // The old entries stay until the writer is idle (`sweep_stale`); listed, readers skip
        // them. The list is small, so its rows share a page or two.
        let old = self
            .doc_pos
            .get(doc_id)?
            .map(|v| super::doc_pos::seq_of(v.value()));
        match old {
            Some(Some(old)) => {
                self.feed_stale.insert((old, ""), ())?;
                for p in prefixes {
                    self.feed_stale.insert((old, p.as_str()), ())?;
                }
                self.stale_rows += 1 + prefixes.len() as u64;
            }
            Some(None) => {
                tracing::warn!(
                    doc = doc_id,
                    "doc_pos row too short; its old feed entry stays"
                );
            }
            None => {}
        }
        *feed_head += 1;
        self.feed.insert(*feed_head, doc_id)?;
        let row = super::doc_pos::encode(*feed_head, heads);
        self.doc_pos.insert(doc_id, row.as_slice())?;
        for p in prefixes {
            self.feed_scoped
                .insert(format!("{p}{:020}", *feed_head).as_str(), doc_id)?;
        }
        Ok(())
    }

    /// Folds `reports` of `node` into its row of `health_recent-1`.
    fn put_health_recent(
        &mut self,
        node: &str,
        reports: &[crate::health::HealthReport],
    ) -> Result<(), StoreError> {
        let held = self.health_recent.get(node)?.map(|v| v.value().to_vec());
        let merged = crate::health::merge_recent(held.as_deref(), reports)
            .map_err(|e| StoreError::Corrupt(format!("health_recent {node}: {e}")))?;
        self.health_recent.insert(node, merged.as_slice())?;
        Ok(())
    }

    /// Records that the case's village and town may receive these blobs.
    fn scope_blobs<'a>(
        &mut self,
        division: &Divisions,
        blobs: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<(), StoreError> {
        for p in Scope::prefixes_of(division) {
            for hash in blobs.clone() {
                self.blob_scope.insert(format!("{p}{hash}").as_str(), ())?;
            }
        }
        Ok(())
    }

    fn raise_hlc(&mut self, at: Hlc) -> Result<(), StoreError> {
        if self.hlc.is_some_and(|h| h >= at) {
            return Ok(());
        }
        let current = self
            .meta
            .get("hlc_last")?
            .and_then(|v| std::str::from_utf8(v.value()).ok().and_then(Hlc::parse))
            .unwrap_or_default();
        if at > current {
            self.meta.insert("hlc_last", at.to_string().as_bytes())?;
        }
        self.hlc = Some(at.max(current));
        Ok(())
    }
}

/// The counters of a `stats-1` row: five u64, little-endian; a short row reads as zeros
/// where it ends.
pub(crate) fn decode_counters(bytes: &[u8]) -> [u64; 5] {
    let mut out = [0u64; 5];
    for (slot, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *slot = u64::from_le_bytes(b);
    }
    out
}

fn encode_counters(c: &[u64; 5]) -> [u8; 40] {
    let mut out = [0u8; 40];
    for (chunk, v) in out.chunks_exact_mut(8).zip(c) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// Performs one op; says whether it changed anything (and so is audited).
fn apply(
    t: &mut Tables<'_>,
    op: &WriteOp,
    feed_head: &mut u64,
) -> Result<(WriteOutcome, bool), StoreError> {
    match op {
        WriteOp::PutCase {
            id,
            heads,
            first_change,
            doc,
            summary,
            receipt,
            blobs,
            at,
            division,
            blob_refs,
        } => {
            if t.doc_seq(id)?.is_some() {
                return Err(StoreError::Exists(format!("case {id}")));
            }
            if t.by_receipt.get(summary.receipt_no.as_str())?.is_some() {
                return Err(StoreError::Exists(format!(
                    "receipt {}",
                    summary.receipt_no
                )));
            }
            let current = t
                .receipt_seq
                .get(receipt.0.as_str())?
                .map_or(0, |v| v.value());
            t.receipt_seq
                .insert(receipt.0.as_str(), current.max(receipt.1))?;
            for (hash, bytes) in blobs {
                t.blobs.insert(hash.as_str(), bytes.as_slice())?;
            }
            t.put_projections(None, summary)?;
            t.put_case_doc(id, doc, division, heads.as_deref(), feed_head)?;
            if let Some(change) = first_change
                && heads.as_ref().is_some_and(|h| h.len() == 1)
            {
                t.keep_first_tip(id, change)?;
            }
            t.scope_blobs(division, blob_refs.iter().map(String::as_str))?;
            t.raise_hlc(*at)?;
            Ok((WriteOutcome::Done, true))
        }
        WriteOp::AppendEvent {
            case_id,
            event,
            actor,
            registry,
        } => {
            let bytes = t
                .case_doc(case_id)?
                .ok_or_else(|| StoreError::NotFound(format!("case {case_id}")))?;
            let mut doc = AutoCommit::load(&bytes)
                .map_err(DocError::from)?
                .with_actor(actor.clone());
            let heads_before = doc.get_heads();
            let old_summary = summary_or_read(t.summary_row(case_id)?, &doc)?;
            case_doc::append_event(&mut doc, event)?;
            let (mut case, writers) = case_doc::read_with_writers(&doc)?;
            crate::authorship::screen(&mut case, &writers, registry);
            if let Some(f) = case.forged.iter().find(|f| f.event.id == event.id) {
                return Err(StoreError::NotLegal {
                    zh: format!("本节点记录的事件不被认可：{}", f.reason),
                    en: format!("the event would not count: {}", f.reason_en),
                });
            }
            let state = case.state();
            if let Some(s) = state.superseded.iter().find(|s| s.event_id == event.id) {
                return Err(StoreError::NotLegal {
                    zh: s.reason.clone(),
                    en: s.reason_en.clone(),
                });
            }
            t.put_projections(Some(&old_summary), &CaseSummary::of(&case, &state))?;
            let heads = doc.get_heads();
            let bytes = doc.save_nocompress();
            t.put_case_doc(case_id, &bytes, &case.division, Some(&heads), feed_head)?;
            // The event's change and the heads before it: what a peer that holds the
            // document as it was before the event lacks (`super::tip`).
            if let [head] = heads.as_slice()
                && let Some(change) = doc.get_change_by_hash(head)
            {
                t.keep_tip(case_id, &heads_before, &heads, &change)?;
            }
            t.raise_hlc(event.at)?;
            Ok((WriteOutcome::Case(Arc::new(case)), true))
        }
        WriteOp::ApplyChanges {
            doc_id,
            changes,
            scopes,
            prepared,
            check,
            peer,
        } => apply_changes(
            t,
            doc_id,
            changes,
            (scopes, check, peer),
            prepared.as_deref(),
            feed_head,
        ),
        WriteOp::ApplyCountyDoc {
            doc_id,
            changes,
            from_county,
        } => apply_county_doc(t, doc_id, changes, *from_county, feed_head),
        WriteOp::ApplyAuditDoc {
            doc_id,
            changes,
            peer,
            at_county,
            own,
            prepared,
        } => apply_audit_doc(
            t,
            AuditMerge {
                doc_id,
                changes,
                peer,
                at_county: *at_county,
                own,
                prepared: prepared.as_deref(),
            },
            feed_head,
        ),
        WriteOp::ExportAudit { node, actor, max } => export_audit(t, node, actor, *max, feed_head),
        WriteOp::RecordHealth {
            doc_id,
            report,
            actor,
        } => {
            let existing = t
                .health_docs
                .get(doc_id.as_str())?
                .map(|v| v.value().to_vec());
            let bytes = crate::health::append(existing.as_deref(), report, actor.clone())?;
            t.health_docs.insert(doc_id.as_str(), bytes.as_slice())?;
            t.put_health_recent(&report.node, std::slice::from_ref(report))?;
            t.bump_feed_under(doc_id, &[], None, feed_head)?;
            Ok((WriteOutcome::Done, false))
        }
        WriteOp::PruneHealth { keep_from } => {
            let mut old = Vec::new();
            for entry in t.health_docs.iter()? {
                let (k, _) = entry?;
                if crate::health::parse_id(k.value())
                    .is_some_and(|(_, day)| day < keep_from.as_str())
                {
                    old.push(k.value().to_string());
                }
            }
            for id in &old {
                t.health_docs.remove(id.as_str())?;
                let row = t.doc_pos.remove(id.as_str())?;
                if let Some(pos) = row.and_then(|v| super::doc_pos::seq_of(v.value())) {
                    t.feed.remove(pos)?;
                }
            }
            Ok((WriteOutcome::Count(old.len() as u64), false))
        }
        WriteOp::ApplyHealthDoc {
            doc_id,
            changes,
            peer,
            at_county,
        } => apply_health_doc(t, doc_id, changes, peer, *at_county, feed_head),
        WriteOp::PutDirUser {
            node,
            role,
            division,
            user,
            actor,
        } => {
            let id = crate::user_dir::doc_id(node);
            let existing = t.user_docs.get(id.as_str())?.map(|v| v.value().to_vec());
            let bytes = crate::user_dir::put_user(
                existing.as_deref(),
                node,
                *role,
                division,
                user,
                actor.clone(),
            )?;
            t.user_docs.insert(id.as_str(), bytes.as_slice())?;
            let scope = Scope::of(*role, division);
            let prefixes: Vec<String> = scope.key_prefix().into_iter().collect();
            t.bump_feed_under(&id, &prefixes, None, feed_head)?;
            Ok((WriteOutcome::Done, true))
        }
        WriteOp::ApplyUserDir {
            doc_id,
            changes,
            from_county,
            own,
        } => apply_user_dir(t, doc_id, changes, *from_county, own, feed_head),
        WriteOp::SaveLink {
            peer,
            cursor,
            acked,
        } => {
            if let Some((epoch, seq)) = cursor {
                let mut value = epoch.to_be_bytes().to_vec();
                value.extend_from_slice(&seq.to_be_bytes());
                t.cursors.insert(peer.as_str(), value.as_slice())?;
            }
            if let Some(record) = acked {
                t.acked.insert(peer.as_str(), record.encode().as_slice())?;
            }
            Ok((WriteOutcome::Done, false))
        }
        WriteOp::ForgetAcked { peer } => {
            t.acked.remove(peer.as_str())?;
            Ok((WriteOutcome::Done, false))
        }
        WriteOp::PutToken { id, record } => {
            let table = &mut t.tokens;
            if table.get(id.as_str())?.is_some() {
                return Err(StoreError::Exists(format!("token {id}")));
            }
            table.insert(id.as_str(), record.as_slice())?;
            Ok((WriteOutcome::Done, true))
        }
        WriteOp::UseToken { id, now_ms } => {
            let table = &mut t.tokens;
            let bytes = table
                .get(id.as_str())?
                .map(|v| v.value().to_vec())
                .ok_or_else(|| StoreError::NotFound(format!("token {id}")))?;
            let mut record: crate::enrol::TokenRecord = serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("token {id}: {e}")))?;
            if record.used_ms.is_some() {
                return Err(StoreError::Refused("the token was already used".into()));
            }
            if record.expires_ms <= *now_ms {
                return Err(StoreError::Refused("the token has expired".into()));
            }
            record.used_ms = Some(*now_ms);
            let json =
                serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            table.insert(id.as_str(), json.as_slice())?;
            Ok((WriteOutcome::Done, true))
        }
        WriteOp::PutBlob { hash, bytes } => {
            let new = t.blobs.get(hash.as_str())?.is_none();
            if new {
                t.blobs.insert(hash.as_str(), bytes.as_slice())?;
            }
            Ok((WriteOutcome::Done, new))
        }
        WriteOp::PutUser { user, replace } => {
            if !replace && t.users.get(user.username.as_str())?.is_some() {
                return Err(StoreError::Exists(format!("user {}", user.username)));
            }
            let json = serde_json::to_vec(user).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            t.users.insert(user.username.as_str(), json.as_slice())?;
            Ok((WriteOutcome::Done, true))
        }
        WriteOp::Audit => Ok((WriteOutcome::Done, true)),
        WriteOp::Quarantine { entry, refusal } => {
            t.quarantine.insert(
                entry.doc_id.as_str(),
                super::quarantine::encode(entry.as_ref())?.as_slice(),
            )?;
            if let Some(r) = refusal {
                t.record_refusal(r)?;
            }
            Ok((WriteOutcome::Done, true))
        }
        WriteOp::RebuildQueue => Ok((WriteOutcome::Count(t.rebuild_queue()?), false)),
        WriteOp::All(ops) => {
            let mut outcomes = Vec::with_capacity(ops.len());
            for (op, record) in ops {
                let (outcome, changed) = apply(t, op, feed_head)?;
                if changed {
                    t.append_audit(record)?;
                }
                outcomes.push(outcome);
            }
            // Each op's entry is written above; the request itself carries none.
            Ok((WriteOutcome::All(outcomes), false))
        }
    }
}

/// A held document's saved bytes loaded, or a new empty document.
fn load_or_new(bytes: Option<Vec<u8>>) -> Result<AutoCommit, StoreError> {
    match bytes {
        Some(bytes) => Ok(AutoCommit::load(&bytes).map_err(DocError::from)?),
        None => Ok(AutoCommit::new()),
    }
}

/// Merges what a peer sent into `doc`: each item is a change or a saved document (what a
/// peer that held nothing was sent, `ReplicaStore::changes_after`), both loaded
/// incrementally. Refused when an item is malformed or the result depends on changes not
/// held; the caller's transaction then writes nothing.
fn merge(doc: &mut AutoCommit, doc_id: &str, changes: &[Vec<u8>]) -> Result<(), StoreError> {
    for item in changes {
        doc.load_incremental(item)
            .map_err(|e| StoreError::Refused(format!("malformed change of {doc_id}: {e}")))?;
    }
    if !doc.get_missing_deps(&[]).is_empty() {
        return Err(StoreError::Refused(format!(
            "changes of {doc_id} depend on changes not held"
        )));
    }
    Ok(())
}

/// Merges changes into a county-wide document, which must then hold a valid calendar; it goes
/// into every scope's feed.
fn apply_county_doc(
    t: &mut Tables<'_>,
    doc_id: &str,
    changes: &[Vec<u8>],
    from_county: bool,
    feed_head: &mut u64,
) -> Result<(WriteOutcome, bool), StoreError> {
    if !from_county {
        return Err(StoreError::Refused(format!(
            "{doc_id}: only the county publishes county-wide documents"
        )));
    }
    let registry = doc_id == crate::registry::REGISTRY_DOC;
    if doc_id != crate::county_doc::CALENDAR_DOC && !registry {
        return Err(StoreError::Refused(format!(
            "{doc_id}: not a county-wide document this version knows"
        )));
    }
    let mut doc = load_or_new(t.county_docs.get(doc_id)?.map(|v| v.value().to_vec()))?;
    let heads_before = doc.get_heads();
    merge(&mut doc, doc_id, changes)?;
    if registry {
        crate::registry::Registry::read(&doc)?;
    } else {
        crate::county_doc::read_calendar(&doc)?;
    }
    let changed = doc.get_heads() != heads_before;
    t.registry_moved |= registry && changed;
    if changed {
        t.county_docs
            .insert(doc_id, doc.save_nocompress().as_slice())?;
        t.bump_feed_under(
            doc_id,
            &[Scope::county_wide_prefix()],
            Some(&doc.get_heads()),
            feed_head,
        )?;
    }
    Ok((WriteOutcome::Done, changed))
}

/// Appends the audit entries after the export cursor to this node's segment documents.
fn export_audit(
    t: &mut Tables<'_>,
    node: &str,
    actor: &ActorId,
    max: u64,
    feed_head: &mut u64,
) -> Result<(WriteOutcome, bool), StoreError> {
    let cursor = match t.meta.get(super::AUDIT_EXPORTED_KEY)? {
        Some(v) => <[u8; 8]>::try_from(v.value())
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt("audit export cursor".into()))?,
        None => 0,
    };
    let head = match t.audit_head {
        Some((seq, _)) => seq,
        None => super::read_audit_head(&t.meta)?.map_or(0, |(seq, _)| seq),
    };
    if head <= cursor || max == 0 {
        return Ok((WriteOutcome::Count(0), false));
    }
    let last = head.min(cursor.saturating_add(max));
    let mut next = cursor + 1;
    while next <= last {
        let segment = audit_doc::segment_of(next);
        let upto = (audit_doc::first_seq(segment + 1) - 1).min(last);
        let mut entries = Vec::new();
        for seq in next..=upto {
            let bytes = t
                .audit
                .get(seq)?
                .map(|v| v.value().to_vec())
                .ok_or_else(|| StoreError::Corrupt(format!("audit entry {seq} is missing")))?;
            entries.push(bytes);
        }
        let id = audit_doc::segment_id(node, segment);
        let existing = t.audit_docs.get(id.as_str())?.map(|v| v.value().to_vec());
        let held = match &existing {
            Some(bytes) => audit_doc::load(bytes)?.last_seq(),
            None => audit_doc::first_seq(segment) - 1,
        };
        if held + 1 != next {
            return Err(StoreError::Corrupt(format!(
                "{id} ends at entry {held}, the export cursor at {cursor}"
            )));
        }
        let seg =
            audit_doc::append_change(existing.as_deref(), node, segment, &entries, actor.clone())?;
        t.audit_docs.insert(id.as_str(), seg.bytes.as_slice())?;
        // The global feed only: the county reads it, no village or town does. Its heads are
        // kept, so offering it loads nothing.
        t.bump_feed_under(&id, &[], Some(&seg.heads), feed_head)?;
        // The append's change on top of a segment the county may already hold: offered with
        // the segment and answered without loading it, as a case's local event is.
        if let Some(change) = &seg.change {
            t.keep_tip(&id, &seg.heads_before, &seg.heads, change)?;
        }
        next = upto + 1;
    }
    t.meta
        .insert(super::AUDIT_EXPORTED_KEY, last.to_be_bytes().as_slice())?;
    Ok((WriteOutcome::Count(last - cursor), false))
}

/// Segment `segment` of `node` as held here; `None` when not held or unreadable.
fn held_segment(
    t: &Tables<'_>,
    node: &str,
    segment: u64,
) -> Result<Option<audit_doc::Segment>, StoreError> {
    let id = audit_doc::segment_id(node, segment);
    let Some(bytes) = t.audit_docs.get(id.as_str())?.map(|v| v.value().to_vec()) else {
        return Ok(None);
    };
    // A copy damaged here is for `audit verify` to report; it must not stop what follows.
    Ok(audit_doc::load(&bytes).ok())
}

/// Moves an index row from key `old` to key `new` with `value`; nothing when the key is the
/// same (the value of an index row follows from its key).
fn move_row<'v, V: redb::Value + 'static>(
    table: &mut Table<'_, &'static str, V>,
    old: Option<&str>,
    new: &str,
    value: impl std::borrow::Borrow<V::SelfType<'v>>,
) -> Result<(), StoreError> {
    if old == Some(new) {
        return Ok(());
    }
    if let Some(old) = old {
        table.remove(old)?;
    }
    table.insert(new, value)?;
    Ok(())
}

/// The hash of the last entry of `node`'s segment `segment` if the county holds it full:
/// from `audit_tails-1`, or (a segment held before that table) from the segment itself,
/// which then gets its row.
fn full_segment_tail(
    t: &mut Tables<'_>,
    node: &str,
    segment: u64,
) -> Result<Option<[u8; 32]>, StoreError> {
    let id = audit_doc::segment_id(node, segment);
    if let Some(row) = t.audit_tails.get(id.as_str())? {
        return match <[u8; 32]>::try_from(row.value()) {
            Ok(hash) => Ok(Some(hash)),
            Err(_) => Err(StoreError::Corrupt(format!("audit tail of {id}"))),
        };
    }
    let hash = held_segment(t, node, segment)?
        .filter(audit_doc::Segment::is_full)
        .and_then(|s| s.entries.last().cloned())
        .and_then(|b| AuditEntry::decode(&b).ok())
        .map(|e| e.hash);
    if let Some(hash) = hash {
        t.audit_tails.insert(id.as_str(), hash.as_slice())?;
    }
    Ok(hash)
}

/// An audit segment's merge as far as it goes without the writer's transaction: the merged
/// segment, checked to be the node's own and to extend `base`'s entries.
#[derive(Debug)]
pub(crate) struct PreparedAudit {
    /// The stored bytes it was merged onto (`None`: nothing was held).
    base: Option<Vec<u8>>,
    bytes: Vec<u8>,
    heads: Vec<automerge::ChangeHash>,
    segment: audit_doc::Segment,
    changed: bool,
}

/// Merges `changes` into `base`, segment `segment` of `node`'s trail: every new change must
/// be `node`'s, the result must say it is that segment and keep `base`'s entries. The
/// chain's links to the neighbouring segments are checked by the writer (`apply_audit_doc`).
pub(crate) fn prepare_audit(
    base: Option<Vec<u8>>,
    doc_id: &str,
    changes: &[Vec<u8>],
    node: &str,
    segment: u64,
) -> Result<PreparedAudit, StoreError> {
    let (mut doc, held) = match &base {
        Some(bytes) => {
            let doc = AutoCommit::load(bytes).map_err(DocError::from)?;
            let held = audit_doc::read(&doc)?.entries;
            (doc, held)
        }
        None => (AutoCommit::new(), Vec::new()),
    };
    let heads_before = doc.get_heads();
    merge(&mut doc, doc_id, changes)?;
    let actor = case_doc::node_actor(node);
    if doc
        .get_changes(&heads_before)
        .iter()
        .any(|c| c.actor_id() != &actor)
    {
        return Err(StoreError::Refused(format!(
            "{doc_id}: a change not written by {node}"
        )));
    }
    let seg = audit_doc::read(&doc)?;
    if seg.node != node || seg.segment != segment {
        return Err(StoreError::Refused(format!(
            "{doc_id} says it is segment {} of {}",
            seg.segment, seg.node
        )));
    }
    if !seg.entries.starts_with(&held) {
        return Err(StoreError::Refused(format!(
            "{doc_id}: the changes rewrite entries the county holds (the node's chain was rewritten)"
        )));
    }
    let heads = doc.get_heads();
    Ok(PreparedAudit {
        changed: heads != heads_before,
        bytes: doc.save_nocompress(),
        heads,
        segment: seg,
        base,
    })
}

/// What [`apply_audit_doc`] is asked to do ([`WriteOp::ApplyAuditDoc`]'s fields).
struct AuditMerge<'a> {
    doc_id: &'a str,
    changes: &'a [Vec<u8>],
    peer: &'a str,
    at_county: bool,
    own: &'a str,
    prepared: Option<&'a PreparedAudit>,
}

/// Merges a node's changes into its audit segment at the county. The result must extend the
/// entries held, decode and chain (to the neighbouring segments where held); otherwise nothing
/// is written. A merge prepared on the segment still stored is taken as it is (the Automerge
/// work, ~2 ms for a 100-entry segment, then no longer holds the writer); otherwise the
/// writer merges again on what is stored.
fn apply_audit_doc(
    t: &mut Tables<'_>,
    m: AuditMerge<'_>,
    feed_head: &mut u64,
) -> Result<(WriteOutcome, bool), StoreError> {
    let doc_id = m.doc_id;
    if !m.at_county {
        return Err(StoreError::Refused(format!(
            "{doc_id}: only the county keeps other nodes' audit trails"
        )));
    }
    let Some((node, segment)) = audit_doc::parse_id(doc_id) else {
        return Err(StoreError::Refused(format!(
            "{doc_id}: not an audit segment id"
        )));
    };
    if node != m.peer || node == m.own {
        return Err(StoreError::Refused(format!(
            "{doc_id}: node {:?} may send only its own audit trail",
            m.peer
        )));
    }
    let stored = t.audit_docs.get(doc_id)?.map(|v| v.value().to_vec());
    let redone;
    let p = match m.prepared {
        Some(p) if p.base == stored => p,
        _ => {
            redone = prepare_audit(stored, doc_id, m.changes, node, segment)?;
            &redone
        }
    };
    let seg = &p.segment;
    let prev = match segment.checked_sub(1) {
        Some(before) => full_segment_tail(t, node, before)?,
        None => None,
    };
    let last = audit_doc::check_segment(node, seg, prev)
        .map_err(|e| StoreError::Refused(format!("{doc_id}: {e}")))?;
    if seg.is_full()
        && let Some(after) = held_segment(t, node, segment + 1)?
        && let Some(first) = after.entries.first()
        && AuditEntry::decode(first).ok().map(|e| e.prev) != last
    {
        return Err(StoreError::Refused(format!(
            "{doc_id}: its last entry is not the one segment {} follows",
            segment + 1
        )));
    }
    if p.changed {
        t.audit_docs.insert(doc_id, p.bytes.as_slice())?;
        if seg.is_full()
            && let Some(hash) = last
        {
            t.audit_tails.insert(doc_id, hash.as_slice())?;
        }
        t.bump_feed_under(doc_id, &[], Some(&p.heads), feed_head)?;
    }
    Ok((WriteOutcome::Count(seg.last_seq()), p.changed))
}

/// Merges a node's health document at the county: only the node's own, only reports of it.
fn apply_health_doc(
    t: &mut Tables<'_>,
    doc_id: &str,
    changes: &[Vec<u8>],
    peer: &str,
    at_county: bool,
    feed_head: &mut u64,
) -> Result<(WriteOutcome, bool), StoreError> {
    if !at_county {
        return Err(StoreError::Refused(format!(
            "{doc_id}: health reports go to the county only"
        )));
    }
    match crate::health::parse_id(doc_id) {
        Some((node, _)) if node == peer => {}
        _ => {
            return Err(StoreError::Refused(format!(
                "{doc_id}: not {peer}'s health document"
            )));
        }
    }
    let mut doc = load_or_new(t.health_docs.get(doc_id)?.map(|v| v.value().to_vec()))?;
    let heads_before = doc.get_heads();
    merge(&mut doc, doc_id, changes)?;
    let (node, reports) = crate::health::read(&doc)?;
    if node != peer {
        return Err(StoreError::Refused(format!(
            "{doc_id} holds reports of {node}, not of {peer}"
        )));
    }
    let changed = doc.get_heads() != heads_before;
    if changed {
        t.health_docs
            .insert(doc_id, doc.save_nocompress().as_slice())?;
        t.put_health_recent(&node, &reports)?;
        t.bump_feed_under(doc_id, &[], Some(&doc.get_heads()), feed_head)?;
    }
    Ok((WriteOutcome::Done, changed))
}

/// Merges the county's changes into this node's own user directory and upserts its users
/// into `users-1`; anything else is refused with nothing written.
fn apply_user_dir(
    t: &mut Tables<'_>,
    doc_id: &str,
    changes: &[Vec<u8>],
    from_county: bool,
    own: &str,
    feed_head: &mut u64,
) -> Result<(WriteOutcome, bool), StoreError> {
    if !from_county {
        return Err(StoreError::Refused(format!(
            "{doc_id}: only the county writes user directories"
        )));
    }
    if doc_id != crate::user_dir::doc_id(own) {
        return Err(StoreError::Refused(format!(
            "{doc_id}: not this node's ({own}) user directory"
        )));
    }
    let mut doc = load_or_new(t.user_docs.get(doc_id)?.map(|v| v.value().to_vec()))?;
    let heads_before = doc.get_heads();
    merge(&mut doc, doc_id, changes)?;
    let dir = crate::user_dir::read(&doc)?;
    if dir.node != own {
        return Err(StoreError::Refused(format!(
            "{doc_id} says it is the directory of {}",
            dir.node
        )));
    }
    let changed = doc.get_heads() != heads_before;
    if changed {
        for user in &dir.users {
            let json = serde_json::to_vec(user).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            t.users.insert(user.username.as_str(), json.as_slice())?;
        }
        t.user_docs
            .insert(doc_id, doc.save_nocompress().as_slice())?;
        // The global feed only: the county holds it already, nobody else may.
        t.bump_feed_under(doc_id, &[], Some(&doc.get_heads()), feed_head)?;
    }
    Ok((WriteOutcome::Done, changed))
}

/// Merges a peer's changes into a case document. The result must still be a readable case
/// with the same id and every dependency present; otherwise nothing is written.
/// A case merge worked out away from the writer thread ([`prepare_case`]): what the writer
/// stores if the document is still the one it was merged onto.
#[derive(Debug)]
pub(crate) struct PreparedCase {
    /// The stored bytes the changes were merged onto (`None`: the case was not held), and
    /// their heads: the writer checks the document did not move meanwhile by the heads in
    /// `doc_pos-1`, and by the bytes only where that row does not know them.
    base: Option<Vec<u8>>,
    base_heads: Option<Vec<automerge::ChangeHash>>,
    /// The merged document, saved.
    bytes: Vec<u8>,
    heads: Vec<automerge::ChangeHash>,
    changed: bool,
    old_summary: Option<OldSummary>,
    /// The merged case's summary row, made here rather than on the writer thread.
    summary: CaseSummary,
    case: Arc<Case>,
    /// The events this merge added that do not count: the county raises the alert.
    forged_new: Vec<crate::authorship::Forged>,
    /// The signatures counted before they were verified ([`prepare_case`] with `defer`):
    /// the merge is stored as prepared only once they verify.
    pub(crate) deferred: crate::authorship::Deferred,
}

/// A stored case as a merge starts from: its document's bytes and its summary row, read
/// together ([`super::Store::held_case`]).
#[derive(Debug)]
pub(crate) struct HeldCase {
    pub bytes: Vec<u8>,
    /// `None` when the row is missing or unreadable: the merge reads the document instead.
    pub summary: Option<CaseSummary>,
}

impl HeldCase {
    /// The summary row as stored, `None` if it does not parse.
    pub(crate) fn summary_of(row: Option<&[u8]>) -> Option<CaseSummary> {
        serde_json::from_slice(row?).ok()
    }
}

/// The summary a case's projections were written from ([`summary_or_read`]).
#[derive(Debug)]
pub(crate) struct OldSummary {
    summary: CaseSummary,
    /// It is the stored row; else it was read out of the document, the row being missing or
    /// damaged, and the row is written whatever the new summary is.
    stored: bool,
}

/// The summary the case's projections were written from: its row, or read out of the
/// document `doc` (as stored, before any change) when the row is missing or damaged.
fn summary_or_read(row: Option<CaseSummary>, doc: &AutoCommit) -> Result<OldSummary, StoreError> {
    match row {
        Some(summary) => Ok(OldSummary {
            summary,
            stored: true,
        }),
        None => {
            let before = case_doc::read(doc)?;
            Ok(OldSummary {
                summary: CaseSummary::of(&before, &before.state()),
                stored: false,
            })
        }
    }
}

/// Merges `changes` of case `doc_id` onto its stored form `existing`: the CPU part of a case
/// merge, which needs no table. Refused if the result is not a complete, readable case
/// document with that id. With `defer`, the signatures it has not verified before count
/// for now and are left in [`PreparedCase::deferred`], for the caller to verify together
/// with other merges' before the writer takes it.
pub(crate) fn prepare_case(
    existing: Option<HeldCase>,
    doc_id: &str,
    changes: &[Vec<u8>],
    check: &super::admit::MergeCheck,
    defer: bool,
) -> Result<PreparedCase, StoreError> {
    let mut deferred = crate::authorship::Deferred::default();
    let mut deferring = defer.then_some(&mut deferred);
    // A case this node holds nothing of usually comes whole, as the sender's stored bytes:
    // if they load strictly (every chunk whole, every hash checked), they are stored as they
    // came, without saving the document again.
    if existing.is_none()
        && let [whole] = changes
        && let Ok(mut doc) = AutoCommit::load(whole)
        && doc.get_missing_deps(&[]).is_empty()
    {
        let (case, writers) = checked_read(&doc, doc_id)?;
        let new: Vec<String> = case.events.iter().map(|e| e.id.clone()).collect();
        let (case, forged_new) =
            super::admit::admit(case, &writers, (&new, false), whole.len(), check, deferring)?;
        return Ok(PreparedCase {
            base: None,
            base_heads: None,
            bytes: whole.clone(),
            heads: doc.get_heads(),
            changed: true,
            old_summary: None,
            summary: CaseSummary::of(&case, &case.state()),
            case: Arc::new(case),
            forged_new,
            deferred,
        });
    }
    let mut doc = match &existing {
        Some(held) => AutoCommit::load(&held.bytes).map_err(DocError::from)?,
        None => AutoCommit::new(),
    };
    let heads_before = doc.get_heads();
    // The row the projections were written from: the index keys to move come from it, and
    // reading it costs a JSON parse instead of reading the whole case out of the document
    // (~20 µs of a merge's ~130 in a profile of a run of merges).
    let (base, old_summary) = match existing {
        Some(HeldCase { bytes, summary }) => (Some(bytes), Some(summary_or_read(summary, &doc)?)),
        None => (None, None),
    };
    // Whose case it is comes from what is held, never from what the merge would make it.
    if let Some(old) = &old_summary {
        let held = Divisions {
            village: old.summary.village.clone(),
            town: old.summary.town.clone(),
            county: old.summary.county.clone(),
        };
        super::admit::held_in_scope(check, &held, doc_id)?;
    }
    merge(&mut doc, doc_id, changes)?;
    let new = if base.is_some() {
        super::admit::only_new_events(&mut doc, &heads_before)?
    } else {
        Vec::new()
    };
    let (case, writers) = checked_read(&doc, doc_id)?;
    let new = if base.is_some() {
        new
    } else {
        case.events.iter().map(|e| e.id.clone()).collect()
    };
    let heads = doc.get_heads();
    let bytes = doc.save_nocompress();
    let (case, forged_new) = super::admit::admit(
        case,
        &writers,
        (&new, base.is_some()),
        bytes.len(),
        check,
        deferring.take(),
    )?;
    Ok(PreparedCase {
        base_heads: base.is_some().then(|| heads_before.clone()),
        base,
        bytes,
        changed: heads != heads_before,
        heads,
        old_summary,
        summary: CaseSummary::of(&case, &case.state()),
        case: Arc::new(case),
        forged_new,
        deferred,
    })
}

/// Reads the merged case with who wrote each event, refused unless it is case `doc_id`.
fn checked_read(
    doc: &AutoCommit,
    doc_id: &str,
) -> Result<(Case, std::collections::HashMap<String, ActorId>), StoreError> {
    let (case, writers) = case_doc::read_with_writers(doc)?;
    if case.id != doc_id {
        return Err(StoreError::Rejected(crate::message::Msg::new(
            format!("文档 {doc_id} 自称办件 {}", case.id),
            format!("document {doc_id} claims to be case {}", case.id),
        )));
    }
    Ok((case, writers))
}

/// Stores a case merge: the one `prepared` off the writer thread if the stored document has
/// not changed since, else merged again here.
fn apply_changes(
    t: &mut Tables<'_>,
    doc_id: &str,
    changes: &[Vec<u8>],
    (scopes, check, peer): (&[Scope], &super::admit::MergeCheck, &str),
    prepared: Option<&PreparedCase>,
    feed_head: &mut u64,
) -> Result<(WriteOutcome, bool), StoreError> {
    let merged_here;
    let p = match prepared {
        Some(p) if t.still_holds(doc_id, p)? => p,
        _ => {
            let held = match t.case_doc(doc_id)? {
                Some(bytes) => Some(HeldCase {
                    bytes,
                    summary: t.summary_row(doc_id)?,
                }),
                None => None,
            };
            merged_here = prepare_case(held, doc_id, changes, check, false)?;
            &merged_here
        }
    };
    let case = Arc::clone(&p.case);
    if let Some(scope) = scopes.iter().find(|s| !s.contains(&case.division)) {
        return Err(StoreError::Rejected(crate::message::Msg::new(
            format!("办件（村 {}）不在本次同步的辖区内", case.division.village),
            format!(
                "case {doc_id} of village {} is outside the scope {scope:?}",
                case.division.village
            ),
        )));
    }
    if !peer.is_empty() {
        for f in &p.forged_new {
            t.record_refusal(&super::quarantine::Refusal {
                peer: peer.to_string(),
                doc_id: doc_id.to_string(),
                receipt_no: case.receipt_no.clone(),
                event_id: Some(f.event.id.clone()),
                reason: f.reason.clone(),
                reason_en: f.reason_en.clone(),
                at_ms: super::quarantine::now_ms(),
            })?;
        }
    }
    t.put_projections(p.old_summary.as_ref(), &p.summary)?;
    t.put_case_doc(doc_id, &p.bytes, &case.division, Some(&p.heads), feed_head)?;
    t.scope_blobs(
        &case.division,
        case.materials.iter().filter_map(|m| m.blob.as_deref()),
    )?;
    if let Some(at) = case.events.iter().map(|e| e.at).max() {
        t.raise_hlc(at)?;
    }
    Ok((WriteOutcome::Case(case), p.changed))
}
