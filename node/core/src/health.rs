//! Health reports (DESIGN.md §1, county admin): every node describes itself at a fixed interval
//! and after syncs, the reports travel up to the county, and the county raises alerts from
//! them — a village gone quiet, a backlog that keeps growing, a disk filling up, a clock off,
//! a certificate about to expire, a link that keeps failing.
//!
//! [`HealthReport`] is what a node says; [`alerts`] is the county's pure judgement of one
//! node's latest report and its recent backlog samples against [`Thresholds`].
//!
//! # Transport
//!
//! A node appends its report every [`crate::config::Config`] `[health] every_secs` to its
//! document of the day, `health:{node}:{yyyymmdd}` (table `health_docs-1`; Automerge root
//! `{kind: "health", node, samples: [JSON, …]}`), in its global feed only, like the audit
//! segments (`crate::audit_doc`): the county receives it, nobody else does, and the county
//! takes changes to `health:{N}:…` only from the peer certified as `N`, only when every sample
//! is a report of `N`. One document a day keeps each one small (1,440 samples at most), and
//! documents older than [`KEEP_DAYS`] days are dropped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc, ScalarValue, ScalarValueRef, Value, ValueRef};
use serde::{Deserialize, Serialize};

use crate::case_doc::DocError;
use crate::catalog::Tier;

const PREFIX: &str = "health:";
/// Samples one day's document may hold (one a minute is 1,440).
pub const MAX_SAMPLES: usize = 4_000;
/// The longest sample accepted, in bytes.
pub const MAX_SAMPLE_BYTES: usize = 16 * 1024;

/// Reports per node the county's node table keeps (its sparkline).
pub const RECENT: usize = 30;

/// What the county's node table reads of one node (`health_recent-1`): its newest report
/// and the backlog of its newest [`RECENT`] reports, oldest first, one per stamp. The whole
/// reports stay in the day's documents: a row a node, a few hundred bytes, whatever the
/// number of reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recent {
    pub latest: HealthReport,
    /// `(at_ms, backlog)` of the newest reports, oldest first.
    pub backlog: Vec<(u64, u64)>,
}

/// The `health_recent-1` value for a node: what it `held` and `reports`, the newest by stamp.
/// A row from before [`Recent`] (the list of reports itself) reads as one.
pub fn merge_recent(held: Option<&[u8]>, reports: &[HealthReport]) -> Result<Vec<u8>, String> {
    let held = held.map(read_recent).transpose()?;
    let mut backlog = held.as_ref().map_or_else(Vec::new, |h| h.backlog.clone());
    backlog.extend(reports.iter().map(|r| (r.at_ms, r.backlog())));
    backlog.sort_by_key(|(at, _)| *at);
    backlog.dedup_by_key(|(at, _)| *at);
    let skip = backlog.len().saturating_sub(RECENT);
    let backlog = backlog.split_off(skip);
    let newest = reports.iter().max_by_key(|r| r.at_ms);
    let latest = match (held.map(|h| h.latest), newest) {
        (Some(h), Some(n)) if n.at_ms > h.at_ms => n.clone(),
        (Some(h), _) => h,
        (None, Some(n)) => n.clone(),
        (None, None) => return Err("no report".into()),
    };
    serde_json::to_vec(&Recent { latest, backlog }).map_err(|e| e.to_string())
}

/// Reads a `health_recent-1` value.
pub fn read_recent(bytes: &[u8]) -> Result<Recent, String> {
    if let Ok(recent) = serde_json::from_slice::<Recent>(bytes) {
        return Ok(recent);
    }
    let mut old: Vec<HealthReport> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    old.sort_by_key(|r| r.at_ms);
    let backlog = old.iter().map(|r| (r.at_ms, r.backlog())).collect();
    let latest = old.pop().ok_or("no report")?;
    Ok(Recent { latest, backlog })
}

/// Whether `doc_id` names a health document.
pub fn is_health_doc(doc_id: &str) -> bool {
    doc_id.starts_with(PREFIX)
}

/// The id of `node`'s document of `day` (`yyyymmdd`).
pub fn doc_id(node: &str, day: &str) -> String {
    format!("{PREFIX}{node}:{day}")
}

/// `(node, day)` of a health document id.
pub fn parse_id(doc_id: &str) -> Option<(&str, &str)> {
    let rest = doc_id.strip_prefix(PREFIX)?;
    let (node, day) = rest.rsplit_once(':')?;
    (day.len() == 8 && day.bytes().all(|b| b.is_ascii_digit()) && !node.is_empty())
        .then_some((node, day))
}

fn malformed(reason: impl Into<String>) -> DocError {
    DocError::Malformed {
        field: "health".into(),
        reason: reason.into(),
    }
}

/// The node a health document belongs to and its reports, checked and bounded.
pub fn read(doc: &AutoCommit) -> Result<(String, Vec<HealthReport>), DocError> {
    let text = |key: &str| -> Result<String, DocError> {
        match doc.get(automerge::ROOT, key)? {
            Some((Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Str(t) => Ok(t.to_string()),
                _ => Err(malformed(format!("{key} is not text"))),
            },
            _ => Err(malformed(format!("{key} is missing"))),
        }
    };
    if text("kind")? != "health" {
        return Err(malformed("not a health document"));
    }
    let node = text("node")?;
    let Some((Value::Object(ObjType::List), list)) = doc.get(automerge::ROOT, "samples")? else {
        return Err(malformed("samples is not a list"));
    };
    let len = doc.length(&list);
    if len > MAX_SAMPLES {
        return Err(malformed(format!("{len} samples, more than {MAX_SAMPLES}")));
    }
    let mut out = Vec::with_capacity(len);
    // One pass over the list, not a `get` per index (see `audit_doc::read`).
    for item in doc.list_range(&list, ..) {
        let i = item.index;
        let ValueRef::Scalar(ScalarValueRef::Str(json)) = item.value else {
            return Err(malformed(format!("sample {i} is not text")));
        };
        if json.len() > MAX_SAMPLE_BYTES {
            return Err(malformed(format!("sample {i} is too long")));
        }
        let report: HealthReport =
            serde_json::from_str(&json).map_err(|e| malformed(format!("sample {i}: {e}")))?;
        if report.node != node {
            return Err(malformed(format!(
                "sample {i} is a report of {}",
                report.node
            )));
        }
        out.push(report);
    }
    if out.len() != len {
        return Err(malformed(format!(
            "{} of {len} samples readable",
            out.len()
        )));
    }
    Ok((node, out))
}

/// `existing` (saved bytes, if any) with `report` appended; the document saved again.
pub fn append(
    existing: Option<&[u8]>,
    report: &HealthReport,
    actor: automerge::ActorId,
) -> Result<Vec<u8>, DocError> {
    let json = serde_json::to_string(report).map_err(|e| malformed(e.to_string()))?;
    let mut doc = match existing {
        Some(bytes) => AutoCommit::load(bytes)?,
        None => {
            let mut doc = AutoCommit::new();
            doc.put(automerge::ROOT, "kind", "health")?;
            doc.put(automerge::ROOT, "node", report.node.as_str())?;
            doc.put_object(automerge::ROOT, "samples", ObjType::List)?;
            doc
        }
    }
    .with_actor(actor);
    let Some((Value::Object(ObjType::List), list)) = doc.get(automerge::ROOT, "samples")? else {
        return Err(malformed("samples is not a list"));
    };
    let len = doc.length(&list);
    if len >= MAX_SAMPLES {
        return Err(malformed("the day's document is full"));
    }
    doc.insert(&list, len, json)?;
    doc.commit();
    Ok(doc.save_nocompress())
}

/// Days of health documents a node keeps (the county: of every node).
pub const KEEP_DAYS: u64 = 7;

/// Appends this node's report every `every` (the first one at once) until the process ends;
/// once a day drops the documents older than [`KEEP_DAYS`].
pub async fn run_reporter(node: Arc<crate::node::Node>, every: Duration) {
    let mut pruned_on = String::new();
    loop {
        // The first report waits one interval: at start the links are not up yet, and a
        // restart with nothing changed should resync nothing but the handshake.
        tokio::time::sleep(every).await;
        let report = node.health_report();
        if let Err(e) = node.store.record_health(&report).await {
            tracing::warn!(error = %e, "health report not recorded");
        }
        let today = chrono::Utc::now().date_naive();
        if today.to_string() != pruned_on {
            pruned_on = today.to_string();
            let keep_from = today
                .checked_sub_days(chrono::Days::new(KEEP_DAYS))
                .unwrap_or(today)
                .format("%Y%m%d")
                .to_string();
            match node.store.prune_health(&keep_from).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(documents = n, "old health reports dropped"),
                Err(e) => tracing::warn!(error = %e, "old health reports not dropped"),
            }
        }
    }
}

/// One node's report. Bounded: a node has a handful of peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub node: String,
    pub role: Tier,
    pub division: String,
    pub town: String,
    pub version: String,
    /// Unix milliseconds when the report was made (the node's clock).
    pub at_ms: u64,
    pub uptime_s: u64,
    pub peers: Vec<PeerHealth>,
    pub store_bytes: u64,
    pub free_disk_bytes: Option<u64>,
    /// The county's clock minus this node's, measured during sync (`None` before a sync).
    pub clock_offset_ms: Option<i64>,
    /// Unix milliseconds when the node's certificate expires (`None`: not enrolled).
    pub cert_expires_ms: Option<u64>,
    /// Warnings and errors logged in the last 24 hours.
    pub errors_24h: u64,
    pub cases_by_status: BTreeMap<String, u64>,
}

/// One link as the reporting node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHealth {
    pub name: String,
    pub connected: bool,
    pub last_sync_ms: Option<u64>,
    pub waiting_changes: u64,
    pub waiting_bytes: u64,
    pub attempts: u64,
    pub last_error: Option<String>,
}

impl HealthReport {
    /// Documents waiting to go up, summed over the node's links (its backlog).
    pub fn backlog(&self) -> u64 {
        self.peers.iter().map(|p| p.waiting_changes).sum()
    }
}

/// When the county raises an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    /// No report for longer than this.
    pub not_seen_secs: u64,
    /// Free disk below this.
    pub disk_low_bytes: u64,
    /// Clock off by more than this either way.
    pub clock_offset_ms: u64,
    /// Certificate expiring within this many days.
    pub cert_days: u64,
    /// A link that failed this many times in a row (attempts since its last success).
    pub sync_failures: u64,
    /// The backlog grew in each of this many consecutive samples.
    pub backlog_samples: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            not_seen_secs: 600,
            disk_low_bytes: 1 << 30,
            clock_offset_ms: 60_000,
            cert_days: 30,
            sync_failures: 5,
            backlog_samples: 4,
        }
    }
}

/// An alert on a node's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Alert {
    NotSeen {
        secs: u64,
    },
    BacklogGrowing {
        backlog: u64,
    },
    DiskLow {
        free_bytes: u64,
    },
    ClockOff {
        offset_ms: i64,
    },
    CertExpiring {
        days: i64,
    },
    SyncFailing {
        link: String,
        attempts: u64,
    },
    /// The node sent documents the county refused or events it keeps as not counting
    /// (伪造/越权), `latest` the newest reason ([`crate::store::quarantine`]).
    Refused {
        count: usize,
        latest: String,
    },
}

impl Alert {
    /// The Chinese line the node table shows.
    pub fn zh(&self) -> String {
        match self {
            Alert::NotSeen { secs } => format!("失联：{} 分钟未报告", secs / 60),
            Alert::BacklogGrowing { backlog } => format!("积压持续增长（{backlog} 件待同步）"),
            Alert::DiskLow { free_bytes } => {
                format!("磁盘空间不足（剩余 {} MB）", free_bytes >> 20)
            }
            Alert::ClockOff { offset_ms } => format!("时钟偏差 {} 秒", offset_ms / 1000),
            Alert::CertExpiring { days } => format!("证书 {days} 天后到期"),
            Alert::SyncFailing { link, attempts } => {
                format!("同步连续失败（{link}，{attempts} 次）")
            }
            Alert::Refused { count, latest } => {
                format!("发送了被拒收或伪造/无效的数据 {count} 件（最近：{latest}）")
            }
        }
    }
}

/// The alerts for one node: its `latest` report (`received_ms`: when the county got it,
/// county clock), the backlog of its recent reports oldest first, judged at `now_ms`.
pub fn alerts(
    latest: &HealthReport,
    received_ms: u64,
    backlog_history: &[u64],
    now_ms: u64,
    th: &Thresholds,
) -> Vec<Alert> {
    let mut out = Vec::new();
    let quiet = now_ms.saturating_sub(received_ms) / 1000;
    if quiet > th.not_seen_secs {
        out.push(Alert::NotSeen { secs: quiet });
    }
    let n = th.backlog_samples;
    if n > 0 && backlog_history.len() > n {
        let recent = &backlog_history[backlog_history.len() - n - 1..];
        if recent.windows(2).all(|w| w[1] > w[0]) {
            out.push(Alert::BacklogGrowing {
                backlog: latest.backlog(),
            });
        }
    }
    if let Some(free) = latest.free_disk_bytes
        && free < th.disk_low_bytes
    {
        out.push(Alert::DiskLow { free_bytes: free });
    }
    if let Some(offset) = latest.clock_offset_ms
        && offset.unsigned_abs() > th.clock_offset_ms
    {
        out.push(Alert::ClockOff { offset_ms: offset });
    }
    if let Some(expires) = latest.cert_expires_ms {
        let days = (i128::from(expires) - i128::from(now_ms)) / 86_400_000;
        if days < i128::from(th.cert_days) {
            out.push(Alert::CertExpiring {
                days: i64::try_from(days).unwrap_or(i64::MIN),
            });
        }
    }
    for p in &latest.peers {
        if !p.connected && p.last_error.is_some() && p.attempts >= th.sync_failures {
            out.push(Alert::SyncFailing {
                link: p.name.clone(),
                attempts: p.attempts,
            });
        }
    }
    out
}

/// Warnings and errors logged by this process: stamps of the last 24 hours.
static RECENT_ERRORS: Mutex<VecDeque<u64>> = Mutex::new(VecDeque::new());
/// At most this many stamps are kept (a node logging more errors than this has bigger news).
const MAX_ERROR_STAMPS: usize = 10_000;
const DAY_MS: u64 = 86_400_000;

/// Notes one logged warning or error (called by the binary's log layer).
pub fn note_error(now_ms: u64) {
    let mut q = RECENT_ERRORS.lock().unwrap_or_else(|p| p.into_inner());
    while q
        .front()
        .is_some_and(|t| now_ms.saturating_sub(*t) > DAY_MS)
        || q.len() >= MAX_ERROR_STAMPS
    {
        q.pop_front();
    }
    q.push_back(now_ms);
}

/// Warnings and errors logged in the 24 hours before `now_ms`.
pub fn errors_24h(now_ms: u64) -> u64 {
    let q = RECENT_ERRORS.lock().unwrap_or_else(|p| p.into_inner());
    q.iter()
        .filter(|t| now_ms.saturating_sub(**t) <= DAY_MS)
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> HealthReport {
        HealthReport {
            node: "village-1".into(),
            role: Tier::Village,
            division: "430181101001".into(),
            town: "430181101000".into(),
            version: "0.1.0".into(),
            at_ms: 1_000_000,
            uptime_s: 60,
            peers: vec![PeerHealth {
                name: "county".into(),
                connected: true,
                last_sync_ms: Some(1_000_000),
                waiting_changes: 3,
                waiting_bytes: 900,
                attempts: 1,
                last_error: None,
            }],
            store_bytes: 1 << 20,
            free_disk_bytes: Some(10 << 30),
            clock_offset_ms: Some(200),
            cert_expires_ms: Some(1_000_000 + 365 * DAY_MS),
            errors_24h: 0,
            cases_by_status: BTreeMap::new(),
        }
    }

    #[test]
    fn a_healthy_node_raises_nothing() {
        let th = Thresholds::default();
        assert_eq!(
            alerts(&report(), 1_000_000, &[3, 3, 2, 3, 3], 1_060_000, &th),
            []
        );
    }

    #[test]
    fn each_threshold_raises_its_alert() {
        let th = Thresholds::default();
        let mut r = report();
        r.free_disk_bytes = Some(100 << 20);
        r.clock_offset_ms = Some(-120_000);
        r.cert_expires_ms = Some(1_000_000 + 10 * DAY_MS);
        r.peers[0].connected = false;
        r.peers[0].attempts = 7;
        r.peers[0].last_error = Some("timed out".into());
        let got = alerts(&r, 1_000_000, &[1, 2, 3, 4, 5], 1_000_000 + 700_000, &th);
        let kinds: Vec<String> = got
            .iter()
            .map(|a| {
                serde_json::to_value(a).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "not_seen",
                "backlog_growing",
                "disk_low",
                "clock_off",
                "cert_expiring",
                "sync_failing"
            ]
        );
        assert!(got[0].zh().contains("11 分钟"));
        // A backlog that dipped once is not "growing".
        let calm = alerts(&report(), 1_000_000, &[1, 2, 1, 4, 5], 1_000_000, &th);
        assert!(calm.is_empty(), "{calm:?}");
    }

    #[test]
    fn errors_are_counted_for_a_day() {
        let base = 5 * DAY_MS;
        let before = errors_24h(base);
        note_error(base);
        note_error(base + 1000);
        assert_eq!(errors_24h(base + 2000) - before, 2);
        assert_eq!(errors_24h(base + 2 * DAY_MS), 0);
    }

    #[test]
    fn a_days_document_holds_the_nodes_reports_and_nothing_else() {
        let actor = crate::case_doc::node_actor("village-1");
        let first = append(None, &report(), actor.clone()).unwrap();
        let mut later = report();
        later.at_ms += 60_000;
        let both = append(Some(&first), &later, actor.clone()).unwrap();
        let (node, reports) = read(&AutoCommit::load(&both).unwrap()).unwrap();
        assert_eq!((node.as_str(), reports.len()), ("village-1", 2));
        assert_eq!(reports[1].at_ms, report().at_ms + 60_000);
        // Another node's report in this node's document is refused on read.
        let mut other = report();
        other.node = "village-2".into();
        let forged = append(Some(&both), &other, actor).unwrap();
        assert!(read(&AutoCommit::load(&forged).unwrap()).is_err());
        assert_eq!(
            parse_id(&doc_id("village-1", "20261123")),
            Some(("village-1", "20261123"))
        );
        assert_eq!(parse_id("health:village-1:2026"), None);
        assert_eq!(parse_id("audit:x:000001"), None);
    }

    #[test]
    fn the_recent_projection_keeps_the_newest_reports_in_order() {
        let reports: Vec<HealthReport> = (0..50)
            .map(|i| HealthReport {
                at_ms: 1_000 + i * 60_000,
                ..report()
            })
            .collect();
        let first = merge_recent(None, &reports[..40]).unwrap();
        // An older day's document arriving late adds nothing newer and moves nothing.
        let again = merge_recent(Some(&first), &reports[..10]).unwrap();
        assert_eq!(read_recent(&again).unwrap(), read_recent(&first).unwrap());
        let merged = merge_recent(Some(&again), &reports[40..]).unwrap();
        let kept = read_recent(&merged).unwrap();
        assert_eq!(kept.backlog.len(), RECENT);
        assert_eq!(kept.backlog.first().unwrap().0, reports[20].at_ms);
        assert_eq!(kept.backlog.last().unwrap().0, reports[49].at_ms);
        assert_eq!(kept.latest, reports[49]);
        // A row written as the list of reports reads the same.
        let list = serde_json::to_vec(&reports[20..]).unwrap();
        assert_eq!(read_recent(&list).unwrap(), kept);
    }
}
