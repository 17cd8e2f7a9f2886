//! The `county-year` figure: a county store holding a year of a county's cases — 1,000,000
//! from 500 villages under 25 towns (`--quick`: 100,000 from 50) — and what its console costs:
//! cold start, resident memory, and the queue, supervision, follow-ups, node table and
//! statistics pages and their JSON.
//!
//! [`county_store`] fills the store once per size and seed (cached under
//! `target/bench/cache/` like the cold-start store) through the node library's write path
//! ([`Store::put_new_cases`]), each case with a history as the county holds it after a year:
//! accepted over the last 365 days on every item of the demo catalogue, then reviewed and
//! approved (some late), rejected, withdrawn, waiting for a supplement, stuck at a step, issued
//! and picked up, and rated (some badly, most bad ratings followed up by the county); events
//! that would fall after now are not written, so the recent cases are still open. Every
//! village and town has a day of health reports, one a minute for half an hour.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{FixedOffset, NaiveDate, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use yiciban_core::application::{self, ApplicationInput};
use yiciban_core::case_doc::{self, Case, Divisions};
use yiciban_core::catalog::{Catalog, ItemKind, ServiceItem, Tier};
use yiciban_core::config::Config;
use yiciban_core::event::{Event, EventKind};
use yiciban_core::health::{HealthReport, PeerHealth};
use yiciban_core::hlc::Hlc;
use yiciban_core::node::Node;
use yiciban_core::store::{NewCase, SavedDoc, Store};
use yiciban_core::summary::CaseSummary;
use yiciban_core::users::Role;

use crate::DEMO_PASSWORD;
use crate::cluster::COUNTY_ID;
use crate::coldstart::{COUNTY, Fill, uuid7, wait_closed};
use crate::workload::Workload;

/// Villages under each town.
const VILLAGES_PER_TOWN: usize = 20;
/// Cases per commit while filling.
const BATCH: usize = 1000;
/// Batches built at once (on blocking threads) while the writer commits another.
const IN_FLIGHT: usize = 3;
/// Acceptance times are spread over this many days before the fill.
const SPAN_DAYS: u64 = 365;
/// Bump when what the generator writes changes, so an older cached store is not reused.
const GENERATOR_VERSION: u32 = 1;
/// The county admin the figures log in as.
pub const ADMIN: &str = "admin";
const DAY_MS: u64 = 86_400_000;
/// Health reports per node (one a minute).
const REPORTS: u64 = 30;

/// The county's config on `port`, alone (no `[sync]`), its store `node.redb`.
pub fn county_toml(port: u16) -> String {
    format!(
        r#"[node]
id = "{COUNTY_ID}"
role = "county"
name = "测试县政务服务中心"
division = "{COUNTY}"
town_division = "{COUNTY}"
county_division = "{COUNTY}"

[http]
listen = "127.0.0.1:{port}"

[store]
path = "node.redb"

[catalog]
path = "catalog.toml"
"#
    )
}

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/cache")
}

/// The town of village number `v` (from 0) and the village's code.
fn division(v: usize) -> (String, String) {
    let town = 101 + v / VILLAGES_PER_TOWN;
    let village = 1 + v % VILLAGES_PER_TOWN;
    (
        format!("430181{town:03}000"),
        format!("430181{town:03}{village:03}"),
    )
}

/// A county store of `cases` cases from `villages` villages generated from `seed`, from the
/// cache (keyed by size, seed, generator version and schema version) or filled now.
pub async fn county_store(cases: usize, villages: usize, seed: u64) -> Result<Fill> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!(
        "county-{cases}-v{villages}-s{seed}-g{GENERATOR_VERSION}-v{}.redb",
        yiciban_core::store::SCHEMA_VERSION
    ));
    if path.exists() {
        refresh(&path).await?;
        return Ok(Fill {
            bytes: Store::file_size(&path),
            path,
            cases,
            secs: 0.0,
            cached: true,
        });
    }
    let work = tempfile::tempdir_in(&dir)?;
    let started = Instant::now();
    fill(work.path(), cases, villages, seed).await?;
    let secs = started.elapsed().as_secs_f64();
    std::fs::rename(work.path().join("node.redb"), &path)?;
    Ok(Fill {
        bytes: Store::file_size(&path),
        path,
        cases,
        secs,
        cached: false,
    })
}

/// An in-process county node on the store at `path` (config in a temporary folder).
fn open_county(dir: &Path, store: &Path) -> Result<Arc<Node>> {
    std::fs::write(dir.join("catalog.toml"), yiciban_core::DEMO_CATALOG)?;
    let config_path = dir.join("county.toml");
    let toml = county_toml(0).replace(
        "path = \"node.redb\"",
        &format!("path = {:?}", store.display().to_string()),
    );
    std::fs::write(&config_path, toml)?;
    let cfg = Config::load(&config_path)?;
    let catalog = Catalog::load(&cfg.catalog_path())?;
    let store = Store::open(store, cfg.store.group_commit_max, cfg.store.blob_max_bytes)?;
    Ok(Node::new(cfg, catalog, store)?)
}

/// Opens a cached store as the county would (migrations, the calendar published, the
/// legal-time projections rebuilt if this build computes them otherwise) and closes it.
async fn refresh(path: &Path) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = open_county(dir.path(), path)?;
    node.publish_calendar().await?;
    yiciban_core::queue::ensure_fresh(&node).await?;
    drop(node);
    wait_closed(path)
}

/// Where and when case `i` was accepted.
#[derive(Debug, Clone)]
struct Plan {
    at_ms: u64,
    village: usize,
    date: String,
    seq: u64,
}

#[derive(Debug)]
struct Built {
    case: Case,
    doc: SavedDoc,
    summary: CaseSummary,
    receipt: (String, u64),
}

async fn fill(dir: &Path, cases: usize, villages: usize, seed: u64) -> Result<()> {
    let store_path = dir.join("node.redb");
    let node = open_county(dir, &store_path)?;
    yiciban_core::node::add_user(
        &node.store,
        ADMIN,
        "县管理员",
        Role::CountyAdmin,
        DEMO_PASSWORD,
    )
    .await?;
    node.publish_calendar().await?;
    yiciban_core::queue::ensure_fresh(&node).await?;

    let offset = FixedOffset::east_opt(8 * 3600).context("offset")?;
    let now_ms = u64::try_from(Utc::now().timestamp_millis())?;
    let start_ms = now_ms - SPAN_DAYS * DAY_MS;
    let mut seqs: HashMap<(usize, String), u64> = HashMap::new();
    let plans: Vec<Plan> = (0..cases as u64)
        .map(|i| {
            let at_ms = start_ms + i * (SPAN_DAYS * DAY_MS) / (cases as u64).max(1);
            let village = (i as usize * 7919) % villages;
            let date = chrono::DateTime::from_timestamp_millis(at_ms as i64)
                .unwrap_or_default()
                .with_timezone(&offset)
                .format("%Y%m%d")
                .to_string();
            let seq = seqs.entry((village, date.clone())).or_insert(0);
            *seq += 1;
            Plan {
                at_ms,
                village,
                date,
                seq: *seq,
            }
        })
        .collect();
    let catalog = Arc::new(node.catalog.clone());
    let today = node.today();
    let mut pending = VecDeque::new();
    let mut written = 0usize;
    let started = Instant::now();
    for (b, chunk) in plans.chunks(BATCH).enumerate() {
        let chunk = chunk.to_vec();
        let catalog = catalog.clone();
        let batch_seed = seed.wrapping_mul(1_000_003).wrapping_add(b as u64);
        pending.push_back(tokio::task::spawn_blocking(move || {
            build_batch(&catalog, &chunk, batch_seed, today, now_ms)
        }));
        if pending.len() >= IN_FLIGHT
            && let Some(job) = pending.pop_front()
        {
            written += write_batch(&node.store, job.await??).await?;
            if written.is_multiple_of(100_000) {
                eprintln!(
                    "county-year fill: {written} of {cases} cases, {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    while let Some(job) = pending.pop_front() {
        written += write_batch(&node.store, job.await??).await?;
    }
    health(&node, villages, now_ms).await?;
    let held = node.store.case_count()?;
    if held != cases as u64 || written != cases {
        bail!("the fill wrote {written} cases and the store holds {held}, not {cases}");
    }
    drop(node);
    wait_closed(&store_path)
}

/// Builds the cases of `plans` with their histories.
fn build_batch(
    catalog: &Catalog,
    plans: &[Plan],
    seed: u64,
    today: NaiveDate,
    now_ms: u64,
) -> Result<Vec<Built>> {
    let items: Vec<&ServiceItem> = catalog.items().iter().collect();
    let mut w = Workload::new(seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    plans
        .iter()
        .map(|p| {
            let item = items[rng.random_range(0..items.len())];
            let input: ApplicationInput = serde_json::from_value(w.application(item))?;
            let app = application::validate(catalog, &input, today, &|_| false)
                .map_err(|e| anyhow!("generated case invalid: {e:?}"))?;
            let (town, village) = division(p.village);
            let events = History::new(&mut rng, item, &village, &town, now_ms).run(p.at_ms);
            let case = Case {
                id: uuid7(p.at_ms, &mut rng),
                receipt_no: format!("{village}-{}-{:04}", p.date, p.seq),
                item_code: item.code.clone(),
                item_name: item.name.clone(),
                node: format!("village-{village}"),
                route: item.route_steps(),
                division: Divisions {
                    village: village.clone(),
                    town,
                    county: COUNTY.into(),
                },
                applicant: app.applicant,
                proxy: app.proxy,
                form: app.form,
                materials: app.materials,
                bundle: None,
                events,
                forged: Vec::new(),
            };
            let state = case.state();
            let mut doc = case_doc::build(&case, case_doc::node_actor(&case.node))?;
            let summary = CaseSummary::of(&case, &state);
            Ok(Built {
                doc: SavedDoc::of(&mut doc),
                summary,
                receipt: (p.date.clone(), p.seq),
                case,
            })
        })
        .collect()
}

/// One case's events as they happened at its village, its town and the county.
struct History<'a> {
    rng: &'a mut StdRng,
    item: &'a ServiceItem,
    village: String,
    town: String,
    now_ms: u64,
    events: Vec<Event>,
}

impl<'a> History<'a> {
    fn new(
        rng: &'a mut StdRng,
        item: &'a ServiceItem,
        village: &str,
        town: &str,
        now_ms: u64,
    ) -> Self {
        Self {
            rng,
            item,
            village: village.to_string(),
            town: town.to_string(),
            now_ms,
            events: Vec::new(),
        }
    }

    /// Records an event of `kind` at `tier` at `at_ms` and returns its id; `None` (nothing
    /// recorded) when that is after now: the case stops where it is.
    fn record(
        &mut self,
        at_ms: u64,
        tier: Tier,
        kind: EventKind,
        payload: serde_json::Value,
    ) -> Option<String> {
        if at_ms >= self.now_ms {
            return None;
        }
        let node = match tier {
            Tier::Village => format!("village-{}", self.village),
            Tier::Town => format!("town-{}", self.town),
            Tier::County => COUNTY_ID.to_string(),
        };
        let user = match tier {
            Tier::Village => "clerk",
            Tier::Town => "reviewer",
            Tier::County => "approver",
        };
        let id = uuid7(at_ms, self.rng);
        self.events.push(Event {
            id: id.clone(),
            at: Hlc {
                wall_ms: at_ms,
                counter: 0,
            },
            node,
            tier,
            user: user.into(),
            role: user.into(),
            kind,
            payload,
            sig: None,
        });
        Some(id)
    }

    /// A working time some days and hours after `at_ms`.
    fn later(&mut self, at_ms: u64, days: u64) -> u64 {
        at_ms + days * DAY_MS + self.rng.random_range(600_000..28_800_000)
    }

    /// [`History::later`] by a number of days drawn from `days`.
    fn later_by(&mut self, at_ms: u64, days: std::ops::Range<u64>) -> u64 {
        let days = self.rng.random_range(days);
        self.later(at_ms, days)
    }

    fn run(mut self, accepted_ms: u64) -> Vec<Event> {
        self.walk(accepted_ms);
        self.events
    }

    /// The case's way from acceptance; stops at the first event that would fall after now.
    fn walk(&mut self, accepted_ms: u64) -> Option<()> {
        self.record(accepted_ms, Tier::Village, EventKind::Accepted, json!({}))?;
        let mut at = accepted_ms;
        let roll: f64 = self.rng.random();
        if roll < 0.02 {
            let at = self.later(at, 1);
            self.record(
                at,
                Tier::Village,
                EventKind::Withdrawn,
                json!({"reason": "申请人撤回"}),
            )?;
            return Some(());
        }
        let stuck_at = (roll < 0.05).then(|| self.rng.random_range(1..self.item.route.len()));
        let route = self.item.route.clone();
        for (index, step) in route.iter().enumerate().skip(1) {
            let Some(tier) = step.step.split_once(':').and_then(|(t, _)| Tier::parse(t)) else {
                break;
            };
            if step.step == "village:issue" {
                break;
            }
            if stuck_at == Some(index) {
                return Some(());
            }
            // Mostly within the step's limit, one in ten over it.
            let limit = u64::from(step.limit_days);
            let days = if self.rng.random_bool(0.1) {
                limit + self.rng.random_range(2..10)
            } else {
                self.rng.random_range(0..=limit.max(1))
            };
            if index == 1 && self.rng.random_bool(0.08) {
                let asked = self.later(at, 1);
                let materials = json!({"materials": ["户口簿复印件"], "note": ""});
                self.record(asked, tier, EventKind::SupplementRequested, materials)?;
                if self.rng.random_bool(0.1) {
                    return Some(());
                }
                at = self.later_by(asked, 2..10);
                self.record(
                    at,
                    Tier::Village,
                    EventKind::SupplementProvided,
                    json!({"note": ""}),
                )?;
            }
            at = self.later(at, days);
            if self.rng.random_bool(0.04) {
                let reason = json!({"reason": "不符合申请条件"});
                self.record(at, tier, EventKind::Rejected, reason)?;
                return Some(());
            }
            let kind = if tier == Tier::County {
                EventKind::Approved
            } else {
                EventKind::ReviewPassed
            };
            self.record(at, tier, kind, json!({"note": ""}))?;
        }
        if self.item.kind != ItemKind::Immediate {
            at = self.later_by(at, 0..3);
        }
        self.record(at, Tier::Village, EventKind::Issued, json!({"note": ""}))?;
        if self.rng.random_bool(0.03) {
            return Some(());
        }
        at = self.later_by(at, 0..4);
        self.record(at, Tier::Village, EventKind::PickedUp, json!({"note": ""}))?;
        if self.rng.random_bool(0.6) {
            let level = match self.rng.random_range(0..100) {
                0..3 => 1,
                3..8 => 2,
                8..20 => 3,
                20..50 => 4,
                _ => 5,
            };
            at += 3_600_000;
            let rating = json!({"level": level, "comment": "", "source": "kiosk"});
            let rating = self.record(at, Tier::Village, EventKind::Rated, rating)?;
            if level <= 2 && self.rng.random_bool(0.85) {
                let closed = self.later_by(at, 1..7);
                let answer = json!({"text": "已电话回访并整改", "follow_up": rating});
                self.record(closed, Tier::County, EventKind::Comment, answer)?;
            }
        }
        Some(())
    }
}

async fn write_batch(store: &Store, built: Vec<Built>) -> Result<usize> {
    let n = built.len();
    let cases = built
        .iter()
        .map(|b| NewCase {
            case: &b.case,
            doc: b.doc.clone(),
            summary: b.summary.clone(),
            receipt: b.receipt.clone(),
            blobs: Vec::new(),
        })
        .collect();
    store.put_new_cases(cases).await?;
    Ok(n)
}

/// Half an hour of health reports of every village and town, one a minute, as their own
/// documents of today reached the county.
async fn health(node: &Node, villages: usize, now_ms: u64) -> Result<()> {
    let day = node.today().format("%Y%m%d").to_string();
    let mut nodes: Vec<(String, Tier, String, String)> = Vec::new();
    for v in 0..villages {
        let (town, village) = division(v);
        nodes.push((
            format!("village-{village}"),
            Tier::Village,
            village,
            town.clone(),
        ));
        if v % VILLAGES_PER_TOWN == 0 {
            nodes.push((format!("town-{town}"), Tier::Town, town.clone(), town));
        }
    }
    for (i, (id, role, division, town)) in nodes.into_iter().enumerate() {
        let mut bytes: Option<Vec<u8>> = None;
        for k in 0..REPORTS {
            let report = HealthReport {
                node: id.clone(),
                role,
                division: division.clone(),
                town: town.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
                at_ms: now_ms - (REPORTS - k) * 60_000,
                uptime_s: 3600 + k * 60,
                peers: vec![PeerHealth {
                    name: "county".into(),
                    connected: true,
                    last_sync_ms: Some(now_ms - (REPORTS - k) * 60_000),
                    waiting_changes: (i as u64 + k) % 7,
                    waiting_bytes: ((i as u64 + k) % 7) * 1500,
                    attempts: 1,
                    last_error: None,
                }],
                store_bytes: 200 << 20,
                free_disk_bytes: Some(40 << 30),
                clock_offset_ms: Some(120),
                cert_expires_ms: Some(now_ms + 300 * DAY_MS),
                errors_24h: (i % 3) as u64,
                cases_by_status: [
                    ("under_review".to_string(), 12),
                    ("completed".to_string(), 1900),
                ]
                .into_iter()
                .collect(),
            };
            bytes = Some(yiciban_core::health::append(
                bytes.as_deref(),
                &report,
                case_doc::node_actor(&id),
            )?);
        }
        let doc_id = yiciban_core::health::doc_id(&id, &day);
        let bytes = bytes.context("no report")?;
        node.store
            .apply_health_changes(&id, true, &doc_id, vec![bytes])
            .await?;
    }
    Ok(())
}

/// A county folder in `dir` serving a copy of `store` on `port`, the copy synced and, with
/// `evict`, dropped from the page cache, as after a reboot; returns the config path.
pub fn county_folder(dir: &Path, store: &Path, port: u16, evict: bool) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("catalog.toml"), yiciban_core::DEMO_CATALOG)?;
    let copy = dir.join("node.redb");
    std::fs::copy(store, &copy).with_context(|| format!("copying {}", store.display()))?;
    std::fs::File::open(&copy)?.sync_all()?;
    if evict {
        let status = Command::new("dd")
            .arg(format!("if={}", copy.display()))
            .args(["iflag=nocache", "count=0", "status=none"])
            .status()
            .context("running dd to drop the store from the page cache")?;
        if !status.success() {
            bail!("dd iflag=nocache failed: {status}");
        }
    }
    let config = dir.join("county.toml");
    std::fs::write(&config, county_toml(port))?;
    Ok(config)
}
