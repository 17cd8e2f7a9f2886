//! `GET /api/v1/stats`: the statistics of the county console (统计分析) as JSON, the same
//! numbers as the `/stats` page and its CSV tables.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;

use super::ApiResult;
use crate::AppState;
use crate::authz::Action;
use crate::session::Auth;

/// `GET /api/v1/stats`: `{cases, today, by_item, by_village, by_town,
/// by_month, by_status, on_time, by_step, uncounted_steps, satisfaction}`
/// ([`yiciban_core::stats::Stats`]).
pub async fn stats(State(state): State<AppState>, auth: Auth) -> ApiResult {
    auth.require(Action::ViewStatistics)?;
    let stats = crate::pages::gather_stats(&state).await?;
    Ok(Json(stats).into_response())
}
