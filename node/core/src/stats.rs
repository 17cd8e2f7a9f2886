//! Statistics for the county console (统计分析): cases by item, village, town, accepted
//! month and status; the on-time rate (按时办结率) of decided cases; the working days each
//! route step took; satisfaction (好差评) and the open follow-ups of bad ratings. It shows what
//! this node holds: every case at the county, its own at a village or town.
//!
//! Nothing here reads cases when the page is asked for: the store's writer keeps counters.
//!
//! - Each case counts for a few rows ([`contributions`]): its item, village, town, month of
//!   acceptance and status, the whole, each route step it finished and its rating. They come
//!   from its list projection alone ([`CaseSummary`]: the legal-time marks, the step visits
//!   the fold recorded, the latest rating) on the node's [`Clock`] (calendar, limits, time
//!   zone). The writer subtracts a case's old rows and adds its new ones in the transaction
//!   that writes the case (`stats-1`), and rebuilds them all with the other legal-time
//!   projections when the clock changes.
//! - `on_time` is [`crate::deadline::legal_time`]'s: the decision on or before the promised
//!   due date. Immediate items (即办件) have no limit and count neither on time nor late.
//! - The working days of a step: for each stay on a route step that ended (a legal event
//!   that changed the status or the step; superseded events move nothing), the working days
//!   from the day the step began to the day it ended (from the day after the start up to and
//!   including the end, as legal time counts: a step begun and ended the same day took 0). A
//!   step visited twice (review, supplement, review again) counts once for the case, its
//!   visits added up; the time the materials were awaited belongs to no route step.
//! - Satisfaction counts each rated case once, at its latest rating ([`rating::latest`]);
//!   满意率 is the share of levels 4 and 5 among rated cases. Follow-ups are per bad rating,
//!   counted from their index ([`crate::followups`]).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::deadline::{legal_time, local_date};
use crate::fold::Status;
use crate::legal_clock::Clock;
use crate::node::Node;
use crate::rating;
use crate::store::{SEP, StoreError};
use crate::summary::CaseSummary;

/// The counters of one row of `stats-1`: for a breakdown `[cases, decided, on time, late,
/// decided but not counted]`; for a route step `[cases, working days, over the limit, 0,
/// 0]`; for a rating level or the uncounted steps `[cases, 0, 0, 0, 0]`.
pub type Counters = [u64; 5];

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
    fn of(key: &str, name: &str, c: &Counters) -> Self {
        Self {
            key: key.to_string(),
            name: name.to_string(),
            cases: c[0],
            decided: c[1],
            on_time: c[2],
            late: c[3],
            on_time_rate: ratio(c[2], c[2] + c[3]),
        }
    }
}

/// The on-time rate (按时办结率) of every decided case.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct OnTime {
    pub decided: u64,
    pub on_time: u64,
    pub late: u64,
    /// Decided cases with no limit (即办件, an item no longer in the catalogue) or no
    /// working-day calendar to count them on.
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
    /// Cases counted: every case this node holds.
    pub cases: u64,
    /// The day the statistics were read (local date).
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
    /// Steps of cases that could not be counted (no working-day calendar).
    pub uncounted_steps: u64,
    pub satisfaction: Satisfaction,
}

/// Row kinds of `stats-1`: the first part of a key.
const ITEM: &str = "i";
const VILLAGE: &str = "v";
const TOWN: &str = "t";
const MONTH: &str = "m";
const STATUS: &str = "s";
const ALL: &str = "a";
const STEP: &str = "p";
const STEP_UNCOUNTED: &str = "pu";
const LEVEL: &str = "r";

/// The rows of `stats-1` one case counts for, on `clock`.
pub fn contributions(s: &CaseSummary, clock: &Clock) -> Vec<(String, Counters)> {
    let decided = s.marks.decided_at.is_some();
    let on_time = match (decided, clock.calendar(), s.marks.decided_at) {
        (true, Some(calendar), Some(at)) => {
            // The clock of a decided case no longer moves: count it as of the decision.
            let on = local_date(at, clock.offset());
            legal_time(
                &s.marks,
                clock.limits(&s.item_code),
                calendar,
                on,
                clock.offset(),
            )
            .on_time
        }
        _ => None,
    };
    let count: Counters = [
        1,
        u64::from(decided),
        u64::from(on_time == Some(true)),
        u64::from(on_time == Some(false)),
        u64::from(decided && on_time.is_none()),
    ];
    let accepted = s
        .marks
        .accepted_at
        .or(Some(s.accepted_at).filter(|a| a.wall_ms > 0));
    let month = accepted.map_or_else(
        || "未受理".to_string(),
        |at| local_date(at, clock.offset()).format("%Y-%m").to_string(),
    );
    let mut rows = vec![
        (format!("{ITEM}{SEP}{}", s.item_code), count),
        (format!("{VILLAGE}{SEP}{}", s.village), count),
        (format!("{TOWN}{SEP}{}", s.town), count),
        (format!("{MONTH}{SEP}{month}"), count),
        (format!("{STATUS}{SEP}{}", s.status.as_str()), count),
        (ALL.to_string(), count),
    ];
    // The case's days per step, its visits added up; `None` once a visit is uncounted.
    let mut per_step: BTreeMap<(usize, &str), Option<u32>> = BTreeMap::new();
    for v in &s.visits {
        let days = clock.calendar().and_then(|cal| {
            cal.working_days_between(
                local_date(v.since, clock.offset()),
                local_date(v.until, clock.offset()),
            )
            .ok()
        });
        let total = per_step
            .entry((v.index, v.step.as_str()))
            .or_insert(Some(0));
        *total = total.zip(days).map(|(t, d)| t.saturating_add(d));
    }
    for ((index, step), days) in per_step {
        match days {
            Some(days) => {
                let over = clock
                    .step_limit(&s.item_code, index, step)
                    .is_some_and(|limit| days > limit);
                rows.push((
                    format!("{STEP}{SEP}{}{SEP}{index:04}{SEP}{step}", s.item_code),
                    [1, u64::from(days), u64::from(over), 0, 0],
                ));
            }
            None => rows.push((STEP_UNCOUNTED.to_string(), [1, 0, 0, 0, 0])),
        }
    }
    if let Some(level) = s.rating {
        rows.push((format!("{LEVEL}{SEP}{level}"), [1, 0, 0, 0, 0]));
    }
    rows
}

/// The statistics from the rows of `stats-1` (any order), named from `catalog`.
pub fn from_rows(
    rows: impl IntoIterator<Item = (String, Counters)>,
    catalog: &Catalog,
    today: NaiveDate,
    open_follow_ups: u64,
) -> Stats {
    let mut by_item = Vec::new();
    let mut by_village = Vec::new();
    let mut by_town = Vec::new();
    let mut by_month = Vec::new();
    let mut by_status = Vec::new();
    let mut all: Counters = [0; 5];
    let mut by_step = Vec::new();
    let mut uncounted_steps = 0;
    let mut levels: BTreeMap<u8, u64> = BTreeMap::new();
    for (key, c) in rows {
        let (kind, rest) = key.split_once(SEP).unwrap_or((key.as_str(), ""));
        match kind {
            ITEM => {
                let name = catalog.get(rest).map_or(rest, |i| i.name.as_str());
                by_item.push(Count::of(rest, name, &c));
            }
            VILLAGE => by_village.push(Count::of(rest, rest, &c)),
            TOWN => by_town.push(Count::of(rest, rest, &c)),
            MONTH => by_month.push(Count::of(rest, rest, &c)),
            STATUS => {
                if let Some(st) = Status::parse(rest) {
                    by_status.push((st, Count::of(rest, st.zh(), &c)));
                }
            }
            ALL => all = c,
            STEP => {
                if let Some(row) = step_row(rest, &c, catalog) {
                    by_step.push(row);
                }
            }
            STEP_UNCOUNTED => uncounted_steps = c[0],
            LEVEL => {
                if let Ok(level) = rest.parse::<u8>() {
                    levels.insert(level, c[0]);
                }
            }
            _ => {}
        }
    }
    let by_count = |mut rows: Vec<Count>| {
        rows.sort_by(|a, b| b.cases.cmp(&a.cases).then_with(|| a.key.cmp(&b.key)));
        rows
    };
    by_month.sort_by(|a, b| a.key.cmp(&b.key));
    by_status.sort_by_key(|(st, _)| *st);
    by_step.sort_by(|a, b| (&a.item_code, a.index).cmp(&(&b.item_code, b.index)));
    let rated: u64 = levels.values().sum();
    let level = |l: u8| levels.get(&l).copied().unwrap_or(0);
    let satisfied = level(4) + level(5);
    Stats {
        cases: all[0],
        today,
        by_item: by_count(by_item),
        by_village: by_count(by_village),
        by_town: by_count(by_town),
        by_month,
        by_status: by_status.into_iter().map(|(_, c)| c).collect(),
        on_time: OnTime {
            decided: all[1],
            on_time: all[2],
            late: all[3],
            uncounted: all[4],
            rate: ratio(all[2], all[2] + all[3]),
        },
        by_step,
        uncounted_steps,
        satisfaction: Satisfaction {
            levels: rating::LEVELS
                .iter()
                .map(|&(l, name)| LevelCount {
                    level: l,
                    name,
                    cases: level(l),
                    share: ratio(level(l), rated),
                })
                .collect(),
            rated,
            satisfied,
            satisfied_rate: ratio(satisfied, rated),
            bad: (1..=rating::BAD_AT_MOST).map(level).sum(),
            open_follow_ups,
        },
    }
}

/// A route step's row from the rest of its key (`item \x1f index \x1f step`).
fn step_row(rest: &str, c: &Counters, catalog: &Catalog) -> Option<StepDays> {
    let mut parts = rest.split(SEP);
    let (item_code, index, step) = (parts.next()?, parts.next()?, parts.next()?);
    let index: usize = index.parse().ok()?;
    let item = catalog.get(item_code);
    let route_step = item.and_then(|i| i.route.iter().find(|r| r.step == step));
    Some(StepDays {
        item_code: item_code.to_string(),
        item_name: item.map_or(item_code, |i| i.name.as_str()).to_string(),
        index,
        step: step.to_string(),
        step_name: route_step.map_or(step, |r| r.name.as_str()).to_string(),
        limit_days: route_step.map(|r| r.limit_days),
        cases: c[0],
        total_days: c[1],
        average_days: average(c[1], c[0]),
        over_limit: c[2],
    })
}

/// The statistics of every case `node` holds, read from the writer's counters (rebuilt first
/// if the node's clock changed since they were counted).
pub async fn gather(node: &Node) -> Result<Stats, StoreError> {
    crate::queue::ensure_fresh(node).await?;
    let rows = node.store.stats_rows()?;
    let open = node.store.open_follow_ups()?;
    Ok(from_rows(rows, &node.catalog, node.today(), open))
}

/// The statistics of `summaries` on `clock`, as the writer's counters would hold them.
pub fn compute(
    summaries: &[CaseSummary],
    clock: &Clock,
    catalog: &Catalog,
    today: NaiveDate,
    open_follow_ups: u64,
) -> Stats {
    let mut rows: BTreeMap<String, Counters> = BTreeMap::new();
    for s in summaries {
        for (key, c) in contributions(s, clock) {
            let row = rows.entry(key).or_default();
            for (a, b) in row.iter_mut().zip(c) {
                *a += b;
            }
        }
    }
    from_rows(rows, catalog, today, open_follow_ups)
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
    use crate::calendar::Calendar;
    use crate::case_doc::Case;
    use crate::catalog::Tier;
    use crate::event::{Event, EventKind};
    use crate::hlc::Hlc;
    use chrono::FixedOffset;

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
            sig: None,
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
        let calendar = std::sync::Arc::new(Calendar::parse(CALENDAR).unwrap());
        let clock = Clock::new(
            Tier::County,
            with_calendar.then_some(calendar),
            &catalog,
            china(),
        );
        let summaries: Vec<CaseSummary> = cases
            .iter()
            .map(|c| CaseSummary::of(c, &c.state()))
            .collect();
        let open: u64 = summaries.iter().map(|s| s.follow_ups.len() as u64).sum();
        compute(&summaries, &clock, &catalog, d("2026-11-30"), open)
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
        assert_eq!(s.cases, 4);
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
