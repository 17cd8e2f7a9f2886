//! The clock the store's writer computes legal-time projections with: the review queue's
//! keys ([`crate::queue`]), the supervision index ([`crate::supervision`]) and the statistics'
//! counters ([`crate::stats`]).
//!
//! Those projections depend on this node's tier, the working-day calendar (with the rule for
//! unpublished years, [`crate::calendar::rules`]), the catalogue's limits and the time zone.
//! `meta-1.queue_clock` records the fingerprint of the clock every row was computed with;
//! when the calendar or the catalogue changes (the county publishes a year, a node restarts
//! with another catalogue), [`crate::queue::ensure_fresh`] rebuilds them all once, through the
//! writer.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{FixedOffset, NaiveDate};
use sha2::{Digest, Sha256};

use crate::calendar::{Calendar, rules};
use crate::catalog::{Catalog, Tier};
use crate::deadline::{self, Limits};
use crate::summary::CaseSummary;

/// Changes whenever what the projections hold changes shape, so stores rebuild them.
const PROJECTIONS_VERSION: u32 = 2;

/// What legal-time projections are computed from.
#[derive(Debug)]
pub struct Clock {
    here: Tier,
    calendar: Option<Arc<Calendar>>,
    /// Items with a time limit (即办件 have none).
    limits: BTreeMap<String, Limits>,
    /// Every item's route step limits, in route order (即办件 included).
    step_limits: BTreeMap<String, Vec<(String, u32)>>,
    offset: FixedOffset,
    fingerprint: String,
}

impl Clock {
    pub fn new(
        here: Tier,
        calendar: Option<Arc<Calendar>>,
        catalog: &Catalog,
        offset: FixedOffset,
    ) -> Self {
        let limits: BTreeMap<String, Limits> = catalog
            .items()
            .iter()
            .filter_map(|i| Some((i.code.clone(), Limits::of(i)?)))
            .collect();
        let step_limits: BTreeMap<String, Vec<(String, u32)>> = catalog
            .items()
            .iter()
            .map(|i| {
                let steps = i
                    .route
                    .iter()
                    .map(|s| (s.step.clone(), s.limit_days))
                    .collect();
                (i.code.clone(), steps)
            })
            .collect();
        // Debug output of these types is deterministic (ordered sets and maps, plain fields).
        let text = format!(
            "queue-1|{PROJECTIONS_VERSION}|{}|{}|{}|{:?}|{:?}|{:?}",
            rules::RULES_VERSION,
            here.as_str(),
            offset.local_minus_utc(),
            calendar.as_deref(),
            limits,
            step_limits,
        );
        let fingerprint = hex::encode(Sha256::digest(text.as_bytes()));
        Self {
            here,
            calendar,
            limits,
            step_limits,
            offset,
            fingerprint,
        }
    }

    /// Identifies the clock's inputs: equal fingerprints give equal projections.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn here(&self) -> Tier {
        self.here
    }

    pub fn calendar(&self) -> Option<&Arc<Calendar>> {
        self.calendar.as_ref()
    }

    pub fn offset(&self) -> FixedOffset {
        self.offset
    }

    /// The item's time limits; `None` for 即办件 and items not in the catalogue.
    pub fn limits(&self, item: &str) -> Option<&Limits> {
        self.limits.get(item)
    }

    /// The limit in working days of route step `step` at `index` of `item`'s route.
    pub fn step_limit(&self, item: &str, index: usize, step: &str) -> Option<u32> {
        let (name, days) = self.step_limits.get(item)?.get(index)?;
        (name == step).then_some(*days)
    }

    /// The date that presses first on the case on `today` (`None`: undated).
    pub fn pressing_date(&self, s: &CaseSummary, today: NaiveDate) -> Option<NaiveDate> {
        let calendar = self.calendar.as_deref()?;
        deadline::pressing_date(
            &s.marks,
            self.limits.get(&s.item_code),
            calendar,
            today,
            self.offset,
        )
    }

    /// The date from which the case shows in supervision (电子监察): yellow one working day
    /// before, red after ([`deadline::watch_date`]).
    pub fn watch_date(&self, s: &CaseSummary) -> Option<NaiveDate> {
        let calendar = self.calendar.as_deref()?;
        deadline::watch_date(
            &s.marks,
            self.limits.get(&s.item_code),
            calendar,
            self.offset,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadline::Warning;
    use crate::event::{Event, EventKind};
    use crate::fold::Status;
    use crate::node::Node;
    use crate::queue::OPEN;
    use crate::store::CaseQuery;
    use crate::test_nodes::{ev, fill, node};

    fn all_summaries(node: &Node) -> Vec<CaseSummary> {
        node.store
            .list_cases(&CaseQuery {
                q: None,
                status: None,
                limit: 1_000_000,
            })
            .unwrap()
    }

    /// Supervision counted from scratch: every open case's legal time today, the worst
    /// mark not none, in the order of its watch date.
    fn supervision_by_hand(node: &Node) -> (Vec<String>, u64, u64) {
        let clock = crate::queue::current_clock(node);
        let mut rows: Vec<(NaiveDate, crate::hlc::Hlc, String, Warning)> = all_summaries(node)
            .into_iter()
            .filter(|s| OPEN.contains(&s.status))
            .filter_map(|s| {
                let worst = node.legal_time(&s.item_code, &s.marks).worst();
                (worst != Warning::None)
                    .then(|| (clock.watch_date(&s).unwrap(), s.accepted_at, s.id, worst))
            })
            .collect();
        rows.sort();
        let red = rows.iter().filter(|r| r.3 == Warning::Red).count() as u64;
        let yellow = rows.len() as u64 - red;
        (rows.into_iter().map(|r| r.2).collect(), red, yellow)
    }

    async fn supervision_by_index(node: &Node) -> (Vec<String>, u64, u64) {
        let mut ids = Vec::new();
        loop {
            let board = crate::supervision::board(node, ids.len(), 7).await.unwrap();
            if board.rows.is_empty() {
                return (ids, board.red, board.yellow);
            }
            ids.extend(board.rows.into_iter().map(|(s, _)| s.id));
        }
    }

    async fn assert_projections_hold(node: &Node, what: &str) {
        let by_hand = supervision_by_hand(node);
        assert!(!by_hand.0.is_empty(), "{what}: some cases to watch");
        assert_eq!(
            supervision_by_index(node).await,
            by_hand,
            "{what}: supervision"
        );
        let kept = crate::stats::gather(node).await.unwrap();
        let clock = crate::queue::current_clock(node);
        let summaries = all_summaries(node);
        let open: u64 = summaries.iter().map(|s| s.follow_ups.len() as u64).sum();
        let counted = crate::stats::compute(&summaries, &clock, &node.catalog, node.today(), open);
        assert_eq!(kept, counted, "{what}: statistics");
        assert!(
            kept.satisfaction.rated > 0 && kept.on_time.decided > 0,
            "{what}"
        );
        let follow_ups = crate::followups::page(node, 0, 1000).unwrap();
        assert_eq!(follow_ups.total, open, "{what}: open follow-ups");
        assert!(open > 0, "{what}: some bad ratings");
    }

    /// The writer's legal-time projections — supervision's index, the statistics' counters,
    /// the open follow-ups — always equal a count from scratch over every case: after
    /// filing, after events move cases (and close a follow-up), and after a clock change
    /// rebuilt them.
    #[tokio::test]
    async fn the_writers_projections_equal_a_count_from_scratch() {
        let dir = tempfile::tempdir().unwrap();
        let node = node(dir.path(), "county", "430181000000");
        fill(&node, 0..126).await;
        assert_projections_hold(&node, "filed").await;

        let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
        // Passes, withdrawals and the county's closing comments on follow-ups.
        for i in 0..30usize {
            let id = format!("case-{i:03}");
            let Some(case) = node.store.case(&id).unwrap() else {
                continue;
            };
            let state = case.state();
            let event = if let Some(open) = crate::summary::CaseSummary::of(&case, &state)
                .follow_ups
                .first()
            {
                Event {
                    payload: serde_json::json!({"text": "已回访", "follow_up": open.rating_event_id}),
                    ..ev(i, 20, now, Tier::County, EventKind::Comment)
                }
            } else if state.status == Status::UnderReview && state.tier == Some(Tier::Town) {
                ev(i, 20, now, Tier::Town, EventKind::ReviewPassed)
            } else {
                ev(i, 20, now, Tier::Village, EventKind::Withdrawn)
            };
            let _ = node
                .store
                .append_event(&id, event, crate::case_doc::node_actor("n"))
                .await;
        }
        assert_projections_hold(&node, "moved").await;

        // Another clock writes: the projections are marked stale, and the next look
        // rebuilds them with the node's own.
        let offset = *node.local_now().offset();
        let other = Arc::new(Clock::new(Tier::County, None, &node.catalog, offset));
        node.store.set_queue_clock(other);
        fill(&node, 126..140).await;
        assert_eq!(node.store.queue_fingerprint().unwrap(), None);
        assert_projections_hold(&node, "rebuilt").await;
    }
}
