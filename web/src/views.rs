//! What templates and JSON show, derived from core types: state JSON, step names, the review
//! queue, link state, times.

use chrono::{DateTime, FixedOffset};
use serde_json::json;
use yiciban_core::catalog::Tier;
use yiciban_core::deadline::{LegalTime, Marks, Warning};
use yiciban_core::event::EventKind;
use yiciban_core::fold::{CaseState, Status};
use yiciban_core::hlc::Hlc;
use yiciban_core::message::Msg;
use yiciban_core::node::{LinkReport, Node};
use yiciban_core::store::StoreError;
use yiciban_core::summary::CaseSummary;

/// The state block every case response carries, with legal time counted today.
pub fn state_json(node: &Node, item_code: &str, state: &CaseState) -> serde_json::Value {
    let time = node.legal_time(item_code, &Marks::of(state));
    json!({
        "status": state.status,
        "step": state.step,
        "tier": state.tier,
        "accepted_at": state.accepted_at,
        "decided": state.decided,
        "missing_materials": state.missing_materials,
        "conflict": state.conflict,
        "superseded": state.superseded,
        "event_count": state.event_count,
        "due": time.due,
        "statutory_due": time.statutory_due,
        "step_due": time.step_due,
        "warning": time.warning,
        "step_warning": time.step_warning,
        "paused": time.paused,
        "on_time": time.on_time,
        "provisional": time.provisional,
        "time_error": time.error,
    })
}

/// One line on legal time for pages: `承诺 2026-10-08 · 本环节 2026-10-06（红牌：已超期）`.
pub fn time_line(time: &LegalTime) -> String {
    if let Some(e) = &time.error {
        return format!("时限无法计算：{e}");
    }
    let Some(due) = time.due else {
        return String::new();
    };
    let mut line = format!("承诺办结 {due}");
    if let Some(s) = time.statutory_due {
        line.push_str(&format!(" · 法定 {s}"));
    }
    if let Some(s) = time.step_due {
        line.push_str(&format!(" · 本环节 {s}"));
    }
    if time.provisional {
        line.push_str("（预估：该年度工作日历尚未发布，按法定节假日规则推算，调休无法预知）");
    }
    if time.paused {
        line.push_str("（补正期间暂停计时）");
    } else if let Some(on_time) = time.on_time {
        line.push_str(if on_time {
            "（按时办结）"
        } else {
            "（超期办结）"
        });
    }
    if time.worst() != Warning::None {
        line.push_str(&format!("（{}）", time.worst().zh()));
    }
    line
}

/// A row of a queue or of the supervision list: the projection and its legal time today.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimedCase {
    #[serde(flatten)]
    pub summary: CaseSummary,
    pub time: LegalTime,
}

impl TimedCase {
    fn of(node: &Node, summary: CaseSummary) -> Self {
        let time = node.legal_time(&summary.item_code, &summary.marks);
        Self { summary, time }
    }
}

/// The kinds a user can ask for by name (API and forms); the others are recorded by the node.
pub const RECORDABLE: [&str; 10] = [
    "review_passed",
    "approved",
    "rejected",
    "supplement_requested",
    "supplement_provided",
    "issued",
    "picked_up",
    "withdrawn",
    "rated",
    "comment",
];

/// An event kind as a user names it; a name this build does not know is refused, not stored.
pub fn parse_kind(name: &str) -> Result<EventKind, Msg> {
    match EventKind::parse(name.trim()) {
        EventKind::Other(_) => Err(Msg::new(
            format!(
                "未知的办理操作“{}”，可用的有：{}",
                name.trim(),
                RECORDABLE.join("、")
            ),
            format!(
                "unknown event kind {:?}; known kinds: {}",
                name.trim(),
                RECORDABLE.join(", ")
            ),
        )),
        kind => Ok(kind),
    }
}

/// `村` → `村级`.
pub fn tier_zh(tier: Tier) -> String {
    format!("{}级", tier.zh())
}

/// The name of a step: the catalogue's name for a route step (`镇审核`), fixed names for the
/// steps off the route.
pub fn step_zh(node: &Node, item_code: &str, step: &str) -> String {
    if let Some(s) = node
        .catalog
        .get(item_code)
        .and_then(|i| i.route.iter().find(|s| s.step == step))
    {
        return s.name.clone();
    }
    match step {
        "village:accept" => "村受理",
        "town:review" => "镇审核",
        "county:approve" => "县审批",
        "village:issue" => "村出件",
        "village:supplement" => "村补正材料",
        "village:pickup" => "待申请人领取",
        other => other,
    }
    .to_string()
}

/// Cases `offset..offset + limit` of the review queue and how many it holds: open cases whose
/// baton is at this node's tier, the most pressing deadline first (the step's or the case's,
/// whichever is earlier), then oldest accepted. Read from the queue index
/// (`yiciban_core::queue`): one page of keys and summaries, never every open case.
pub async fn queue(
    node: &Node,
    offset: usize,
    limit: usize,
) -> Result<(Vec<TimedCase>, u64), StoreError> {
    let page = yiciban_core::queue::page(node, offset, limit).await?;
    let rows = page
        .rows
        .into_iter()
        .map(|s| TimedCase::of(node, s))
        .collect();
    Ok((rows, page.total))
}

/// Supervision (电子监察): cases `offset..offset + limit` of every open case this node holds
/// that is late (red) or has at most one working day left (yellow), red first, then the
/// earliest date; with the counts of all of them (`yiciban_core::supervision`).
pub async fn supervision(
    node: &Node,
    offset: usize,
    limit: usize,
) -> Result<(Vec<TimedCase>, yiciban_core::supervision::Board), StoreError> {
    let mut board = yiciban_core::supervision::board(node, offset, limit).await?;
    let rows = std::mem::take(&mut board.rows)
        .into_iter()
        .map(|(s, _)| TimedCase::of(node, s))
        .collect();
    Ok((rows, board))
}

/// One open follow-up of a bad rating (回访整改) with the case it belongs to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FollowUpCase {
    pub case_id: String,
    pub receipt_no: String,
    pub item_name: String,
    pub applicant_name: String,
    pub village: String,
    pub status: Status,
    #[serde(flatten)]
    pub follow_up: yiciban_core::rating::FollowUp,
}

/// Open follow-ups `offset..offset + limit`, red first, then the earliest due, with how many
/// are open, red and yellow (`yiciban_core::followups`).
pub fn follow_ups(
    node: &Node,
    offset: usize,
    limit: usize,
) -> Result<(Vec<FollowUpCase>, yiciban_core::followups::Page), StoreError> {
    let mut page = yiciban_core::followups::page(node, offset, limit)?;
    let rows = std::mem::take(&mut page.rows)
        .into_iter()
        .map(|r| FollowUpCase {
            case_id: r.summary.id,
            receipt_no: r.summary.receipt_no,
            item_name: r.summary.item_name,
            applicant_name: r.summary.applicant_name,
            village: r.summary.village,
            status: r.summary.status,
            follow_up: r.follow_up,
        })
        .collect();
    Ok((rows, page))
}

/// The node's link to its peers, shown on every page.
#[derive(Debug, Clone)]
pub struct LinkState {
    pub online: bool,
    pub text: String,
}

/// Links listed one by one up to this many; above it the line sums them up.
const LINKS_LISTED: usize = 3;

pub fn link_state(node: &Node) -> LinkState {
    if node.config.sync.is_none() {
        return describe_links(false, false, &[], 0, utc());
    }
    let enrolled = node.is_enrolled();
    let links = if enrolled {
        node.link_report()
    } else {
        Vec::new()
    };
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    describe_links(true, enrolled, &links, now_ms, *node.local_now().offset())
}

fn utc() -> FixedOffset {
    FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!("zero is a valid offset"))
}

/// The link line from what the node knows: whether `[sync]` is set, whether it holds a
/// certificate, and each link's report. `now_ms` and `offset` turn times into local text.
pub fn describe_links(
    sync_configured: bool,
    enrolled: bool,
    links: &[LinkReport],
    now_ms: u64,
    offset: FixedOffset,
) -> LinkState {
    if !sync_configured {
        return LinkState {
            online: false,
            text: "单机运行（未配置同步）".into(),
        };
    }
    if !enrolled {
        return LinkState {
            online: false,
            text: "未注册：请运行 yiciban enroll".into(),
        };
    }
    if links.is_empty() {
        return LinkState {
            online: false,
            text: "已配置同步，尚未建立连接".into(),
        };
    }
    // Green when the uplink is up (villages and towns), or any link (the county).
    let online = match links.iter().find(|l| l.link.name == "county") {
        Some(up) => up.link.connected,
        None => links.iter().any(|l| l.link.connected),
    };
    let last_sync = |ms: Option<u64>| match ms {
        Some(ms) => format!(
            "上次同步 {}（{}）",
            local_time_ms(ms, offset),
            ago(now_ms.saturating_sub(ms))
        ),
        None => "从未同步".into(),
    };
    let text = if links.len() <= LINKS_LISTED {
        links
            .iter()
            .map(|l| {
                let mut parts = vec![
                    format!(
                        "{}：{}",
                        link_label(l),
                        if l.link.connected {
                            "已连接"
                        } else {
                            "未连接"
                        }
                    ),
                    last_sync(l.link.last_sync_ms),
                    waiting(l.waiting_changes),
                ];
                if !l.link.connected
                    && let Some(e) = &l.link.last_error
                {
                    parts.push(format!("最近错误：{}", yiciban_core::link_error::zh(e)));
                }
                parts.join(" · ")
            })
            .collect::<Vec<_>>()
            .join("；")
    } else {
        let connected = links.iter().filter(|l| l.link.connected).count();
        let total: u64 = links.iter().map(|l| l.waiting_changes).sum();
        // The stalest link: never synced first, then the oldest sync.
        let stalest = links
            .iter()
            .min_by_key(|l| (l.link.last_sync_ms.is_some(), l.link.last_sync_ms));
        let mut text = format!(
            "同步链路 {} 条，已连接 {} 条 · {}",
            links.len(),
            connected,
            waiting(total)
        );
        if let Some(l) = stalest {
            text.push_str(&format!(
                " · 最久未同步：{} {}",
                link_label(l),
                last_sync(l.link.last_sync_ms)
            ));
        }
        text
    };
    LinkState { online, text }
}

fn link_label(l: &LinkReport) -> String {
    let tier = l.link.peer_role.as_deref().and_then(Tier::parse);
    match (l.link.name.as_str(), tier, &l.link.peer) {
        ("county", _, _) => "上级节点（县）".into(),
        (_, Some(t), Some(peer)) => format!("{}节点 {peer}", tier_zh(t)),
        (name, _, _) => format!("节点 {name}"),
    }
}

fn waiting(changes: u64) -> String {
    if changes == 0 {
        "无待同步".into()
    } else {
        format!("待同步 {changes} 项")
    }
}

/// `3分钟前`.
fn ago(ms: u64) -> String {
    let mins = ms / 60_000;
    match mins {
        0 => "刚刚".into(),
        1..60 => format!("{mins}分钟前"),
        60..1440 => format!("{}小时前", mins / 60),
        _ => format!("{}天前", mins / 1440),
    }
}

/// Unix milliseconds as local time `2026-11-22 09:30`.
pub fn local_time_ms(ms: u64, offset: FixedOffset) -> String {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(0))
        .map(|t| {
            t.with_timezone::<FixedOffset>(&offset)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

/// A stamp as local time `2026-11-22 09:30`.
pub fn local_time(node: &Node, at: Hlc) -> String {
    local_time_ms(at.wall_ms, *node.local_now().offset())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yiciban_core::sync_engine::LinkSnapshot;

    fn china() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).unwrap()
    }

    fn report(name: &str, connected: bool, last: Option<u64>, waiting: u64) -> LinkReport {
        LinkReport {
            link: LinkSnapshot {
                name: name.into(),
                peer: Some(format!("{name}-1")),
                peer_role: Some("village".into()),
                connected,
                last_sync_ms: last,
                last_error: (!connected).then(|| "connection refused".into()),
                ..LinkSnapshot::default()
            },
            waiting_changes: waiting,
            waiting_bytes: waiting * 1000,
        }
    }

    #[test]
    fn alone_and_unenrolled_nodes_say_so() {
        let alone = describe_links(false, false, &[], 0, china());
        assert_eq!(alone.text, "单机运行（未配置同步）");
        assert!(!alone.online);
        let unenrolled = describe_links(true, false, &[], 0, china());
        assert_eq!(unenrolled.text, "未注册：请运行 yiciban enroll");
    }

    #[test]
    fn each_link_shows_connection_last_sync_in_local_time_and_waiting_changes() {
        // 2026-11-22 01:30 UTC is 09:30 in China; "now" is three minutes later.
        let at = 1_795_311_000_000;
        let up = report("county", true, Some(at), 12);
        let s = describe_links(true, true, &[up], at + 3 * 60_000, china());
        assert!(s.online);
        assert_eq!(
            s.text,
            "上级节点（县）：已连接 · 上次同步 2026-11-22 09:30（3分钟前） · 待同步 12 项"
        );
        let down = report("county", false, None, 0);
        let s = describe_links(true, true, &[down], at, china());
        assert!(!s.online);
        assert_eq!(
            s.text,
            "上级节点（县）：未连接 · 从未同步 · 无待同步 · 最近错误：无法连接：县级节点未运行或网络不通，恢复后自动重连"
        );
    }

    #[test]
    fn many_links_are_summed_up_with_the_stalest_named() {
        let now = 1_795_311_000_000;
        let links: Vec<_> = (0..5)
            .map(|i| report(&format!("v{i}"), i != 2, Some(now - i * 3_600_000), 2))
            .collect();
        let s = describe_links(true, true, &links, now, china());
        assert!(s.online);
        assert!(
            s.text
                .starts_with("同步链路 5 条，已连接 4 条 · 待同步 10 项"),
            "{}",
            s.text
        );
        assert!(s.text.contains("最久未同步：村级节点 v4-1"), "{}", s.text);
        assert!(s.text.contains("4小时前"), "{}", s.text);
    }

    #[test]
    fn unknown_kinds_are_refused_by_name() {
        assert_eq!(
            parse_kind("review_passed").unwrap(),
            EventKind::ReviewPassed
        );
        let err = parse_kind("approve_all").unwrap_err();
        assert!(err.zh.contains("approve_all") && err.zh.contains("supplement_requested"));
    }
}
