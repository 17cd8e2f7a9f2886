//! What a peer may receive, decided from its verified certificate (DESIGN.md §6).
//!
//! A village receives its own cases, a town the cases of its villages, the county everything
//! in the county. The sending side enforces it: [`ScopedStore`] is the only view of the store
//! a sync session gets, so a case outside the peer's scope is never offered, never listed in
//! a digest and never sent, even when the peer asks for its id. The receiving side checks it
//! too: a peer's changes to a case outside that peer's scope are refused. County-wide
//! documents (`crate::county_doc`, the published calendar) are in every scope; audit segments
//! (`crate::audit_doc`) only in the county's, the only scope that reads the global feed; a
//! node's user directory (`crate::user_dir`) only in the scope of that node's division.

use yiciban_sync::store::{ChangeHash, FeedEntry, OfferRow, ReplicaStore};

use crate::case_doc::Divisions;
use crate::catalog::Tier;
use crate::store::{Store, StoreError};

/// The cases one peer may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The county: every case.
    All,
    /// A town: cases whose town division is this one.
    Town(String),
    /// A village: cases whose village division is this one.
    Village(String),
}

impl Scope {
    /// The scope of a certified peer.
    pub fn of(role: Tier, division: &str) -> Self {
        match role {
            Tier::County => Scope::All,
            Tier::Town => Scope::Town(division.to_string()),
            Tier::Village => Scope::Village(division.to_string()),
        }
    }

    pub fn contains(&self, d: &Divisions) -> bool {
        match self {
            Scope::All => true,
            Scope::Town(t) => &d.town == t,
            Scope::Village(v) => &d.village == v,
        }
    }

    /// The key prefix of this scope's rows in `feed_scoped-1` and `blob_scope-1`; `None` for
    /// the whole county, which reads the full feed.
    pub(crate) fn key_prefix(&self) -> Option<String> {
        let sep = crate::store::SEP;
        match self {
            Scope::All => None,
            Scope::Town(t) => Some(format!("t{sep}{t}{sep}")),
            Scope::Village(v) => Some(format!("v{sep}{v}{sep}")),
        }
    }

    /// The key prefix of the county-wide documents' rows in `feed_scoped-1`, which every
    /// scope reads besides its own (`crate::county_doc`).
    pub(crate) fn county_wide_prefix() -> String {
        format!("a{}", crate::store::SEP)
    }

    /// The prefixes under which a case with `d` is indexed.
    pub(crate) fn prefixes_of(d: &Divisions) -> [String; 2] {
        [
            Scope::Village(d.village.clone()),
            Scope::Town(d.town.clone()),
        ]
        .map(|s| s.key_prefix().unwrap_or_default())
    }
}

/// A node's audit trail and its health reports go to the county only: never down, never
/// sideways.
fn flows_up_only(doc_id: &str) -> bool {
    crate::audit_doc::is_audit_doc(doc_id) || crate::health::is_health_doc(doc_id)
}

/// The store as one peer may see it.
#[derive(Debug, Clone, Copy)]
pub struct ScopedStore<'a> {
    pub store: &'a Store,
    pub scope: &'a Scope,
}

impl ScopedStore<'_> {
    fn visible(&self, doc_id: &str) -> Result<bool, StoreError> {
        // County-wide documents flow down only: the county publishes them, so a node never
        // offers one to its county (a copy that diverged, after a county store was
        // restored, would only be refused there).
        if crate::county_doc::is_county_doc(doc_id) {
            return Ok(*self.scope != Scope::All);
        }
        if flows_up_only(doc_id) {
            return Ok(*self.scope == Scope::All);
        }
        // A node's user directory goes to that node's own village or town only.
        if crate::user_dir::is_user_dir_doc(doc_id) {
            if *self.scope == Scope::All {
                return Ok(true);
            }
            let node = doc_id.trim_start_matches("users:");
            return Ok(self
                .store
                .user_dir(node)
                .ok()
                .flatten()
                .is_some_and(|d| d.scope() == *self.scope));
        }
        match self.scope {
            Scope::All => Ok(true),
            scope => Ok(self
                .store
                .case_divisions(doc_id)?
                .is_some_and(|d| scope.contains(&d))),
        }
    }
}

impl ReplicaStore for ScopedStore<'_> {
    type Error = StoreError;

    fn feed_since(&self, since: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        self.store.scope_feed_since(self.scope, since, limit)
    }

    fn feed_head(&self) -> Result<u64, StoreError> {
        self.store.scope_feed_head(self.scope)
    }

    fn doc_heads(&self, doc_id: &str) -> Result<Option<Vec<ChangeHash>>, StoreError> {
        if !self.visible(doc_id)? {
            return Ok(None);
        }
        self.store.doc_heads(doc_id)
    }

    // A document that flows up only is never visible to the node that sends it; its heads
    // are still what the county holds of it (hashes only, of a document the peer itself
    // offered). Without them each export resent the whole segment: ~100 KB at 1,000 cases.
    fn held_heads(&self, doc_id: &str) -> Result<Option<Vec<ChangeHash>>, StoreError> {
        if flows_up_only(doc_id) {
            return self.store.doc_heads(doc_id);
        }
        self.doc_heads(doc_id)
    }

    fn changes_after(&self, doc_id: &str, have: &[ChangeHash]) -> Result<Vec<Vec<u8>>, StoreError> {
        if !self.visible(doc_id)? {
            return Ok(Vec::new());
        }
        self.store.changes_after(doc_id, have)
    }

    fn change_id(&self, change: &[u8]) -> Option<(ChangeHash, Vec<ChangeHash>)> {
        self.store.change_id(change)
    }

    // A tip is the document's own change: shown only where the document is.
    fn tip(
        &self,
        doc_id: &str,
        heads: &[ChangeHash],
    ) -> Result<Option<(Vec<ChangeHash>, Vec<u8>)>, StoreError> {
        match self.store.tip(doc_id, heads)? {
            Some(tip) if self.visible(doc_id)? => Ok(Some(tip)),
            _ => Ok(None),
        }
    }

    // What the peer may not see is offered as not held: no heads, no tip.
    fn offer_rows(&self, doc_ids: &[&str], with_tips: bool) -> Result<Vec<OfferRow>, StoreError> {
        let rows = self.store.offer_rows(doc_ids, with_tips)?;
        doc_ids
            .iter()
            .zip(rows)
            .map(|(doc_id, row)| {
                Ok(if self.visible(doc_id)? {
                    row
                } else {
                    OfferRow::default()
                })
            })
            .collect()
    }

    // Each answer loads its document (~100 µs): a batch of them is spread over the cores.
    fn changes_after_many(
        &self,
        wants: &[(&str, &[ChangeHash])],
    ) -> Result<Vec<Option<Vec<Vec<u8>>>>, StoreError> {
        par_map(wants, |&(doc_id, have)| match self.doc_heads(doc_id)? {
            None => Ok(None),
            Some(_) => self.changes_after(doc_id, have).map(Some),
        })
        .into_iter()
        .collect()
    }

    fn has_heads(&self, doc_id: &str, heads: &[ChangeHash]) -> Result<bool, StoreError> {
        // What this node holds, in or out of the peer's scope: used to decide what to want.
        self.store.has_heads(doc_id, heads)
    }

    fn has_heads_many(&self, asks: &[(&str, &[ChangeHash])]) -> Result<Vec<bool>, StoreError> {
        self.store.has_heads_many(asks)
    }

    fn heads_cover(&self, doc_id: &str, heads: &[ChangeHash]) -> Result<bool, StoreError> {
        self.store.heads_cover(doc_id, heads)
    }

    fn heads_within(&self, doc_id: &str, deps: &[ChangeHash]) -> Result<bool, StoreError> {
        self.store.heads_within(doc_id, deps)
    }

    fn blob_len(&self, hash: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        if !self.store.blob_in_scope(self.scope, hash)? {
            return Ok(None);
        }
        self.store.blob_len(hash)
    }

    fn blob_chunk(
        &self,
        hash: &[u8; 32],
        offset: u64,
        max: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.store.blob_in_scope(self.scope, hash)? {
            return Ok(None);
        }
        self.store.blob_chunk(hash, offset, max)
    }
}

/// Fewest items worth a thread of their own in [`par_map`].
const PAR_MIN_PER_THREAD: usize = 8;

/// `f` of each item, in order, the items split over the machine's cores (at most four
/// threads, this one among them) when there are enough of them to pay for the threads.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = cores.min(4).min(items.len() / PAR_MIN_PER_THREAD).max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let mut chunks = items.chunks(per);
        let first = chunks.next().unwrap_or_default();
        let others: Vec<_> = chunks
            .map(|chunk| s.spawn(move || chunk.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out: Vec<R> = first.iter().map(f).collect();
        for handle in others {
            match handle.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}
