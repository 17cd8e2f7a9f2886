//! Legal time (办理时限): due dates and supervision warnings from a case's state, its item's
//! limits and the working-day calendar.
//!
//! - Limits count in working days from the day after acceptance (local date of the
//!   `accepted` stamp). 即办件 have none.
//! - A supplement request stops the clock. With `supplement_clock = "pause"` the working days
//!   from the day after the request up to and including the day the materials arrived are
//!   added back; with `"restart"` the whole limit counts again from the day after the materials
//!   arrived. While the materials are awaited the case shows `paused` and no warning.
//! - The case's limit ends with the decision (办结: review passed to the result, approved,
//!   rejected); `on_time` then says whether the decision fell on or before `due`.
//! - The current route step has its own limit from the day after it began (`step_due`).
//! - `yellow` when at most one working day is left (the day before and the day itself), `red`
//!   once the day has passed.
//! - A count that touched a year the county has not published is `provisional` (预估): it
//!   rests on the holidays by rule ([`crate::calendar::rules`]) and moves when the year is
//!   published.
//!
//! A pure function: every node with the same events, calendar and date shows the same answer.

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::calendar::{Calendar, CalendarError};
use crate::catalog::{ItemKind, ServiceItem, SupplementClock};
use crate::fold::{CaseState, Pause, Status};
use crate::hlc::Hlc;

/// The part of a case's state legal time is counted from. The list projection keeps a copy,
/// so queues sort and colour by deadline without loading documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Marks {
    pub accepted_at: Option<Hlc>,
    /// The case is open (it has a current step).
    pub open: bool,
    /// Materials are awaited.
    pub paused: bool,
    pub step_index: Option<usize>,
    pub step_since: Option<Hlc>,
    pub pauses: Vec<Pause>,
    pub decided_at: Option<Hlc>,
}

impl Marks {
    pub fn of(state: &CaseState) -> Self {
        Self {
            accepted_at: state.accepted_at,
            open: state.step.is_some(),
            paused: state.status == Status::SupplementRequested,
            step_index: state.step_index,
            step_since: state.step_since,
            pauses: state.pauses.clone(),
            decided_at: state.decided_at,
        }
    }
}

/// A supervision mark (电子监察).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Warning {
    #[default]
    None,
    Yellow,
    Red,
}

impl Warning {
    pub fn as_str(self) -> &'static str {
        match self {
            Warning::None => "none",
            Warning::Yellow => "yellow",
            Warning::Red => "red",
        }
    }

    pub fn zh(self) -> &'static str {
        match self {
            Warning::None => "正常",
            Warning::Yellow => "黄牌：即将到期",
            Warning::Red => "红牌：已超期",
        }
    }
}

/// An item's limits, read from the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub promised_days: u32,
    pub statutory_days: u32,
    pub supplement_clock: SupplementClock,
    /// Per route step, in the order of the route.
    pub step_days: Vec<u32>,
}

impl Limits {
    /// `None` for an immediate item (即办件), which has no time limit.
    pub fn of(item: &ServiceItem) -> Option<Self> {
        if item.kind == ItemKind::Immediate {
            return None;
        }
        Some(Self {
            promised_days: item.promised_days,
            statutory_days: item.statutory_days,
            supplement_clock: item.supplement_clock,
            step_days: item.route.iter().map(|s| s.limit_days).collect(),
        })
    }
}

/// What the clock says about one case today.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct LegalTime {
    /// Last day of the promised limit (承诺时限).
    pub due: Option<NaiveDate>,
    /// Last day of the statutory limit (法定时限).
    pub statutory_due: Option<NaiveDate>,
    /// Last day of the current step's limit.
    pub step_due: Option<NaiveDate>,
    /// The case's mark: against `due` until the decision.
    pub warning: Warning,
    /// The current step's mark.
    pub step_warning: Warning,
    /// Materials are awaited; the clock stands.
    pub paused: bool,
    /// Once decided: whether the decision fell on or before `due`.
    pub on_time: Option<bool>,
    /// The dates rest on a year the county has not published (预估): counted on the holidays
    /// by rule, they move when the year is published.
    pub provisional: bool,
    /// Why nothing could be counted, in Chinese (a year beyond every calendar).
    pub error: Option<String>,
}

impl LegalTime {
    /// The worse of the case's and the step's marks.
    pub fn worst(&self) -> Warning {
        self.warning.max(self.step_warning)
    }
}

/// The local calendar date of a stamp.
pub fn local_date(at: Hlc, offset: FixedOffset) -> NaiveDate {
    let millis = i64::try_from(at.wall_ms).unwrap_or(i64::MAX);
    DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .with_timezone(&offset)
        .date_naive()
}

/// Counts the legal time of a case on `today`.
pub fn legal_time(
    state: &Marks,
    limits: Option<&Limits>,
    calendar: &Calendar,
    today: NaiveDate,
    offset: FixedOffset,
) -> LegalTime {
    let (Some(limits), Some(accepted)) = (limits, state.accepted_at) else {
        return LegalTime::default();
    };
    match count(state, limits, calendar, today, offset, accepted) {
        Ok(time) => time,
        Err(e) => LegalTime {
            error: Some(e.to_string()),
            ..LegalTime::default()
        },
    }
}

/// The case's due dates (promised, statutory); `today` only matters while the clock stands
/// (an open supplement pause).
fn dues(
    state: &Marks,
    limits: &Limits,
    calendar: &Calendar,
    today: NaiveDate,
    offset: FixedOffset,
    accepted: Hlc,
) -> Result<(NaiveDate, NaiveDate), CalendarError> {
    let date = |at: Hlc| local_date(at, offset);
    // A pause still open ends today, or with the decision that closed the case meanwhile.
    let open_until = state.decided_at.map_or(today, date);
    // Where the count starts and how many working days of pauses it skips.
    let (start, skipped) = match limits.supplement_clock {
        SupplementClock::Pause => {
            let mut skipped = 0;
            for pause in &state.pauses {
                let to = pause.to.map_or(open_until, date);
                skipped += calendar.working_days_between(date(pause.from), to)?;
            }
            (date(accepted), skipped)
        }
        SupplementClock::Restart => {
            // Still waiting: the count starts again from tomorrow at the earliest.
            let restart = state.pauses.last().map(|p| p.to.map_or(open_until, date));
            (restart.unwrap_or(date(accepted)), 0)
        }
    };
    let due = calendar.add_working_days(start, limits.promised_days.saturating_add(skipped))?;
    let statutory_due =
        calendar.add_working_days(start, limits.statutory_days.saturating_add(skipped))?;
    Ok((due, statutory_due))
}

/// The last day of the current route step's limit, if it has one.
fn step_due(
    state: &Marks,
    limits: &Limits,
    calendar: &Calendar,
    offset: FixedOffset,
) -> Result<Option<NaiveDate>, CalendarError> {
    if let (Some(index), Some(since)) = (state.step_index, state.step_since)
        && let Some(days) = limits.step_days.get(index)
    {
        return calendar
            .add_working_days(local_date(since, offset), *days)
            .map(Some);
    }
    Ok(None)
}

fn count(
    state: &Marks,
    limits: &Limits,
    calendar: &Calendar,
    today: NaiveDate,
    offset: FixedOffset,
    accepted: Hlc,
) -> Result<LegalTime, CalendarError> {
    let paused = state.paused;
    let (due, statutory_due) = dues(state, limits, calendar, today, offset, accepted)?;
    // The days counted run from acceptance (or an earlier step start) to the latest due date.
    let first = [Some(accepted), state.step_since]
        .into_iter()
        .flatten()
        .map(|at| local_date(at, offset))
        .min()
        .unwrap_or(today);
    let mut time = LegalTime {
        due: Some(due),
        statutory_due: Some(statutory_due),
        paused,
        provisional: calendar.provisional_between(first, due.max(statutory_due)),
        ..LegalTime::default()
    };
    if let Some(decided) = state.decided_at {
        time.on_time = Some(local_date(decided, offset) <= due);
    } else if state.open && !paused {
        time.warning = mark(calendar, today, due)?;
    }
    if let Some(step_due) = step_due(state, limits, calendar, offset)? {
        time.step_due = Some(step_due);
        time.step_warning = mark(calendar, today, step_due)?;
        time.provisional |= calendar.provisional_between(first, step_due);
    }
    Ok(time)
}

/// Whether `today` moves the case's due dates: the clock stands on an open supplement pause.
pub fn waits_on_today(state: &Marks) -> bool {
    state.pauses.iter().any(|p| p.to.is_none())
}

/// The date that presses first on a case, as the review queue sorts it: the current step's
/// due date or the case's, whichever is earlier; `None` without limits or acceptance, or when
/// the calendar does not cover a date counted. Equal to `min(step_due, due)` of
/// [`legal_time`] on any day its marks count without error; `today` only matters when
/// [`waits_on_today`].
pub fn pressing_date(
    state: &Marks,
    limits: Option<&Limits>,
    calendar: &Calendar,
    today: NaiveDate,
    offset: FixedOffset,
) -> Option<NaiveDate> {
    let (Some(limits), Some(accepted)) = (limits, state.accepted_at) else {
        return None;
    };
    let (due, _) = dues(state, limits, calendar, today, offset, accepted).ok()?;
    let step = step_due(state, limits, calendar, offset).ok()?;
    Some(step.map_or(due, |s| s.min(due)))
}

/// The date supervision (电子监察) marks the case by: the earlier of the current step's due
/// date and, while the case is open, undecided and not waiting on materials, its own due
/// date. On any day, the worst mark of [`legal_time`] is [`due_warning`] of this date, so an
/// index sorted by it lists every case to watch without counting each one; it does not
/// depend on today. `None`: nothing to watch (no limit, or not counted).
pub fn watch_date(
    state: &Marks,
    limits: Option<&Limits>,
    calendar: &Calendar,
    offset: FixedOffset,
) -> Option<NaiveDate> {
    let (Some(limits), Some(accepted)) = (limits, state.accepted_at) else {
        return None;
    };
    let step = step_due(state, limits, calendar, offset).ok()?;
    let case = if state.decided_at.is_none() && state.open && !state.paused {
        // No pause is open on such a case, so today plays no part in its due date.
        Some(
            dues(state, limits, calendar, NaiveDate::MIN, offset, accepted)
                .ok()?
                .0,
        )
    } else {
        None
    };
    match (step, case) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn mark(calendar: &Calendar, today: NaiveDate, due: NaiveDate) -> Result<Warning, CalendarError> {
    if today > due {
        return Ok(Warning::Red);
    }
    if calendar.working_days_between(today, due)? <= 1 {
        return Ok(Warning::Yellow);
    }
    Ok(Warning::None)
}

/// The supervision mark of any due date on `today` (the rule of legal time: yellow with at most
/// one working day left, red once passed), for deadlines outside a case's legal time such as
/// the follow-up of a bad rating ([`crate::rating`]).
pub fn due_warning(
    calendar: &Calendar,
    today: NaiveDate,
    due: NaiveDate,
) -> Result<Warning, CalendarError> {
    mark(calendar, today, due)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Tier;
    use crate::event::{Event, EventKind};
    use crate::fold::fold;

    /// A three-day holiday (Thu 1 – Sat 3 October) with a make-up working Sunday (4 October).
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
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
    }

    fn china() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).expect("offset")
    }

    /// A stamp at 10:00 China time on `day`.
    fn at(day: &str) -> Hlc {
        let ms = d(day)
            .and_hms_opt(2, 0, 0)
            .expect("time")
            .and_utc()
            .timestamp_millis();
        Hlc {
            wall_ms: u64::try_from(ms).expect("after 1970"),
            counter: 0,
        }
    }

    fn ev(id: &str, day: &str, tier: Tier, kind: EventKind) -> Event {
        Event {
            id: id.into(),
            at: at(day),
            node: "n".into(),
            tier,
            user: "u".into(),
            role: "r".into(),
            payload: serde_json::json!({"materials": ["户口簿"]}),
            kind,
            sig: None,
        }
    }

    fn route() -> Vec<String> {
        ["village:accept", "town:review", "village:issue"]
            .map(String::from)
            .to_vec()
    }

    fn limits(clock: SupplementClock) -> Limits {
        Limits {
            promised_days: 5,
            statutory_days: 10,
            supplement_clock: clock,
            step_days: vec![1, 3, 1],
        }
    }

    fn time(events: &[Event], clock: SupplementClock, today: &str) -> LegalTime {
        let calendar = Calendar::parse(CALENDAR).expect("calendar");
        let state = Marks::of(&fold(&route(), events));
        legal_time(&state, Some(&limits(clock)), &calendar, d(today), china())
    }

    #[test]
    fn five_working_days_from_the_day_before_a_holiday_with_a_make_up_sunday() {
        // Accepted Wed 30 September. By hand: Thu 1, Fri 2, Sat 3 rest (holiday); Sun 4 is
        // a make-up working day (1); Mon 5 (2), Tue 6 (3), Wed 7 (4), Thu 8 (5).
        let events = [ev("a", "2026-09-30", Tier::Village, EventKind::Accepted)];
        let t = time(&events, SupplementClock::Pause, "2026-09-30");
        assert_eq!(t.due, Some(d("2026-10-08")));
        // 10 days: Fri 9 (6), Mon 12 … Thu 15 (10).
        assert_eq!(t.statutory_due, Some(d("2026-10-15")));
        // town:review, 3 days from the day after acceptance: Sun 4, Mon 5, Tue 6.
        assert_eq!(t.step_due, Some(d("2026-10-06")));
        assert_eq!((t.warning, t.step_warning), (Warning::None, Warning::None));
    }

    #[test]
    fn yellow_on_the_last_working_day_and_the_one_before_red_after() {
        let events = [ev("a", "2026-09-30", Tier::Village, EventKind::Accepted)];
        let mark = |today| time(&events, SupplementClock::Pause, today).warning;
        assert_eq!(mark("2026-10-06"), Warning::None);
        assert_eq!(mark("2026-10-07"), Warning::Yellow);
        assert_eq!(mark("2026-10-08"), Warning::Yellow);
        assert_eq!(mark("2026-10-09"), Warning::Red);
        // The step (due Tue 6) is red a day before the case turns yellow.
        let t = time(&events, SupplementClock::Pause, "2026-10-07");
        assert_eq!(t.step_warning, Warning::Red);
        assert_eq!(t.worst(), Warning::Red);
    }

    #[test]
    fn a_supplement_pauses_or_restarts_the_clock() {
        let events = [
            ev("a", "2026-09-30", Tier::Village, EventKind::Accepted),
            ev(
                "s",
                "2026-10-05",
                Tier::Town,
                EventKind::SupplementRequested,
            ),
            ev(
                "p",
                "2026-10-07",
                Tier::Village,
                EventKind::SupplementProvided,
            ),
        ];
        // Paused Tue 6 and Wed 7: two working days added, due Thu 8 → Mon 12.
        let t = time(&events, SupplementClock::Pause, "2026-10-07");
        assert_eq!(t.due, Some(d("2026-10-12")));
        assert!(!t.paused);
        // Restarted from the day after Wed 7: Thu 8, Fri 9, Mon 12, Tue 13, Wed 14.
        let t = time(&events, SupplementClock::Restart, "2026-10-07");
        assert_eq!(t.due, Some(d("2026-10-14")));
        // While the materials are awaited: paused, no warning, even long after.
        let t = time(&events[..2], SupplementClock::Pause, "2026-10-20");
        assert!(t.paused);
        assert_eq!(t.warning, Warning::None);
    }

    #[test]
    fn a_decision_stops_the_case_clock_and_says_whether_it_was_on_time() {
        let mut events = vec![
            ev("a", "2026-09-30", Tier::Village, EventKind::Accepted),
            ev("r", "2026-10-09", Tier::Town, EventKind::ReviewPassed),
        ];
        let t = time(&events, SupplementClock::Pause, "2026-10-20");
        assert_eq!((t.on_time, t.warning), (Some(false), Warning::None));
        // The issue step (1 day from Fri 9: Mon 12) is late on the 20th.
        assert_eq!(t.step_due, Some(d("2026-10-12")));
        assert_eq!(t.step_warning, Warning::Red);
        events[1].at = at("2026-10-08");
        assert_eq!(
            time(&events, SupplementClock::Pause, "2026-10-08").on_time,
            Some(true)
        );
    }

    /// Every history of the fold tests, on each day of three weeks: supervision's date gives
    /// the same worst mark as counting the case's legal time that day.
    #[test]
    fn the_watch_date_marks_as_legal_time_does_on_every_day() {
        let (v, t) = (Tier::Village, Tier::Town);
        let histories: Vec<Vec<Event>> = vec![
            vec![ev("a", "2026-09-30", v, EventKind::Accepted)],
            vec![
                ev("a", "2026-09-30", v, EventKind::Accepted),
                ev("s", "2026-10-05", t, EventKind::SupplementRequested),
            ],
            vec![
                ev("a", "2026-09-30", v, EventKind::Accepted),
                ev("s", "2026-10-05", t, EventKind::SupplementRequested),
                ev("p", "2026-10-07", v, EventKind::SupplementProvided),
            ],
            vec![
                ev("a", "2026-09-30", v, EventKind::Accepted),
                ev("r", "2026-10-09", t, EventKind::ReviewPassed),
            ],
        ];
        let calendar = Calendar::parse(CALENDAR).expect("calendar");
        for clock in [SupplementClock::Pause, SupplementClock::Restart] {
            for events in &histories {
                let marks = Marks::of(&fold(&route(), events));
                let limits = limits(clock);
                let watch = watch_date(&marks, Some(&limits), &calendar, china());
                let mut day = d("2026-09-30");
                while day < d("2026-10-21") {
                    let time = legal_time(&marks, Some(&limits), &calendar, day, china());
                    let by_date = watch.map_or(Warning::None, |w| {
                        due_warning(&calendar, day, w).expect("counted")
                    });
                    assert_eq!(
                        time.worst(),
                        by_date,
                        "{clock:?}, {} events, {day}",
                        events.len()
                    );
                    day = day.succ_opt().expect("day");
                }
            }
        }
    }

    #[test]
    fn an_unpublished_year_counts_by_rule_marked_provisional_and_immediate_items_have_no_limit() {
        // Mon 28 Dec 2026; the calendar covers 2026 only. Tue 29 (1), Wed 30 (2), Thu 31
        // (3); 2027 by rule: Fri 1 Jan rests (元旦), Mon 4 (4), Tue 5 (5).
        let events = [ev("a", "2026-12-28", Tier::Village, EventKind::Accepted)];
        let t = time(&events, SupplementClock::Pause, "2026-12-28");
        assert_eq!(t.due, Some(d("2027-01-05")));
        assert!(t.provisional);
        assert_eq!(t.error, None);
        let within = [ev("a", "2026-09-30", Tier::Village, EventKind::Accepted)];
        assert!(!time(&within, SupplementClock::Pause, "2026-09-30").provisional);
        let calendar = Calendar::parse(CALENDAR).expect("calendar");
        let state = Marks::of(&fold(&route(), &events));
        assert_eq!(
            legal_time(&state, None, &calendar, d("2026-12-28"), china()),
            LegalTime::default()
        );
    }
}
