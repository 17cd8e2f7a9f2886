//! The open follow-ups of bad ratings (回访整改) as an index, `case_follow_ups-1`: one key an
//! open follow-up, ordered by the rating's stamp. A follow-up is due a fixed number of working
//! days after the day of its rating, so that order is the order of due dates: the most
//! overdue first, the oldest included however many cases the node holds. A page reads its
//! own keys and the documents of its rows, never the closed cases.
//!
//! The store's writer keeps the index with the list projection, from the follow-ups the
//! summary lists as open ([`crate::rating::summary_of`]); a county comment that closes one
//! takes its key out in the same transaction.

use crate::calendar::Calendar;
use crate::deadline::{Warning, due_warning, local_date};
use crate::hlc::Hlc;
use crate::node::Node;
use crate::rating::{FOLLOW_UP_DAYS, FollowUp, OpenFollowUp};
use crate::store::{SEP, StoreError};
use crate::summary::CaseSummary;

/// The follow-up's key: `{rating stamp} \x1f {rating event id} \x1f {case id}`.
pub fn key(f: &OpenFollowUp, case_id: &str) -> String {
    format!("{}{SEP}{}{SEP}{case_id}", f.at, f.rating_event_id)
}

/// The rating's stamp and the case id of a key.
fn parse(key: &str) -> Option<(Hlc, &str)> {
    let (at, rest) = key.split_once(SEP)?;
    let (_, case_id) = rest.rsplit_once(SEP)?;
    Some((Hlc::parse(at)?, case_id))
}

/// One open follow-up with its case.
#[derive(Debug, Clone)]
pub struct Row {
    pub summary: CaseSummary,
    pub follow_up: FollowUp,
}

/// One page of the open follow-ups, with the counts of all of them.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub rows: Vec<Row>,
    pub total: u64,
    pub red: u64,
    pub yellow: u64,
}

/// The mark of a follow-up rated at `at`, today.
fn warning(calendar: Option<&Calendar>, node: &Node, at: Hlc) -> Warning {
    let Some(calendar) = calendar else {
        return Warning::None;
    };
    let now = node.local_now();
    let rated_on = local_date(at, *now.offset());
    calendar
        .add_working_days(rated_on, FOLLOW_UP_DAYS)
        .and_then(|due| due_warning(calendar, now.date_naive(), due))
        .unwrap_or(Warning::None)
}

/// Open follow-ups `offset..offset + limit`, the most overdue first, with how many are open,
/// late and nearly late. Counts every key (the open follow-ups only, never the closed cases)
/// and loads the documents of the page's rows.
pub fn page(node: &Node, offset: usize, limit: usize) -> Result<Page, StoreError> {
    let keys = node.store.follow_up_keys()?;
    let calendar = node.calendar();
    let mut page = Page {
        total: keys.len() as u64,
        ..Page::default()
    };
    for key in &keys {
        let Some((at, _)) = parse(key) else { continue };
        match warning(calendar.as_deref(), node, at) {
            Warning::Red => page.red += 1,
            Warning::Yellow => page.yellow += 1,
            Warning::None => {}
        }
    }
    for key in keys.iter().skip(offset).take(limit) {
        let rating_id = key.split(SEP).nth(1).unwrap_or_default();
        let Some((_, case_id)) = parse(key) else {
            continue;
        };
        let (Some(case), Some(summary)) = (
            node.store.case(case_id)?,
            node.store.summaries(&[case_id])?.pop().flatten(),
        ) else {
            continue;
        };
        if let Some(follow_up) = node
            .follow_ups(&case)
            .into_iter()
            .find(|f| f.rating_event_id == rating_id && !f.closed)
        {
            page.rows.push(Row { summary, follow_up });
        }
    }
    Ok(page)
}
