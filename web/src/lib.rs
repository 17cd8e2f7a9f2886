//! # yiciban-web
//!
//! The web face of a node: the clerk's pages (askama, zh-CN, every asset embedded) and the
//! JSON API under `/api/v1`. Knows nothing of redb or QUIC: it calls [`yiciban_core::node::Node`].
//!
//! ```no_run
//! # async fn run(node: std::sync::Arc<yiciban_core::node::Node>) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! yiciban_web::serve(listener, yiciban_web::AppState::new(node), std::future::pending()).await
//! # }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod api;
mod assets;
mod authz;
mod chart;
mod error;
mod extract;
mod forms;
mod metrics;
mod pages;
mod qr;
mod session;
mod views;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use yiciban_core::node::Node;

pub use session::Sessions;

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub sessions: Arc<Sessions>,
    /// Request timings for `/metrics`.
    pub metrics: metrics::HttpMetrics,
}

impl AppState {
    pub fn new(node: Arc<Node>) -> Self {
        let idle = std::time::Duration::from_secs(node.config.http.idle_logout_minutes * 60);
        Self {
            node,
            sessions: Arc::new(Sessions::new(idle)),
            metrics: metrics::HttpMetrics::default(),
        }
    }
}

/// Request bodies above this are refused before they are read (photos plus form fields).
const BODY_LIMIT_BYTES: usize = 24 * 1024 * 1024;

/// Enrolment requests above this are refused: a CSR, a token id and an HMAC fit in far less.
const ENROL_BODY_LIMIT_BYTES: usize = 16 * 1024;

/// The whole HTTP surface of a node.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/login", post(api::login))
        .route("/logout", post(api::logout))
        .route("/catalog", get(api::catalog))
        .route("/applications", post(api::file).get(api::list))
        .route("/applications/{id}", get(api::detail))
        .route("/applications/{id}/events", post(api::add_event))
        .route("/applications/{id}/urge", post(api::urge))
        .route("/applications/{id}/counter", post(api::counter))
        .route("/bundles", post(api::file_bundle))
        .route("/bundles/{id}", get(api::bundle_detail))
        .route("/bundles/{id}/issue", post(api::issue_bundle))
        .route("/applications/{id}/personal-data", post(api::personal_data))
        .route("/blobs", post(api::upload_blob))
        .route("/queue", get(api::queue))
        .route("/supervision", get(api::supervision))
        .route("/nodes", get(api::nodes))
        .route(
            "/nodes/{id}/users",
            get(api::directory).post(api::add_directory_user),
        )
        .route(
            "/nodes/{id}/users/{username}/password",
            post(api::set_password),
        )
        .route(
            "/nodes/{id}/users/{username}/{verb}",
            post(api::set_disabled),
        )
        .route("/nodes/{id}/revoke", post(api::revoke_node))
        .route("/tokens", get(api::tokens).post(api::issue_token))
        .route("/followups", get(api::follow_ups))
        .route("/stats", get(api::stats))
        .route("/quarantine", get(pages::quarantine_json))
        .route(
            "/calendar",
            get(pages::calendar_json).put(pages::calendar_put),
        )
        .route(
            "/enroll",
            post(api::enroll).layer(DefaultBodyLimit::max(ENROL_BODY_LIMIT_BYTES)),
        )
        .route("/health", get(api::health))
        .fallback(api::not_found);
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_page).post(pages::login_submit))
        .route("/logout", post(pages::logout))
        .route("/catalog", get(pages::catalog))
        .route("/catalog/{code}", get(pages::guide))
        .route(
            "/apply/{code}",
            get(pages::apply_form).post(pages::apply_submit),
        )
        .route(
            "/apply-bundle/{code}",
            get(pages::apply_bundle_form).post(pages::apply_bundle_submit),
        )
        .route("/bundles/{id}", get(pages::bundle_page))
        .route("/bundles/{id}/issue", post(pages::bundle_issue))
        .route("/cases", get(pages::cases))
        .route("/queue", get(pages::queue))
        .route("/supervision", get(pages::supervision))
        .route("/nodes", get(pages::nodes_page))
        .route(
            "/admin/enrol",
            get(pages::admin_enrol_page).post(pages::admin_issue_token),
        )
        .route("/admin/nodes/{id}", get(pages::admin_node_page))
        .route("/admin/nodes/{id}/users", post(pages::admin_add_user))
        .route(
            "/admin/nodes/{id}/users/{username}/password",
            post(pages::admin_set_password),
        )
        .route(
            "/admin/nodes/{id}/users/{username}/{verb}",
            post(pages::admin_set_disabled),
        )
        .route("/admin/nodes/{id}/revoke", post(pages::admin_revoke))
        .route("/supervision/urge", post(pages::urge))
        .route("/followups", get(pages::follow_ups))
        .route("/followups/close", post(pages::close_follow_up))
        .route("/stats", get(pages::stats_page))
        .route("/quarantine", get(pages::quarantine_page))
        .route(
            "/calendar",
            get(pages::calendar_page).post(pages::calendar_publish),
        )
        .route("/stats.csv", get(pages::stats_csv))
        .route("/cases/{id}", get(pages::case_detail))
        .route("/cases/{id}/events", post(pages::case_event))
        .route("/cases/{id}/counter", post(pages::case_counter))
        .route("/cases/{id}/personal-data", post(pages::case_personal_data))
        .route("/cases/{id}/receipt", get(pages::receipt))
        .route("/cases/{id}/result", get(pages::result))
        .route("/blobs/{hash}", get(pages::blob))
        // Public, no login: anyone holding a printed result checks it here.
        .route("/verify", get(pages::verify))
        // Public, no login: the citizen's rating (好差评) on a kiosk or at the counter.
        .route("/rate", get(pages::rate_form).post(pages::rate_submit))
        .route("/static/{file}", get(assets::serve))
        // Public, like health: counts and sizes, no personal data.
        .route("/metrics", get(metrics::metrics))
        .nest("/api/v1", api)
        .fallback(pages::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// Serves the router on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests;
