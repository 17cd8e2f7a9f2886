//! Supervision (电子监察) as an index, `case_watch-1`: every open case with a date to watch
//! ([`crate::deadline::watch_date`]: the earlier of its current step's due date and, while it
//! is undecided, its own), under keys ordered by that date. On any day the cases to show —
//! late (red) or with at most one working day left (yellow) — are exactly the keys up to the
//! next working day after today: one range read, the oldest case included however many the
//! node holds, and the counts by step and by holder read from the same rows.
//!
//! The date depends on the node's [`Clock`] (calendar, limits, time zone) but not on today,
//! so the store's writer keeps the index with the list projection and rebuilds it with the
//! other legal-time projections when the clock changes.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use crate::catalog::Tier;
use crate::deadline::Warning;
use crate::legal_clock::Clock;
use crate::node::Node;
use crate::queue::OPEN;
use crate::store::{SEP, StoreError};
use crate::summary::CaseSummary;

/// The case's row in `case_watch-1` under `clock`: the key
/// `{date} \x1f {accepted_at} \x1f {id}` and the value `{item} \x1f {step} \x1f {holder}`,
/// where the holder is the division whose tier holds the baton. `None`: nothing to watch.
pub fn key(clock: &Clock, s: &CaseSummary) -> Option<(String, String)> {
    if !OPEN.contains(&s.status) {
        return None;
    }
    let date = clock.watch_date(s)?;
    let step = s.step.as_deref().unwrap_or_default();
    let holder = match s.tier {
        Some(Tier::Village) => &s.village,
        Some(Tier::Town) => &s.town,
        Some(Tier::County) => &s.county,
        None => "",
    };
    Some((
        format!("{date}{SEP}{}{SEP}{}", s.accepted_at, s.id),
        format!("{}{SEP}{step}{SEP}{holder}", s.item_code),
    ))
}

/// One row of the index as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub date: NaiveDate,
    pub id: String,
    pub item_code: String,
    pub step: String,
    pub holder: String,
}

impl Watched {
    /// Parses a stored key and value; `None` for a damaged row.
    pub fn parse(key: &str, value: &str) -> Option<Self> {
        let (date, rest) = key.split_once(SEP)?;
        let (_, id) = rest.rsplit_once(SEP)?;
        let mut v = value.splitn(3, SEP);
        Some(Self {
            date: date.parse().ok()?,
            id: id.to_string(),
            item_code: v.next()?.to_string(),
            step: v.next()?.to_string(),
            holder: v.next()?.to_string(),
        })
    }

    /// The tier holding the baton at this step (`town:review` → town).
    pub fn tier(&self) -> Option<Tier> {
        self.step.split_once(':').and_then(|(t, _)| Tier::parse(t))
    }
}

/// Red and yellow cases of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    pub red: u64,
    pub yellow: u64,
}

/// One read of the index ([`crate::store::Store::watch_scan`]): every row to show today
/// counted by its value (`item \x1f step \x1f holder`), and the rows of one page.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub counts: std::collections::HashMap<String, Marks>,
    pub rows: Vec<Watched>,
}

/// What the supervision page shows: one page of the cases, and the counts of all of them.
#[derive(Debug, Clone, Default)]
pub struct Board {
    /// The page's cases with their mark, red first, then the earliest date.
    pub rows: Vec<(CaseSummary, Warning)>,
    pub red: u64,
    pub yellow: u64,
    /// `(item code, step)` → marks: where the cases wait.
    pub by_step: BTreeMap<(String, String), Marks>,
    /// `(tier, division)` → marks: who holds them, the one to act.
    pub by_holder: BTreeMap<(Option<Tier>, String), Marks>,
}

impl Board {
    pub fn total(&self) -> u64 {
        self.red + self.yellow
    }
}

/// Cases `offset..offset + limit` of supervision today, with the counts of all of them.
pub async fn board(node: &Node, offset: usize, limit: usize) -> Result<Board, StoreError> {
    crate::queue::ensure_fresh(node).await?;
    let Some(calendar) = node.calendar() else {
        return Ok(Board::default());
    };
    let today = node.today();
    // Yellow: at most one working day left, so due on or before the next working day.
    let Ok(last) = calendar.add_working_days(today, 1) else {
        return Ok(Board::default());
    };
    let scan = node.store.watch_scan(today, last, offset, limit)?;
    let mut board = Board::default();
    for (value, marks) in &scan.counts {
        let mut parts = value.splitn(3, SEP);
        let (item, step, holder) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let tier = step.split_once(':').and_then(|(t, _)| Tier::parse(t));
        for slot in [
            board
                .by_step
                .entry((item.to_string(), step.to_string()))
                .or_default(),
            board
                .by_holder
                .entry((tier, holder.to_string()))
                .or_default(),
        ] {
            slot.red += marks.red;
            slot.yellow += marks.yellow;
        }
        board.red += marks.red;
        board.yellow += marks.yellow;
    }
    let ids: Vec<&str> = scan.rows.iter().map(|w| w.id.as_str()).collect();
    let summaries = node.store.summaries(&ids)?;
    board.rows = scan
        .rows
        .iter()
        .zip(summaries)
        .filter_map(|(w, s)| {
            let mark = if w.date < today {
                Warning::Red
            } else {
                Warning::Yellow
            };
            Some((s?, mark))
        })
        .collect();
    Ok(board)
}
