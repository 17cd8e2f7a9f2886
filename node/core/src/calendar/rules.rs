//! The statutory public holidays of a year, computed by rule: the provisional calendar legal
//! time counts on for a year the county has not published.
//!
//! The rule is the current 全国年节及纪念日放假办法 (as revised in 2024, in force from 2025):
//! 元旦 1 day (1 January); 春节 4 days (除夕 and the first three days of the lunar year); 清明
//! 1 day (the day of the solar term); 劳动节 2 days (1 and 2 May); 端午 1 day (the fifth of the
//! fifth lunar month); 中秋 1 day (the fifteenth of the eighth lunar month); 国庆 3 days (1 to 3
//! October). A holiday day that falls on a Saturday or Sunday, or on a day another holiday
//! already rests, is made good (补假) on the first working day after that holiday, as the
//! 办法 says of holidays for all citizens. Lunar dates and the solar term come from `tyme4rs`.
//!
//! What no rule can predict is the State Council's 调休: weekend days turned into working days
//! so that a holiday joins a weekend. A provisional year has none, so it has the right number
//! of working days but may place some of them on other days than the published arrangement
//! will; every due date counted on it is marked provisional (预估) until the county publishes.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use tyme4rs::tyme::lunar::LunarDay;
use tyme4rs::tyme::solar::{SolarDay, SolarTerm};

/// The first and last year the rule is computed for (the lunar tables hold many more; this
/// bounds the work and the cache).
pub const FIRST_YEAR: i32 = 2000;
pub const LAST_YEAR: i32 = 2199;

/// Changes whenever the rule below changes, so projections keyed on legal time are rebuilt.
pub const RULES_VERSION: u32 = 1;

/// One statutory holiday of a year, as the rule places it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleHoliday {
    pub name: &'static str,
    /// Its statutory days, in order.
    pub days: Vec<NaiveDate>,
    /// The working days given as rest in their place (补假), in order.
    pub substitutes: Vec<NaiveDate>,
}

/// A year's holidays by rule and every weekday they rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleYear {
    pub year: i32,
    pub holidays: Vec<RuleHoliday>,
    /// Every day the holidays rest (statutory days and substitutes).
    pub rest: BTreeSet<NaiveDate>,
}

const YEARS: usize = (LAST_YEAR - FIRST_YEAR + 1) as usize;
static CACHE: [OnceLock<Option<RuleYear>>; YEARS] = [const { OnceLock::new() }; YEARS];

/// The holidays of `year` by rule; `None` outside [`FIRST_YEAR`]`..=`[`LAST_YEAR`]. Computed
/// once per year and kept.
pub fn year(year: i32) -> Option<&'static RuleYear> {
    let index = usize::try_from(year.checked_sub(FIRST_YEAR)?).ok()?;
    CACHE.get(index)?.get_or_init(|| compute(year)).as_ref()
}

fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

fn solar(day: &SolarDay) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(
        i32::try_from(day.get_year()).ok()?,
        u32::try_from(day.get_month()).ok()?,
        u32::try_from(day.get_day()).ok()?,
    )
}

fn lunar(year: i32, month: isize, day: usize) -> Option<NaiveDate> {
    let day = LunarDay::new(isize::try_from(year).ok()?, month, day).ok()?;
    solar(&day.get_solar_day())
}

fn run(first: NaiveDate, days: i64) -> Vec<NaiveDate> {
    (0..days).map(|i| first + Duration::days(i)).collect()
}

/// The statutory days of each holiday of `year`, in calendar order.
fn statutory(year: i32) -> Option<Vec<(&'static str, Vec<NaiveDate>)>> {
    let ymd = |m, d| NaiveDate::from_ymd_opt(year, m, d);
    let new_year = lunar(year, 1, 1)?;
    let qingming = solar(
        &SolarTerm::new(isize::try_from(year).ok()?, "清明")
            .ok()?
            .get_solar_day(),
    )?;
    let mut holidays = vec![
        ("元旦", vec![ymd(1, 1)?]),
        ("春节", run(new_year - Duration::days(1), 4)),
        ("清明节", vec![qingming]),
        ("劳动节", run(ymd(5, 1)?, 2)),
        ("端午节", vec![lunar(year, 5, 5)?]),
        ("中秋节", vec![lunar(year, 8, 15)?]),
        ("国庆节", run(ymd(10, 1)?, 3)),
    ];
    holidays.sort_by_key(|(_, days)| days[0]);
    Some(holidays)
}

fn compute(year: i32) -> Option<RuleYear> {
    let mut rest = BTreeSet::new();
    let mut holidays = Vec::new();
    for (name, days) in statutory(year)? {
        // A day owed: on a weekend, or already resting for an earlier holiday.
        let owed = days
            .iter()
            .filter(|d| is_weekend(**d) || rest.contains(*d))
            .count();
        rest.extend(days.iter().copied());
        let mut substitutes = Vec::new();
        let mut next = *days.last()?;
        while substitutes.len() < owed {
            next = next.succ_opt()?;
            if !is_weekend(next) && !rest.contains(&next) {
                substitutes.push(next);
                rest.insert(next);
            }
        }
        holidays.push(RuleHoliday {
            name,
            days,
            substitutes,
        });
    }
    Some(RuleYear {
        year,
        holidays,
        rest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::Calendar;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// The State Council's published arrangement for 2025 (国办发明电〔2024〕12号), in the
    /// calendar file's format; 2026 is the built-in calendar (`config/calendar.toml`).
    const PUBLISHED_2025: &str = r#"
schema = 1
years = [2025]
[[holidays]]
name = "元旦"
from = "2025-01-01"
to = "2025-01-01"
[[holidays]]
name = "春节"
from = "2025-01-28"
to = "2025-02-04"
[[holidays]]
name = "清明节"
from = "2025-04-04"
to = "2025-04-06"
[[holidays]]
name = "劳动节"
from = "2025-05-01"
to = "2025-05-05"
[[holidays]]
name = "端午节"
from = "2025-05-31"
to = "2025-06-02"
[[holidays]]
name = "国庆节、中秋节"
from = "2025-10-01"
to = "2025-10-08"
[[workdays]]
name = "春节调休"
date = "2025-01-26"
[[workdays]]
name = "春节调休"
date = "2025-02-08"
[[workdays]]
name = "劳动节调休"
date = "2025-04-27"
[[workdays]]
name = "国庆节调休"
date = "2025-09-28"
[[workdays]]
name = "国庆节调休"
date = "2025-10-11"
"#;

    fn days_of(rule: &RuleYear, name: &str) -> Vec<NaiveDate> {
        rule.holidays
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.days.clone())
            .unwrap_or_default()
    }

    #[test]
    fn lunar_dates_and_the_solar_term_match_the_published_years() {
        let y25 = year(2025).unwrap();
        assert_eq!(days_of(y25, "春节")[0], d("2025-01-28"), "除夕 2025");
        assert_eq!(days_of(y25, "清明节"), [d("2025-04-04")]);
        assert_eq!(days_of(y25, "端午节"), [d("2025-05-31")]);
        assert_eq!(days_of(y25, "中秋节"), [d("2025-10-06")]);
        let y26 = year(2026).unwrap();
        assert_eq!(days_of(y26, "春节")[0], d("2026-02-16"), "除夕 2026");
        assert_eq!(days_of(y26, "清明节"), [d("2026-04-05")]);
        assert_eq!(days_of(y26, "端午节"), [d("2026-06-19")]);
        assert_eq!(days_of(y26, "中秋节"), [d("2026-09-25")]);
        // 端午 2025 is a Saturday, made good on Monday 2 June as published.
        let duanwu = y25.holidays.iter().find(|h| h.name == "端午节").unwrap();
        assert_eq!(duanwu.substitutes, [d("2025-06-02")]);
    }

    /// Every day the rule rests lies inside a published holiday, and the year has as many
    /// working days as the published arrangement: 调休 only moves working days about.
    #[test]
    fn the_rule_agrees_with_the_published_2025_and_2026_arrangements() {
        for (y, text) in [(2025, PUBLISHED_2025), (2026, crate::DEMO_CALENDAR)] {
            let published = Calendar::parse(text).unwrap();
            let rule = year(y).unwrap();
            for day in &rule.rest {
                assert!(
                    !published.is_working_day(*day).unwrap(),
                    "{day} rests by rule but works in the published {y}"
                );
            }
            let start = NaiveDate::from_ymd_opt(y - 1, 12, 31).unwrap();
            let end = NaiveDate::from_ymd_opt(y, 12, 31).unwrap();
            let by_rule = Calendar::provisional_only()
                .working_days_between(start, end)
                .unwrap();
            let by_notice = published.working_days_between(start, end).unwrap();
            assert_eq!(by_rule, by_notice, "working days in {y}");
            assert_eq!(
                rule.holidays.iter().map(|h| h.days.len()).sum::<usize>(),
                13,
                "13 statutory days in {y}"
            );
        }
    }

    #[test]
    fn a_holiday_on_another_is_made_good_and_years_outside_the_range_are_none() {
        // 2020: 中秋 fell on 1 October, inside 国庆 (then 3 days too): two days made good.
        let y20 = year(2020).unwrap();
        let extra: Vec<NaiveDate> = y20
            .holidays
            .iter()
            .flat_map(|h| h.substitutes.clone())
            .filter(|s| s.month() == 10)
            .collect();
        assert_eq!(extra, [d("2020-10-05"), d("2020-10-06")]);
        assert!(year(FIRST_YEAR - 1).is_none());
        assert!(year(LAST_YEAR + 1).is_none());
        assert!(year(LAST_YEAR).is_some());
    }
}
