//! SMS notices (短信通知): accepted, supplement needed, ready for pick-up, not granted.
//!
//! Notices are not stored on their own: they are derived from a case's events, so every node
//! that holds the case holds the same notices with the same ids (`{event id}/{kind}`), and a
//! village with no uplink hands them to the county simply by syncing the case. Exactly one
//! node sends: the one whose config says `[notices] send = true` (by default the county, which
//! has the uplink to the SMS gateway). After the gateway accepts a notice the sender records a
//! `notice_sent` event on the case; that event replicates, so every node knows the notice is
//! gone and none sends it again — also when the link drops between the send and the moment the
//! village hears of it.
//!
//! The outbox walks the store's change feed from a cursor kept in the store (`outbox:notices`),
//! so after a restart it resumes where it stopped; the cursor never moves past a case whose
//! notice the gateway refused, and that case is tried again with capped backoff. A crash in
//! the instant between the gateway's answer and the `notice_sent` commit sends that notice
//! again on restart: every request carries the notice id as `Idempotency-Key` so a gateway
//! that honours it delivers once.
//!
//! Senders: `log` (the default: the notice is written to the node's log) and `webhook` (an
//! HTTP POST of `{id, kind, phone, text, receipt_no}` as JSON to the configured gateway).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use yiciban_sync::store::ReplicaStore;

use crate::case_doc::Case;
use crate::config::NoticeSection;
use crate::event::{Event, EventKind};
use crate::fold::{Status, fold};
use crate::node::Node;

/// The store cursor the outbox keeps.
pub const CURSOR: &str = "outbox:notices";
/// Feed entries read per round.
const BATCH: usize = 256;
/// Longest wait between tries of a refused notice.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    Accepted,
    Supplement,
    Ready,
    Rejected,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Accepted => "accepted",
            NoticeKind::Supplement => "supplement",
            NoticeKind::Ready => "ready",
            NoticeKind::Rejected => "rejected",
        }
    }
}

/// One SMS to a citizen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    /// `{event id}/{kind}`: the same on every node.
    pub id: String,
    pub case_id: String,
    pub receipt_no: String,
    pub kind: NoticeKind,
    pub phone: String,
    pub text: String,
}

/// Every notice the case's events call for, in fold order.
pub fn notices(case: &Case) -> Vec<Notice> {
    let mut sorted: Vec<&Event> = case.events.iter().collect();
    sorted.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    sorted.dedup_by(|a, b| a.id == b.id);
    let owned: Vec<Event> = sorted.into_iter().cloned().collect();
    let mut out = Vec::new();
    let mut before = fold(&case.route, &[]);
    for i in 0..owned.len() {
        let after = fold(&case.route, &owned[..=i]);
        let event = &owned[i];
        let moved = after.status != before.status;
        let kind = match (before.status, after.status) {
            (Status::New, _) if moved => Some(NoticeKind::Accepted),
            (_, Status::SupplementRequested) if moved => Some(NoticeKind::Supplement),
            // An immediate item is ready at acceptance, with the citizen at the counter.
            (Status::UnderReview, Status::ReadyToIssue) => Some(NoticeKind::Ready),
            (_, Status::Rejected) if moved => Some(NoticeKind::Rejected),
            _ => None,
        };
        if let Some(kind) = kind {
            out.push(Notice {
                id: format!("{}/{}", event.id, kind.as_str()),
                case_id: case.id.clone(),
                receipt_no: case.receipt_no.clone(),
                kind,
                phone: case.applicant.phone.clone(),
                text: text(case, kind, event, &after.missing_materials),
            });
        }
        before = after;
    }
    out
}

/// The ids of the notices a `notice_sent` event records.
pub fn sent(case: &Case) -> BTreeSet<String> {
    case.events
        .iter()
        .filter(|e| e.kind == EventKind::NoticeSent)
        .map(|e| e.payload_str("notice").to_string())
        .collect()
}

/// Notices not yet sent by anyone.
pub fn pending(case: &Case) -> Vec<Notice> {
    let done = sent(case);
    notices(case)
        .into_iter()
        .filter(|n| !done.contains(&n.id))
        .collect()
}

fn text(case: &Case, kind: NoticeKind, event: &Event, missing: &[String]) -> String {
    let (item, receipt) = (&case.item_name, &case.receipt_no);
    match kind {
        NoticeKind::Accepted => {
            format!("您的“{item}”申请已受理，受理编号{receipt}。凭受理编号可查询办理进度。")
        }
        NoticeKind::Supplement => format!(
            "您的“{item}”申请（{receipt}）需补正材料：{}。请一次带齐到村便民服务站提交。",
            missing.join("、")
        ),
        NoticeKind::Ready => {
            format!("您的“{item}”已办结（{receipt}），请携带身份证到村便民服务站领取结果。")
        }
        NoticeKind::Rejected => format!(
            "您的“{item}”申请（{receipt}）未予许可，理由：{}。如有疑问请到村便民服务站咨询。",
            event.payload_str("reason")
        ),
    }
}

/// Why a notice was not handed over.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the gateway answered {0}")]
    Refused(u16),
    #[error("the gateway could not be reached: {0}")]
    Unreachable(String),
}

/// Hands one notice to the configured sender.
async fn send(
    client: &reqwest::Client,
    cfg: &NoticeSection,
    notice: &Notice,
) -> Result<&'static str, SendError> {
    let Some(url) = cfg.webhook.as_deref() else {
        tracing::info!(notice = %notice.id, kind = notice.kind.as_str(), phone = %mask_phone(&notice.phone), text = %notice.text, "notice (log sender)");
        return Ok("log");
    };
    let resp = client
        .post(url)
        .header("idempotency-key", &notice.id)
        .json(&serde_json::json!({
            "id": notice.id,
            "kind": notice.kind,
            "phone": notice.phone,
            "text": notice.text,
            "receipt_no": notice.receipt_no,
        }))
        .send()
        .await
        .map_err(|e| SendError::Unreachable(e.to_string()))?;
    if resp.status().is_success() {
        Ok("webhook")
    } else {
        Err(SendError::Refused(resp.status().as_u16()))
    }
}

/// `138****8000`: phone numbers are personal data and stay out of logs.
fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() < 7 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

/// Runs the outbox of a sending node until the process ends.
pub async fn run_outbox(node: Arc<Node>, cfg: NoticeSection) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(cfg.timeout_secs))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "notices: no HTTP client; nothing will be sent");
            return;
        }
    };
    let poll = Duration::from_millis(cfg.poll_ms);
    let mut backoff = poll;
    loop {
        match round(&node, &client, &cfg).await {
            Ok(true) => backoff = poll,
            Ok(false) => backoff = (backoff * 2).min(MAX_BACKOFF),
            Err(e) => {
                tracing::warn!(error = %e, "notices: outbox round failed");
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// One pass over the feed from the cursor. `Ok(false)`: a notice was refused (back off).
async fn round(
    node: &Node,
    client: &reqwest::Client,
    cfg: &NoticeSection,
) -> Result<bool, crate::store::StoreError> {
    let store = &node.store;
    let epoch = store.epoch()?;
    let since = match store.cursor(CURSOR)? {
        Some((e, seq)) if e == epoch => seq,
        _ => 0,
    };
    let entries = store.feed_since(since, BATCH)?;
    let Some(last) = entries.last().map(|e| e.seq) else {
        return Ok(true);
    };
    // The cursor stops before the first case with a notice the gateway refused.
    let mut cursor = last;
    let mut all_sent = true;
    for entry in &entries {
        if crate::county_doc::is_county_doc(&entry.doc_id) {
            continue;
        }
        let Some(case) = store.case(&entry.doc_id)? else {
            continue;
        };
        for notice in pending(&case) {
            match send(client, cfg, &notice).await {
                Ok(via) => {
                    let payload = serde_json::json!({ "notice": notice.id, "via": via });
                    node.record_system_event(&case.id, EventKind::NoticeSent, payload)
                        .await?;
                    tracing::info!(notice = %notice.id, via, "notice sent");
                }
                Err(e) => {
                    tracing::warn!(notice = %notice.id, error = %e, "notice not sent; will retry");
                    if all_sent {
                        cursor = entry.seq.saturating_sub(1);
                    }
                    all_sent = false;
                    break;
                }
            }
        }
    }
    if cursor > since {
        store.save_cursor(CURSOR, epoch, cursor).await?;
    }
    Ok(all_sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case_doc::test_support::sample_case;
    use crate::catalog::Tier;
    use crate::hlc::Hlc;

    fn ev(id: &str, ms: u64, tier: Tier, kind: EventKind, payload: serde_json::Value) -> Event {
        Event {
            id: id.into(),
            at: Hlc {
                wall_ms: 1_763_780_000_000 + ms,
                counter: 0,
            },
            node: "n".into(),
            tier,
            user: "u".into(),
            role: "r".into(),
            kind,
            payload,
        }
    }

    #[test]
    fn the_flow_calls_for_one_notice_per_step_and_sent_ones_are_not_pending() {
        let mut case = sample_case();
        let accepted = case.events[0].id.clone();
        case.events.push(ev(
            "s",
            10,
            Tier::Town,
            EventKind::SupplementRequested,
            serde_json::json!({"materials": ["户口簿", "照片"]}),
        ));
        case.events.push(ev(
            "p",
            20,
            Tier::Village,
            EventKind::SupplementProvided,
            serde_json::Value::Null,
        ));
        case.events.push(ev(
            "r",
            30,
            Tier::Town,
            EventKind::ReviewPassed,
            serde_json::Value::Null,
        ));
        let all = notices(&case);
        let ids: Vec<&str> = all.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                format!("{accepted}/accepted").as_str(),
                "s/supplement",
                "r/ready"
            ]
        );
        assert!(all[1].text.contains("户口簿、照片"));
        assert!(all.iter().all(|n| n.phone == case.applicant.phone));
        // A superseded decision (wrong tier) calls for nothing.
        case.events.push(ev(
            "x",
            40,
            Tier::Village,
            EventKind::Rejected,
            serde_json::json!({"reason": "no"}),
        ));
        assert_eq!(notices(&case).len(), 3);
        case.events.push(ev(
            "m",
            50,
            Tier::County,
            EventKind::NoticeSent,
            serde_json::json!({"notice": "s/supplement"}),
        ));
        let left: Vec<String> = pending(&case).into_iter().map(|n| n.id).collect();
        assert_eq!(left, [format!("{accepted}/accepted"), "r/ready".into()]);
        assert_eq!(
            case.state().status,
            Status::ReadyToIssue,
            "notice_sent moves nothing"
        );
    }

    #[test]
    fn phones_are_masked_in_logs() {
        assert_eq!(mask_phone("13800138000"), "138****8000");
        assert_eq!(mask_phone("12"), "**");
    }
}
