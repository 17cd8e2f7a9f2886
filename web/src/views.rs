//! What templates and JSON show, derived from core types: state JSON, link state, times.

use chrono::{DateTime, FixedOffset};
use serde_json::json;
use yiciban_core::fold::CaseState;
use yiciban_core::hlc::Hlc;
use yiciban_core::node::Node;

/// The state block every case response carries.
pub fn state_json(state: &CaseState) -> serde_json::Value {
    json!({
        "status": state.status,
        "step": state.step,
        "tier": state.tier,
        "accepted_at": state.accepted_at,
        "decided": state.decided,
        "conflict": state.conflict,
        "superseded": state.superseded,
        "event_count": state.event_count,
    })
}

/// The node's link to its peers, shown on every page.
#[derive(Debug, Clone)]
pub struct LinkState {
    pub online: bool,
    pub text: String,
}

pub fn link_state(_node: &Node) -> LinkState {
    // No peers are configured until replication lands: the node works alone, fully offline.
    LinkState {
        online: false,
        text: "单机运行：尚未配置上级节点，所有数据保存在本机".into(),
    }
}

/// A stamp as local time `2026-11-22 09:30`.
pub fn local_time(node: &Node, at: Hlc) -> String {
    let offset = *node.local_now().offset();
    DateTime::from_timestamp_millis(i64::try_from(at.wall_ms).unwrap_or(0))
        .map(|t| {
            t.with_timezone::<FixedOffset>(&offset)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}
