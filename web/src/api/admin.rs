//! The security admin's API at the county (三员分立, see `crate::authz`): the users of a
//! node's directory, enrolment tokens and revocation; the same core calls as the pages under
//! `/admin/…` (`yiciban_core::admin`). Password hashes never leave the node.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use yiciban_core::admin::{DirectoryChange, NewDirectoryUser};
use yiciban_core::users::User;

use super::{ApiResult, csrf, parse_json};
use crate::AppState;
use crate::authz::Action;
use crate::error::AppError;
use crate::session::Auth;

fn user_json(u: &User) -> serde_json::Value {
    json!({
        "username": u.username,
        "display_name": u.display_name,
        "role": u.role,
        "disabled": u.disabled,
    })
}

/// `GET /api/v1/nodes/{id}/users`: `{node, role, division, revoked, users: [{username,
/// display_name, role, disabled}]}`.
pub async fn directory(
    State(state): State<AppState>,
    auth: Auth,
    Path(node): Path<String>,
) -> ApiResult {
    auth.require(Action::ManageUsers)?;
    let (tier, division, dir) = state.node.directory(&node)?;
    let users: Vec<_> = dir
        .map(|d| d.users)
        .unwrap_or_default()
        .iter()
        .map(user_json)
        .collect();
    Ok(Json(json!({
        "node": node,
        "role": tier,
        "division": division,
        "revoked": state.node.revoked_nodes().contains(&node),
        "users": users,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct AddUserBody {
    username: String,
    #[serde(default)]
    display_name: String,
    role: String,
    password: String,
}

/// `POST /api/v1/nodes/{id}/users` `{username, display_name?, role, password}`: `201` with the
/// user; `409` when the directory has that username, `404` for a node no token was issued
/// for.
pub async fn add_user(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(node): Path<String>,
    body: Bytes,
) -> ApiResult {
    auth.check_csrf(csrf(&headers))?;
    auth.require(Action::ManageUsers)?;
    let b: AddUserBody = parse_json(&body)?;
    let new = NewDirectoryUser {
        username: b.username,
        display_name: b.display_name,
        role: b.role,
        password: b.password,
    };
    let user = state
        .node
        .add_directory_user(&node, &new, &auth.actor())
        .await?;
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

#[derive(Debug, Deserialize)]
struct PasswordBody {
    password: String,
}

/// `POST /api/v1/nodes/{id}/users/{username}/password` `{password}`: the user.
pub async fn set_password(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path((node, username)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    auth.check_csrf(csrf(&headers))?;
    auth.require(Action::ManageUsers)?;
    let b: PasswordBody = parse_json(&body)?;
    let user = state
        .node
        .change_directory_user(
            &node,
            &username,
            DirectoryChange::Password(b.password),
            &auth.actor(),
        )
        .await?;
    Ok(Json(user_json(&user)).into_response())
}

/// `POST /api/v1/nodes/{id}/users/{username}/disable` and `…/enable`: the user.
pub async fn set_disabled(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path((node, username, verb)): Path<(String, String, String)>,
) -> ApiResult {
    auth.check_csrf(csrf(&headers))?;
    auth.require(Action::ManageUsers)?;
    let disabled = match verb.as_str() {
        "disable" => true,
        "enable" => false,
        _ => return Err(AppError::NotFound.into()),
    };
    let user = state
        .node
        .change_directory_user(
            &node,
            &username,
            DirectoryChange::Disabled(disabled),
            &auth.actor(),
        )
        .await?;
    Ok(Json(user_json(&user)).into_response())
}

#[derive(Debug, Deserialize)]
struct RevokeBody {
    #[serde(default)]
    confirm: String,
}

/// `POST /api/v1/nodes/{id}/revoke` `{confirm: ID}`: revokes every certificate issued to the
/// node, as `yiciban revoke` does; `{node, revoked: N}` (N certificates revoked now).
pub async fn revoke(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(node): Path<String>,
    body: Bytes,
) -> ApiResult {
    auth.check_csrf(csrf(&headers))?;
    auth.require(Action::ManageEnrolment)?;
    let b: RevokeBody = parse_json(&body)?;
    if b.confirm != node {
        return Err(AppError::BadRequest(yiciban_core::message::Msg::new(
            "请在 confirm 中给出该节点的标识",
            "confirm must repeat the node's id",
        ))
        .into());
    }
    let n = state.node.revoke_node(&node, &auth.actor()).await?;
    Ok(Json(json!({ "node": node, "revoked": n })).into_response())
}

/// `GET /api/v1/tokens`: every enrolment token issued here, newest first, without its secret:
/// `{tokens: [{node_id, role, division, expires_ms, used_ms, state, revoked}]}`.
pub async fn tokens(State(state): State<AppState>, auth: Auth) -> ApiResult {
    auth.require(Action::ManageEnrolment)?;
    let tokens = state.node.tokens()?;
    Ok(Json(json!({ "count": tokens.len(), "tokens": tokens })).into_response())
}

#[derive(Debug, Deserialize)]
struct TokenBody {
    node_id: String,
    role: String,
    division: String,
    #[serde(default = "default_days")]
    days: u64,
}

fn default_days() -> u64 {
    7
}

/// `POST /api/v1/tokens` `{node_id, role, division, days?}`: `201 {token, node_id, role,
/// division, days}`; the token is shown this once.
pub async fn issue_token(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    auth.check_csrf(csrf(&headers))?;
    auth.require(Action::ManageEnrolment)?;
    let b: TokenBody = parse_json(&body)?;
    let token = state
        .node
        .issue_token(&b.node_id, &b.role, &b.division, b.days, &auth.actor())
        .await?;
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "token": token,
            "node_id": b.node_id,
            "role": b.role,
            "division": b.division,
            "days": b.days,
        })),
    )
        .into_response())
}
