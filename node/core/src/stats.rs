//! Statistics for the county console (统计分析, DESIGN.md §1, §9): cases by item, village,
//! town, accepted month and status; the on-time rate (按时办结率) of decided cases; the
//! average working days each route step took; satisfaction (好差评) and the open follow-ups
//! of bad ratings. It shows what this node holds: every case at the county, its own at a
//! village or town.
//!
//! - Counts and the on-time rate come from the list projection alone ([`CaseSummary`] and its
//!   legal-time marks): `on_time` is [`crate::deadline::legal_time`]'s, counted on today's
//!   catalogue limits and the working-day calendar. Immediate items (即办件) have no limit and
//!   count neither on time nor late.
//! - Step days and satisfaction need the events, which the projection does not keep (it holds
//!   only the current step's start). So [`gather`] loads the document of every case that was
//!   decided or handed out (at most one read and one Automerge load per such case, a few KB
//!   each). That is linear in the closed cases held: a few seconds for tens of thousands of
//!   cases, fine for a county console opened now and then, not for a page polled every
//!   second; a counter projection kept by the writer would make it flat.
//! - The working days of a step: for each move of the case off a route step (a legal event
//!   that changed the status or the step; superseded events move nothing), the working days
//!   from the day the step began to the day it ended (from the day after the start up to and
//!   including the end, as legal time counts: a step begun and ended the same day took 0).
//!   A step visited twice (review, supplement, review again) counts once for the case, its
//!   visits added up; the time the materials were awaited belongs to no route step.
//! - Satisfaction counts each rated case once, at its latest rating ([`rating::latest`]);
//!   满意率 is the share of levels 4 and 5 among rated cases. Follow-ups are per bad rating.
//!
//! [`Tally`] is the pure computation (summaries and documents in, [`Stats`] out); [`gather`]
//! feeds it from a node's store.

use std::collections::BTreeMap;

use chrono::{FixedOffset, NaiveDate};
use serde::Serialize;

use crate::calendar::Calendar;
use crate::case_doc::Case;
use crate::catalog::Catalog;
use crate::deadline::{Limits, legal_time, local_date};
use crate::event::Event;
use crate::fold::{Status, fold};
use crate::node::Node;
use crate::rating;
use crate::store::{CaseQuery, StoreError};
use crate::summary::CaseSummary;

/// Most cases [`gather`] reads (newest first); above it the statistics say `truncated`.
pub const MAX_CASES: usize = 200_000;

/// One row of a breakdown: a key (item code, division code, `2026-05`, status), how many
/// cases, and how the decided ones kept their promised limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Count {
    pub key: String,
    /// What a person reads: the item's name, the status in Chinese; a division's code (the
    /// node holds no division names) and the month as they are.
    pub name: String,
    pub cases: u64,
    /// Decided cases (办结: review passed to the result, approved, rejected).
    pub decided: u64,
    pub on_time: u64,
    pub late: u64,
    /// `on_time / (on_time + late)`, `None` when no decided case was counted.
    pub on_time_rate: Option<f64>,
}

impl Count {
    fn new(key: &str, name: &str) -> Self {
        Self {
            key: key.to_string(),
            name: name.to_string(),
            cases: 0,
            decided: 0,
            on_time: 0,
            late: 0,
            on_time_rate: None,
        }
    }

    fn add(&mut self, decided: bool, on_time: Option<bool>) {
        self.cases += 1;
        self.decided += u64::from(decided);
        match on_time {
            Some(true) => self.on_time += 1,
            Some(false) => self.late += 1,
            None => {}
        }
        self.on_time_rate = ratio(self.on_time, self.on_time + self.late);
    }
}

/// The on-time rate (按时办结率) of every decided case.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct OnTime {
    pub decided: u64,
    pub on_time: u64,
    pub late: u64,
    /// Decided cases with no limit (即办件, an item no longer in the catalogue) or a calendar
    /// that does not cover their year.
    pub uncounted: u64,
    pub rate: Option<f64>,
}

/// The working days one route step of one item took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepDays {
    pub item_code: String,
    pub item_name: String,
    /// Position on the item's route.
    pub index: usize,
    pub step: String,
    /// The catalogue's name of the step (`镇审核`), else the step itself.
    pub step_name: String,
    /// The step's limit in the catalogue (working days), if it still has the step.
    pub limit_days: Option<u32>,
    /// Cases that finished the step (a visit at least).
    pub cases: u64,
    pub total_days: u64,
    pub average_days: f64,
    /// Cases whose visits took longer than `limit_days` in all.
    pub over_limit: u64,
}

/// One level of the five (好差评).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelCount {
    pub level: u8,
    pub name: &'static str,
    pub cases: u64,
    /// Share of the rated cases.
    pub share: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Satisfaction {
    /// Best first, every level listed.
    pub levels: Vec<LevelCount>,
    /// Cases with a rating.
    pub rated: u64,
    /// Rated 4 or 5.
    pub satisfied: u64,
    /// 满意率: `satisfied / rated`.
    pub satisfied_rate: Option<f64>,
    /// Rated 1 or 2 (差评).
    pub bad: u64,
    /// Follow-ups of bad ratings not yet closed by the county (回访整改).
    pub open_follow_ups: u64,
}

/// Everything the statistics page, its CSV tables and `GET /api/v1/stats` show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Cases counted.
    pub cases: u64,
    /// More than [`MAX_CASES`] cases are held: only the newest were counted.
    pub truncated: bool,
    /// Documents read for step days and satisfaction.
    pub documents: u64,
    /// The day the statistics were counted (local date).
    pub today: NaiveDate,
    /// Most cases first.
    pub by_item: Vec<Count>,
    pub by_village: Vec<Count>,
    pub by_town: Vec<Count>,
    /// Month of acceptance (local time), oldest first.
    pub by_month: Vec<Count>,
    /// In the order of [`Status::ALL`], statuses with no case left out.
    pub by_status: Vec<Count>,
    pub on_time: OnTime,
    /// By item code, then route order.
    pub by_step: Vec<StepDays>,
    /// Steps of cases that could not be counted (no calendar, or a year it does not cover).
    pub uncounted_steps: u64,
    pub satisfaction: Satisfaction,
}

/// What the counts are measured against.
#[derive(Debug, Clone, Copy)]
pub struct Basis<'a> {
    pub catalog: &'a Catalog,
    /// `None`: no working-day calendar, so neither legal time nor step days are counted.
    pub calendar: Option<&'a Calendar>,
    pub offset: FixedOffset,
    pub today: NaiveDate,
}

/// Whether [`Tally::add_case`] wants the case's document: it was decided or handed out (a
/// 即办件 is handed out with no decision).
pub fn needs_document(summary: &CaseSummary) -> bool {
    summary.marks.decided_at.is_some() || rating::rateable(summary.status)
}

/// The statistics being counted: add every summary, and the documents
/// [`needs_document`] asks for, then [`Tally::finish`].
#[derive(Debug)]
pub struct Tally<'a> {
    basis: Basis<'a>,
    cases: u64,
    documents: u64,
    by_item: BTreeMap<String, Count>,
    by_village: BTreeMap<String, Count>,
    by_town: BTreeMap<String, Count>,
    by_month: BTreeMap<String, Count>,
    by_status: BTreeMap<Status, Count>,
    on_time: OnTime,
    /// `(item code, route index, step)` → the tally.
    by_step: BTreeMap<(String, usize, String), StepDays>,
    uncounted_steps: u64,
    levels: BTreeMap<u8, u64>,
    open_follow_ups: u64,
}

impl<'a> Tally<'a> {
    pub fn new(basis: Basis<'a>) -> Self {
        Self {
            basis,
            cases: 0,
            documents: 0,
            by_item: BTreeMap::new(),
            by_village: BTreeMap::new(),
            by_town: BTreeMap::new(),
            by_month: BTreeMap::new(),
            by_status: BTreeMap::new(),
            on_time: OnTime::default(),
            by_step: BTreeMap::new(),
            uncounted_steps: 0,
            levels: BTreeMap::new(),
            open_follow_ups: 0,
        }
    }

    /// Counts one case from its list projection.
    pub fn add_summary(&mut self, s: &CaseSummary) {
        let b = self.basis;
        self.cases += 1;
        let decided = s.marks.decided_at.is_some();
        let on_time = match (decided, b.calendar) {
            (true, Some(calendar)) => {
                let limits = b.catalog.get(&s.item_code).and_then(Limits::of);
                legal_time(&s.marks, limits.as_ref(), calendar, b.today, b.offset).on_time
            }
            _ => None,
        };
        if decided {
            self.on_time.decided += 1;
            match on_time {
                Some(true) => self.on_time.on_time += 1,
                Some(false) => self.on_time.late += 1,
                None => self.on_time.uncounted += 1,
            }
        }
        let item_name = b
            .catalog
            .get(&s.item_code)
            .map_or(s.item_name.as_str(), |i| i.name.as_str());
        let accepted = s
            .marks
            .accepted_at
            .or(Some(s.accepted_at).filter(|a| a.wall_ms > 0));
        let month = accepted.map_or_else(
            || "未受理".to_string(),
            |at| local_date(at, b.offset).format("%Y-%m").to_string(),
        );
        let rows = [
            (&mut self.by_item, &s.item_code, item_name),
            (&mut self.by_village, &s.village, s.village.as_str()),
            (&mut self.by_town, &s.town, s.town.as_str()),
            (&mut self.by_month, &month, month.as_str()),
        ];
        for (map, key, name) in rows {
            map.entry(key.clone())
                .or_insert_with(|| Count::new(key, name))
                .add(decided, on_time);
        }
        self.by_status
            .entry(s.status)
            .or_insert_with(|| Count::new(s.status.as_str(), s.status.zh()))
            .add(decided, on_time);
    }

    /// Counts the step days and the rating of one case from its document.
    pub fn add_case(&mut self, case: &Case) {
        let b = self.basis;
        self.documents += 1;
        let item = b.catalog.get(&case.item_code);
        // The case's days per step, its visits added up; `None` once a visit is uncounted.
        let mut per_step: BTreeMap<(usize, String), Option<u32>> = BTreeMap::new();
        for (index, step, days) in step_visits(case, b.calendar, b.offset) {
            let total = per_step.entry((index, step)).or_insert(Some(0));
            *total = total.zip(days).map(|(t, d)| t.saturating_add(d));
        }
        for ((index, step), days) in per_step {
            let Some(days) = days else {
                self.uncounted_steps += 1;
                continue;
            };
            let route_step = item.and_then(|i| i.route.iter().find(|r| r.step == step));
            let row = self
                .by_step
                .entry((case.item_code.clone(), index, step.clone()))
                .or_insert_with(|| StepDays {
                    item_code: case.item_code.clone(),
                    item_name: item.map_or(case.item_name.clone(), |i| i.name.clone()),
                    index,
                    step_name: route_step.map_or(step.clone(), |r| r.name.clone()),
                    step,
                    limit_days: route_step.map(|r| r.limit_days),
                    cases: 0,
                    total_days: 0,
                    average_days: 0.0,
                    over_limit: 0,
                });
            row.cases += 1;
            row.total_days += u64::from(days);
            row.over_limit += u64::from(row.limit_days.is_some_and(|limit| days > limit));
        }
        if let Some(r) = rating::latest(case) {
            *self.levels.entry(r.level).or_default() += 1;
        }
        let open = rating::follow_ups(case, b.calendar, b.offset, b.today)
            .iter()
            .filter(|f| !f.closed)
            .count();
        self.open_follow_ups += open as u64;
    }

    pub fn finish(self, truncated: bool) -> Stats {
        let by_count = |map: BTreeMap<String, Count>| {
            let mut rows: Vec<Count> = map.into_values().collect();
            rows.sort_by(|a, b| b.cases.cmp(&a.cases).then_with(|| a.key.cmp(&b.key)));
            rows
        };
        let mut on_time = self.on_time;
        on_time.rate = ratio(on_time.on_time, on_time.on_time + on_time.late);
        let by_step = self
            .by_step
            .into_values()
            .map(|mut row| {
                row.average_days = average(row.total_days, row.cases);
                row
            })
            .collect();
        let rated: u64 = self.levels.values().sum();
        let level = |l: u8| self.levels.get(&l).copied().unwrap_or(0);
        let satisfied = level(4) + level(5);
        let levels = rating::LEVELS
            .iter()
            .map(|&(l, name)| LevelCount {
                level: l,
                name,
                cases: level(l),
                share: ratio(level(l), rated),
            })
            .collect();
        Stats {
            cases: self.cases,
            truncated,
            documents: self.documents,
            today: self.basis.today,
            by_item: by_count(self.by_item),
            by_village: by_count(self.by_village),
            by_town: by_count(self.by_town),
            by_month: self.by_month.into_values().collect(),
            by_status: self.by_status.into_values().collect(),
            on_time,
            by_step,
            uncounted_steps: self.uncounted_steps,
            satisfaction: Satisfaction {
                levels,
                rated,
                satisfied,
                satisfied_rate: ratio(satisfied, rated),
                bad: (1..=rating::BAD_AT_MOST).map(level).sum(),
                open_follow_ups: self.open_follow_ups,
            },
        }
    }
}

/// The statistics of `summaries` and the documents among `cases` (any order).
pub fn compute(summaries: &[CaseSummary], cases: &[Case], basis: Basis<'_>) -> Stats {
    let mut tally = Tally::new(basis);
    for s in summaries {
        tally.add_summary(s);
    }
    for case in cases {
        tally.add_case(case);
    }
    tally.finish(false)
}

/// The statistics of every case `node` holds (the newest [`MAX_CASES`]), counted today on
/// its calendar. Reads the projections, then the documents [`needs_document`] asks for one
/// at a time: call it from a blocking task.
pub fn gather(node: &Node) -> Result<Stats, StoreError> {
    let summaries = node.store.list_cases(&CaseQuery {
        q: None,
        status: None,
        limit: MAX_CASES,
    })?;
    let truncated = summaries.len() >= MAX_CASES;
    let calendar = node.calendar();
    let now = node.local_now();
    let mut tally = Tally::new(Basis {
        catalog: &node.catalog,
        calendar: calendar.as_deref(),
        offset: *now.offset(),
        today: now.date_naive(),
    });
    for s in &summaries {
        tally.add_summary(s);
        if needs_document(s)
            && let Some(case) = node.store.case(&s.id)?
        {
            tally.add_case(&case);
        }
    }
    Ok(tally.finish(truncated))
}

/// Each visit of the case to a route step that ended: `(route index, step, working days)`,
/// in fold order; the days are `None` when the calendar cannot count them. Folds each
/// prefix of the events (as [`crate::notice::notices`] does): a case has a few dozen events
/// at most.
fn step_visits(
    case: &Case,
    calendar: Option<&Calendar>,
    offset: FixedOffset,
) -> Vec<(usize, String, Option<u32>)> {
    let events: Vec<Event> = case.timeline().into_iter().cloned().collect();
    let mut out = Vec::new();
    let mut before = fold(&case.route, &[]);
    for i in 0..events.len() {
        let after = fold(&case.route, &events[..=i]);
        let moved = (after.status, &after.step) != (before.status, &before.step);
        if moved
            && let (Some(index), Some(step), Some(since)) =
                (before.step_index, &before.step, before.step_since)
        {
            let days = calendar.and_then(|cal| {
                cal.working_days_between(
                    local_date(since, offset),
                    local_date(events[i].at, offset),
                )
                .ok()
            });
            out.push((index, step.clone(), days));
        }
        before = after;
    }
    out
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn average(total: u64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { total as f64 / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Tier;
    use crate::event::EventKind;
    use crate::hlc::Hlc;

    /// 2026 with weekends only, plus a holiday on Thursday 1 October.
    const CALENDAR: &str = r#"
        schema = 1
        years = [2026]
        [[holidays]]
        name = "test holiday"
        from = "2026-10-01"
        to = "2026-10-01"
    "#;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn china() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).unwrap()
    }

    /// 10:00 China time on `day`, plus `n` ms to order events of one day.
    fn at(day: &str, n: u64) -> Hlc {
        let ms = d(day)
            .and_hms_opt(2, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        Hlc {
            wall_ms: u64::try_from(ms).unwrap() + n,
            counter: 0,
        }
    }

    fn ev(id: &str, day: &str, n: u64, tier: Tier, kind: EventKind) -> Event {
        ev_with(id, day, n, tier, kind, serde_json::json!({}))
    }

    fn ev_with(
        id: &str,
        day: &str,
        n: u64,
        tier: Tier,
        kind: EventKind,
        payload: serde_json::Value,
    ) -> Event {
        Event {
            id: id.into(),
            at: at(day, n),
            node: format!("{}-1", tier.as_str()),
            tier,
            user: "u".into(),
            role: "r".into(),
            kind,
            payload,
        }
    }

    fn rated(id: &str, day: &str, level: u8) -> Event {
        ev_with(
            id,
            day,
            50,
            Tier::Village,
            EventKind::Rated,
            serde_json::json!({"level": level, "source": "kiosk"}),
        )
    }

    /// A case of `item` (MZ003: 10 promised days, town:review 5; YB001: immediate) at
    /// `village` of town `town`, with `events`.
    fn case(id: &str, item: &str, village: &str, town: &str, events: Vec<Event>) -> Case {
        let catalog = catalog();
        let it = catalog.get(item).unwrap();
        serde_json::from_value(serde_json::json!({
            "id": id,
            "receipt_no": format!("R-{id}"),
            "item_code": item,
            "item_name": it.name,
            "node": "village-1",
            "route": it.route_steps(),
            "division": {"village": village, "town": town, "county": "430181000000"},
            "applicant": {"name": "王𠈌", "id_number": "11010519491231002X", "phone": "13800138000"},
            "proxy": null,
            "form": {},
            "materials": [],
            "events": events,
        }))
        .unwrap()
    }

    fn catalog() -> Catalog {
        Catalog::parse(crate::DEMO_CATALOG, std::path::Path::new("catalog.toml")).unwrap()
    }

    fn stats(cases: &[Case], with_calendar: bool) -> Stats {
        let catalog = catalog();
        let calendar = Calendar::parse(CALENDAR).unwrap();
        let summaries: Vec<CaseSummary> = cases
            .iter()
            .map(|c| CaseSummary::of(c, &c.state()))
            .collect();
        let docs: Vec<Case> = summaries
            .iter()
            .zip(cases)
            .filter(|(s, _)| needs_document(s))
            .map(|(_, c)| c.clone())
            .collect();
        compute(
            &summaries,
            &docs,
            Basis {
                catalog: &catalog,
                calendar: with_calendar.then_some(&calendar),
                offset: china(),
                today: d("2026-11-30"),
            },
        )
    }

    const V1: &str = "430181101001";
    const V2: &str = "430181101002";
    const T1: &str = "430181101000";
    const T2: &str = "430181102000";

    /// Four cases:
    /// - `a` MZ003 at V1, accepted Mon 28 Sep, passed Fri 9 Oct (8 working days: Tue 29,
    ///   Wed 30, Fri 2, Mon 5 … Fri 9; on time, due 13 Oct), issued Mon 12 Oct (1 day),
    ///   rated 5;
    /// - `b` MZ003 at V1, accepted Mon 28 Sep, supplement asked Tue 29 (1 day), provided
    ///   Mon 2 Nov, passed Mon 16 Nov (10 days): the pause (Wed 30 Sep to Mon 2 Nov) adds
    ///   23 working days, due 28 Sep + 33 = Fri 13 Nov: late. Picked up; rated 1, follow-up
    ///   open;
    /// - `c` YB001 at V2 (town T2), accepted and issued at the counter on Thu 15 Oct, rated 4;
    /// - `d` MZ003 at V2 (town T2), accepted Mon 2 Nov, still under review.
    fn four() -> Vec<Case> {
        use EventKind as K;
        use Tier::{Town, Village};
        vec![
            case(
                "a",
                "MZ003",
                V1,
                T1,
                vec![
                    ev("a1", "2026-09-28", 0, Village, K::Accepted),
                    ev("a2", "2026-10-09", 0, Town, K::ReviewPassed),
                    ev("a3", "2026-10-12", 0, Village, K::Issued),
                    rated("a4", "2026-10-12", 5),
                ],
            ),
            case(
                "b",
                "MZ003",
                V1,
                T1,
                vec![
                    ev("b1", "2026-09-28", 0, Village, K::Accepted),
                    ev("b2", "2026-09-29", 0, Town, K::SupplementRequested),
                    ev("b3", "2026-11-02", 0, Village, K::SupplementProvided),
                    // Superseded: the village does not review.
                    ev("bx", "2026-11-03", 0, Village, K::ReviewPassed),
                    ev("b4", "2026-11-16", 0, Town, K::ReviewPassed),
                    ev("b5", "2026-11-16", 1, Village, K::Issued),
                    ev("b6", "2026-11-16", 2, Village, K::PickedUp),
                    rated("b7", "2026-11-16", 1),
                ],
            ),
            case(
                "c",
                "YB001",
                V2,
                T2,
                vec![
                    ev("c1", "2026-10-15", 0, Village, K::Accepted),
                    ev("c2", "2026-10-15", 1, Village, K::Issued),
                    ev("c3", "2026-10-15", 2, Village, K::PickedUp),
                    rated("c4", "2026-10-15", 4),
                ],
            ),
            case(
                "d",
                "MZ003",
                V2,
                T2,
                vec![ev("d1", "2026-11-02", 0, Village, K::Accepted)],
            ),
        ]
    }

    fn keyed(rows: &[Count]) -> Vec<(&str, u64)> {
        rows.iter().map(|r| (r.key.as_str(), r.cases)).collect()
    }

    #[test]
    fn counts_by_item_village_town_month_and_status() {
        let s = stats(&four(), true);
        assert_eq!((s.cases, s.documents, s.truncated), (4, 3, false));
        assert_eq!(keyed(&s.by_item), [("MZ003", 3), ("YB001", 1)]);
        assert_eq!(s.by_item[0].name, "高龄津贴申领");
        assert_eq!(keyed(&s.by_village), [(V1, 2), (V2, 2)]);
        assert_eq!(keyed(&s.by_town), [(T1, 2), (T2, 2)]);
        assert_eq!(
            keyed(&s.by_month),
            [("2026-09", 2), ("2026-10", 1), ("2026-11", 1)]
        );
        assert_eq!(
            keyed(&s.by_status),
            [("under_review", 1), ("issued", 1), ("completed", 2)]
        );
        assert_eq!(s.by_status[0].name, "审核中");
    }

    #[test]
    fn the_on_time_rate_counts_decided_cases_with_a_limit() {
        let s = stats(&four(), true);
        // a on time, b late; c (immediate) is not decided, d is open.
        assert_eq!(
            (s.on_time.decided, s.on_time.on_time, s.on_time.late),
            (2, 1, 1)
        );
        assert_eq!(s.on_time.rate, Some(0.5));
        let mz = &s.by_item[0];
        assert_eq!((mz.decided, mz.on_time, mz.late), (2, 1, 1));
        assert_eq!(s.by_item[1].on_time_rate, None);
        // No calendar: decided, but nothing counted.
        let s = stats(&four(), false);
        assert_eq!((s.on_time.decided, s.on_time.uncounted), (2, 2));
        assert_eq!(s.on_time.rate, None);
    }

    #[test]
    fn step_days_follow_legal_moves_and_skip_superseded_events_and_pauses() {
        let s = stats(&four(), true);
        let rows: Vec<(&str, &str, u64, u64, f64, u64)> = s
            .by_step
            .iter()
            .map(|r| {
                (
                    r.item_code.as_str(),
                    r.step_name.as_str(),
                    r.cases,
                    r.total_days,
                    r.average_days,
                    r.over_limit,
                )
            })
            .collect();
        // MZ003 town:review (limit 5): a 8 days; b 1 + 10 in two visits (the superseded
        // village review on 3 Nov moves nothing). village:issue (limit 2): a 1, b 0.
        // YB001 village:issue: c 0.
        assert_eq!(
            rows,
            [
                ("MZ003", "镇审核", 2, 19, 9.5, 2),
                ("MZ003", "村出件", 2, 1, 0.5, 0),
                ("YB001", "村出件（当场办结）", 1, 0, 0.0, 0),
            ]
        );
        assert_eq!(s.uncounted_steps, 0);
        let s = stats(&four(), false);
        assert!(s.by_step.is_empty());
        assert_eq!(s.uncounted_steps, 5);
    }

    #[test]
    fn satisfaction_counts_the_latest_rating_of_each_case_and_open_follow_ups() {
        let mut cases = four();
        // `a` rated again, worse: its latest rating counts, once.
        cases[0].events.push(rated("a5", "2026-10-13", 3));
        let s = stats(&cases, true);
        let sat = &s.satisfaction;
        let levels: Vec<(u8, u64)> = sat.levels.iter().map(|l| (l.level, l.cases)).collect();
        assert_eq!(levels, [(5, 0), (4, 1), (3, 1), (2, 0), (1, 1)]);
        assert_eq!((sat.rated, sat.satisfied, sat.bad), (3, 1, 1));
        assert_eq!(sat.satisfied_rate, Some(1.0 / 3.0));
        assert_eq!(sat.open_follow_ups, 1);
        // A county comment naming the rating closes its follow-up.
        cases[1].events.push(ev_with(
            "close",
            "2026-11-17",
            0,
            Tier::County,
            EventKind::Comment,
            serde_json::json!({"text": "已回访", "follow_up": "b7"}),
        ));
        assert_eq!(stats(&cases, true).satisfaction.open_follow_ups, 0);
        let empty = stats(&[], true);
        assert_eq!(empty.satisfaction.satisfied_rate, None);
        assert_eq!(empty.satisfaction.levels.len(), 5);
    }
}
