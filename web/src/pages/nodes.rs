//! The county console's node table (`GET /nodes`, JSON `GET /api/v1/nodes`): one row per
//! node the county holds health reports of or has enrolled, with its figures, a sparkline of
//! its backlog and the alerts of `yiciban_core::health`; sortable and filterable by town.

use crate::extract::Query;
use askama::Template;
use axum::extract::State;
use serde::Deserialize;
use yiciban_core::node::NodeRow;

use super::{Chrome, PageResult, page};
use crate::AppState;
use crate::authz::Action;
use crate::chart::escape;
use crate::session::Auth;

#[derive(Debug, Deserialize, Default)]
pub struct NodesParams {
    /// Only the nodes of this town (division code).
    pub town: Option<String>,
    /// `node` (default), `seen`, `backlog`, `alerts`.
    pub sort: Option<String>,
}

/// The rows the page and the API show, filtered and sorted as asked.
pub fn rows(state: &AppState, p: &NodesParams) -> Result<Vec<NodeRow>, crate::error::AppError> {
    let mut rows = state.node.node_table()?;
    if let Some(town) = p.town.as_deref().filter(|t| !t.is_empty()) {
        rows.retain(|r| r.town == town || r.division == town);
    }
    match p.sort.as_deref() {
        Some("seen") => rows.sort_by_key(|r| r.last_seen_ms),
        Some("backlog") => {
            rows.sort_by_key(|r| std::cmp::Reverse(r.backlog.last().copied().unwrap_or(0)));
        }
        Some("alerts") => rows.sort_by_key(|r| std::cmp::Reverse(r.alerts.len())),
        _ => rows.sort_by(|a, b| a.node.cmp(&b.node)),
    }
    Ok(rows)
}

/// A tiny inline SVG line of the backlog samples (no JS, no CDN).
pub fn sparkline(values: &[u64]) -> String {
    const W: f64 = 90.0;
    const H: f64 = 18.0;
    if values.is_empty() {
        return String::new();
    }
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if values.len() > 1 {
        W / (values.len() - 1) as f64
    } else {
        0.0
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", i as f64 * step, H - (*v as f64 / max) * H))
        .collect();
    format!(
        r#"<svg class="spark" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{}"><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{}"/></svg>"#,
        escape(&format!("积压 {}", values.last().copied().unwrap_or(0))),
        points.join(" ")
    )
}

struct RowView {
    node: String,
    role: String,
    division: String,
    town: String,
    seen: String,
    version: String,
    backlog: u64,
    spark: String,
    store_mib: String,
    free_gib: String,
    clock: String,
    cert: String,
    errors: u64,
    cases: u64,
    alerts: Vec<String>,
    level: &'static str,
    revoked: bool,
}

/// A handshake the county refused lately (a revoked node), as `/api/v1/health` lists it.
struct RefusedView {
    node: String,
    at: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "nodes.html")]
struct NodesTpl {
    chrome: Chrome,
    rows: Vec<RowView>,
    town: String,
    sort: String,
    alerting: usize,
    /// Whether each node links to its users and revocation (`/admin/nodes/{id}`).
    manage: bool,
    refused: Vec<RefusedView>,
}

fn ago(now_ms: u64, at: Option<u64>) -> String {
    match at {
        None => "从未报告".into(),
        Some(at) => {
            let s = now_ms.saturating_sub(at) / 1000;
            match s {
                0..=59 => format!("{s} 秒前"),
                60..=3599 => format!("{} 分钟前", s / 60),
                _ => format!("{} 小时前", s / 3600),
            }
        }
    }
}

/// `GET /nodes`.
pub async fn nodes_page(
    State(state): State<AppState>,
    auth: Auth,
    Query(p): Query<NodesParams>,
) -> PageResult {
    auth.require(Action::ViewNodes)?;
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    let rows: Vec<RowView> = rows(&state, &p)?
        .into_iter()
        .map(|r| {
            let rep = r.report.as_ref();
            RowView {
                role: r.role.map(crate::views::tier_zh).unwrap_or_default(),
                seen: ago(now_ms, r.last_seen_ms),
                version: rep.map(|x| x.version.clone()).unwrap_or_default(),
                backlog: r.backlog.last().copied().unwrap_or(0),
                spark: sparkline(&r.backlog),
                store_mib: rep.map_or(String::new(), |x| {
                    format!("{:.1}", x.store_bytes as f64 / 1_048_576.0)
                }),
                free_gib: rep
                    .and_then(|x| x.free_disk_bytes)
                    .map_or(String::new(), |b| {
                        format!("{:.1}", b as f64 / 1_073_741_824.0)
                    }),
                clock: rep
                    .and_then(|x| x.clock_offset_ms)
                    .map_or(String::new(), |o| format!("{:+.1} 秒", o as f64 / 1000.0)),
                cert: rep
                    .and_then(|x| x.cert_expires_ms)
                    .map_or(String::new(), |e| {
                        format!("{} 天", (i128::from(e) - i128::from(now_ms)) / 86_400_000)
                    }),
                errors: rep.map_or(0, |x| x.errors_24h),
                cases: rep.map_or(0, |x| x.cases_by_status.values().sum()),
                level: if r.revoked {
                    "revoked"
                } else if r.alerts.is_empty() {
                    "ok"
                } else {
                    "alert"
                },
                revoked: r.revoked,
                alerts: r.alerts.iter().map(|a| a.zh()).collect(),
                node: r.node,
                division: r.division,
                town: r.town,
            }
        })
        .collect();
    let alerting = rows.iter().filter(|r| r.level == "alert").count();
    let offset = *state.node.local_now().offset();
    let refused = state
        .node
        .links
        .refused()
        .into_iter()
        .rev()
        .map(|r| RefusedView {
            at: crate::views::local_time_ms(r.at_ms, offset),
            node: r.node,
            reason: yiciban_core::link_error::zh(&r.reason).to_string(),
        })
        .collect();
    page(&NodesTpl {
        chrome: Chrome::new(&state, Some(&auth), "节点运行状态"),
        rows,
        town: p.town.unwrap_or_default(),
        sort: p.sort.unwrap_or_default(),
        alerting,
        manage: crate::authz::allowed(auth.0.role, Action::ManageUsers),
        refused,
    })
}
