//! The working-day calendar (工作日历, `GET /calendar`, JSON `GET /api/v1/calendar`): what
//! legal time counts on, the years the county published, the years counted by rule for now
//! (预估) with the holidays the rule gives them, and at the county the county admin's form to
//! publish a year (`POST /calendar`, `PUT /api/v1/calendar`).

use crate::extract::{Form, Query};
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use serde::Deserialize;
use yiciban_core::catalog::Tier;
use yiciban_core::node::{CalendarStatus, NodeError};

use super::{Chrome, PageResult, page};
use crate::AppState;
use crate::authz::{self, Action};
use crate::error::AppError;
use crate::session::Auth;

#[derive(Template)]
#[template(path = "calendar.html")]
struct CalendarTpl {
    chrome: Chrome,
    status: CalendarStatus,
    /// The county admin at the county may publish.
    can_publish: bool,
    /// What was typed before a refusal, else empty.
    text: String,
    error: String,
    published: bool,
}

fn render(
    state: &AppState,
    auth: &Auth,
    text: String,
    error: String,
    published: bool,
) -> CalendarTpl {
    CalendarTpl {
        chrome: Chrome::new(state, Some(auth), "工作日历"),
        status: state.node.calendar_status(),
        can_publish: may_publish(state, auth),
        text,
        error,
        published,
    }
}

fn may_publish(state: &AppState, auth: &Auth) -> bool {
    state.node.tier() == Tier::County && authz::allowed(auth.0.role, Action::PublishCalendar)
}

#[derive(Debug, Deserialize)]
pub struct PublishedParams {
    published: Option<String>,
}

/// `GET /calendar`.
pub async fn calendar_page(
    State(state): State<AppState>,
    auth: Auth,
    Query(p): Query<PublishedParams>,
) -> PageResult {
    auth.require(Action::ViewCatalog)?;
    page(&render(
        &state,
        &auth,
        String::new(),
        String::new(),
        p.published.is_some(),
    ))
}

#[derive(Debug, Deserialize)]
pub struct PublishForm {
    csrf: Option<String>,
    #[serde(default)]
    toml: String,
}

/// `POST /calendar`: publishes the calendar typed or pasted into the form; a refusal shows the
/// page again with the reason and the text.
pub async fn calendar_publish(
    State(state): State<AppState>,
    auth: Auth,
    Form(f): Form<PublishForm>,
) -> PageResult {
    auth.check_csrf(f.csrf.as_deref())?;
    auth.require(Action::PublishCalendar)?;
    match state
        .node
        .publish_calendar_text(&f.toml, &auth.0.username)
        .await
    {
        Ok(_) => Ok(axum::response::Redirect::to("/calendar?published=1").into_response()),
        Err(e @ (NodeError::BadRequest(_) | NodeError::Forbidden(_))) => {
            let err = AppError::from(e);
            let (status, _) = err.status_and_code();
            let tpl = render(&state, &auth, f.toml, err.message().zh, false);
            Ok((status, Html(tpl.render()?)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/v1/calendar`: `{source, years, provisional_years: [{year, holidays: [{name,
/// days, substitutes}]}], reminder}`.
pub async fn calendar_json(State(state): State<AppState>, auth: Auth) -> crate::api::ApiResult {
    auth.require(Action::ViewCatalog)?;
    Ok(axum::Json(state.node.calendar_status()).into_response())
}

/// `PUT /api/v1/calendar` (body: the calendar file, TOML): the county admin publishes it;
/// `200 {published, status}`, `400` with the reason when it is not a valid calendar.
pub async fn calendar_put(
    State(state): State<AppState>,
    auth: Auth,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> crate::api::ApiResult {
    auth.check_csrf(crate::api::csrf(&headers))?;
    auth.require(Action::PublishCalendar)?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        AppError::BadRequest(yiciban_core::message::Msg::new(
            "工作日历文件须为 UTF-8 文本",
            "the calendar must be UTF-8 text",
        ))
    })?;
    let changed = state
        .node
        .publish_calendar_text(text, &auth.0.username)
        .await?;
    Ok((
        StatusCode::OK,
        axum::Json(serde_json::json!({
            "published": changed,
            "status": state.node.calendar_status(),
        })),
    )
        .into_response())
}
