//! Workflow state as a deterministic fold over a case's events (DESIGN.md §3).
//!
//! Events are sorted by `(at, node, id)`, duplicates (same id) counted once, and applied in
//! that order. An event that is not legal where it falls is kept and listed as superseded with
//! the reason; when a withdrawal and a decision cross, the case carries a conflict until a
//! person resolves it: the next event that moves the case on, or a `comment` with
//! `"resolve": true`. The same events always give the same state, byte for byte.
//!
//! The fold also keeps the marks legal time is counted from (`accepted_at`, `step_since`,
//! `pauses`, `decided_at`, `closed_at`); [`crate::deadline`] turns them into due dates.
//!
//! The baton rule: the current step of the route names a tier (`town:review`); only an event
//! recorded at a node of that tier moves the case. Decisions (`review_passed`, `approved`,
//! `rejected`, `supplement_requested`) must fall on a step of their kind; the village then
//! collects supplements, issues the result and records the pick-up. `rated`, `urged` and
//! `comment` never move the case, nor does `notice_sent`. A kind this version does not know is kept and superseded.

use serde::{Deserialize, Serialize};

use crate::catalog::Tier;
use crate::event::{Event, EventKind};
use crate::hlc::Hlc;

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// No legal `accepted` event yet.
    New,
    UnderReview,
    SupplementRequested,
    ReadyToIssue,
    Rejected,
    Issued,
    Completed,
    Withdrawn,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::New,
        Status::UnderReview,
        Status::SupplementRequested,
        Status::ReadyToIssue,
        Status::Rejected,
        Status::Issued,
        Status::Completed,
        Status::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::UnderReview => "under_review",
            Status::SupplementRequested => "supplement_requested",
            Status::ReadyToIssue => "ready_to_issue",
            Status::Rejected => "rejected",
            Status::Issued => "issued",
            Status::Completed => "completed",
            Status::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn zh(self) -> &'static str {
        match self {
            Status::New => "未受理",
            Status::UnderReview => "审核中",
            Status::SupplementRequested => "待补正",
            Status::ReadyToIssue => "待出件",
            Status::Rejected => "不予许可",
            Status::Issued => "已出件",
            Status::Completed => "已办结",
            Status::Withdrawn => "已撤回",
        }
    }
}

/// An event that did not move the case, and why: in Chinese for the people who read the
/// case, in English beside it for the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superseded {
    pub event_id: String,
    pub reason: String,
    #[serde(default)]
    pub reason_en: String,
}

/// Why the fold did not let an event move the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Why {
    pub zh: &'static str,
    pub en: &'static str,
}

impl Why {
    const fn new(zh: &'static str, en: &'static str) -> Self {
        Self { zh, en }
    }
}

/// The state every node computes from the same events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseState {
    pub status: Status,
    /// The current step of the route (`town:review`), `None` once the case is closed.
    pub step: Option<String>,
    /// The tier holding the baton for `step`.
    pub tier: Option<Tier>,
    pub accepted_at: Option<Hlc>,
    /// Whether a decision (review passed, approved, rejected) has been taken.
    pub decided: bool,
    pub superseded: Vec<Superseded>,
    /// Set when events crossed in a way a person must resolve.
    pub conflict: Option<String>,
    /// Distinct events folded.
    pub event_count: usize,
    /// Index of `step` in the route (`None` off the route: supplement, pick-up, closed).
    pub step_index: Option<usize>,
    /// The route step a supplement returns to.
    pub resume_index: Option<usize>,
    /// The materials the last supplement request listed.
    pub missing_materials: Vec<String>,
    /// When the current step began (the stamp of the event that moved the case there).
    pub step_since: Option<Hlc>,
    /// Supplement requests that stopped the legal clock (`to` is `None` while still waiting).
    pub pauses: Vec<Pause>,
    /// When the deciding event (review passed to the result, approved, rejected) was stamped.
    pub decided_at: Option<Hlc>,
    /// When the case closed (completed, rejected, withdrawn).
    pub closed_at: Option<Hlc>,
    /// Each stay of the case on a route step that ended, in fold order (statistics count
    /// the working days each step took from them).
    pub visits: Vec<Visit>,
}

/// A stay of a case on a route step: from the event that moved it there to the one that
/// moved it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visit {
    /// The step's index in the route.
    pub index: usize,
    pub step: String,
    pub since: Hlc,
    pub until: Hlc,
}

/// A supplement request's stop of the legal clock: from the request to the materials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub from: Hlc,
    pub to: Option<Hlc>,
}

impl CaseState {
    fn initial() -> Self {
        Self {
            status: Status::New,
            step: None,
            tier: None,
            accepted_at: None,
            decided: false,
            superseded: Vec::new(),
            conflict: None,
            event_count: 0,
            step_index: None,
            resume_index: None,
            missing_materials: Vec::new(),
            step_since: None,
            pauses: Vec::new(),
            decided_at: None,
            closed_at: None,
            visits: Vec::new(),
        }
    }
}

/// Folds `events` over the case's `route` (the route as it was when the case was accepted).
pub fn fold(route: &[String], events: &[Event]) -> CaseState {
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    sorted.dedup_by(|a, b| a.id == b.id);
    let mut state = CaseState::initial();
    state.event_count = sorted.len();
    for event in sorted {
        let before = (state.status, state.step.clone());
        let left = (state.step_index, state.step_since);
        match apply(&mut state, route, event) {
            Err(why) => state.superseded.push(Superseded {
                event_id: event.id.clone(),
                reason: why.zh.to_string(),
                reason_en: why.en.to_string(),
            }),
            Ok(()) => {
                // A person who moves the case on, or says so in a comment, resolves a conflict.
                let moved = before != (state.status, state.step.clone());
                if moved {
                    if let ((Some(index), Some(since)), Some(step)) = (left, &before.1) {
                        state.visits.push(Visit {
                            index,
                            step: step.clone(),
                            since,
                            until: event.at,
                        });
                    }
                    state.step_since = Some(event.at);
                    if state.step.is_none() {
                        state.closed_at = Some(event.at);
                    }
                }
                let resolves = event.kind == EventKind::Comment
                    && event.payload.get("resolve").and_then(|v| v.as_bool()) == Some(true);
                if moved || resolves {
                    state.conflict = None;
                }
            }
        }
    }
    state
}

fn apply(state: &mut CaseState, route: &[String], event: &Event) -> Result<(), Why> {
    match &event.kind {
        EventKind::Accepted => {
            if state.status != Status::New {
                return Err(Why::new("该办件已受理过", "the case was already accepted"));
            }
            if event.tier != Tier::Village
                || route.first().map(String::as_str) != Some("village:accept")
            {
                return Err(Why::new(
                    "只有村级节点可以受理办件",
                    "only the village accepts a case",
                ));
            }
            state.accepted_at = Some(event.at);
            enter_step(state, route, 1);
            Ok(())
        }
        EventKind::Withdrawn => {
            if event.tier != Tier::Village {
                return Err(Why::new(
                    "撤回须在村级节点登记",
                    "a withdrawal is recorded at the village",
                ));
            }
            match state.status {
                Status::New => Err(Why::new("该办件尚未受理", "the case has not been accepted")),
                Status::Withdrawn => {
                    Err(Why::new("该办件已撤回", "the case was already withdrawn"))
                }
                _ if state.decided => {
                    state.conflict =
                        Some("撤回与审核决定交叉：请以新的办理操作或“解决冲突”备注处理".into());
                    Err(Why::new(
                        "撤回之前已作出审核决定",
                        "a decision was taken before the withdrawal",
                    ))
                }
                Status::UnderReview | Status::SupplementRequested | Status::ReadyToIssue => {
                    close(state, Status::Withdrawn);
                    Ok(())
                }
                _ => Err(Why::new("该办件已办结或关闭", "the case is closed")),
            }
        }
        EventKind::ReviewPassed => {
            decision(state, event, &["review"])?;
            advance(state, route);
            Ok(())
        }
        EventKind::Approved => {
            decision(state, event, &["approve"])?;
            advance(state, route);
            Ok(())
        }
        EventKind::Rejected => {
            decision(state, event, &["review", "approve"])?;
            close(state, Status::Rejected);
            Ok(())
        }
        EventKind::SupplementRequested => {
            holds_baton(state, event, &["review", "approve"])?;
            state.resume_index = state.step_index;
            state.missing_materials = event
                .payload
                .get("materials")
                .and_then(|m| m.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            state.status = Status::SupplementRequested;
            state.pauses.push(Pause {
                from: event.at,
                to: None,
            });
            state.step = Some("village:supplement".into());
            state.tier = Some(Tier::Village);
            state.step_index = None;
            Ok(())
        }
        EventKind::SupplementProvided => {
            if state.status != Status::SupplementRequested {
                return Err(Why::new("未要求补正材料", "no supplement was requested"));
            }
            if event.tier != Tier::Village {
                return Err(Why::new(
                    "补正材料须在村级节点接收",
                    "supplements are received at the village",
                ));
            }
            let back = state.resume_index.take().unwrap_or(1);
            state.missing_materials.clear();
            if let Some(pause) = state.pauses.last_mut() {
                pause.to = Some(event.at);
            }
            enter_step(state, route, back);
            Ok(())
        }
        EventKind::Issued => {
            if state.status != Status::ReadyToIssue {
                return Err(Why::new(
                    "该办件尚未到出件环节",
                    "the case is not ready to issue",
                ));
            }
            if event.tier != Tier::Village {
                return Err(Why::new(
                    "结果须由村级节点出件",
                    "the village issues the result",
                ));
            }
            state.status = Status::Issued;
            state.step = Some("village:pickup".into());
            state.tier = Some(Tier::Village);
            state.step_index = None;
            Ok(())
        }
        EventKind::PickedUp => {
            if state.status != Status::Issued {
                return Err(Why::new("结果尚未出件", "the result has not been issued"));
            }
            if event.tier != Tier::Village {
                return Err(Why::new(
                    "领取须在村级节点登记",
                    "the pick-up is recorded at the village",
                ));
            }
            close(state, Status::Completed);
            Ok(())
        }
        EventKind::Rated => match state.status {
            Status::Issued | Status::Completed | Status::Rejected => Ok(()),
            _ => Err(Why::new(
                "出件之后才能评价",
                "a rating follows the hand-out",
            )),
        },
        EventKind::Urged => {
            if event.tier != Tier::County {
                return Err(Why::new("催办由县级发出", "the county urges"));
            }
            match state.step {
                Some(_) => Ok(()),
                None => Err(Why::new("该办件已办结或关闭", "the case is closed")),
            }
        }
        EventKind::Comment | EventKind::NoticeSent => Ok(()),
        EventKind::Other(_) => Err(Why::new(
            "本版本不能处理此类操作",
            "not handled by this version",
        )),
    }
}

/// The step's action (`review` in `town:review`).
fn action(step: &str) -> &str {
    step.split_once(':').map_or(step, |(_, a)| a)
}

/// Only the tier holding the baton, at a step of one of `actions`, moves the case.
fn holds_baton(state: &CaseState, event: &Event, actions: &[&str]) -> Result<(), Why> {
    let Some(step) = state.step.as_deref() else {
        return Err(Why::new("该办件不在办理中", "the case is not open"));
    };
    if state.step_index.is_none() || !actions.contains(&action(step)) {
        return Err(Why::new(
            "该办件当前环节不能作出此项决定",
            "the case is not at a step that takes this decision",
        ));
    }
    if state.tier != Some(event.tier) {
        return Err(Why::new(
            "该办件当前由其他层级办理",
            "another tier holds the baton",
        ));
    }
    Ok(())
}

/// A decision: legal only with the baton; one that crosses a withdrawal is a conflict.
fn decision(state: &mut CaseState, event: &Event, actions: &[&str]) -> Result<(), Why> {
    if state.status == Status::Withdrawn {
        state.conflict = Some("审核决定与撤回交叉：请以新的办理操作或“解决冲突”备注处理".into());
        return Err(Why::new(
            "作出决定之前办件已撤回",
            "the case was withdrawn before the decision",
        ));
    }
    holds_baton(state, event, actions)?;
    state.decided = true;
    state.decided_at = Some(event.at);
    Ok(())
}

fn advance(state: &mut CaseState, route: &[String]) {
    let next = state.step_index.map_or(route.len(), |i| i + 1);
    enter_step(state, route, next);
}

fn close(state: &mut CaseState, status: Status) {
    state.status = status;
    state.step = None;
    state.tier = None;
    state.step_index = None;
}

/// Moves the baton to `route[index]`, or closes the case past the end.
fn enter_step(state: &mut CaseState, route: &[String], index: usize) {
    let Some(step) = route.get(index) else {
        close(state, Status::Completed);
        return;
    };
    state.status = if step == "village:issue" {
        Status::ReadyToIssue
    } else {
        Status::UnderReview
    };
    state.tier = step.split_once(':').and_then(|(t, _)| Tier::parse(t));
    state.step = Some(step.clone());
    state.step_index = Some(index);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route() -> Vec<String> {
        ["village:accept", "town:review", "village:issue"]
            .map(String::from)
            .to_vec()
    }

    fn ev(id: &str, ms: u64, node: &str, tier: Tier, kind: EventKind) -> Event {
        Event {
            id: id.into(),
            at: Hlc {
                wall_ms: ms,
                counter: 0,
            },
            node: node.into(),
            tier,
            user: "u".into(),
            role: "clerk".into(),
            kind,
            payload: serde_json::Value::Null,
            sig: None,
        }
    }

    #[test]
    fn accepted_hands_the_baton_to_the_town() {
        let s = fold(
            &route(),
            &[ev("a", 1, "v1", Tier::Village, EventKind::Accepted)],
        );
        assert_eq!(s.status, Status::UnderReview);
        assert_eq!(s.step.as_deref(), Some("town:review"));
        assert_eq!(s.tier, Some(Tier::Town));
    }

    #[test]
    fn immediate_item_is_ready_to_issue_at_once() {
        let r = ["village:accept", "village:issue"]
            .map(String::from)
            .to_vec();
        let s = fold(&r, &[ev("a", 1, "v1", Tier::Village, EventKind::Accepted)]);
        assert_eq!(
            (s.status, s.tier),
            (Status::ReadyToIssue, Some(Tier::Village))
        );
    }

    #[test]
    fn withdrawal_before_acceptance_is_superseded_and_kept() {
        let events = [
            ev("w", 1, "v1", Tier::Village, EventKind::Withdrawn),
            ev("a", 2, "v1", Tier::Village, EventKind::Accepted),
        ];
        let s = fold(&route(), &events);
        assert_eq!(s.status, Status::UnderReview);
        assert_eq!(s.superseded.len(), 1);
        assert_eq!(s.superseded[0].event_id, "w");
        assert_eq!(s.event_count, 2);
    }

    #[test]
    fn withdrawal_closes_and_a_second_one_is_superseded() {
        let events = [
            ev("a", 1, "v1", Tier::Village, EventKind::Accepted),
            ev("c", 2, "t1", Tier::Town, EventKind::Comment),
            ev("w", 3, "v1", Tier::Village, EventKind::Withdrawn),
            ev("w2", 4, "v1", Tier::Village, EventKind::Withdrawn),
            ev("t", 5, "t1", Tier::Town, EventKind::Withdrawn),
        ];
        let s = fold(&route(), &events);
        assert_eq!(s.status, Status::Withdrawn);
        assert_eq!((s.step, s.tier), (None, None));
        let ids: Vec<_> = s.superseded.iter().map(|x| x.event_id.as_str()).collect();
        assert_eq!(ids, ["w2", "t"]);
    }

    #[test]
    fn ties_on_the_clock_break_by_node_then_id() {
        let events = [
            ev("b", 1, "v2", Tier::Village, EventKind::Accepted),
            ev("a", 1, "v1", Tier::Village, EventKind::Accepted),
        ];
        let s = fold(&route(), &events);
        assert_eq!(s.superseded[0].event_id, "b");
    }

    #[test]
    fn the_whole_flow_village_town_village() {
        let mut events = vec![ev("a", 1, "v1", Tier::Village, EventKind::Accepted)];
        let mut sup = ev("s", 2, "t1", Tier::Town, EventKind::SupplementRequested);
        sup.payload = serde_json::json!({"materials": ["户口簿"]});
        events.push(sup);
        let s = fold(&route(), &events);
        assert_eq!(s.status, Status::SupplementRequested);
        assert_eq!(
            (s.step.as_deref(), s.tier),
            (Some("village:supplement"), Some(Tier::Village))
        );
        assert_eq!(s.missing_materials, ["户口簿"]);
        events.push(ev(
            "p",
            3,
            "v1",
            Tier::Village,
            EventKind::SupplementProvided,
        ));
        assert_eq!(fold(&route(), &events).step.as_deref(), Some("town:review"));
        events.push(ev("r", 4, "t1", Tier::Town, EventKind::ReviewPassed));
        let s = fold(&route(), &events);
        assert_eq!(
            (s.status, s.tier),
            (Status::ReadyToIssue, Some(Tier::Village))
        );
        events.push(ev("i", 5, "v1", Tier::Village, EventKind::Issued));
        assert_eq!(fold(&route(), &events).status, Status::Issued);
        events.push(ev("k", 6, "v1", Tier::Village, EventKind::PickedUp));
        let s = fold(&route(), &events);
        assert_eq!((s.status, s.step), (Status::Completed, None));
        assert!(s.superseded.is_empty(), "{:?}", s.superseded);
    }

    #[test]
    fn only_the_tier_holding_the_baton_decides() {
        let events = [
            ev("a", 1, "v1", Tier::Village, EventKind::Accepted),
            ev("x", 2, "v1", Tier::Village, EventKind::ReviewPassed),
            ev("y", 3, "c", Tier::County, EventKind::Approved),
            ev("z", 4, "v1", Tier::Village, EventKind::Issued),
        ];
        let s = fold(&route(), &events);
        assert_eq!(s.status, Status::UnderReview);
        let ids: Vec<_> = s.superseded.iter().map(|x| x.event_id.as_str()).collect();
        assert_eq!(ids, ["x", "y", "z"]);
    }

    #[test]
    fn county_step_needs_approval_and_rejection_closes() {
        let r = [
            "village:accept",
            "town:review",
            "county:approve",
            "village:issue",
        ]
        .map(String::from)
        .to_vec();
        let mut events = vec![
            ev("a", 1, "v1", Tier::Village, EventKind::Accepted),
            ev("r", 2, "t1", Tier::Town, EventKind::ReviewPassed),
        ];
        let s = fold(&r, &events);
        assert_eq!(
            (s.step.as_deref(), s.tier),
            (Some("county:approve"), Some(Tier::County))
        );
        events.push(ev("n", 3, "c", Tier::County, EventKind::Rejected));
        let s = fold(&r, &events);
        assert_eq!((s.status, s.step), (Status::Rejected, None));
    }

    #[test]
    fn withdrawal_and_decision_crossing_is_a_conflict_either_way() {
        for (w, d) in [(2, 3), (3, 2)] {
            let events = [
                ev("a", 1, "v1", Tier::Village, EventKind::Accepted),
                ev("w", w, "v1", Tier::Village, EventKind::Withdrawn),
                ev("d", d, "t1", Tier::Town, EventKind::ReviewPassed),
            ];
            let s = fold(&route(), &events);
            assert!(s.conflict.is_some(), "w at {w}, d at {d}");
            assert_eq!(s.superseded.len(), 1);
            assert_eq!(s.event_count, 3);
        }
    }

    #[test]
    fn a_conflict_stays_until_the_case_moves_on_or_a_comment_resolves_it() {
        let base = [
            ev("a", 1, "v1", Tier::Village, EventKind::Accepted),
            ev("d", 2, "t1", Tier::Town, EventKind::ReviewPassed),
            ev("w", 3, "v1", Tier::Village, EventKind::Withdrawn),
        ];
        let s = fold(&route(), &base);
        assert!(s.conflict.is_some());
        let mut plain = base.to_vec();
        plain.push(ev("c", 4, "t1", Tier::Town, EventKind::Comment));
        assert!(fold(&route(), &plain).conflict.is_some());
        let mut resolved = base.to_vec();
        let mut c = ev("c", 4, "v1", Tier::Village, EventKind::Comment);
        c.payload = serde_json::json!({"text": "申请人同意领取", "resolve": true});
        resolved.push(c);
        assert_eq!(fold(&route(), &resolved).conflict, None);
        let mut issued = base.to_vec();
        issued.push(ev("i", 5, "v1", Tier::Village, EventKind::Issued));
        let s = fold(&route(), &issued);
        assert_eq!((s.conflict, s.status), (None, Status::Issued));
        assert_eq!(s.superseded.len(), 1, "the withdrawal stays, superseded");
    }

    #[test]
    fn the_fold_keeps_the_marks_of_legal_time() {
        let mut sup = ev("s", 20, "t1", Tier::Town, EventKind::SupplementRequested);
        sup.payload = serde_json::json!({"materials": ["户口簿"]});
        let events = [
            ev("a", 10, "v1", Tier::Village, EventKind::Accepted),
            sup,
            ev("p", 30, "v1", Tier::Village, EventKind::SupplementProvided),
            ev("r", 40, "t1", Tier::Town, EventKind::ReviewPassed),
        ];
        let s = fold(&route(), &events);
        let at = |ms| Hlc {
            wall_ms: ms,
            counter: 0,
        };
        assert_eq!(s.accepted_at, Some(at(10)));
        assert_eq!(
            s.pauses,
            [Pause {
                from: at(20),
                to: Some(at(30))
            }]
        );
        assert_eq!(s.decided_at, Some(at(40)));
        assert_eq!(s.step_since, Some(at(40)));
        assert_eq!(s.closed_at, None);
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        let kinds = prop_oneof![
            Just(EventKind::Accepted),
            Just(EventKind::Withdrawn),
            Just(EventKind::Comment),
            Just(EventKind::ReviewPassed),
            Just(EventKind::Approved),
            Just(EventKind::Rejected),
            Just(EventKind::SupplementRequested),
            Just(EventKind::SupplementProvided),
            Just(EventKind::Issued),
            Just(EventKind::PickedUp),
        ];
        let tiers = prop_oneof![Just(Tier::Village), Just(Tier::Town), Just(Tier::County)];
        (0u64..20, 0u8..3, 0u32..1000, kinds, tiers).prop_map(|(ms, node, id, kind, tier)| {
            ev(&format!("e{id}"), ms, &format!("n{node}"), tier, kind)
        })
    }

    proptest! {
        // Any delivery order with any duplication folds to the same state.
        #[test]
        fn order_and_duplicates_do_not_matter(
            events in proptest::collection::vec(arb_event(), 0..12),
            seed in any::<u64>(),
        ) {
            // Ids are unique per event content in real logs; make them so here.
            let events: Vec<Event> = events.into_iter().enumerate()
                .map(|(i, mut e)| { e.id = format!("{}-{i}", e.id); e }).collect();
            let reference = fold(&route(), &events);
            let mut shuffled = events.clone();
            shuffled.extend(events.iter().take((seed % 4) as usize).cloned());
            let n = shuffled.len().max(1);
            shuffled.rotate_left((seed as usize) % n);
            shuffled.reverse();
            let other = fold(&route(), &shuffled);
            prop_assert_eq!(
                serde_json::to_string(&reference).unwrap(),
                serde_json::to_string(&other).unwrap()
            );
        }
    }
}
