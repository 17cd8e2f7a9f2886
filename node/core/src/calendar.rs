//! The working-day calendar (工作日历) that legal time limits are counted on.
//!
//! Saturdays and Sundays rest, public holidays rest, make-up working days (调休) work even on a
//! weekend. Limits count from the day after acceptance: a 5-working-day limit ends on the fifth
//! working day after the day of acceptance.
//!
//! The county publishes the calendar of each year from the State Council's notice. A year it
//! has not published (every December, the next one) is counted on the provisional calendar
//! of [`rules`]: weekends and the statutory holidays by rule, without the 调休 no rule can
//! predict. A count that touched such a year says so ([`Calendar::provisional_between`]), and
//! the due dates it gives are shown as 预估 until the county publishes the year. The legal
//! clock never stops for want of a published year.

pub mod rules;

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{Datelike, NaiveDate, Weekday};
use serde::Deserialize;
use thiserror::Error;

/// Calendar file schema this build reads.
pub const CALENDAR_SCHEMA: u32 = 1;

/// The longest limit counted, in working days: a bound on the walk through the calendar.
const MAX_WORKING_DAYS: u32 = 3650;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    schema: u32,
    years: Vec<i32>,
    #[serde(default)]
    holidays: Vec<Holiday>,
    #[serde(default)]
    workdays: Vec<Workday>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Holiday {
    name: String,
    from: NaiveDate,
    to: NaiveDate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Workday {
    name: String,
    date: NaiveDate,
}

/// A checked calendar: the published years, and the rule for every other year.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    /// The years the county published.
    years: BTreeSet<i32>,
    holidays: BTreeSet<NaiveDate>,
    workdays: BTreeSet<NaiveDate>,
}

/// Why a calendar was refused or a count could not be made. The messages are for the people
/// who publish and read calendars: Chinese.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CalendarError {
    #[error("工作日历有误：{place}：{reason}")]
    Invalid { place: String, reason: String },
    #[error(
        "{0}年既未发布工作日历，也超出节假日规则推算的年份（{first}—{last}年），无法计算期限",
        first = rules::FIRST_YEAR,
        last = rules::LAST_YEAR
    )]
    NotCovered(i32),
    #[error("{0}个工作日的期限超过本节点可计算的{MAX_WORKING_DAYS}个工作日")]
    TooLong(u32),
}

fn invalid(place: impl Into<String>, reason: impl Into<String>) -> CalendarError {
    CalendarError::Invalid {
        place: place.into(),
        reason: reason.into(),
    }
}

impl Calendar {
    pub fn load(path: &Path) -> Result<Self, CalendarError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(path.display().to_string(), e.to_string()))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, CalendarError> {
        let file: CalendarFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            // The parser's own words are English: the line and the kind of fault say enough.
            invalid(format!("第{line}行"), "格式不符（应为工作日历文件的 TOML 格式：schema、years、[[holidays]]、[[workdays]]）")
        })?;
        if file.schema != CALENDAR_SCHEMA {
            return Err(invalid(
                "schema",
                format!("{} 不是本版本可读的 {CALENDAR_SCHEMA}", file.schema),
            ));
        }
        if file.years.is_empty() {
            return Err(invalid("years", "未列出任何年份"));
        }
        if let Some(y) = file
            .years
            .iter()
            .find(|y| !(rules::FIRST_YEAR..=rules::LAST_YEAR).contains(*y))
        {
            return Err(invalid(
                "years",
                format!("{y}年不在{}—{}年之间", rules::FIRST_YEAR, rules::LAST_YEAR),
            ));
        }
        let years: BTreeSet<i32> = file.years.into_iter().collect();
        let covered = |d: NaiveDate| years.contains(&d.year());
        let mut holidays = BTreeSet::new();
        for (i, h) in file.holidays.iter().enumerate() {
            let place = format!("第{}个假日（{}）", i + 1, h.name);
            if h.to < h.from || (h.to - h.from).num_days() > 31 {
                return Err(invalid(
                    place,
                    "结束日期（to）须不早于开始日期（from），且相距不超过31天",
                ));
            }
            let mut d = h.from;
            while d <= h.to {
                if !covered(d) {
                    return Err(invalid(place, format!("{d}不在所列年份之内")));
                }
                holidays.insert(d);
                d = d
                    .succ_opt()
                    .ok_or_else(|| invalid(place.clone(), "日期越界"))?;
            }
        }
        let mut workdays = BTreeSet::new();
        for (i, w) in file.workdays.iter().enumerate() {
            let place = format!("第{}个调休上班日（{}）", i + 1, w.name);
            if !covered(w.date) || holidays.contains(&w.date) {
                return Err(invalid(place, "不在所列年份之内，或同时列为假日"));
            }
            workdays.insert(w.date);
        }
        Ok(Self {
            years,
            holidays,
            workdays,
        })
    }

    /// A calendar with no published year: every year counts by rule.
    pub fn provisional_only() -> Self {
        Self {
            years: BTreeSet::new(),
            holidays: BTreeSet::new(),
            workdays: BTreeSet::new(),
        }
    }

    /// The years the county published.
    pub fn years(&self) -> Vec<i32> {
        self.years.iter().copied().collect()
    }

    /// Whether the county published `year` (else it counts by rule, provisionally).
    pub fn is_published(&self, year: i32) -> bool {
        self.years.contains(&year)
    }

    /// Whether a count over the days from `from` to `to` touches a year counted by rule.
    pub fn provisional_between(&self, from: NaiveDate, to: NaiveDate) -> bool {
        let (a, b) = if from <= to { (from, to) } else { (to, from) };
        (a.year()..=b.year()).any(|y| !self.is_published(y))
    }

    /// Whether `date` is a working day: as published, else by rule ([`rules`]).
    pub fn is_working_day(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        let weekend = matches!(date.weekday(), Weekday::Sat | Weekday::Sun);
        if !self.years.contains(&date.year()) {
            let rule = rules::year(date.year()).ok_or(CalendarError::NotCovered(date.year()))?;
            return Ok(!weekend && !rule.rest.contains(&date));
        }
        if self.workdays.contains(&date) {
            return Ok(true);
        }
        Ok(!weekend && !self.holidays.contains(&date))
    }

    /// The day a limit of `days` working days ends, counted from the day after `start`.
    /// With `days == 0` the limit ends on `start` itself (immediate items).
    pub fn add_working_days(
        &self,
        start: NaiveDate,
        days: u32,
    ) -> Result<NaiveDate, CalendarError> {
        if days > MAX_WORKING_DAYS {
            return Err(CalendarError::TooLong(days));
        }
        let mut date = start;
        let mut left = days;
        while left > 0 {
            date = date.succ_opt().ok_or(CalendarError::NotCovered(i32::MAX))?;
            if self.is_working_day(date)? {
                left -= 1;
            }
        }
        Ok(date)
    }

    /// Working days from the day after `from` up to and including `to` (0 if `to <= from`).
    pub fn working_days_between(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<u32, CalendarError> {
        let mut count = 0;
        let mut date = from;
        while date < to {
            date = date.succ_opt().ok_or(CalendarError::NotCovered(i32::MAX))?;
            if self.is_working_day(date)? {
                count += 1;
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// A stated calendar, independent of the demo file: Monday 2026-06-01 to the next weeks,
    /// with a three-day holiday Thursday 06-04 to Saturday 06-06 and Sunday 06-07 made a
    /// working day (调休).
    const STATED: &str = r#"
schema = 1
years = [2026]
[[holidays]]
name = "三天假"
from = "2026-06-04"
to = "2026-06-06"
[[workdays]]
name = "调休"
date = "2026-06-07"
"#;

    #[test]
    fn five_working_days_across_a_holiday_with_a_make_up_sunday() {
        let cal = Calendar::parse(STATED).unwrap();
        // Accepted Wednesday 06-03, the working day before the holiday. Counting by hand from
        // the day after: Thu 04, Fri 05, Sat 06 rest (holiday); Sun 07 works (1); Mon 08 (2),
        // Tue 09 (3), Wed 10 (4), Thu 11 (5).
        assert_eq!(
            cal.add_working_days(d("2026-06-03"), 5).unwrap(),
            d("2026-06-11")
        );
        assert!(cal.is_working_day(d("2026-06-07")).unwrap());
        assert!(!cal.is_working_day(d("2026-06-05")).unwrap());
        assert!(
            !cal.is_working_day(d("2026-06-13")).unwrap(),
            "an ordinary Saturday rests"
        );
        assert_eq!(
            cal.working_days_between(d("2026-06-03"), d("2026-06-11"))
                .unwrap(),
            5
        );
    }

    #[test]
    fn zero_days_ends_the_same_day_and_an_unpublished_year_counts_by_rule() {
        let cal = Calendar::parse(STATED).unwrap();
        assert_eq!(
            cal.add_working_days(d("2026-06-03"), 0).unwrap(),
            d("2026-06-03")
        );
        // Wed 30 Dec 2026: Thu 31 (1); 2027 by rule: Fri 1 Jan rests (元旦), Mon 4 (2),
        // Tue 5 (3), Wed 6 (4), Thu 7 (5).
        assert_eq!(
            cal.add_working_days(d("2026-12-30"), 5).unwrap(),
            d("2027-01-07")
        );
        assert!(cal.provisional_between(d("2026-12-30"), d("2027-01-07")));
        assert!(!cal.provisional_between(d("2026-06-03"), d("2026-06-11")));
        assert_eq!(
            cal.is_working_day(d("2300-01-05")),
            Err(CalendarError::NotCovered(2300))
        );
        assert!(
            CalendarError::NotCovered(2300)
                .to_string()
                .contains("2300年")
        );
        assert_eq!(
            cal.add_working_days(d("2026-01-05"), 5000),
            Err(CalendarError::TooLong(5000))
        );
    }

    #[test]
    fn demo_calendar_loads_and_bad_files_are_refused_with_a_place() {
        let demo = crate::DEMO_CALENDAR;
        let cal = Calendar::parse(demo).unwrap();
        assert!(!cal.is_working_day(d("2026-10-01")).unwrap());
        assert!(
            cal.is_working_day(d("2026-10-10")).unwrap(),
            "a Saturday made a working day"
        );
        let bad = STATED.replace("to = \"2026-06-06\"", "to = \"2026-06-01\"");
        assert!(
            matches!(Calendar::parse(&bad), Err(CalendarError::Invalid { place, .. }) if place.starts_with("第1个假日"))
        );
        assert!(Calendar::parse("schema = 2\nyears=[2026]").is_err());
    }
}
