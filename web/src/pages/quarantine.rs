//! 同步隔离 (`GET /quarantine`, JSON `GET /api/v1/quarantine`): the documents refused for
//! good, by this node or by its peer, with the reason; at the county also what each node
//! sent that was refused or kept as forged (伪造/无效).

use askama::Template;
use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::json;
use yiciban_core::store::quarantine::Direction;

use super::{Chrome, PageResult, page};
use crate::AppState;
use crate::authz::Action;
use crate::session::Auth;
use crate::views;

struct Row {
    at: String,
    doc_id: String,
    receipt_no: String,
    direction: &'static str,
    peer: String,
    reason: String,
}

struct RefusalRow {
    at: String,
    peer: String,
    receipt_no: String,
    what: &'static str,
    reason: String,
}

#[derive(Template)]
#[template(path = "quarantine.html")]
struct QuarantineTpl {
    chrome: Chrome,
    rows: Vec<Row>,
    refusals: Vec<RefusalRow>,
}

/// `GET /quarantine`.
pub async fn quarantine_page(State(state): State<AppState>, auth: Auth) -> PageResult {
    auth.require(Action::ViewQuarantine)?;
    let offset = *state.node.local_now().offset();
    let rows = state
        .node
        .store
        .quarantined()?
        .into_iter()
        .map(|q| Row {
            at: views::local_time_ms(q.at_ms, offset),
            doc_id: q.doc_id,
            receipt_no: q.receipt_no,
            direction: match q.direction {
                Direction::Received => "来自",
                Direction::Sent => "发往",
            },
            peer: q.peer,
            reason: q.reason,
        })
        .collect();
    let mut refusals: Vec<RefusalRow> = state
        .node
        .store
        .refusals()?
        .into_values()
        .flatten()
        .map(|r| RefusalRow {
            at: views::local_time_ms(r.at_ms, offset),
            peer: r.peer,
            receipt_no: r.receipt_no,
            what: if r.event_id.is_some() {
                "办理事件（已保留，不计入）"
            } else {
                "办件文档（已拒收）"
            },
            reason: r.reason,
        })
        .collect();
    refusals.sort_by(|a, b| b.at.cmp(&a.at));
    page(&QuarantineTpl {
        chrome: Chrome::new(&state, Some(&auth), "同步隔离"),
        rows,
        refusals,
    })
}

/// `GET /api/v1/quarantine`: `{quarantined: [{doc_id, receipt_no, peer, direction, reason,
/// reason_en, at_ms}], refusals: {NODE: [{doc_id, receipt_no, event_id, reason, …}]}}`.
pub async fn quarantine_json(State(state): State<AppState>, auth: Auth) -> crate::api::ApiResult {
    auth.require(Action::ViewQuarantine)?;
    Ok(Json(json!({
        "quarantined": state.node.store.quarantined()?,
        "refusals": state.node.store.refusals()?,
    }))
    .into_response())
}
