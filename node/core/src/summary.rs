//! The list projection of a case: what lists, queues and searches show without loading the
//! document. Holds no full ID number.

use serde::{Deserialize, Serialize};

use crate::case_doc::Case;
use crate::catalog::Tier;
use crate::fold::{CaseState, Status};
use crate::hlc::Hlc;
use crate::idcard;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseSummary {
    pub id: String,
    pub receipt_no: String,
    pub item_code: String,
    pub item_name: String,
    pub applicant_name: String,
    /// `4301**********1234`
    pub id_number_masked: String,
    pub status: Status,
    pub step: Option<String>,
    pub tier: Option<Tier>,
    pub accepted_at: Hlc,
    pub village: String,
    #[serde(default)]
    pub town: String,
    #[serde(default)]
    pub county: String,
    pub conflict: bool,
    pub proxy: bool,
    /// What legal time is counted from (rows written before deadlines existed have none).
    #[serde(default)]
    pub marks: crate::deadline::Marks,
    /// Notices the events call for that no `notice_sent` records yet
    /// ([`crate::notice::pending_count`]): the outbox loads a case only when its row does not
    /// say 0. Rows written before this field have none, and the outbox loads those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notices_pending: Option<u32>,
    /// Each route step the case stayed on and left: statistics count step days from them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub visits: Vec<crate::fold::Visit>,
    /// The level of the rating that counts ([`crate::rating::latest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<u8>,
    /// The bad ratings whose follow-up (回访整改) is still open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub follow_ups: Vec<crate::rating::OpenFollowUp>,
}

impl CaseSummary {
    pub fn of(case: &Case, state: &CaseState) -> Self {
        let (rating, follow_ups) = crate::rating::summary_of(case, state);
        Self {
            id: case.id.clone(),
            receipt_no: case.receipt_no.clone(),
            item_code: case.item_code.clone(),
            item_name: case.item_name.clone(),
            applicant_name: case.applicant.name.clone(),
            id_number_masked: idcard::mask(&case.applicant.id_number),
            status: state.status,
            step: state.step.clone(),
            tier: state.tier,
            accepted_at: state.accepted_at.unwrap_or_default(),
            village: case.division.village.clone(),
            town: case.division.town.clone(),
            county: case.division.county.clone(),
            conflict: state.conflict.is_some(),
            proxy: case.proxy.is_some(),
            marks: crate::deadline::Marks::of(state),
            notices_pending: Some(
                u32::try_from(crate::notice::pending_count(case)).unwrap_or(u32::MAX),
            ),
            visits: state.visits.clone(),
            rating,
            follow_ups,
        }
    }
}

/// The index keys a case has; the writer removes the old set and inserts the new one in the
/// same transaction as the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexKeys {
    pub by_status: String,
    pub by_date: String,
    pub receipt: String,
    pub by_name: String,
    pub by_id_tail: String,
    /// `case_follow_ups-1`: one key an open follow-up ([`crate::followups::key`]).
    pub follow_ups: Vec<String>,
}

impl IndexKeys {
    /// Derived from the summary alone, so the writer can remove a case's old keys without
    /// the old document.
    pub fn of(s: &CaseSummary) -> Self {
        let sep = crate::store::SEP;
        let (at, id) = (s.accepted_at, &s.id);
        Self {
            by_status: format!("{}{sep}{at}{sep}{id}", s.status.as_str()),
            by_date: format!("{at}{sep}{id}"),
            receipt: s.receipt_no.clone(),
            by_name: format!("{}{sep}{id}", s.applicant_name),
            by_id_tail: format!("{}{sep}{id}", idcard::tail4(&s.id_number_masked)),
            follow_ups: s
                .follow_ups
                .iter()
                .map(|f| crate::followups::key(f, id))
                .collect(),
        }
    }
}
