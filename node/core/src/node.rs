//! The node runtime the web layer talks to: config, catalogue, store and clock together, and
//! the operations a user performs (file an application, record an event, log in).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, NaiveDate, Offset, Utc};
use thiserror::Error;

use crate::application::{self, ApplicationInput, FieldErrors};
use crate::calendar::Calendar;
use crate::case_doc::{self, Case};
use crate::catalog::{Catalog, Tier};
use crate::config::Config;
use crate::deadline::LegalTime;
use crate::enrol::{EnrolAnswer, EnrolError, EnrolRequest, TlsDir};
use crate::event::{Event, EventKind};
use crate::fold::CaseState;
use crate::hlc::HlcClock;
use crate::message::Msg;
use crate::store::{SavedDoc, Store, StoreError};
use crate::summary::CaseSummary;
use crate::users::{self, LoginGuard, Role, User};

/// Failed logins before an account is locked, and for how long.
const MAX_LOGIN_FAILURES: u32 = 5;
const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Wrong phone tails for one receipt number on the kiosk before it is locked, and for how
/// long: 4 digits must not be guessable by trying.
const MAX_KIOSK_FAILURES: u32 = 5;
const KIOSK_LOCKOUT: Duration = Duration::from_secs(15 * 60);

/// Who is acting: the logged-in user.
#[derive(Debug, Clone)]
pub struct Actor {
    pub username: String,
    pub role: Role,
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("the application is not valid")]
    Invalid(FieldErrors),
    #[error("{0}")]
    Forbidden(Msg),
    #[error("{0}")]
    NotFound(Msg),
    #[error("{0}")]
    Conflict(Msg),
    #[error("{0}")]
    BadRequest(Msg),
    /// Too many failed tries (the kiosk's receipt and phone check).
    #[error("{0}")]
    Locked(Msg),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LoginError {
    #[error("wrong username or password")]
    BadCredentials,
    #[error("account locked for {0:?} after repeated failures")]
    Locked(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Most documents counted as waiting per link (a report, not a scan of the whole store).
const WAITING_CAP: usize = 100_000;

/// One link as pages and `/api/v1/health` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkReport {
    #[serde(flatten)]
    pub link: crate::sync_engine::LinkSnapshot,
    /// Documents changed here that the peer has not taken yet.
    pub waiting_changes: u64,
    pub waiting_bytes: u64,
}

/// A filed case with its state.
#[derive(Debug, Clone)]
pub struct Filed {
    pub case: Case,
    pub state: CaseState,
}

/// The running node.
/// One row of the county's node table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeRow {
    pub node: String,
    pub role: Option<Tier>,
    pub division: String,
    pub town: String,
    /// County time of the latest report (`None`: enrolled, never reported).
    pub last_seen_ms: Option<u64>,
    pub report: Option<crate::health::HealthReport>,
    /// Backlog of the recent reports, oldest first.
    pub backlog: Vec<u64>,
    pub alerts: Vec<crate::health::Alert>,
    /// Whether the county revoked the node's certificates (`yiciban revoke`, the console).
    pub revoked: bool,
}

/// From this month on, the county is reminded to publish next year's calendar.
const REMIND_FROM_MONTH: u32 = 10;

/// What [`Node::calendar_status`] reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CalendarStatus {
    /// `county` (published and replicated), `config` (this node's file), `built-in`.
    pub source: &'static str,
    /// The years the calendar in force publishes.
    pub years: Vec<i32>,
    /// This year and the next, where not published: counted by rule.
    pub provisional_years: Vec<ProvisionalYear>,
    /// What the county admin is asked to do, in Chinese; `None`: nothing.
    pub reminder: Option<String>,
}

/// A year counted by rule, with the holidays the rule gives it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProvisionalYear {
    pub year: i32,
    pub holidays: Vec<RuleHolidayView>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleHolidayView {
    pub name: &'static str,
    pub days: Vec<NaiveDate>,
    /// Working days given as rest for holiday days on a weekend (补假).
    pub substitutes: Vec<NaiveDate>,
}

impl ProvisionalYear {
    fn of(rule: &crate::calendar::rules::RuleYear) -> Self {
        Self {
            year: rule.year,
            holidays: rule
                .holidays
                .iter()
                .map(|h| RuleHolidayView {
                    name: h.name,
                    days: h.days.clone(),
                    substitutes: h.substitutes.clone(),
                })
                .collect(),
        }
    }
}

/// Writes `bytes` to `path` through a file beside it renamed over it, so a reader sees the
/// old text or the new, never half of one.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("toml.new");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// How often [`Node::calendar`] looks for a newly published calendar.
const CALENDAR_RECHECK: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct CalendarCache {
    checked: Option<Instant>,
    /// The published calendar's feed position when last read.
    pos: Option<u64>,
    current: Option<(Arc<Calendar>, &'static str)>,
}

#[derive(Debug)]
pub struct Node {
    pub config: Config,
    pub catalog: Catalog,
    pub store: Store,
    clock: HlcClock,
    logins: LoginGuard,
    /// Failed receipt and phone-tail checks on the kiosk, per receipt number.
    kiosk: LoginGuard,
    started: Instant,
    /// Every sync link, for pages and health.
    pub links: Arc<crate::sync_engine::Links>,
    /// The county's certificate authority (county nodes that ran `yiciban init`).
    county_ca: Option<yiciban_transport::identity::CountyCa>,
    /// The node key and certificate that seal decisions, read on first use; stays empty
    /// (and is looked for again next time) while the node is not enrolled.
    signer: std::sync::Mutex<Option<Arc<crate::seal::Signer>>>,
    /// The working-day calendar legal time counts on, re-read when the county publishes.
    calendar: std::sync::Mutex<CalendarCache>,
}

impl Node {
    pub fn new(config: Config, catalog: Catalog, store: Store) -> Result<Arc<Self>, StoreError> {
        let clock = HlcClock::new(store.hlc_floor()?);
        let store = store.for_node(&config.node.id);
        let tls = TlsDir::new(config.tls_dir());
        let county_ca = if config.node.role == Tier::County && tls.path("ca.key").exists() {
            match tls.county_ca() {
                Ok(ca) => Some(ca),
                Err(e) => {
                    tracing::error!(error = %e, "county CA unreadable; enrolment is off");
                    None
                }
            }
        } else {
            None
        };
        let node = Arc::new(Self {
            calendar: std::sync::Mutex::default(),
            config,
            catalog,
            store,
            clock,
            logins: LoginGuard::new(MAX_LOGIN_FAILURES, LOCKOUT),
            kiosk: LoginGuard::new(MAX_KIOSK_FAILURES, KIOSK_LOCKOUT),
            started: Instant::now(),
            links: Arc::default(),
            county_ca,
            signer: std::sync::Mutex::default(),
        });
        // The writer keys the review queue (`crate::queue`) with this node's clock, and
        // merges are bounded by its catalogue (`crate::bounds`).
        crate::queue::current_clock(&node);
        node.store.set_catalog(Arc::new(node.catalog.clone()));
        Ok(node)
    }

    /// Whether this node holds a certificate from the county.
    pub fn is_enrolled(&self) -> bool {
        TlsDir::new(self.config.tls_dir()).is_enrolled()
    }

    /// Starts replication as `[sync]` says. A node with no `[sync]` or no certificate yet
    /// runs alone and says why in the log; pages show it.
    pub fn start_sync(&self) -> Result<Option<quinn::Endpoint>, String> {
        let Some(sync) = &self.config.sync else {
            tracing::info!("no [sync] section: running alone");
            return Ok(None);
        };
        let tls = TlsDir::new(self.config.tls_dir());
        if !tls.is_enrolled() {
            tracing::warn!(dir = %tls.dir.display(), "not enrolled: run `yiciban enroll` (or `yiciban init` at the county); running alone");
            return Ok(None);
        }
        let material = tls.material().map_err(|e| e.to_string())?;
        let ctx = crate::sync_engine::SyncContext {
            store: self.store.clone(),
            node_id: self.config.node.id.clone(),
            scope: self.config.scope(),
            links: self.links.clone(),
        };
        let dial = crate::sync_engine::DialConfig {
            backoff_max: Duration::from_secs(sync.backoff_max_secs),
            ..crate::sync_engine::DialConfig::default()
        };
        if sync.county.is_some() {
            // The first offer to the county reads the feed's tail: read it now, while the
            // link comes up. A village of 10,000 cases restarted with 100 edited handled the
            // county's hello (its offer) in 3.2 ms cold, 0.4-0.6 ms with this read-ahead.
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                match store.warm_feed_tail() {
                    Ok(entries) => tracing::debug!(
                        entries,
                        took_us = started.elapsed().as_micros() as u64,
                        "feed tail read ahead of the first offer"
                    ),
                    Err(e) => tracing::warn!(error = %e, "feed tail not read ahead"),
                }
            });
        }
        let endpoint = crate::sync_engine::start(ctx, &material, sync.listen, sync.county, dial)
            .map_err(|e| e.to_string())?;
        if sync.listen.is_some() {
            tokio::spawn(crate::sync_engine::watch_revocations(
                endpoint.clone(),
                tls,
                self.links.clone(),
                self.store.clone(),
                self.config.node.id.clone(),
            ));
        }
        tracing::info!(listen = ?sync.listen, county = ?sync.county, "replication started");
        Ok(Some(endpoint))
    }

    /// Every link with what waits to go over it: the documents of the peer's scope that
    /// changed after the position the peer holds, and their stored size (an upper bound on
    /// the bytes, since only the changes the peer lacks travel; estimated beyond
    /// [`crate::store::WAITING_SIZED`] documents).
    pub fn link_report(&self) -> Vec<LinkReport> {
        self.links
            .snapshot()
            .into_iter()
            .map(|link| {
                let scope = match (
                    link.peer_role.as_deref().and_then(Tier::parse),
                    &link.peer_division,
                ) {
                    (Some(role), Some(div)) => crate::scope::Scope::of(role, div),
                    _ => crate::scope::Scope::All,
                };
                let (changes, bytes) = self
                    .store
                    .waiting(&scope, link.peer_position.unwrap_or(0), WAITING_CAP)
                    .unwrap_or((0, 0));
                LinkReport {
                    link,
                    waiting_changes: changes,
                    waiting_bytes: bytes,
                }
            })
            .collect()
    }

    /// Answers a node's enrolment request (county only).
    pub async fn enrol(&self, req: &EnrolRequest) -> Result<EnrolAnswer, NodeError> {
        let Some(ca) = &self.county_ca else {
            return Err(NodeError::NotFound(Msg::new(
                "本节点不是县级证书机构",
                "this node is not a county certificate authority",
            )));
        };
        let answer = crate::enrol::answer(&self.store, ca, req)
            .await
            .map_err(|e| match e {
                EnrolError::Store(e) => NodeError::Store(e),
                other => {
                    tracing::warn!(error = %other, "enrolment refused");
                    NodeError::Forbidden(Msg::new(
                        format!("注册被拒绝：{other}"),
                        format!("enrolment refused: {other}"),
                    ))
                }
            })?;
        // Remembered so `yiciban revoke` can name the certificate in the revocation list.
        let recorded = (|| {
            use yiciban_transport::identity::{cert_serial, first_cert_der, peer_identity};
            let der = first_cert_der(&answer.cert_pem)?;
            let node = peer_identity(&der)?.node_id;
            TlsDir::new(self.config.tls_dir()).record_issued(&node, &cert_serial(&der)?)?;
            Ok::<_, EnrolError>(der)
        })();
        // Listed at once, so what the node signs counts everywhere from its first link.
        if let Ok(der) = &recorded
            && let Err(e) = crate::registry::list_cert(&self.store, der, &self.config.node.id).await
        {
            tracing::warn!(error = %e, "the enrolled node is not listed in the registry yet");
        }
        if let Err(e) = recorded {
            tracing::error!(error = %e, "issued certificate not recorded: it cannot be revoked");
            return Err(NodeError::BadRequest(Msg::new(
                format!("证书序列号无法记录：{e}"),
                format!("the certificate's serial could not be recorded: {e}"),
            )));
        }
        Ok(answer)
    }

    pub fn tier(&self) -> Tier {
        self.config.node.role
    }

    /// The key that seals this node's decisions, or `None` when the node holds no
    /// certificate (its results are then unsigned).
    pub fn signer(&self) -> Option<Arc<crate::seal::Signer>> {
        let mut slot = self.signer.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let tls = TlsDir::new(self.config.tls_dir());
            if !tls.is_enrolled() {
                return None;
            }
            let read = |name: &str| std::fs::read_to_string(tls.path(name));
            match (read("node.key"), read("node.pem")) {
                (Ok(key), Ok(cert)) => match crate::seal::Signer::from_pem(&key, &cert) {
                    Ok(signer) => *slot = Some(Arc::new(signer)),
                    Err(e) => {
                        tracing::error!(error = %e, "node key unusable: results stay unsigned")
                    }
                },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(error = %e, "node key unreadable: results stay unsigned");
                }
            }
        }
        slot.clone()
    }

    /// Verifies a result code against the county CA certificate in this node's TLS folder,
    /// offline. A node without `ca.pem` answers [`SealError::NoCa`](crate::seal::SealError).
    pub fn verify_result(
        &self,
        payload: &str,
    ) -> Result<crate::seal::Verified, crate::seal::SealError> {
        let ca_pem = std::fs::read_to_string(TlsDir::new(self.config.tls_dir()).path("ca.pem"))
            .map_err(|_| crate::seal::SealError::NoCa)?;
        let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        let registry = self.store.registry();
        let revoked_tsv = if self.tier() == Tier::County {
            TlsDir::new(self.config.tls_dir())
                .revocations()
                .unwrap_or_default()
        } else {
            Default::default()
        };
        crate::seal::verify_against(payload, &ca_pem, now, &|node| {
            registry
                .get(node)
                .and_then(|n| n.revoked_ms)
                .or_else(|| revoked_tsv.get(node).copied())
        })
    }

    /// Seals `event` when it is the decision that settles the case (ready to issue or
    /// rejected) and this node holds its key: the result code goes into the payload under
    /// `"seal"`. Anything else leaves the event as it is; the store's check still decides.
    fn seal_decision(&self, case_id: &str, event: &mut Event) -> Result<(), NodeError> {
        if !matches!(
            event.kind,
            EventKind::ReviewPassed | EventKind::Approved | EventKind::Rejected
        ) {
            return Ok(());
        }
        let Some(case) = self.store.case(case_id)? else {
            return Ok(());
        };
        let mut events = case.events.clone();
        events.push(event.clone());
        let after = crate::fold::fold(&case.route, &events);
        if !crate::seal::is_sealing_decision(event, &after) {
            return Ok(());
        }
        let Some(signer) = self.signer() else {
            tracing::info!(receipt = %case.receipt_no, "not enrolled: the decision is not sealed");
            return Ok(());
        };
        let offset = *self.local_now().offset();
        let decided_on =
            DateTime::from_timestamp_millis(i64::try_from(event.at.wall_ms).unwrap_or(0))
                .map(|t| t.with_timezone(&offset).date_naive())
                .unwrap_or_else(|| self.today())
                .format("%Y-%m-%d")
                .to_string();
        let result_name = self
            .catalog
            .get(&case.item_code)
            .map(|i| i.result_name.clone())
            .unwrap_or_default();
        let summary = crate::seal::ResultSummary::of(
            &case,
            event,
            &result_name,
            &decided_on,
            signer.identity(),
        );
        match signer.seal(&summary) {
            Ok(code) => {
                if let serde_json::Value::Object(map) = &mut event.payload {
                    map.insert("seal".into(), serde_json::Value::String(code));
                }
            }
            Err(e) => tracing::error!(error = %e, "sealing failed: the decision is not sealed"),
        }
        Ok(())
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Local time of the node (China: UTC+8).
    pub fn local_now(&self) -> DateTime<FixedOffset> {
        // The config check bounds the offset to -12..=14 hours, so this is always in range.
        let offset = FixedOffset::east_opt(self.config.node.utc_offset_hours * 3600)
            .unwrap_or_else(|| Utc.fix());
        Utc::now().with_timezone(&offset)
    }

    pub fn today(&self) -> NaiveDate {
        self.local_now().date_naive()
    }

    /// The working-day calendar in force: the one the county published (`county:calendar`,
    /// replicated), else this node's `[calendar] path`, else the built-in demo calendar.
    /// Checked against the store at most every [`CALENDAR_RECHECK`].
    pub fn calendar(&self) -> Option<Arc<Calendar>> {
        self.calendar_info().map(|(c, _)| c)
    }

    /// [`Node::calendar`] and where it came from: `county`, `config` or `built-in`.
    pub fn calendar_info(&self) -> Option<(Arc<Calendar>, &'static str)> {
        let mut cache = self.calendar.lock().unwrap_or_else(|p| p.into_inner());
        if cache
            .checked
            .is_some_and(|at| at.elapsed() < CALENDAR_RECHECK)
        {
            return cache.current.clone();
        }
        let pos = self
            .store
            .feed_pos(crate::county_doc::CALENDAR_DOC)
            .ok()
            .flatten();
        if pos != cache.pos || cache.current.is_none() {
            cache.current = self.published_calendar().or_else(|| self.local_calendar());
            cache.pos = pos;
        }
        cache.checked = Some(Instant::now());
        cache.current.clone()
    }

    fn published_calendar(&self) -> Option<(Arc<Calendar>, &'static str)> {
        let bytes = self
            .store
            .county_doc_bytes(crate::county_doc::CALENDAR_DOC)
            .ok()??;
        let read = automerge::AutoCommit::load(&bytes)
            .map_err(crate::case_doc::DocError::from)
            .and_then(|doc| crate::county_doc::read_calendar(&doc));
        match read {
            Ok((_, calendar)) => Some((Arc::new(calendar), "county")),
            Err(e) => {
                tracing::error!(error = %e, "the published calendar is unreadable; using the local one");
                None
            }
        }
    }

    /// This node's own calendar text and where it came from: `[calendar] path`, else the
    /// one the county admin published from the console beside the config, else built in.
    fn local_calendar_text(&self) -> Result<(String, &'static str), String> {
        let published = self.config.published_calendar_file();
        match self.config.calendar_path() {
            Some(path) => std::fs::read_to_string(&path)
                .map(|t| (t, "config"))
                .map_err(|e| format!("{}: {e}", path.display())),
            None if published.exists() => std::fs::read_to_string(&published)
                .map(|t| (t, "config"))
                .map_err(|e| format!("{}: {e}", published.display())),
            None => Ok((crate::DEMO_CALENDAR.to_string(), "built-in")),
        }
    }

    /// Where the working-day calendar stands today: what legal time counts on, which years
    /// the county published, which it counts by rule (this year and the next), and what the
    /// county must do about it.
    pub fn calendar_status(&self) -> CalendarStatus {
        let today = self.today();
        let (calendar, source) = match self.calendar_info() {
            Some((c, source)) => (c, source),
            None => (Arc::new(Calendar::provisional_only()), "rules"),
        };
        let this_year = chrono::Datelike::year(&today);
        let provisional: Vec<ProvisionalYear> = [this_year, this_year + 1]
            .into_iter()
            .filter(|y| !calendar.is_published(*y))
            .filter_map(crate::calendar::rules::year)
            .map(ProvisionalYear::of)
            .collect();
        let month = chrono::Datelike::month(&today);
        let reminder = if !calendar.is_published(this_year) {
            Some(format!(
                "{this_year}年工作日历尚未发布：办理时限按法定节假日规则预估（调休上班日无法预知），请尽快发布{this_year}年工作日历。"
            ))
        } else if month >= REMIND_FROM_MONTH && !calendar.is_published(this_year + 1) {
            let next = this_year + 1;
            Some(format!(
                "{next}年工作日历尚未发布：跨入{next}年的办理时限按法定节假日规则预估（调休上班日无法预知）。国务院办公厅公布{next}年节假日安排后，请及时发布。"
            ))
        } else {
            None
        };
        CalendarStatus {
            source,
            years: calendar.years(),
            provisional_years: provisional,
            reminder,
        }
    }

    /// At the county: checks `text` as a calendar file, keeps it as the county's calendar
    /// (`[calendar] path`, else `calendar.toml` beside the config) and publishes it to every
    /// node, audited as `user`. Legal time everywhere counts on it once it arrives.
    pub async fn publish_calendar_text(&self, text: &str, user: &str) -> Result<bool, NodeError> {
        if self.tier() != Tier::County {
            return Err(NodeError::Forbidden(Msg::new(
                "工作日历由县级节点发布",
                "the county publishes the calendar",
            )));
        }
        let calendar = Calendar::parse(text).map_err(|e| {
            NodeError::BadRequest(Msg::new(e.to_string(), "the calendar file is not valid"))
        })?;
        let path = self.config.published_calendar_file();
        write_atomically(&path, text.as_bytes()).map_err(|e| {
            tracing::error!(path = %path.display(), error = %e, "calendar not written");
            NodeError::BadRequest(Msg::new(
                "工作日历文件无法保存，请检查节点的磁盘与权限",
                format!("the calendar could not be written: {e}"),
            ))
        })?;
        let years = calendar
            .years()
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        self.store
            .audit_note(user, "calendar.published", &format!("years {years}"))
            .await?;
        self.publish_calendar().await
    }

    fn local_calendar(&self) -> Option<(Arc<Calendar>, &'static str)> {
        let parsed = self.local_calendar_text().and_then(|(text, source)| {
            Calendar::parse(&text)
                .map(|c| (Arc::new(c), source))
                .map_err(|e| e.to_string())
        });
        parsed
            .map_err(|e| tracing::error!(error = %e, "no working-day calendar: deadlines are off"))
            .ok()
    }

    /// At the county: publishes its calendar (`[calendar] path`, else the built-in one) as
    /// `county:calendar`, which replicates to every node. Writes nothing when unchanged.
    pub async fn publish_calendar(&self) -> Result<bool, NodeError> {
        if self.tier() != Tier::County {
            return Ok(false);
        }
        let (text, _) = self
            .local_calendar_text()
            .map_err(|e| NodeError::BadRequest(Msg::new(format!("工作日历无法读取：{e}"), e)))?;
        let actor = case_doc::node_actor(&self.config.node.id);
        let published = self
            .store
            .publish_county_doc(crate::county_doc::CALENDAR_DOC, |existing| {
                Ok(crate::county_doc::publish_calendar(existing, &text, actor)?)
            })
            .await?;
        if !published {
            return Ok(false);
        }
        *self.calendar.lock().unwrap_or_else(|p| p.into_inner()) = CalendarCache::default();
        tracing::info!("working-day calendar published to every node");
        Ok(true)
    }

    /// The county's node table: every node it holds reports of or enrolled, with its latest
    /// report, its recent backlog and the alerts they raise now.
    pub fn node_table(&self) -> Result<Vec<NodeRow>, StoreError> {
        let th = self.config.health.thresholds();
        let now_ms = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
        let mut rows: std::collections::BTreeMap<String, NodeRow> = self
            .store
            .latest_health()?
            .into_iter()
            .map(|(node, recent)| {
                let latest = recent.latest;
                let backlog: Vec<u64> = recent.backlog.iter().map(|(_, b)| *b).collect();
                // When the county got it, in county time: the node's stamp plus its offset.
                let received =
                    i128::from(latest.at_ms) + i128::from(latest.clock_offset_ms.unwrap_or(0));
                let received = u64::try_from(received.max(0)).unwrap_or(0);
                let alerts = crate::health::alerts(&latest, received, &backlog, now_ms, &th);
                (
                    node.clone(),
                    NodeRow {
                        node,
                        role: Some(latest.role),
                        division: latest.division.clone(),
                        town: latest.town.clone(),
                        last_seen_ms: Some(received),
                        report: Some(latest),
                        backlog,
                        alerts,
                        revoked: false,
                    },
                )
            })
            .collect();
        // Enrolled nodes that never reported are listed too, with the alert that says so.
        for token in self.store.tokens()? {
            if token.used_ms.is_none() || rows.contains_key(&token.node_id) {
                continue;
            }
            let since = token.used_ms.unwrap_or(0);
            let quiet = now_ms.saturating_sub(since) / 1000;
            rows.insert(
                token.node_id.clone(),
                NodeRow {
                    node: token.node_id.clone(),
                    role: Tier::parse(&token.role),
                    division: token.division.clone(),
                    town: String::new(),
                    last_seen_ms: None,
                    report: None,
                    backlog: Vec::new(),
                    alerts: if quiet > th.not_seen_secs {
                        vec![crate::health::Alert::NotSeen { secs: quiet }]
                    } else {
                        Vec::new()
                    },
                    revoked: false,
                },
            );
        }
        let revoked = self.revoked_nodes();
        for row in rows.values_mut() {
            row.revoked = revoked.contains(&row.node);
        }
        // What each node sent that was refused or kept as forged: the alert names it.
        for (node, refused) in self.store.refusals()? {
            let Some(latest) = refused.last() else {
                continue;
            };
            let alert = crate::health::Alert::Refused {
                count: refused.len(),
                latest: latest.reason.clone(),
            };
            match rows.get_mut(&node) {
                Some(row) => row.alerts.push(alert),
                None => {
                    rows.insert(
                        node.clone(),
                        NodeRow {
                            node,
                            role: None,
                            division: String::new(),
                            town: String::new(),
                            last_seen_ms: None,
                            report: None,
                            backlog: Vec::new(),
                            alerts: vec![alert],
                            revoked: false,
                        },
                    );
                }
            }
        }
        Ok(rows.into_values().collect())
    }

    /// This node's health report now (see [`crate::health`]).
    pub fn health_report(&self) -> crate::health::HealthReport {
        let now_ms = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
        let links = if self.is_enrolled() {
            self.link_report()
        } else {
            Vec::new()
        };
        let peers = links
            .into_iter()
            .map(|r| crate::health::PeerHealth {
                name: r.link.name,
                connected: r.link.connected,
                last_sync_ms: r.link.last_sync_ms,
                waiting_changes: r.waiting_changes,
                waiting_bytes: r.waiting_bytes,
                attempts: r.link.attempts,
                last_error: r.link.last_error,
            })
            .collect();
        let store_path = self.config.store_path();
        let free_disk_bytes = store_path
            .parent()
            .and_then(|dir| fs4::available_space(dir).ok());
        let tls = TlsDir::new(self.config.tls_dir());
        let cert_expires_ms = std::fs::read_to_string(tls.path("node.pem"))
            .ok()
            .and_then(|pem| yiciban_transport::identity::first_cert_der(&pem).ok())
            .and_then(|der| yiciban_transport::identity::cert_not_after_ms(&der).ok());
        let cases_by_status = self
            .store
            .status_counts()
            .unwrap_or_default()
            .into_iter()
            .map(|(s, n)| (s.as_str().to_string(), n))
            .collect();
        crate::health::HealthReport {
            node: self.config.node.id.clone(),
            role: self.tier(),
            division: self.config.node.division.clone(),
            town: self.config.node.town_division.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            at_ms: now_ms,
            uptime_s: self.uptime().as_secs(),
            peers,
            store_bytes: Store::file_size(&store_path),
            free_disk_bytes,
            clock_offset_ms: self.links.clock_offset_ms(),
            cert_expires_ms,
            errors_24h: crate::health::errors_24h(now_ms),
            cases_by_status,
        }
    }

    /// Legal time of a case of `item_code` today (due dates, warnings), from its marks.
    pub fn legal_time(&self, item_code: &str, marks: &crate::deadline::Marks) -> LegalTime {
        let Some(calendar) = self.calendar() else {
            return LegalTime {
                error: Some("本节点没有可用的工作日历，无法计算期限".into()),
                ..LegalTime::default()
            };
        };
        let limits = self
            .catalog
            .get(item_code)
            .and_then(crate::deadline::Limits::of);
        let now = self.local_now();
        crate::deadline::legal_time(
            marks,
            limits.as_ref(),
            &calendar,
            now.date_naive(),
            *now.offset(),
        )
    }

    pub(crate) fn stamp(&self) -> crate::hlc::Hlc {
        let wall_ms = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
        self.clock.now(wall_ms)
    }

    /// Checks a login; Argon2 verification is slow on purpose, so call from a blocking task.
    pub fn login(&self, username: &str, password: &str) -> Result<User, LoginError> {
        let now = Instant::now();
        if let Some(left) = self.logins.locked(username, now) {
            return Err(LoginError::Locked(left));
        }
        let user = self.store.user(username)?;
        let ok = match &user {
            Some(u) => !u.disabled && users::verify_password(&u.password_hash, password),
            // Spend the same time on unknown users, so timing does not reveal who exists.
            None => {
                users::verify_password(DUMMY_HASH, password);
                false
            }
        };
        match user {
            Some(u) if ok => {
                self.logins.succeeded(username);
                Ok(u)
            }
            _ => {
                self.logins.failed(username, now);
                Err(LoginError::BadCredentials)
            }
        }
    }

    /// Checks that `actor` may accept applications here (a village clerk) and that every
    /// photo is an image within the limit; the photos with their hashes.
    pub(crate) fn accepting(
        &self,
        actor: &Actor,
        photos: Vec<Vec<u8>>,
    ) -> Result<Vec<(String, Vec<u8>)>, NodeError> {
        if actor.role != Role::Clerk || self.tier() != Tier::Village {
            return Err(NodeError::Forbidden(Msg::new(
                "只有村级受理员可以受理申请",
                "only a village clerk accepts applications",
            )));
        }
        photos
            .into_iter()
            .map(|bytes| {
                let hash = self.store.check_blob(&bytes).map_err(|e| photo_error(&e))?;
                Ok((hash, bytes))
            })
            .collect()
    }

    /// Validates and files an application: receipt number, document, projections, photos, all
    /// in one commit. Returns once the case is on disk.
    pub async fn file_application(
        &self,
        input: &ApplicationInput,
        photos: Vec<Vec<u8>>,
        actor: &Actor,
    ) -> Result<Filed, NodeError> {
        let mut blobs = self.accepting(actor, photos)?;
        let fresh: Vec<&str> = blobs.iter().map(|(h, _)| h.as_str()).collect();
        let exists = |hash: &str| fresh.contains(&hash) || self.store.blob_exists(hash);
        let today = self.today();
        let app = application::validate(&self.catalog, input, today, &exists)
            .map_err(NodeError::Invalid)?;
        let item = self
            .catalog
            .get(&app.item_code)
            .ok_or_else(|| NodeError::BadRequest(Msg::new("事项不存在", "unknown item")))?;
        // Only keep photos the application refers to.
        blobs.retain(|(h, _)| app.materials.iter().any(|m| m.blob.as_deref() == Some(h)));

        let date = today.format("%Y%m%d").to_string();
        let seq = self.store.reserve_receipt_seq(&date)?;
        let receipt_no = format!("{}-{date}-{seq:04}", self.config.node.division);
        let event = self.event_now(EventKind::Accepted, serde_json::json!({}), actor);
        let mut case = Case {
            id: uuid::Uuid::now_v7().to_string(),
            receipt_no,
            item_code: item.code.clone(),
            item_name: item.name.clone(),
            node: self.config.node.id.clone(),
            route: item.route_steps(),
            division: self.config.divisions(),
            applicant: app.applicant,
            proxy: app.proxy,
            form: app.form,
            materials: app.materials,
            bundle: None,
            events: vec![event],
            forged: Vec::new(),
        };
        self.sign_filing(&mut case)?;
        let state = case.state();
        let mut doc = case_doc::build(&case, case_doc::node_actor(&self.config.node.id))
            .map_err(StoreError::from)?;
        let summary = CaseSummary::of(&case, &state);
        self.store
            .put_new_case(&case, SavedDoc::of(&mut doc), summary, (date, seq), blobs)
            .await?;
        tracing::info!(receipt = %case.receipt_no, item = %case.item_code, id_number = %crate::idcard::mask(&case.applicant.id_number), "application accepted");
        Ok(Filed { case, state })
    }

    /// Records an event on a case. Refused with nothing written when it is not legal now.
    pub async fn record_event(
        &self,
        case_id: &str,
        kind: EventKind,
        payload: serde_json::Value,
        actor: &Actor,
    ) -> Result<Filed, NodeError> {
        if !actor.role.handles_cases() {
            return Err(NodeError::Forbidden(Msg::new(
                "当前角色不能办理案件",
                "this role does not handle cases",
            )));
        }
        if !may_record(actor.role, &kind) {
            return Err(NodeError::Forbidden(Msg::new(
                format!("当前角色不能办理“{}”", kind.zh()),
                format!(
                    "the role {} does not record {}",
                    actor.role.as_str(),
                    kind.as_str()
                ),
            )));
        }
        let payload = event_payload(&kind, &payload)?;
        self.check_rating_rules(case_id, &kind, &payload)?;
        let mut event = self.event_now(kind, payload, actor);
        self.seal_decision(case_id, &mut event)?;
        appended(self.append(case_id, event).await)
    }

    /// What [`event_payload`] cannot see without the case and the node: a person's rating
    /// comes from a paper form (kiosk ratings are the citizen's own, [`Node::rate_at_kiosk`]),
    /// and a comment that closes a follow-up is recorded at the county and names an open
    /// follow-up of the case.
    fn check_rating_rules(
        &self,
        case_id: &str,
        kind: &EventKind,
        payload: &serde_json::Value,
    ) -> Result<(), NodeError> {
        match kind {
            EventKind::Rated if payload.get("source").and_then(|v| v.as_str()) == Some("kiosk") => {
                Err(NodeError::BadRequest(Msg::new(
                    "工作人员只能录入纸质评价（source = paper），自助评价由群众在评价页提交",
                    "staff enter paper ratings (source = paper); kiosk ratings come from the citizen on /rate",
                )))
            }
            EventKind::Comment => {
                let Some(rating) = payload.get("follow_up").and_then(|v| v.as_str()) else {
                    return Ok(());
                };
                if self.tier() != Tier::County {
                    return Err(NodeError::Forbidden(Msg::new(
                        "差评回访整改由县级办结",
                        "a follow-up of a bad rating is closed at the county",
                    )));
                }
                let case = self
                    .store
                    .case(case_id)?
                    .ok_or_else(|| NodeError::NotFound(Msg::new("案件不存在", "no such case")))?;
                match self
                    .follow_ups(&case)
                    .into_iter()
                    .find(|f| f.rating_event_id == rating)
                {
                    None => Err(NodeError::BadRequest(Msg::new(
                        "此办件没有该差评的回访整改",
                        "the case has no follow-up of that rating",
                    ))),
                    Some(f) if f.closed => Err(NodeError::Conflict(Msg::new(
                        "该回访整改已办结",
                        "that follow-up is already closed",
                    ))),
                    Some(_) => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// The follow-ups of the case's bad ratings, counted on this node's calendar today.
    pub fn follow_ups(&self, case: &Case) -> Vec<crate::rating::FollowUp> {
        let now = self.local_now();
        crate::rating::follow_ups(
            case,
            self.calendar().as_deref(),
            *now.offset(),
            now.date_naive(),
        )
    }

    /// A citizen's rating from the public kiosk page (no login): the receipt number and the
    /// last four digits of the applicant's phone identify the case; recorded as user `kiosk`
    /// with `source = kiosk`. Wrong numbers write nothing and count against the receipt
    /// number: after [`MAX_KIOSK_FAILURES`] it is locked for a while. A case whose result was
    /// not handed out yet is refused.
    pub async fn rate_at_kiosk(
        &self,
        receipt_no: &str,
        phone_tail: &str,
        level: u8,
        comment: &str,
    ) -> Result<Filed, NodeError> {
        // What the citizen typed is checked first: a bad level costs no try.
        let payload = event_payload(
            &EventKind::Rated,
            &serde_json::json!({ "level": level, "comment": comment, "source": "kiosk" }),
        )?;
        let key = receipt_no.trim().to_uppercase();
        let now = Instant::now();
        if let Some(left) = self.kiosk.locked(&key, now) {
            let minutes = left.as_secs() / 60 + 1;
            return Err(NodeError::Locked(Msg::new(
                format!("核对失败次数过多，请{minutes}分钟后再试，或到窗口由工作人员协助"),
                format!("too many failed checks; try again in {minutes} minutes"),
            )));
        }
        let tail = phone_tail.trim();
        let case = match self.store.case_id_by_receipt(&key)? {
            Some(id) => self.store.case(&id)?,
            None => None,
        };
        let matches = |c: &Case| {
            tail.len() == 4
                && tail.bytes().all(|b| b.is_ascii_digit())
                && c.applicant.phone.ends_with(tail)
        };
        let Some(case) = case.filter(|c| matches(c)) else {
            self.kiosk.failed(&key, now);
            // The same answer for an unknown receipt and a wrong phone: nothing to probe.
            return Err(NodeError::NotFound(Msg::new(
                "受理编号或手机号后四位不正确，请核对受理回执",
                "the receipt number or the phone's last 4 digits do not match",
            )));
        };
        self.kiosk.succeeded(&key);
        let state = case.state();
        if !crate::rating::rateable(state.status) {
            return Err(NodeError::Conflict(Msg::new(
                format!(
                    "此办件尚未办结出件（当前：{}），办结后再评价",
                    state.status.zh()
                ),
                format!(
                    "the case is not handed out yet ({}); rate it afterwards",
                    state.status.as_str()
                ),
            )));
        }
        let event = self.new_event("kiosk", "system", EventKind::Rated, payload);
        appended(self.append(&case.id, event).await)
    }

    /// A case with its personal data in full (unmasked ID numbers), for staff who handle
    /// cases. The view is logged in the audit chain first: if the entry cannot be written,
    /// nothing is shown.
    pub async fn view_personal_data(
        &self,
        case_id: &str,
        actor: &Actor,
    ) -> Result<Case, NodeError> {
        if !actor.role.handles_cases() {
            return Err(NodeError::Forbidden(Msg::new(
                "当前角色不能查看完整个人信息",
                "this role does not see personal data in full",
            )));
        }
        let case = self
            .store
            .case(case_id)?
            .ok_or_else(|| NodeError::NotFound(Msg::new("案件不存在", "no such case")))?;
        let what = match &case.proxy {
            Some(_) => "applicant and proxy ID numbers",
            None => "applicant ID number",
        };
        self.store
            .audit_view(
                &actor.username,
                case_id,
                &format!("{what}, receipt {}", case.receipt_no),
            )
            .await?;
        Ok(case)
    }

    /// Records an event the node itself makes (a notice sent), as user `system`. Refused with
    /// nothing written when the case is unknown.
    /// 催办 from supervision (电子监察): at the county, a county admin or approver urges the
    /// tier holding an open case's baton; the `urged` event replicates to it and shows on the
    /// case. Refused with nothing written away from the county or on a closed case.
    pub async fn urge(&self, case_id: &str, note: &str, actor: &Actor) -> Result<Filed, NodeError> {
        if !matches!(actor.role, Role::CountyAdmin | Role::Approver) {
            return Err(NodeError::Forbidden(Msg::new(
                "只有县级管理员或审批员可以催办",
                "only a county admin or approver urges",
            )));
        }
        if self.tier() != Tier::County {
            return Err(NodeError::Forbidden(Msg::new(
                "催办由县级电子监察发出",
                "urging is done at the county",
            )));
        }
        let note: String = note.trim().chars().take(MAX_URGE_CHARS).collect();
        let event = self.event_now(EventKind::Urged, serde_json::json!({ "text": note }), actor);
        appended(self.append(case_id, event).await)
    }

    /// A new event of this node, stamped now, recorded by `user` as `role`.
    pub(crate) fn new_event(
        &self,
        user: &str,
        role: &str,
        kind: EventKind,
        payload: serde_json::Value,
    ) -> Event {
        Event {
            id: uuid::Uuid::now_v7().to_string(),
            at: self.stamp(),
            node: self.config.node.id.clone(),
            tier: self.tier(),
            user: user.to_string(),
            role: role.to_string(),
            kind,
            payload,
            sig: None,
        }
    }

    /// [`Node::new_event`] by a signed-in actor.
    pub(crate) fn event_now(
        &self,
        kind: EventKind,
        payload: serde_json::Value,
        actor: &Actor,
    ) -> Event {
        self.new_event(&actor.username, actor.role.as_str(), kind, payload)
    }

    /// Appends `event` to a case as this node's Automerge actor, signed with its key.
    async fn append(&self, case_id: &str, mut event: Event) -> Result<Case, StoreError> {
        self.sign_event(case_id, &mut event)?;
        let actor_id = case_doc::node_actor(&self.config.node.id);
        self.store.append_event(case_id, event, actor_id).await
    }

    /// Signs `event` of case `case_id` with this node's key ([`crate::authorship`]); a node
    /// without a certificate leaves it unsigned (it counts as its own until it enrols).
    /// `filing`: the case's filing digest, for its `accepted` event.
    fn sign_with(
        &self,
        case_id: &str,
        filing: Option<&str>,
        event: &mut Event,
    ) -> Result<(), StoreError> {
        if let Some(signer) = self.signer() {
            crate::authorship::sign(case_id, filing, event, &signer)
                .map_err(|e| StoreError::Refused(format!("the event cannot be signed: {e}")))?;
        }
        Ok(())
    }

    /// [`Node::sign_with`] for an event after the filing.
    pub(crate) fn sign_event(&self, case_id: &str, event: &mut Event) -> Result<(), StoreError> {
        self.sign_with(case_id, None, event)
    }

    /// Signs the `accepted` event of a new case over its filing: the case's scope is then
    /// the one its village signed ([`crate::authorship::filing_digest`]).
    pub(crate) fn sign_filing(&self, case: &mut Case) -> Result<(), StoreError> {
        let digest = crate::authorship::filing_digest(case);
        let id = case.id.clone();
        for event in case
            .events
            .iter_mut()
            .filter(|e| e.kind == EventKind::Accepted)
        {
            self.sign_with(&id, Some(&digest), event)?;
        }
        Ok(())
    }

    /// At the county: lists itself in the registry of nodes ([`crate::registry`]) with its
    /// own certificate, and the revocations `revoked.tsv` records. Nothing without a
    /// certificate.
    pub async fn publish_registry(&self) -> Result<(), StoreError> {
        if self.tier() != Tier::County {
            return Ok(());
        }
        if let Some(signer) = self.signer()
            && crate::registry::list_cert(&self.store, signer.cert_der(), &self.config.node.id)
                .await?
        {
            tracing::info!("this county is listed in the registry of nodes");
        }
        crate::sync_engine::mark_revocations(
            &self.store,
            &TlsDir::new(self.config.tls_dir()),
            &self.config.node.id,
        )
        .await;
        Ok(())
    }

    /// Records an event the node itself makes (a notice sent), as user `system`.
    pub async fn record_system_event(
        &self,
        case_id: &str,
        kind: EventKind,
        payload: serde_json::Value,
    ) -> Result<(), StoreError> {
        let event = self.new_event("system", "system", kind, payload);
        self.append(case_id, event).await?;
        Ok(())
    }

    /// Creates a user on this node.
    pub async fn add_user(
        &self,
        username: &str,
        display_name: &str,
        role: Role,
        password: &str,
    ) -> Result<(), NodeError> {
        add_user(&self.store, username, display_name, role, password).await
    }
}

/// The longest note an urge carries, in characters.
const MAX_URGE_CHARS: usize = 200;

/// Which role records which event kind (the node's tier is checked by the fold's baton rule).
pub fn may_record(role: Role, kind: &EventKind) -> bool {
    use EventKind as K;
    match role {
        Role::Clerk => matches!(
            kind,
            K::Withdrawn | K::SupplementProvided | K::Issued | K::PickedUp | K::Rated | K::Comment
        ),
        Role::Reviewer => matches!(
            kind,
            K::ReviewPassed | K::Rejected | K::SupplementRequested | K::Comment
        ),
        Role::Approver => matches!(
            kind,
            K::Approved | K::Rejected | K::SupplementRequested | K::Comment
        ),
        _ => false,
    }
}

/// A write on a case as the caller sees it: the case with its state, or why not.
fn appended(result: Result<Case, StoreError>) -> Result<Filed, NodeError> {
    let case = result.map_err(case_write_error)?;
    let state = case.state();
    Ok(Filed { case, state })
}

/// A refused write on a case as the caller sees it: no such case, or not legal now.
pub(crate) fn case_write_error(e: StoreError) -> NodeError {
    match e {
        StoreError::NotFound(_) => NodeError::NotFound(Msg::new("案件不存在", "no such case")),
        StoreError::NotLegal { zh, en } => NodeError::Conflict(Msg::new(
            format!("当前状态下不能办理此操作：{zh}"),
            format!("not allowed in the case's current state: {en}"),
        )),
        StoreError::Refused(reason) => NodeError::Conflict(Msg::new(
            "当前状态下不能办理此操作",
            format!("not allowed in the case's current state: {reason}"),
        )),
        e => e.into(),
    }
}

/// Longest free text an event carries.
const MAX_TEXT_CHARS: usize = 1000;
/// Longest event id a comment names as the follow-up it closes.
const MAX_EVENT_ID_CHARS: usize = 64;
/// Most materials one supplement request lists.
const MAX_MISSING: usize = 50;

fn text_of(payload: &serde_json::Value, key: &str) -> Result<String, NodeError> {
    let text = payload
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .trim()
        .to_string();
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(NodeError::BadRequest(Msg::new(
            "内容过长（最多1000字）",
            "text is too long (1000 characters at most)",
        )));
    }
    Ok(text)
}

/// Checks and normalises what an event carries; refuses with a clear message.
fn event_payload(
    kind: &EventKind,
    payload: &serde_json::Value,
) -> Result<serde_json::Value, NodeError> {
    match kind {
        EventKind::Comment => {
            let text = text_of(payload, "text")?;
            if text.is_empty() {
                return Err(NodeError::BadRequest(Msg::new(
                    "备注内容不能为空",
                    "a comment needs text",
                )));
            }
            let mut out = serde_json::json!({ "text": text });
            // `"resolve": true` marks the comment that resolves a conflict (see the fold).
            if payload.get("resolve").and_then(|v| v.as_bool()) == Some(true) {
                out["resolve"] = true.into();
            }
            // `"follow_up": RATING_EVENT_ID` closes the follow-up of a bad rating (`rating`).
            let follow_up = text_of(payload, "follow_up")?;
            if follow_up.chars().count() > MAX_EVENT_ID_CHARS {
                return Err(NodeError::BadRequest(Msg::new(
                    "回访整改编号无效",
                    "follow_up is not an event id",
                )));
            }
            if !follow_up.is_empty() {
                out["follow_up"] = follow_up.into();
            }
            Ok(out)
        }
        EventKind::Rated => {
            // A number, or its text from a form.
            let level = match payload.get("level") {
                Some(serde_json::Value::Number(n)) => n.as_u64(),
                Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            let Some(level) = level
                .and_then(|l| u8::try_from(l).ok())
                .filter(|l| crate::rating::level_zh(*l).is_some())
            else {
                return Err(NodeError::BadRequest(Msg::new(
                    "请选择评价等级：非常满意(5)、满意(4)、基本满意(3)、不满意(2)、非常不满意(1)",
                    "level must be 1 to 5 (5 very satisfied … 1 very dissatisfied)",
                )));
            };
            let comment = text_of(payload, "comment")?;
            if comment.chars().count() > crate::rating::MAX_COMMENT_CHARS {
                return Err(NodeError::BadRequest(Msg::new(
                    format!("评价意见过长（最多{}字）", crate::rating::MAX_COMMENT_CHARS),
                    format!(
                        "the comment is too long ({} characters at most)",
                        crate::rating::MAX_COMMENT_CHARS
                    ),
                )));
            }
            let source = match text_of(payload, "source")?.as_str() {
                "" | "paper" => "paper",
                "kiosk" => "kiosk",
                other => {
                    return Err(NodeError::BadRequest(Msg::new(
                        format!("评价来源“{other}”无效，应为 kiosk 或 paper"),
                        format!("source {other:?} is neither kiosk nor paper"),
                    )));
                }
            };
            Ok(serde_json::json!({ "level": level, "comment": comment, "source": source }))
        }
        EventKind::Rejected => {
            let reason = text_of(payload, "reason")?;
            if reason.is_empty() {
                return Err(NodeError::BadRequest(Msg::new(
                    "不予许可须写明理由",
                    "a rejection needs a reason",
                )));
            }
            Ok(serde_json::json!({ "reason": reason }))
        }
        EventKind::SupplementRequested => {
            let list: Vec<String> = match payload.get("materials") {
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .filter_map(|v| v.as_str())
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                Some(serde_json::Value::String(s)) => s
                    .split(['\n', '，', ','])
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                _ => Vec::new(),
            };
            if list.is_empty() || list.len() > MAX_MISSING {
                return Err(NodeError::BadRequest(Msg::new(
                    "一次性告知须列明所缺材料（1至50项）",
                    "a supplement request lists the missing materials (1 to 50)",
                )));
            }
            if list.iter().any(|m| m.chars().count() > 200) {
                return Err(NodeError::BadRequest(Msg::new(
                    "材料名称过长（最多200字）",
                    "a material name is too long (200 characters at most)",
                )));
            }
            let note = text_of(payload, "note")?;
            Ok(serde_json::json!({ "materials": list, "note": note }))
        }
        EventKind::Withdrawn => Ok(serde_json::json!({ "reason": text_of(payload, "reason")? })),
        _ => Ok(serde_json::json!({ "note": text_of(payload, "note")? })),
    }
}

/// Creates a user in a store (also used by `yiciban user add` without a running node).
pub async fn add_user(
    store: &Store,
    username: &str,
    display_name: &str,
    role: Role,
    password: &str,
) -> Result<(), NodeError> {
    if !users::valid_username(username) {
        return Err(NodeError::BadRequest(Msg::new(
            "用户名应为2到32位字母、数字、点、下划线或连字符",
            "username must be 2-32 ASCII letters, digits, '.', '_' or '-'",
        )));
    }
    let password_hash = users::hash_password(password).map_err(|e| {
        NodeError::BadRequest(Msg::new(
            format!("密码不符合要求：至少{}位", users::MIN_PASSWORD_CHARS),
            e.to_string(),
        ))
    })?;
    let user = User {
        username: username.to_string(),
        display_name: display_name.to_string(),
        role,
        password_hash,
        disabled: false,
    };
    match store
        .put_user(user, false, crate::store::CONSOLE_USER)
        .await
    {
        Err(StoreError::Exists(_)) => Err(NodeError::Conflict(Msg::new(
            "用户已存在",
            "user already exists",
        ))),
        other => other.map_err(NodeError::from),
    }
}

pub fn photo_error(e: &StoreError) -> NodeError {
    match e {
        StoreError::BlobTooLarge { size, max } => NodeError::BadRequest(Msg::new(
            format!("照片过大（{} KB），上限为 {} KB", size / 1024, max / 1024),
            format!(
                "photo too large ({} KB); the limit is {} KB",
                size / 1024,
                max / 1024
            ),
        )),
        StoreError::NotAnImage => NodeError::BadRequest(Msg::new(
            "上传的文件不是图片（支持 JPEG、PNG、WebP、GIF）",
            "the upload is not a JPEG, PNG, WebP or GIF image",
        )),
        other => NodeError::BadRequest(Msg::new("照片无法保存", other.to_string())),
    }
}

/// A valid Argon2id hash of a random password nobody knows, for constant-time misses.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$7eWXqTJ2kz1VDFyIi3J0iQDy4lH7Ujx3LtKKYv7Jq0o";

#[cfg(test)]
mod tests {
    #[test]
    fn the_dummy_hash_is_a_real_argon2id_hash() {
        // If it did not parse, logins for unknown users would return at once and reveal
        // which usernames exist.
        let parsed = argon2::password_hash::PasswordHash::new(super::DUMMY_HASH).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
    }
}
