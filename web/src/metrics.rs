//! `GET /metrics`: the node in Prometheus text format (OpenMetrics), every name prefixed
//! `yiciban_`. Public like `/api/v1/health`: counts and sizes only, never personal data.
//!
//! - `yiciban_cases{status}`: cases held, by status (from the status index);
//! - `yiciban_store_bytes`, `yiciban_uptime_seconds`;
//! - per sync link (`peer` = the link's name): `yiciban_sync_sent_bytes_total`,
//!   `yiciban_sync_received_bytes_total`, `yiciban_sync_connected`,
//!   `yiciban_sync_attempts_total`, `yiciban_sync_last_success_age_seconds`,
//!   `yiciban_sync_backlog_changes`, `yiciban_sync_backlog_bytes` (what waits for that peer);
//! - `yiciban_http_request_duration_seconds{method, route, status}`: a histogram of every
//!   request this process served, by matched route (so ids never become labels).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;
use crate::api::ApiError;
use crate::error::AppError;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

type LatencyFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms … 8 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// What the process measures as it serves; kept for its life in [`AppState`].
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    latency: Arc<LatencyFamily>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            latency: Arc::new(Family::new_with_constructor(latency_histogram)),
        }
    }
}

/// Middleware: times every request by method, matched route and status.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    let labels = RequestLabels {
        method,
        route,
        status: response.status().as_u16().to_string(),
    };
    state
        .metrics
        .latency
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    response
}

fn gauge(value: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let node = &state.node;
    let mut registry = Registry::with_prefix("yiciban");

    let cases = Family::<StatusLabel, Gauge>::default();
    for (status, n) in node.store.status_counts()? {
        let label = StatusLabel {
            status: status.as_str().into(),
        };
        cases
            .get_or_create(&label)
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    registry.register("cases", "Cases held, by status", cases);
    registry.register(
        "store_bytes",
        "Bytes the store file takes on disk",
        gauge(yiciban_core::store::Store::file_size(
            &node.config.store_path(),
        )),
    );
    registry.register(
        "uptime_seconds",
        "Seconds since the node started",
        gauge(node.uptime().as_secs()),
    );

    let sent = Family::<PeerLabel, Counter>::default();
    let received = Family::<PeerLabel, Counter>::default();
    let attempts = Family::<PeerLabel, Counter>::default();
    let connected = Family::<PeerLabel, Gauge>::default();
    let age = Family::<PeerLabel, Gauge>::default();
    let backlog = Family::<PeerLabel, Gauge>::default();
    let backlog_bytes = Family::<PeerLabel, Gauge>::default();
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    let links = if node.is_enrolled() {
        node.link_report()
    } else {
        Vec::new()
    };
    for report in &links {
        let l = &report.link;
        let label = PeerLabel {
            peer: l.name.clone(),
        };
        sent.get_or_create(&label).inc_by(l.bytes_sent);
        received.get_or_create(&label).inc_by(l.bytes_received);
        attempts.get_or_create(&label).inc_by(l.attempts);
        connected.get_or_create(&label).set(i64::from(l.connected));
        if let Some(at) = l.last_sync_ms {
            let secs = now_ms.saturating_sub(at) / 1000;
            age.get_or_create(&label)
                .set(i64::try_from(secs).unwrap_or(i64::MAX));
        }
        backlog
            .get_or_create(&label)
            .set(i64::try_from(report.waiting_changes).unwrap_or(i64::MAX));
        backlog_bytes
            .get_or_create(&label)
            .set(i64::try_from(report.waiting_bytes).unwrap_or(i64::MAX));
    }
    registry.register("sync_sent_bytes", "Bytes sent to the peer", sent);
    registry.register(
        "sync_received_bytes",
        "Bytes received from the peer",
        received,
    );
    registry.register("sync_attempts", "Connection attempts to the peer", attempts);
    registry.register("sync_connected", "1 while the link is up", connected);
    registry.register(
        "sync_last_success_age_seconds",
        "Seconds since both feeds were last caught up",
        age,
    );
    registry.register(
        "sync_backlog_changes",
        "Documents changed here that the peer has not taken",
        backlog,
    );
    registry.register(
        "sync_backlog_bytes",
        "Stored size of the documents the peer has not taken",
        backlog_bytes,
    );
    registry.register(
        "http_request_duration_seconds",
        "Time to answer an HTTP request, by method, route and status",
        (*state.metrics.latency).clone(),
    );
    let mut body = String::new();
    encode(&mut body, &registry).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}
