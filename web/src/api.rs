//! The JSON API under `/api/v1`: the same capability as the pages, for scripts and for the
//! provincial platform. Errors come back as `{error, message}` via [`AppError`].

use crate::extract::ApiQuery;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use yiciban_core::application::ApplicationInput;
use yiciban_core::catalog::ItemKind;
use yiciban_core::enrol::EnrolRequest;
use yiciban_core::fold::Status;
use yiciban_core::message::Msg;
use yiciban_core::store::CaseQuery;

use crate::AppState;
use crate::authz::{self, Action};
use crate::error::AppError;
use crate::session::{self, Auth};
use crate::views;

mod admin;
mod bundle;
mod stats;
pub use admin::{
    add_user as add_directory_user, directory, issue_token, revoke as revoke_node, set_disabled,
    set_password, tokens,
};
pub use bundle::{bundle_detail, counter, file_bundle, issue_bundle};
pub use stats::stats;

/// Every API error is JSON, also the ones raised before a handler runs.
pub(crate) type ApiResult = Result<Response, ApiError>;

#[derive(Debug)]
pub struct ApiError(AppError);

impl<E: Into<AppError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_json()
    }
}

pub(crate) fn csrf(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-csrf-token").and_then(|v| v.to_str().ok())
}

/// Parses a JSON body with a clear error instead of axum's plain-text rejection.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(body).map_err(|e| {
        AppError::BadRequest(Msg::new(
            format!(
                "请求内容不是有效的 JSON（第{}行第{}列）",
                e.line(),
                e.column()
            ),
            format!("body is not valid JSON: {e}"),
        ))
    })
}

#[derive(Debug, Deserialize)]
pub struct LoginBody {
    username: String,
    password: String,
}

pub async fn login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let LoginBody { username, password } = parse_json(&body)?;
    let node = state.node.clone();
    let user = tokio::task::spawn_blocking(move || node.login(&username, &password))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(AppError::Login)?;
    let old = session::cookie_value(&headers);
    let session = state.sessions.start(&user, old.as_deref());
    Ok((
        [(header::SET_COOKIE, session::set_cookie(&session))],
        Json(json!({ "csrf_token": session.csrf, "username": user.username, "role": user.role })),
    )
        .into_response())
}

pub async fn logout(State(state): State<AppState>, auth: Auth, headers: HeaderMap) -> ApiResult {
    auth.check_csrf(csrf(&headers))?;
    state.sessions.end(&auth.0.id);
    Ok((
        [(header::SET_COOKIE, session::clear_cookie())],
        Json(json!({"ok": true})),
    )
        .into_response())
}

pub async fn catalog(State(state): State<AppState>, auth: Auth) -> ApiResult {
    auth.require(Action::ViewCatalog)?;
    let items: Vec<_> = state
        .node
        .catalog
        .items()
        .iter()
        .map(|item| {
            json!({
                "code": item.code,
                "name": item.name,
                "name_en": item.name_en,
                "department": item.department,
                "kind": match item.kind { ItemKind::Immediate => "immediate", ItemKind::Promised => "promised" },
                "statutory_days": item.statutory_days,
                "promised_days": item.promised_days,
                "fields": item.fields.iter().map(|f| json!({
                    "key": f.key, "label": f.label, "label_en": f.label_en,
                    "type": f.field_type, "required": f.required, "options": f.options,
                })).collect::<Vec<_>>(),
                "materials": item.materials.iter().map(|m| json!({
                    "key": m.key, "name": m.name, "required": m.required, "form": m.form,
                    "count": m.count, "waivable": m.waivable,
                })).collect::<Vec<_>>(),
                "route": item.route_steps(),
                "legal_basis": item.legal_basis,
                "eligibility": item.eligibility,
                "fee": item.fee,
                "result_name": item.result_name,
                "office_hours": item.office_hours,
                "enquiry_phone": item.enquiry_phone,
                "complaint_phone": item.complaint_phone,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })).into_response())
}

pub async fn file(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    auth.check_csrf(csrf(&headers))?;
    auth.require(Action::FileApplication)?;
    let input: ApplicationInput = parse_json(&body)?;
    let filed = state
        .node
        .file_application(&input, Vec::new(), &auth.actor())
        .await?;
    Ok(created(&state.node, &filed))
}

/// `201 {id, receipt_no, state}`: the answer to every write on a case.
fn created(node: &yiciban_core::node::Node, filed: &yiciban_core::node::Filed) -> Response {
    let body = json!({
        "id": filed.case.id,
        "receipt_no": filed.case.receipt_no,
        "state": views::state_json(node, &filed.case.item_code, &filed.state),
    });
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    q: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(p): ApiQuery<ListParams>,
) -> ApiResult {
    auth.require(Action::ViewCases)?;
    let status = match p.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            AppError::BadRequest(Msg::new("状态参数无效", format!("unknown status {s}")))
        })?),
        None => None,
    };
    let query = CaseQuery {
        q: p.q,
        status,
        limit: p.limit.unwrap_or(50).clamp(1, 500),
    };
    let items = state.node.store.list_cases(&query)?;
    Ok(Json(json!({ "items": items, "count": items.len() })).into_response())
}

pub async fn detail(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult {
    auth.require(Action::ViewCases)?;
    let case = state.node.store.case(&id)?.ok_or(AppError::NotFound)?;
    let st = case.state();
    let heads = state.node.store.heads_hex(&id)?;
    Ok(Json(json!({
        "id": case.id,
        "heads": heads,
        "receipt_no": case.receipt_no,
        "item_code": case.item_code,
        "item_name": case.item_name,
        "node": case.node,
        "route": case.route,
        "division": case.division,
        // Masked, as in lists: the full numbers are a separate, audited request.
        "applicant": masked(&case.applicant),
        "proxy": case.proxy.as_ref().map(masked),
        "form": case.form,
        "materials": case.materials,
        "bundle": case.bundle,
        "events": case.timeline(),
        // Kept, never counted: the events whose author or signature does not hold (伪造/无效).
        "forged": case.forged.iter().map(|f| json!({
            "event": f.event,
            "reason": f.reason,
            "reason_en": f.reason_en,
        })).collect::<Vec<_>>(),
        "state": views::state_json(&state.node, &case.item_code, &st),
        "result": yiciban_core::seal::case_seal(&case, &st).map(|seal| json!({
            "qr_payload": seal.payload,
            "signed_by": seal.node,
            "decision": seal.decision,
            "event_id": seal.event_id,
        })),
        "actions": authz::actions_now(auth.0.role, state.node.tier(), &st)
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>(),
    }))
    .into_response())
}

/// A person with the ID number masked.
fn masked(p: &yiciban_core::application::Person) -> yiciban_core::application::Person {
    yiciban_core::application::Person {
        id_number: yiciban_core::idcard::mask(&p.id_number),
        ..p.clone()
    }
}

/// `POST /api/v1/applications/{id}/personal-data`: the applicant's and proxy's personal data
/// in full. A POST with the CSRF token, never a GET: the view is written to the audit chain
/// before anything is shown.
pub async fn personal_data(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    auth.check_csrf(csrf(&headers))?;
    auth.require(Action::ViewPersonalData)?;
    let case = state.node.view_personal_data(&id, &auth.actor()).await?;
    Ok(Json(json!({
        "id": case.id,
        "receipt_no": case.receipt_no,
        "applicant": case.applicant,
        "proxy": case.proxy,
    }))
    .into_response())
}

/// `POST /api/v1/applications/{id}/events` with `{"kind": "...", ...payload}`: every field but
/// `kind` is the event's payload (`reason`, `materials`, `note`, `text`), checked by the core.
pub async fn add_event(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    auth.check_csrf(csrf(&headers))?;
    auth.require(Action::RecordEvent)?;
    let body: serde_json::Value = parse_json(&body)?;
    let serde_json::Value::Object(mut payload) = body else {
        return Err(AppError::BadRequest(Msg::new(
            "请求内容应为JSON对象，如 {\"kind\": \"comment\", \"text\": \"…\"}",
            "the body must be a JSON object such as {\"kind\": \"comment\", \"text\": \"...\"}",
        ))
        .into());
    };
    let name = match payload.remove("kind") {
        Some(serde_json::Value::String(name)) => name,
        _ => {
            return Err(AppError::BadRequest(Msg::new(
                format!(
                    "缺少办理操作 kind，可用的有：{}",
                    views::RECORDABLE.join("、")
                ),
                format!(
                    "missing kind; known kinds: {}",
                    views::RECORDABLE.join(", ")
                ),
            ))
            .into());
        }
    };
    let kind = views::parse_kind(&name).map_err(AppError::BadRequest)?;
    if !authz::may_record_event(auth.0.role, &kind) {
        return Err(AppError::ForbiddenBecause(Msg::new(
            format!("{}不能办理“{}”", auth.0.role.zh(), kind.zh()),
            format!(
                "the role {} does not record {}",
                auth.0.role.as_str(),
                kind.as_str()
            ),
        ))
        .into());
    }
    let filed = state
        .node
        .record_event(&id, kind, serde_json::Value::Object(payload), &auth.actor())
        .await?;
    Ok(created(&state.node, &filed))
}

#[derive(Debug, Deserialize)]
pub struct QueueParams {
    limit: Option<usize>,
    offset: Option<usize>,
}

/// `GET /api/v1/queue?limit=&offset=`: open cases whose baton is at this node's tier, the most
/// pressing deadline first; `limit` (1–500, default 100) of them from `offset` (default 0),
/// with the `total` the queue holds.
pub async fn queue(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(p): ApiQuery<QueueParams>,
) -> ApiResult {
    auth.require(Action::ViewCases)?;
    let offset = p.offset.unwrap_or(0);
    let limit = p.limit.unwrap_or(100).clamp(1, 500);
    let (items, total) = views::queue(&state.node, offset, limit).await?;
    Ok(Json(json!({
        "tier": state.node.tier(),
        "items": items,
        "count": items.len(),
        "offset": offset,
        "total": total,
    }))
    .into_response())
}

/// `POST /api/v1/applications/{id}/urge {note}`: 催办 from the county (county admin or
/// approver); `201` with the state, `403` elsewhere.
pub async fn urge(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    auth.check_csrf(csrf(&headers))?;
    auth.require(Action::Urge)?;
    let input: serde_json::Value = parse_json(&body)?;
    let note = input.get("note").and_then(|v| v.as_str()).unwrap_or("");
    let filed = state.node.urge(&id, note, &auth.actor()).await?;
    Ok(created(&state.node, &filed))
}

/// `GET /api/v1/nodes?town=&sort=`: the county console's node table (figures and alerts).
pub async fn nodes(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(p): ApiQuery<crate::pages::NodesParams>,
) -> ApiResult {
    auth.require(Action::ViewNodes)?;
    let rows = crate::pages::node_rows(&state, &p)?;
    // The handshakes refused lately (a revoked node), as `/api/v1/health` lists them.
    Ok(Json(json!({
        "nodes": rows,
        "count": rows.len(),
        "refused": state.node.links.refused(),
    }))
    .into_response())
}

/// `GET /api/v1/supervision?limit=&offset=`: open cases late (`red`) or due within a working
/// day (`yellow`), red first: `items` (`limit` 1–500, default 100, from `offset`), `count` of
/// the page, `total`, `red`, `yellow`, and the counts `by_step` and `by_holder`.
pub async fn supervision(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(p): ApiQuery<QueueParams>,
) -> ApiResult {
    auth.require(Action::ViewCases)?;
    let offset = p.offset.unwrap_or(0);
    let limit = p.limit.unwrap_or(100).clamp(1, 500);
    let (items, board) = views::supervision(&state.node, offset, limit).await?;
    let by_step: Vec<_> = board
        .by_step
        .iter()
        .map(|((item, step), m)| json!({"item_code": item, "step": step, "red": m.red, "yellow": m.yellow}))
        .collect();
    let by_holder: Vec<_> = board
        .by_holder
        .iter()
        .map(|((tier, division), m)| json!({"tier": tier, "division": division, "red": m.red, "yellow": m.yellow}))
        .collect();
    Ok(Json(json!({
        "items": items,
        "count": items.len(),
        "offset": offset,
        "total": board.total(),
        "red": board.red,
        "yellow": board.yellow,
        "by_step": by_step,
        "by_holder": by_holder,
    }))
    .into_response())
}

/// `GET /api/v1/followups?limit=&offset=`: the open follow-ups of bad ratings (回访整改), red
/// first, then the earliest due; each with its case (`case_id`, `receipt_no`, …) and
/// `rating_event_id`, `level`, `comment`, `source`, `rated_on`, `due`, `warning`; `count` of
/// the page, `total`, `red`, `yellow`.
pub async fn follow_ups(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(p): ApiQuery<QueueParams>,
) -> ApiResult {
    auth.require(Action::ViewFollowUps)?;
    let offset = p.offset.unwrap_or(0);
    let limit = p.limit.unwrap_or(100).clamp(1, 500);
    let (items, page) = views::follow_ups(&state.node, offset, limit)?;
    Ok(Json(json!({
        "items": items,
        "count": items.len(),
        "offset": offset,
        "total": page.total,
        "red": page.red,
        "yellow": page.yellow,
    }))
    .into_response())
}

/// `POST /api/v1/enroll`: a node asks the county for its certificate. No session and no CSRF
/// token: the request carries an HMAC keyed by the one-time token's secret, which the county
/// checks before it signs anything (`yiciban_core::enrol`).
pub async fn enroll(
    State(state): State<AppState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::TooLarge(Msg::new(
                format!(
                    "注册请求过大（上限 {} KB）",
                    crate::ENROL_BODY_LIMIT_BYTES / 1024
                ),
                format!(
                    "enrolment request too large (limit {} KB)",
                    crate::ENROL_BODY_LIMIT_BYTES / 1024
                ),
            ))
        } else {
            AppError::BadRequest(Msg::new(
                "注册请求读取失败",
                format!("could not read the request: {e}"),
            ))
        }
    })?;
    let req: EnrolRequest = parse_json(&body)?;
    let answer = state.node.enrol(&req).await?;
    Ok(Json(answer).into_response())
}

pub async fn upload_blob(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    auth.check_csrf(csrf(&headers))?;
    auth.require(Action::UploadPhoto)?;
    let size = body.len();
    let hash = state
        .node
        .store
        .put_blob(body.to_vec(), &auth.0.username)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "hash": hash, "size": size })),
    )
        .into_response())
}

pub async fn health(State(state): State<AppState>) -> ApiResult {
    let node = &state.node;
    let counts: serde_json::Map<String, serde_json::Value> = node
        .store
        .status_counts()?
        .into_iter()
        .map(|(s, n)| (s.as_str().to_string(), json!(n)))
        .collect();
    let links = node.link_report();
    let peers: Vec<&str> = links
        .iter()
        .filter_map(|l| l.link.peer.as_deref())
        .collect();
    Ok(Json(json!({
        "status": "ok",
        "node": node.config.node.id,
        "role": node.tier(),
        "division": node.config.node.division,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": node.uptime().as_secs(),
        "cases": node.store.case_count()?,
        "cases_by_status": counts,
        "store_bytes": yiciban_core::store::Store::file_size(&node.config.store_path()),
        "peers": peers,
        "link": views::link_state(node).text,
        "enrolled": node.is_enrolled(),
        "links": links,
        "refused": node.links.refused(),
        // The users of this node's directory the county sent (`yiciban_core::user_dir`).
        "directory_users": node
            .store
            .user_dir(&node.config.node.id)
            .ok()
            .flatten()
            .map(|d| d.users.len()),
        "calendar": calendar_summary(node),
    }))
    .into_response())
}

/// The calendar in `/api/v1/health`: where it comes from, the years published, the years
/// counted by rule for now.
fn calendar_summary(node: &yiciban_core::node::Node) -> serde_json::Value {
    let status = node.calendar_status();
    let provisional: Vec<i32> = status.provisional_years.iter().map(|y| y.year).collect();
    json!({
        "source": status.source,
        "years": status.years,
        "provisional_years": provisional,
    })
}

pub async fn not_found() -> ApiResult {
    Err(AppError::NotFound.into())
}
