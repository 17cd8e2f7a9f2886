//! Ratings (好差评) and the follow-ups (回访整改) a bad rating opens at the county.
//!
//! - Five levels: 非常满意 (5), 满意 (4), 基本满意 (3), 不满意 (2), 非常不满意 (1); 1 and 2 are
//!   bad (差评). A rating is a `rated` event (`level`, optional `comment`, `source`: `kiosk`
//!   when the citizen rated on the public `/rate` page, `paper` when a clerk typed in a paper
//!   form). The fold accepts it once the result was handed out (issued, completed or
//!   rejected) and never moves the case for it.
//! - A case may be rated more than once (say on the kiosk and on paper): each rating is one
//!   more event, and the latest effective one is the case's rating ([`latest`]). Kept simple
//!   on purpose: nothing is overwritten, every node shows the same.
//! - Every bad rating opens its own follow-up, due [`FOLLOW_UP_DAYS`] working days after the
//!   day of the rating on the working-day calendar. A `comment` recorded at a county node
//!   with `{"follow_up": RATING_EVENT_ID, "text": ...}` closes it (the first such comment in
//!   fold order). A follow-up shows yellow and red like legal time
//!   ([`crate::deadline::due_warning`]).
//!
//! Nothing here is stored: follow-ups are derived from the case's events, like notices
//! ([`crate::notice`]), so every node holding the same events shows the same follow-ups.

use chrono::{FixedOffset, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::calendar::Calendar;
use crate::case_doc::Case;
use crate::catalog::Tier;
use crate::deadline::{Warning, due_warning, local_date};
use crate::event::{Event, EventKind};
use crate::fold::{CaseState, Status};
use crate::hlc::Hlc;

/// The five levels, best first, with their names.
pub const LEVELS: [(u8, &str); 5] = [
    (5, "非常满意"),
    (4, "满意"),
    (3, "基本满意"),
    (2, "不满意"),
    (1, "非常不满意"),
];

/// Levels at or below this are bad ratings (差评).
pub const BAD_AT_MOST: u8 = 2;

/// Working days the county has to follow a bad rating up, counted from the day after it.
pub const FOLLOW_UP_DAYS: u32 = 5;

/// Longest comment a rating carries.
pub const MAX_COMMENT_CHARS: usize = 200;

/// Where a rating was entered.
pub const SOURCES: [&str; 2] = ["kiosk", "paper"];

/// The name of a level (`满意`), `None` outside 1..=5.
pub fn level_zh(level: u8) -> Option<&'static str> {
    LEVELS.iter().find(|(l, _)| *l == level).map(|(_, n)| *n)
}

pub fn is_bad(level: u8) -> bool {
    (1..=BAD_AT_MOST).contains(&level)
}

/// Whether a case in `status` takes a rating: the result was handed out (the fold's rule).
pub fn rateable(status: Status) -> bool {
    matches!(
        status,
        Status::Issued | Status::Completed | Status::Rejected
    )
}

/// `kiosk` → `自助评价`, `paper` → `纸质评价`.
pub fn source_zh(source: &str) -> &'static str {
    match source {
        "kiosk" => "自助评价",
        _ => "纸质评价",
    }
}

/// One effective rating of a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rating {
    pub event_id: String,
    pub level: u8,
    pub level_zh: &'static str,
    pub comment: String,
    pub source: String,
    pub at: Hlc,
}

impl Rating {
    fn of(event: &Event) -> Option<Self> {
        let level = event
            .payload
            .get("level")
            .and_then(|v| v.as_u64())
            .and_then(|l| u8::try_from(l).ok())?;
        Some(Self {
            event_id: event.id.clone(),
            level,
            level_zh: level_zh(level)?,
            comment: event.payload_str("comment").to_string(),
            source: event.payload_str("source").to_string(),
            at: event.at,
        })
    }
}

/// The case's ratings the fold accepted, in fold order.
pub fn ratings(case: &Case) -> Vec<Rating> {
    ratings_in(case, &case.state())
}

/// [`ratings`] with the state the fold already gave the case.
fn ratings_in(case: &Case, state: &CaseState) -> Vec<Rating> {
    case.timeline()
        .into_iter()
        .filter(|e| e.kind == EventKind::Rated)
        .filter(|e| !state.superseded.iter().any(|s| s.event_id == e.id))
        .filter_map(Rating::of)
        .collect()
}

/// The rating that counts: the latest.
pub fn latest(case: &Case) -> Option<Rating> {
    ratings(case).pop()
}

/// A follow-up still open: the bad rating's event and when it was made. The list projection
/// keeps these, so the follow-up list and the statistics read no document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFollowUp {
    pub rating_event_id: String,
    pub at: Hlc,
}

/// What the list projection keeps of a case's ratings, with the state the fold gave it: the
/// level that counts ([`latest`]) and the follow-ups still open.
pub fn summary_of(case: &Case, state: &CaseState) -> (Option<u8>, Vec<OpenFollowUp>) {
    let ratings = ratings_in(case, state);
    let level = ratings.last().map(|r| r.level);
    let open = ratings
        .into_iter()
        .filter(|r| is_bad(r.level) && closing(case, &r.event_id).is_none())
        .map(|r| OpenFollowUp {
            rating_event_id: r.event_id,
            at: r.at,
        })
        .collect();
    (level, open)
}

/// The county comment that closes the follow-up of rating `rating_event_id`, if any.
fn closing<'c>(case: &'c Case, rating_event_id: &str) -> Option<&'c Event> {
    case.events
        .iter()
        .filter(|e| {
            e.kind == EventKind::Comment
                && e.tier == Tier::County
                && e.payload_str("follow_up") == rating_event_id
        })
        .min_by(|a, b| a.order_key().cmp(&b.order_key()))
}

/// The follow-up of one bad rating.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FollowUp {
    pub rating_event_id: String,
    pub level: u8,
    pub level_zh: &'static str,
    pub comment: String,
    pub source: String,
    /// Local date of the rating.
    pub rated_on: NaiveDate,
    /// Last day of the follow-up (`None` when the calendar cannot count it: see `error`).
    pub due: Option<NaiveDate>,
    /// `due` rests on a year the county has not published (预估).
    pub provisional: bool,
    pub closed: bool,
    pub closed_on: Option<NaiveDate>,
    /// `user（node）` of the closing comment.
    pub closed_by: String,
    /// What the closing comment says.
    pub answer: String,
    /// Yellow one working day before `due`, red after; none once closed.
    pub warning: Warning,
    pub error: Option<String>,
}

/// Every follow-up the case's bad ratings opened, in fold order, counted on `calendar`
/// (`None`: no calendar, no due date) with the mark of `today`.
pub fn follow_ups(
    case: &Case,
    calendar: Option<&Calendar>,
    offset: FixedOffset,
    today: NaiveDate,
) -> Vec<FollowUp> {
    ratings(case)
        .into_iter()
        .filter(|r| is_bad(r.level))
        .map(|r| {
            let rated_on = local_date(r.at, offset);
            let closing = closing(case, &r.event_id);
            let (due, mut error) = match calendar {
                Some(cal) => match cal.add_working_days(rated_on, FOLLOW_UP_DAYS) {
                    Ok(due) => (Some(due), None),
                    Err(e) => (None, Some(e.to_string())),
                },
                None => (None, Some("本节点没有工作日历，无法计算期限".to_string())),
            };
            let provisional = match (due, calendar) {
                (Some(due), Some(cal)) => cal.provisional_between(rated_on, due),
                _ => false,
            };
            let warning = match (closing, due, calendar) {
                (None, Some(due), Some(cal)) => due_warning(cal, today, due).unwrap_or_else(|e| {
                    error = Some(e.to_string());
                    Warning::None
                }),
                _ => Warning::None,
            };
            FollowUp {
                rating_event_id: r.event_id,
                level: r.level,
                level_zh: r.level_zh,
                comment: r.comment,
                source: r.source,
                rated_on,
                due,
                provisional,
                closed: closing.is_some(),
                closed_on: closing.map(|e| local_date(e.at, offset)),
                closed_by: closing
                    .map(|e| format!("{}（{}）", e.user, e.node))
                    .unwrap_or_default(),
                answer: closing
                    .map(|e| e.payload_str("text").to_string())
                    .unwrap_or_default(),
                warning,
                error,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stated calendar: Thursday 1 – Saturday 3 October off, Sunday 4 October worked (调休).
    const CALENDAR: &str = r#"
        schema = 1
        years = [2026]
        [[holidays]]
        name = "test holiday"
        from = "2026-10-01"
        to = "2026-10-03"
        [[workdays]]
        name = "make-up Sunday"
        date = "2026-10-04"
    "#;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn china() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).unwrap()
    }

    /// 10:00 China time on `day`, plus `n` milliseconds to order events of one day.
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

    fn ev(id: &str, at: Hlc, tier: Tier, kind: EventKind, payload: serde_json::Value) -> Event {
        Event {
            id: id.into(),
            at,
            node: format!("{}-1", tier.as_str()),
            tier,
            user: "u".into(),
            role: "r".into(),
            kind,
            payload,
            sig: None,
        }
    }

    /// A case accepted, passed and issued on 2026-09-28.
    fn issued_case(more: Vec<Event>) -> Case {
        let day = "2026-09-28";
        let mut events = vec![
            ev(
                "a",
                at(day, 0),
                Tier::Village,
                EventKind::Accepted,
                serde_json::json!({}),
            ),
            ev(
                "p",
                at(day, 1),
                Tier::Town,
                EventKind::ReviewPassed,
                serde_json::json!({}),
            ),
            ev(
                "i",
                at(day, 2),
                Tier::Village,
                EventKind::Issued,
                serde_json::json!({}),
            ),
        ];
        events.extend(more);
        // Through serde, so fields with defaults added to `Case` later need no change here.
        serde_json::from_value(serde_json::json!({
            "id": "c",
            "receipt_no": "430181101001-20260928-0001",
            "item_code": "MZ003",
            "item_name": "老年人优待证",
            "node": "village-1",
            "route": ["village:accept", "town:review", "village:issue"],
            "division": {"village": "430181101001", "town": "430181101000", "county": "430181000000"},
            "applicant": {"name": "王𠈌", "id_number": "11010519491231002X", "phone": "13800138000"},
            "proxy": null,
            "form": {},
            "materials": [],
            "events": events,
        }))
        .unwrap()
    }

    fn rated(id: &str, day: &str, level: u8) -> Event {
        ev(
            id,
            at(day, 10),
            Tier::Village,
            EventKind::Rated,
            serde_json::json!({"level": level, "comment": "等太久", "source": "kiosk"}),
        )
    }

    fn open(case: &Case, today: &str) -> Vec<FollowUp> {
        let cal = Calendar::parse(CALENDAR).unwrap();
        follow_ups(case, Some(&cal), china(), d(today))
    }

    #[test]
    fn a_bad_rating_opens_a_follow_up_due_five_working_days_later_on_the_calendar() {
        // Rated Wednesday 30 September. By hand: Thu 1, Fri 2, Sat 3 rest (holiday); Sun 4
        // works (1); Mon 5 (2), Tue 6 (3), Wed 7 (4), Thu 8 (5).
        let case = issued_case(vec![rated("r", "2026-09-30", 2)]);
        let f = open(&case, "2026-09-30");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rating_event_id, "r");
        assert_eq!((f[0].level, f[0].level_zh), (2, "不满意"));
        assert_eq!(f[0].comment, "等太久");
        assert_eq!(f[0].rated_on, d("2026-09-30"));
        assert_eq!(f[0].due, Some(d("2026-10-08")));
        assert!(!f[0].closed);
        assert_eq!(f[0].warning, Warning::None);
        // Yellow on the last working day and the one before; red after.
        assert_eq!(open(&case, "2026-10-07")[0].warning, Warning::Yellow);
        assert_eq!(open(&case, "2026-10-08")[0].warning, Warning::Yellow);
        assert_eq!(open(&case, "2026-10-09")[0].warning, Warning::Red);
    }

    #[test]
    fn good_ratings_open_nothing_and_the_latest_rating_counts() {
        let case = issued_case(vec![
            rated("r1", "2026-09-29", 3),
            rated("r2", "2026-09-30", 5),
        ]);
        assert!(open(&case, "2026-09-30").is_empty());
        assert_eq!(latest(&case).map(|r| r.level), Some(5));
        assert_eq!(ratings(&case).len(), 2);
        // A rating before the hand-out is superseded by the fold and opens nothing.
        let mut early = issued_case(vec![]);
        early.events.truncate(1);
        early.events.push(rated("r", "2026-09-30", 1));
        assert!(open(&early, "2026-09-30").is_empty());
        assert!(latest(&early).is_none());
    }

    #[test]
    fn a_county_comment_naming_the_rating_closes_its_follow_up_and_nothing_else_does() {
        let mut case = issued_case(vec![rated("r", "2026-09-30", 1)]);
        // A plain comment, a comment at the village naming it, a county comment naming
        // another rating: still open.
        for (id, tier, payload) in [
            (
                "c1",
                Tier::County,
                serde_json::json!({"text": "已电话联系"}),
            ),
            (
                "c2",
                Tier::Village,
                serde_json::json!({"text": "x", "follow_up": "r"}),
            ),
            (
                "c3",
                Tier::County,
                serde_json::json!({"text": "x", "follow_up": "other"}),
            ),
        ] {
            case.events.push(ev(
                id,
                at("2026-10-05", 0),
                tier,
                EventKind::Comment,
                payload,
            ));
        }
        assert!(!open(&case, "2026-10-05")[0].closed);
        case.events.push(ev(
            "close",
            at("2026-10-06", 0),
            Tier::County,
            EventKind::Comment,
            serde_json::json!({"text": "已回访，申请人表示理解", "follow_up": "r"}),
        ));
        let f = &open(&case, "2026-10-20")[0];
        assert!(f.closed);
        assert_eq!(f.closed_on, Some(d("2026-10-06")));
        assert_eq!(f.answer, "已回访，申请人表示理解");
        assert_eq!(f.closed_by, "u（county-1）");
        assert_eq!(f.warning, Warning::None, "closed: no mark, however late");
    }

    #[test]
    fn two_bad_ratings_open_two_follow_ups_and_no_calendar_means_no_due_date() {
        let case = issued_case(vec![
            rated("r1", "2026-09-29", 2),
            rated("r2", "2026-09-30", 1),
        ]);
        assert_eq!(open(&case, "2026-09-30").len(), 2);
        let f = follow_ups(&case, None, china(), d("2026-09-30"));
        assert_eq!(f[0].due, None);
        assert!(f[0].error.is_some());
        assert!(is_bad(1) && is_bad(2) && !is_bad(3) && !is_bad(0));
        assert_eq!(level_zh(5), Some("非常满意"));
        assert_eq!(level_zh(6), None);
    }
}
