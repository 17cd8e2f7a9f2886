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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use yiciban_sync::store::ReplicaStore;

use crate::case_doc::Case;
use crate::catalog::Tier;
use crate::config::NoticeSection;
use crate::deadline::{LegalTime, Warning};
use crate::event::{Event, EventKind};
use crate::fold::{Status, fold};
use crate::node::Node;
use crate::summary::CaseSummary;

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
    /// To the staff holding the baton: at most one working day left (电子监察 yellow).
    OverdueYellow,
    /// To the staff holding the baton: late (电子监察 red).
    OverdueRed,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Accepted => "accepted",
            NoticeKind::Supplement => "supplement",
            NoticeKind::Ready => "ready",
            NoticeKind::Rejected => "rejected",
            NoticeKind::OverdueYellow => "overdue_yellow",
            NoticeKind::OverdueRed => "overdue_red",
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
    called_for(case)
        .into_iter()
        .map(|(event, kind, missing)| Notice {
            id: notice_id(&event, kind),
            case_id: case.id.clone(),
            receipt_no: case.receipt_no.clone(),
            kind,
            phone: case.applicant.phone.clone(),
            text: text(case, kind, &event, &missing),
        })
        .collect()
}

/// `{event id}/{kind}`: the same on every node.
fn notice_id(event: &Event, kind: NoticeKind) -> String {
    format!("{}/{}", event.id, kind.as_str())
}

/// The events that call for a notice, in fold order: each with its kind and the materials
/// missing after it.
fn called_for(case: &Case) -> Vec<(Event, NoticeKind, Vec<String>)> {
    let mut sorted: Vec<&Event> = case.events.iter().collect();
    sorted.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    sorted.dedup_by(|a, b| a.id == b.id);
    let owned: Vec<Event> = sorted.into_iter().cloned().collect();
    let mut out = Vec::new();
    let mut before = fold(&case.route, &[]);
    for i in 0..owned.len() {
        let after = fold(&case.route, &owned[..=i]);
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
            out.push((owned[i].clone(), kind, after.missing_materials.clone()));
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

/// How many notices [`pending`] lists, without writing their texts: what a case's summary
/// row keeps (`CaseSummary::notices_pending`), so the outbox loads only the cases it has
/// something to send for.
pub fn pending_count(case: &Case) -> usize {
    let done = sent(case);
    called_for(case)
        .iter()
        .filter(|(event, kind, _)| !done.contains(&notice_id(event, *kind)))
        .count()
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
        // Staff warnings are made by `overdue_notice`, not from an event.
        NoticeKind::OverdueYellow | NoticeKind::OverdueRed => String::new(),
    }
}

/// The warning to the staff holding the baton of an open case that is late (red) or has at
/// most one working day left (yellow), sent to the duty phone of the division that holds it
/// (`[notices] duty_phones`). One per case, step, mark and due date: the id says which, so a
/// case that stays late is not warned again every sweep, and a new step or due date is.
pub fn overdue_notice(
    summary: &CaseSummary,
    time: &LegalTime,
    duty_phones: &BTreeMap<String, String>,
) -> Option<Notice> {
    let worst = time.worst();
    let kind = match worst {
        Warning::None => return None,
        Warning::Yellow => NoticeKind::OverdueYellow,
        Warning::Red => NoticeKind::OverdueRed,
    };
    let step = summary.step.as_deref()?;
    let due = if time.step_warning == worst {
        time.step_due
    } else {
        time.due
    }?;
    let division = match summary.tier? {
        Tier::Village => &summary.village,
        Tier::Town => &summary.town,
        Tier::County => &summary.county,
    };
    let mark = if kind == NoticeKind::OverdueRed {
        "已超期"
    } else {
        "即将到期"
    };
    Some(Notice {
        id: format!("{}/{}/{step}/{due}", summary.id, kind.as_str()),
        case_id: summary.id.clone(),
        receipt_no: summary.receipt_no.clone(),
        kind,
        phone: duty_phones.get(division).cloned().unwrap_or_default(),
        text: format!(
            "【电子监察】办件{}（{}）在{step}环节{mark}，时限{due}，请尽快办理。",
            summary.receipt_no, summary.item_name
        ),
    })
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
    let Some(url) = cfg.webhook.as_deref().filter(|_| !notice.phone.is_empty()) else {
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
    let sweep_every = Duration::from_secs(cfg.sweep_secs);
    let mut last_sweep: Option<std::time::Instant> = None;
    let mut backoff = poll;
    loop {
        let sweep = last_sweep.is_none_or(|at| at.elapsed() >= sweep_every);
        if sweep {
            last_sweep = Some(std::time::Instant::now());
        }
        match round(&node, &client, &cfg, sweep).await {
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
///
/// The `notice_sent` marks of a pass are recorded together after its sends (the writer
/// commits them as one group): a pass of 256 new cases costs one commit, not 256 that would
/// queue ahead of the cases arriving by sync. A crash between a send and its mark resends
/// that notice with the same `Idempotency-Key`, as it did with one commit per mark.
async fn round(
    node: &Arc<Node>,
    client: &reqwest::Client,
    cfg: &NoticeSection,
    sweep: bool,
) -> Result<bool, crate::store::StoreError> {
    let store = &node.store;
    if sweep {
        sweep_overdue(node, client, cfg).await?;
    }
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
    let mut marks = tokio::task::JoinSet::new();
    // A case whose summary row says nothing is pending is not loaded: after a large sync
    // the outbox read every case again for the feed entries its own `notice_sent` marks
    // made (10,000 cases: ~25 ms of document loads every round for over a minute).
    let ids: Vec<&str> = entries.iter().map(|e| e.doc_id.as_str()).collect();
    let unsent = store.notices_pending(&ids)?;
    for (entry, unsent) in entries.iter().zip(unsent) {
        if crate::county_doc::is_county_doc(&entry.doc_id) || unsent == Some(0) {
            continue;
        }
        let Some(case) = store.case(&entry.doc_id)? else {
            continue;
        };
        for notice in pending(&case) {
            match send(client, cfg, &notice).await {
                Ok(via) => {
                    let payload = serde_json::json!({ "notice": notice.id, "via": via });
                    let (node, case_id) = (node.clone(), case.id.clone());
                    marks.spawn(async move {
                        node.record_system_event(&case_id, EventKind::NoticeSent, payload)
                            .await
                    });
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
    // Every mark is durable before the cursor passes its case.
    while let Some(recorded) = marks.join_next().await {
        recorded
            .map_err(|e| crate::store::StoreError::Corrupt(format!("notice mark task: {e}")))??;
    }
    if cursor > since {
        store.save_cursor(CURSOR, epoch, cursor).await?;
    }
    Ok(all_sent)
}

/// Cases a sweep reads at a time from supervision's index.
const SWEEP_CHUNK: usize = 256;

/// Sends the staff warnings the open cases call for today, each once.
async fn sweep_overdue(
    node: &Node,
    client: &reqwest::Client,
    cfg: &NoticeSection,
) -> Result<(), crate::store::StoreError> {
    // Every case supervision shows today, however many (`crate::supervision`).
    crate::queue::ensure_fresh(node).await?;
    let Some(last) = node
        .calendar()
        .and_then(|cal| cal.add_working_days(node.today(), 1).ok())
    else {
        return Ok(());
    };
    let watched = node.store.watched_until(last)?;
    for chunk in watched.chunks(SWEEP_CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|w| w.id.as_str()).collect();
        for summary in node.store.summaries(&ids)?.into_iter().flatten() {
            let time = node.legal_time(&summary.item_code, &summary.marks);
            let Some(notice) = overdue_notice(&summary, &time, &cfg.duty_phones) else {
                continue;
            };
            let Some(case) = node.store.case(&summary.id)? else {
                continue;
            };
            if sent(&case).contains(&notice.id) {
                continue;
            }
            match send(client, cfg, &notice).await {
                Ok(via) => {
                    let payload = serde_json::json!({ "notice": notice.id, "via": via });
                    node.record_system_event(&case.id, EventKind::NoticeSent, payload)
                        .await?;
                    tracing::info!(notice = %notice.id, via, "staff warning sent");
                }
                Err(e) => {
                    tracing::warn!(notice = %notice.id, error = %e, "staff warning not sent; next sweep tries again")
                }
            }
        }
    }
    Ok(())
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
            sig: None,
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

    /// A county node in `dir` that sends to its log, counting on a weekends-only calendar.
    async fn county(dir: &std::path::Path) -> std::sync::Arc<Node> {
        let years: Vec<String> = (2024..=2040).map(|y| y.to_string()).collect();
        std::fs::write(
            dir.join("cal.toml"),
            format!("schema = 1\nyears = [{}]\n", years.join(", ")),
        )
        .unwrap();
        std::fs::write(dir.join("catalog.toml"), crate::DEMO_CATALOG).unwrap();
        let toml = r#"
[node]
id = "county-test"
role = "county"
name = "县"
division = "430181000000"
town_division = "430181000000"
county_division = "430181000000"
[http]
listen = "127.0.0.1:0"
[store]
path = "node.redb"
[catalog]
path = "catalog.toml"
[calendar]
path = "cal.toml"
[notices]
send = true
duty_phones = { "430181101000" = "07318300000" }
"#;
        std::fs::write(dir.join("county.toml"), toml).unwrap();
        let config = crate::config::Config::load(&dir.join("county.toml")).unwrap();
        let catalog = crate::catalog::Catalog::load(&config.catalog_path()).unwrap();
        let store = crate::store::Store::open(&config.store_path(), 64, 1 << 20).unwrap();
        Node::new(config, catalog, store).unwrap()
    }

    /// Holds `case` at `node`, as a village's changes bring it.
    async fn hold(node: &Node, case: &Case) {
        let mut doc = crate::case_doc::build(case, crate::case_doc::node_actor("v")).unwrap();
        let changes = doc
            .get_changes(&[])
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        node.store.apply_changes(&case.id, changes).await.unwrap();
    }

    /// Holds a new case `id` at `node`, filed now: it calls for its `accepted` notice.
    async fn hold_new_case(node: &Node, id: &str) {
        let mut case = sample_case();
        case.id = id.into();
        case.receipt_no = format!("430181101001-20261122-{id}");
        case.events[0].id = format!("{id}-accepted");
        hold(node, &case).await;
    }

    #[tokio::test]
    async fn the_outbox_loads_a_case_only_when_its_summary_row_leaves_a_notice_pending() {
        let dir = tempfile::tempdir().unwrap();
        let node = county(dir.path()).await;
        let ids = ["forged", "older", "plain"];
        for id in ids {
            hold_new_case(&node, id).await;
        }
        assert_eq!(node.store.notices_pending(&ids).unwrap(), [Some(1); 3]);
        // One row says nothing is pending although the document calls for a notice; one is
        // as a build before the field wrote it.
        node.store
            .rewrite_summary_row("forged", |row| row["notices_pending"] = 0.into());
        node.store.rewrite_summary_row("older", |row| {
            row.as_object_mut().unwrap().remove("notices_pending");
        });
        assert_eq!(
            node.store.notices_pending(&ids).unwrap(),
            [Some(0), None, Some(1)]
        );
        let cfg = node.config.notice_settings();
        assert!(
            round(&node, &reqwest::Client::new(), &cfg, false)
                .await
                .unwrap()
        );
        let sent_of = |id: &str| sent(&node.store.case(id).unwrap().unwrap());
        // The row saying none kept the outbox from loading the case: its notice is not sent.
        assert!(sent_of("forged").is_empty());
        assert_eq!(
            sent_of("older").into_iter().collect::<Vec<_>>(),
            ["older-accepted/accepted"]
        );
        assert_eq!(
            sent_of("plain").into_iter().collect::<Vec<_>>(),
            ["plain-accepted/accepted"]
        );
        // The marks' writes leave rows that say nothing is pending.
        assert_eq!(
            node.store.notices_pending(&["older", "plain"]).unwrap(),
            [Some(0), Some(0)]
        );
    }

    #[tokio::test]
    async fn a_late_case_warns_the_town_once_and_every_notice_goes_once() {
        let dir = tempfile::tempdir().unwrap();
        let node = county(dir.path()).await;
        let mut case = sample_case();
        case.events[0].at.wall_ms =
            u64::try_from((chrono::Utc::now() - chrono::Duration::days(40)).timestamp_millis())
                .unwrap();
        hold(&node, &case).await;
        let cfg = node.config.notice_settings();
        let client = reqwest::Client::new();
        for _ in 0..3 {
            assert!(round(&node, &client, &cfg, true).await.unwrap());
        }
        let held = node.store.case(&case.id).unwrap().unwrap();
        let mut ids: Vec<String> = held
            .events
            .iter()
            .filter(|e| e.kind == EventKind::NoticeSent)
            .map(|e| e.payload_str("notice").to_string())
            .collect();
        ids.sort();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids.iter().any(|i| i.ends_with("/accepted")));
        let warning = ids
            .iter()
            .find(|i| i.contains("/overdue_red/town:review/"))
            .unwrap();
        assert!(warning.starts_with(&case.id));
        // The warning goes to the duty phone of the town holding the baton.
        let summary = node
            .store
            .list_cases(&crate::store::CaseQuery {
                q: None,
                status: Some(Status::UnderReview),
                limit: 10,
            })
            .unwrap()
            .remove(0);
        let time = node.legal_time(&summary.item_code, &summary.marks);
        let notice = overdue_notice(&summary, &time, &cfg.duty_phones).unwrap();
        assert_eq!(notice.phone, "07318300000");
        assert_eq!(&notice.id, warning);
        assert!(notice.text.contains("已超期"));
    }
}
