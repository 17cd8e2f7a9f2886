//! The review queue (待办队列) as an index: the open cases whose baton is at this node's tier,
//! kept in `case_queue-1` under keys whose order is the queue's order, so a page of the queue
//! reads one page of keys and the summaries it shows, never every open case.
//!
//! The order: the date that presses first ([`deadline::pressing_date`]: the current step's
//! due date or the case's, whichever is earlier), undated cases last; then the oldest
//! accepted; then receipt number and id. A key is
//! `{class}{date} \x1f {accepted_at} \x1f {receipt_no} \x1f {id}` with class `d` (dated,
//! `YYYY-MM-DD` follows), `u` (undated) or `l` (live: see below).
//!
//! The pressing date depends on the working-day calendar, the catalogue's limits, the time
//! zone and the node's tier: the store's writer computes keys with the node's
//! [`Clock`](crate::legal_clock::Clock), and [`ensure_fresh`] rebuilds the index (with the
//! other legal-time projections) when that clock changed. A case whose clock stands on an
//! open supplement pause ([`deadline::waits_on_today`]) has a due date that moves with today:
//! it is kept apart (class `l`) and placed among the others when a page is read.

use std::sync::Arc;

use chrono::NaiveDate;

use crate::deadline;
use crate::fold::Status;
use crate::hlc::Hlc;
use crate::legal_clock::Clock;
use crate::node::Node;
use crate::store::{SEP, StoreError};
use crate::summary::CaseSummary;

/// Statuses whose cases still hold a baton somewhere.
pub const OPEN: [Status; 4] = [
    Status::UnderReview,
    Status::SupplementRequested,
    Status::ReadyToIssue,
    Status::Issued,
];

/// The case's key in this node's queue under `clock`; `None` when its baton is not here
/// (or it is closed).
pub fn key(clock: &Clock, s: &CaseSummary) -> Option<String> {
    if !OPEN.contains(&s.status) || s.tier != Some(clock.here()) {
        return None;
    }
    let head = if deadline::waits_on_today(&s.marks) {
        "l".to_string()
    } else {
        // `today` is not used when the clock does not stand.
        match clock.pressing_date(s, NaiveDate::MIN) {
            Some(date) => format!("d{date}"),
            None => "u".to_string(),
        }
    };
    Some(format!(
        "{head}{SEP}{}{SEP}{}{SEP}{}",
        s.accepted_at, s.receipt_no, s.id
    ))
}

/// Where a case stands in the queue's order: undated last, then the date, the acceptance
/// stamp, the receipt number, the id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub undated: bool,
    pub date: Option<NaiveDate>,
    pub accepted_at: Hlc,
    pub receipt_no: String,
    pub id: String,
}

impl Place {
    fn of(date: Option<NaiveDate>, s: &CaseSummary) -> Self {
        Self {
            undated: date.is_none(),
            date,
            accepted_at: s.accepted_at,
            receipt_no: s.receipt_no.clone(),
            id: s.id.clone(),
        }
    }

    /// Parses a stored key of class `d` or `u`. The id is what follows the last separator, so
    /// a receipt number from a peer that holds one still parses.
    pub fn parse(key: &str) -> Option<Self> {
        let (head, rest) = key.split_once(SEP)?;
        let (undated, date) = match head.strip_prefix('d') {
            Some(d) => (false, Some(d.parse().ok()?)),
            None if head == "u" => (true, None),
            None => return None,
        };
        let (accepted_at, rest) = rest.split_once(SEP)?;
        let accepted_at = Hlc::parse(accepted_at)?;
        let (receipt_no, id) = rest.rsplit_once(SEP)?;
        let (receipt_no, id) = (receipt_no.to_string(), id.to_string());
        Some(Self {
            undated,
            date,
            accepted_at,
            receipt_no,
            id,
        })
    }
}

/// The node's clock now: the one the store's writer holds, replaced (and handed to the
/// writer) when the calendar in force is another one.
pub fn current_clock(node: &Node) -> Arc<Clock> {
    let calendar = node.calendar();
    if let Some(clock) = node.store.queue_clock() {
        let same = match (clock.calendar(), calendar.as_ref()) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            (None, None) => true,
            _ => false,
        };
        if same {
            return clock;
        }
    }
    let offset = *node.local_now().offset();
    let clock = Arc::new(Clock::new(node.tier(), calendar, &node.catalog, offset));
    node.store.set_queue_clock(clock.clone());
    clock
}

/// Makes sure every legal-time projection (this queue, supervision's index, the statistics'
/// counters) was computed with the node's current clock, rebuilding them through the writer
/// when it was not (after a migration, a new calendar or catalogue). Cheap when fresh: one
/// read of `meta-1`.
pub async fn ensure_fresh(node: &Node) -> Result<(), StoreError> {
    let clock = current_clock(node);
    if node.store.queue_fingerprint()?.as_deref() == Some(clock.fingerprint()) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let n = node.store.rebuild_queue().await?;
    tracing::info!(
        cases = n,
        ms = started.elapsed().as_millis() as u64,
        "legal-time projections rebuilt (queue, supervision, statistics)"
    );
    Ok(())
}

/// One page of the queue.
#[derive(Debug, Clone)]
pub struct Page {
    /// The cases of the page, in queue order.
    pub rows: Vec<CaseSummary>,
    /// Cases in the queue.
    pub total: u64,
}

/// Cases `offset..offset + limit` of this node's queue, read from `case_queue-1`: the keys up
/// to the page's end (parsed: the page's only, unless live cases must be merged), the live
/// cases (few: those awaiting supplements) and the summaries of the page.
pub async fn page(node: &Node, offset: usize, limit: usize) -> Result<Page, StoreError> {
    ensure_fresh(node).await?;
    let clock = current_clock(node);
    let today = node.today();
    let store = &node.store;
    let mut live: Vec<(Place, CaseSummary)> = store
        .queue_live()?
        .into_iter()
        .map(|s| (Place::of(clock.pressing_date(&s, today), &s), s))
        .collect();
    live.sort_by(|a, b| a.0.cmp(&b.0));
    // Without live cases (a town's queue, most of the time) the page is a window of the
    // stored keys; else the stored run is merged with the live one from the start.
    let (stored, offset) = if live.is_empty() {
        (store.queue_stored(offset, limit)?, 0)
    } else {
        (store.queue_stored(0, offset.saturating_add(limit))?, offset)
    };
    // Merge the two ordered runs, keeping positions offset..offset + limit.
    enum Row {
        Live(Box<CaseSummary>),
        Stored(String),
    }
    let mut rows = Vec::with_capacity(limit);
    let mut live = live.into_iter().peekable();
    let mut stored = stored.into_iter().peekable();
    let mut at = 0usize;
    while rows.len() < limit {
        let take_live = match (live.peek(), stored.peek()) {
            (Some((l, _)), Some(s)) => l < s,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let row = if take_live {
            live.next().map(|(_, s)| Row::Live(Box::new(s)))
        } else {
            stored.next().map(|p| Row::Stored(p.id))
        };
        if at >= offset
            && let Some(row) = row
        {
            rows.push(row);
        }
        at += 1;
    }
    let ids: Vec<&str> = rows
        .iter()
        .filter_map(|r| match r {
            Row::Stored(id) => Some(id.as_str()),
            Row::Live(_) => None,
        })
        .collect();
    let mut found = store.summaries(&ids)?.into_iter();
    let rows = rows
        .into_iter()
        .filter_map(|r| match r {
            Row::Live(s) => Some(*s),
            Row::Stored(_) => found.next().flatten(),
        })
        .collect();
    Ok(Page {
        rows,
        total: store.queue_len()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Tier;
    use crate::event::{Event, EventKind};
    use crate::store::CaseQuery;
    use crate::test_nodes::{ev, fill, node};

    /// The queue as the list was built before the index: every open case of this tier,
    /// sorted by legal time counted today.
    fn by_full_sort(node: &Node) -> Vec<String> {
        let mut all: Vec<(bool, Option<NaiveDate>, Hlc, String, String)> = Vec::new();
        for status in OPEN {
            let query = CaseQuery {
                q: None,
                status: Some(status),
                limit: 100_000,
            };
            for s in node.store.list_cases(&query).unwrap() {
                if s.tier != Some(node.tier()) {
                    continue;
                }
                let t = node.legal_time(&s.item_code, &s.marks);
                let date = match (t.step_due, t.due) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                all.push((date.is_none(), date, s.accepted_at, s.receipt_no, s.id));
            }
        }
        all.sort();
        all.into_iter().map(|r| r.4).collect()
    }

    async fn by_index(node: &Node, page_size: usize) -> (Vec<String>, u64) {
        let mut ids = Vec::new();
        let mut total = 0;
        loop {
            let page = page(node, ids.len(), page_size).await.unwrap();
            total = total.max(page.total);
            if page.rows.is_empty() {
                return (ids, total);
            }
            ids.extend(page.rows.into_iter().map(|s| s.id));
        }
    }

    #[tokio::test]
    async fn pages_of_the_index_follow_the_full_sort_at_a_village_and_a_town() {
        for (role, division) in [("village", "430181101001"), ("town", "430181101000")] {
            let dir = tempfile::tempdir().unwrap();
            let node = node(dir.path(), role, division);
            fill(&node, 0..126).await;
            let expected = by_full_sort(&node);
            assert!(expected.len() > 20, "{role}: {}", expected.len());
            let refs: Vec<&str> = expected.iter().map(String::as_str).collect();
            let accepted: Vec<Hlc> = node
                .store
                .summaries(&refs)
                .unwrap()
                .into_iter()
                .map(|s| s.unwrap().accepted_at)
                .collect();
            assert!(
                accepted.windows(2).any(|w| w[0] > w[1]),
                "{role}: deadline order is not acceptance order here"
            );
            for size in [1, 7, 50, 500] {
                let (ids, total) = by_index(&node, size).await;
                assert_eq!(ids, expected, "{role}, pages of {size}");
                assert_eq!(total, expected.len() as u64);
            }
            if role == "village" {
                assert!(
                    !node.store.queue_live().unwrap().is_empty(),
                    "some await supplements"
                );
            }
            // Events move cases in and out of the queue.
            let moved: Vec<(String, Event)> = (0..3)
                .map(|i| {
                    let id = format!("case-{i:03}");
                    let kind = if role == "town" {
                        EventKind::ReviewPassed
                    } else {
                        EventKind::Withdrawn
                    };
                    let tier = node.tier();
                    (
                        id,
                        Event {
                            id: format!("m{i}"),
                            ..ev(
                                i,
                                9,
                                u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap(),
                                tier,
                                kind,
                            )
                        },
                    )
                })
                .collect();
            for (id, event) in moved {
                let _ = node
                    .store
                    .append_event(&id, event, crate::case_doc::node_actor("n"))
                    .await;
            }
            assert_eq!(by_index(&node, 7).await.0, by_full_sort(&node), "{role}");
        }
    }

    #[tokio::test]
    async fn another_clock_marks_the_index_stale_and_the_next_look_rebuilds_it() {
        let dir = tempfile::tempdir().unwrap();
        let node = node(dir.path(), "town", "430181101000");
        fill(&node, 0..40).await;
        assert_eq!(
            node.store.queue_fingerprint().unwrap(),
            None,
            "new: to build"
        );
        assert_eq!(by_index(&node, 10).await.0, by_full_sort(&node));
        let fresh = current_clock(&node);
        assert_eq!(
            node.store.queue_fingerprint().unwrap().as_deref(),
            Some(fresh.fingerprint())
        );
        // A calendar-less clock (everything undated) writes a case: the index is stale.
        let offset = *node.local_now().offset();
        let other = Arc::new(Clock::new(Tier::Town, None, &node.catalog, offset));
        assert_ne!(other.fingerprint(), fresh.fingerprint());
        node.store.set_queue_clock(other);
        fill(&node, 40..60).await;
        assert_eq!(node.store.queue_fingerprint().unwrap(), None);
        // The node's own clock comes back and the index is rebuilt on the next look.
        assert_eq!(by_index(&node, 10).await.0, by_full_sort(&node));
        assert_eq!(
            node.store.queue_fingerprint().unwrap().as_deref(),
            Some(fresh.fingerprint())
        );
    }

    #[test]
    fn a_parsed_key_orders_as_its_text() {
        let keys = [
            format!("d2026-10-08{SEP}0001763780000000-00000{SEP}R1{SEP}a"),
            format!("d2026-10-08{SEP}0001763780000000-00001{SEP}R0{SEP}b"),
            format!("d2026-10-09{SEP}0001763700000000-00000{SEP}R0{SEP}c"),
            format!("u{SEP}0001763000000000-00000{SEP}R0{SEP}d"),
        ];
        let places: Vec<Place> = keys.iter().map(|k| Place::parse(k).unwrap()).collect();
        let mut sorted = places.clone();
        sorted.sort();
        assert_eq!(places, sorted);
        assert!(places[3].undated && places[3].date.is_none());
        assert_eq!(places[0].id, "a");
        assert!(Place::parse("l\u{1f}x\u{1f}y\u{1f}z").is_none());
        let odd = Place::parse(&format!("u{SEP}0001763000000000-00000{SEP}R{SEP}0{SEP}e")).unwrap();
        assert_eq!(
            (odd.receipt_no.as_str(), odd.id.as_str()),
            ("R\u{1f}0", "e")
        );
    }
}
