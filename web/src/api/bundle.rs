//! The JSON API of 一件事 bundles and of 当场办结 (an immediate item settled at the counter).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use yiciban_core::bundle::{BundleInput, FiledBundle};
use yiciban_core::catalog::Tier;
use yiciban_core::node::{Filed, Node};

use super::{ApiResult, created, csrf, parse_json};
use crate::AppState;
use crate::authz::{self, Action};
use crate::error::AppError;
use crate::session::Auth;
use crate::views;

fn case_json(node: &Node, f: &Filed) -> serde_json::Value {
    json!({
        "id": f.case.id,
        "receipt_no": f.case.receipt_no,
        "item_code": f.case.item_code,
        "item_name": f.case.item_name,
        "state": views::state_json(node, &f.case.item_code, &f.state),
    })
}

/// `201 {bundle_id, code, name, cases: [{id, receipt_no, item_code, item_name, state}]}`.
fn bundle_created(node: &Node, filed: &FiledBundle) -> Response {
    let body = json!({
        "bundle_id": filed.bundle.id,
        "code": filed.bundle.code,
        "name": filed.bundle.name,
        "cases": filed.cases.iter().map(|f| case_json(node, f)).collect::<Vec<_>>(),
    });
    (StatusCode::CREATED, Json(body)).into_response()
}

/// `POST /api/v1/bundles`: one form and one materials list for every item of the bundle; one
/// sub-case per item, all stored before the answer.
pub async fn file_bundle(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    auth.check_csrf(csrf(&headers))?;
    auth.require(Action::FileApplication)?;
    let input: BundleInput = parse_json(&body)?;
    let filed = state
        .node
        .file_bundle(&input, Vec::new(), &auth.actor())
        .await?;
    Ok(bundle_created(&state.node, &filed))
}

/// `GET /api/v1/bundles/{id}`: the bundle (by its id or any sub-case's) with every sub-case
/// this node holds, and whether the village may hand it out now.
pub async fn bundle_detail(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult {
    auth.require(Action::ViewCases)?;
    let view = state.node.bundle_view(&id)?;
    let check = view.hand_out_check();
    let hands_out = state.node.tier() == Tier::Village && authz::may_hand_out(auth.0.role);
    Ok(Json(json!({
        "bundle_id": view.bundle.id,
        "code": view.bundle.code,
        "name": view.bundle.name,
        "cases": view.cases.iter().map(|f| case_json(&state.node, f)).collect::<Vec<_>>(),
        "missing": view.missing,
        "ready": check.is_ok(),
        "can_issue": hands_out && check.is_ok(),
        "waiting": check.err(),
    }))
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct NoteBody {
    #[serde(default)]
    note: String,
}

fn note_of(body: &[u8]) -> Result<String, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    Ok(parse_json::<NoteBody>(body)?.note)
}

/// `POST /api/v1/bundles/{id}/issue` `{note?}`: `issued` on every ready sub-case in one
/// commit; `409` while a sub-case is still being handled.
pub async fn issue_bundle(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    auth.check_csrf(csrf(&headers))?;
    auth.require(Action::RecordEvent)?;
    if !authz::may_hand_out(auth.0.role) {
        return Err(AppError::Forbidden.into());
    }
    let note = note_of(&body)?;
    let filed = state.node.issue_bundle(&id, &note, &auth.actor()).await?;
    Ok(bundle_created(&state.node, &filed))
}

/// `POST /api/v1/applications/{id}/counter` `{note?}`: 当场办结 of an immediate item,
/// `issued` and `picked_up` in one commit; `201 {id, receipt_no, state}`.
pub async fn counter(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    auth.check_csrf(csrf(&headers))?;
    auth.require(Action::RecordEvent)?;
    if !authz::may_hand_out(auth.0.role) {
        return Err(AppError::Forbidden.into());
    }
    let note = note_of(&body)?;
    let filed = state
        .node
        .settle_at_counter(&id, &note, &auth.actor())
        .await?;
    Ok(created(&state.node, &filed))
}
