//! The `fan-in` figure of BENCHMARKS.md: one county, many villages each pushing new cases at
//! once.
//!
//! The county is the real `yiciban` binary ([`crate::binary`]). The villages are simulated,
//! several per process, in worker processes (`yiciban-bench --fan-in-worker SPEC`, see
//! [`worker`]): each village is a real `yiciban_core` [`Node`] with its own redb store on disk,
//! its own key and certificate (a token the county's security admin issued over its JSON API,
//! then the real enrolment request to the county's `/api/v1/enroll`), its cases filed through
//! [`Node::file_application`] while it has no link, its audit trail exported for the county as
//! a running village's exporter would have, and finally its link started with
//! [`Node::start_sync`] — the node's own dial loop, one QUIC endpoint and connection per
//! village.
//!
//! Protocol between the driver ([`run`]) and a worker: the driver writes the worker's
//! [`WorkerSpec`] as JSON to a file; the worker prints JSON lines on stdout — `ready` once
//! every village is enrolled and has filed its cases, then one `village` line per village,
//! then `done` — and reads `go` (release: every village dials now) and `stop` (exit) on stdin.
//!
//! Figures: `wall_secs`, from the moment the driver releases the workers until the county's
//! HTTP API (`/api/v1/health`, [`Api::case_count`]) counts every case; per village, measured
//! at the village from the moment its worker read `go`: the time until the county has
//! acknowledged (`Ack`: applied and durable, see `yiciban_sync::session`) the village's feed up
//! to its last case (`cases_secs`, the p50/p99 figures), and up to the end of its feed, the
//! audit segment included (`all_secs`). The link's `peer_position` is refreshed by the sync
//! engine every 100 ms, so per-village times are that coarse. The county's count is asked
//! once a second, and at once when the last village reports (see [`COUNT_POLL`]), so the wall
//! time is at most that much late.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use yiciban_core::application::ApplicationInput;
use yiciban_core::catalog::Catalog;
use yiciban_core::config::Config;
use yiciban_core::enrol::{self, TlsDir};
use yiciban_core::node::{Actor, Node};
use yiciban_core::scope::{Scope, ScopedStore};
use yiciban_core::store::Store;
use yiciban_core::users::Role;
use yiciban_sync::store::ReplicaStore;
use yiciban_transport::identity::{NodeIdentity, NodeKey};

use crate::cluster::{COUNTY_ID, add_user, folder, free_udp_port, init_county, node_toml};
use crate::workload::{BENCH_ITEM, Workload};
use crate::{Api, DEMO_PASSWORD, NodeProcess, free_base_port};

/// The county's division; the villages sit in towns under it.
const COUNTY_DIVISION: &str = "430181000000";
/// Villages per town (a village code has 3 digits under its town; 100 keeps them tidy).
const VILLAGES_PER_TOWN: usize = 100;
/// Villages a worker sets up at once (enrolment, store, filings).
const SETUP_CONCURRENCY: usize = 8;
/// Tokens the driver asks the county for at once.
const TOKEN_CONCURRENCY: usize = 8;
/// How often the driver asks the county for its case count. `/api/v1/health` reports every
/// link with its backlog: at 5 requests a second with 500 links it took 12% of the county's
/// CPU (perf), so the driver asks once a second, and every [`COUNT_POLL_FAST`] once every
/// village has reported its feed acknowledged (the county should hold everything by then).
const COUNT_POLL: Duration = Duration::from_secs(1);
const COUNT_POLL_FAST: Duration = Duration::from_millis(100);
/// How often a worker looks at its villages' links.
const LINK_POLL: Duration = Duration::from_millis(20);

/// One fan-in measurement.
#[derive(Debug, Clone, Serialize)]
pub struct FanInRun {
    pub villages: usize,
    pub cases_per_village: usize,
    pub workers: usize,
    /// Release to the county's API counting every case.
    pub wall_secs: f64,
    /// Per village, release to the county holding its cases durable: median and 99th
    /// percentile (nearest rank), and the slowest.
    pub p50_village_secs: f64,
    pub p99_village_secs: f64,
    pub max_village_secs: f64,
    /// The same to the end of each village's feed (its audit segment included).
    pub p99_village_all_secs: f64,
    /// Worker set-up (stores, enrolment, filings), the slowest worker; not part of the figure.
    pub setup_secs: f64,
    /// Dial attempts over all villages (one each when no handshake failed).
    pub attempts: u64,
    /// QUIC stream bytes the villages sent and received over their links, all villages.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// CPU seconds (user + system) from release to the wall time: the county process, and the
    /// worker processes together. `None` where `/proc` is not readable.
    pub county_cpu_secs: Option<f64>,
    pub workers_cpu_secs: Option<f64>,
}

/// What one fan-in run sets up.
#[derive(Debug, Clone)]
pub struct FanInConfig {
    pub villages: usize,
    pub cases_per_village: usize,
    pub seed: u64,
    /// Worker processes the villages are spread over.
    pub workers: usize,
    /// Longest wait for the county to hold everything.
    pub timeout: Duration,
    /// The bench binary that runs `--fan-in-worker` ([`bench_binary`]).
    pub worker_binary: PathBuf,
    /// Where to keep the logs after the run, for diagnosis: `PREFIX.county.log`,
    /// `PREFIX.worker-N.log` (the villages' sync warnings) and `PREFIX.villages.jsonl` (every
    /// village's report line).
    pub keep_logs: Option<PathBuf>,
}

/// `prefix` with `suffix` appended to its file name.
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl FanInConfig {
    pub fn new(villages: usize, cases_per_village: usize, seed: u64) -> Result<Self> {
        Ok(Self {
            villages,
            cases_per_village,
            seed,
            workers: 4,
            timeout: Duration::from_secs(300),
            worker_binary: bench_binary()?,
            keep_logs: None,
        })
    }
}

/// The `yiciban-bench` binary that hosts the villages: `YICIBAN_BENCH_BIN`, else this
/// process's own executable (the driver is `yiciban-bench`).
pub fn bench_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("YICIBAN_BENCH_BIN") {
        return Ok(PathBuf::from(path));
    }
    std::env::current_exe().context("locating the yiciban-bench executable")
}

/// One village as a worker gets it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VillageSpec {
    pub index: usize,
    pub node_id: String,
    pub division: String,
    pub town_division: String,
    /// The one-time enrolment token the county issued for this village.
    pub token: String,
}

/// Everything a worker process needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// The folder under which each village gets a folder of its own.
    pub root: PathBuf,
    /// The county's QUIC address (sync) and HTTP address (enrolment).
    pub county_quic: std::net::SocketAddr,
    pub county_http: String,
    pub cases_per_village: usize,
    pub seed: u64,
    /// How long villages may take to be acknowledged before they are reported as late.
    pub timeout_secs: u64,
    pub villages: Vec<VillageSpec>,
}

/// The division of village `index` (0-based): towns 101, 102, … of the county, 100 villages
/// each.
fn village_division(index: usize) -> (String, String) {
    let town = 101 + index / VILLAGES_PER_TOWN;
    let village = 1 + index % VILLAGES_PER_TOWN;
    (
        format!("430181{town:03}{village:03}"),
        format!("430181{town:03}000"),
    )
}

/// The seed of village `index`'s cases in run `seed`.
fn village_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_mul(1_000_003).wrapping_add(index as u64)
}

/// The value at percentile `p` (nearest rank) of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the figure with 4 worker processes: see [`run_with`].
pub async fn run(villages: usize, cases_per_village: usize, seed: u64) -> Result<FanInRun> {
    run_with(&FanInConfig::new(villages, cases_per_village, seed)?).await
}

/// A worker process and the lines it printed.
struct Worker {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    log: PathBuf,
}

/// Reads a worker's stdout lines into `tx` as `(worker, line)`; `None` at its end.
fn forward_lines(
    w: usize,
    stdout: tokio::process::ChildStdout,
    tx: tokio::sync::mpsc::UnboundedSender<(usize, Option<String>)>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send((w, Some(line))).is_err() {
                return;
            }
        }
        let _ = tx.send((w, None));
    });
}

/// The last lines of a worker's log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// One fan-in measurement on a fresh county.
pub async fn run_with(cfg: &FanInConfig) -> Result<FanInRun> {
    if cfg.villages == 0 || cfg.workers == 0 || cfg.cases_per_village == 0 {
        bail!("fan-in needs at least one village, one worker and one case");
    }
    if cfg.villages > (999 - 100) * VILLAGES_PER_TOWN {
        bail!("fan-in: too many villages for the division codes");
    }
    let binary = crate::binary()?;
    if binary.components().any(|c| c.as_os_str() == "debug") {
        eprintln!(
            "fan-in: the county is {} (a debug build); set YICIBAN_BIN to the release binary",
            binary.display()
        );
    }
    let root = tempfile::tempdir()?;
    let base = free_base_port()?;
    let quic = free_udp_port()?;
    let county_cfg = folder(
        root.path(),
        "county",
        &node_toml(
            COUNTY_ID,
            "county",
            COUNTY_DIVISION,
            base,
            &format!("listen = \"{quic}\""),
        ),
    )?;
    init_county(&county_cfg)?;
    add_user(&county_cfg, "admin", "county_admin")?;
    add_user(&county_cfg, "security", "security_admin")?;
    let county = NodeProcess::serve(&county_cfg, base)?;
    let county_http = format!("127.0.0.1:{base}");
    let county_pid = pid_running(&county_cfg);
    let result = drive(
        cfg,
        root.path(),
        &county.base_url,
        &county_http,
        quic,
        county_pid,
    )
    .await;
    drop(county);
    if let Some(prefix) = &cfg.keep_logs {
        if let Some(dir) = prefix.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::copy(
            root.path().join("county").join("node.log"),
            with_suffix(prefix, ".county.log"),
        );
        for w in 0..cfg.workers {
            let _ = std::fs::copy(
                root.path().join(format!("worker-{w}")).join("worker.log"),
                with_suffix(prefix, &format!(".worker-{w}.log")),
            );
        }
    }
    result
}

/// Everything after the county is up: tokens, workers, release, measurement.
async fn drive(
    cfg: &FanInConfig,
    root: &Path,
    county_url: &str,
    county_http: &str,
    quic: std::net::SocketAddr,
    county_pid: Option<u32>,
) -> Result<FanInRun> {
    let total = (cfg.villages * cfg.cases_per_village) as u64;
    let security = Api::login(county_url, "security", DEMO_PASSWORD).await?;
    let admin = Api::login(county_url, "admin", DEMO_PASSWORD).await?;

    // One token per village, issued by the county's security admin over its JSON API.
    let sem = Arc::new(tokio::sync::Semaphore::new(TOKEN_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..cfg.villages {
        let (division, town_division) = village_division(index);
        let node_id = format!("village-{division}");
        let api = security.clone();
        let sem = sem.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let (status, body) = api
                .post(
                    "/api/v1/tokens",
                    &json!({"node_id": node_id, "role": "village", "division": division}),
                )
                .await?;
            if status != 201 {
                bail!("token for {node_id}: {status} {body}");
            }
            let token = body["token"]
                .as_str()
                .context("token answer without a token")?
                .to_string();
            Ok(VillageSpec {
                index,
                node_id,
                division,
                town_division,
                token,
            })
        });
    }
    let mut villages = Vec::with_capacity(cfg.villages);
    while let Some(v) = tasks.join_next().await {
        villages.push(v??);
    }
    villages.sort_by_key(|v| v.index);

    // The workers, each with its share of the villages.
    let workers_n = cfg.workers.min(cfg.villages);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut workers = Vec::with_capacity(workers_n);
    for w in 0..workers_n {
        let dir = root.join(format!("worker-{w}"));
        std::fs::create_dir_all(&dir)?;
        let spec = WorkerSpec {
            root: dir.clone(),
            county_quic: quic,
            county_http: county_http.to_string(),
            cases_per_village: cfg.cases_per_village,
            seed: cfg.seed,
            timeout_secs: cfg.timeout.as_secs(),
            villages: villages
                .iter()
                .filter(|v| v.index % workers_n == w)
                .cloned()
                .collect(),
        };
        let spec_path = dir.join("spec.json");
        std::fs::write(&spec_path, serde_json::to_vec(&spec)?)?;
        let log = dir.join("worker.log");
        let mut child = tokio::process::Command::new(&cfg.worker_binary)
            .arg("--fan-in-worker")
            .arg(&spec_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", cfg.worker_binary.display()))?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let stdin = child.stdin.take().context("worker stdin")?;
        forward_lines(w, stdout, tx.clone());
        workers.push(Worker { child, stdin, log });
    }
    drop(tx);

    let fail = |w: usize, workers: &[Worker], what: &str| -> anyhow::Error {
        anyhow::anyhow!(
            "fan-in worker {w} {what}; its log ({}):\n{}",
            workers[w].log.display(),
            log_tail(&workers[w].log)
        )
    };

    // Set-up: wait until every worker says ready.
    let mut ready = vec![false; workers_n];
    let mut setup_secs = 0f64;
    let setup_limit = Duration::from_secs(600 + cfg.villages as u64);
    while ready.iter().any(|r| !r) {
        let (w, line) = tokio::time::timeout(setup_limit, rx.recv())
            .await
            .context("fan-in workers not ready in time")?
            .context("fan-in workers gone")?;
        let Some(line) = line else {
            return Err(fail(w, &workers, "ended during set-up"));
        };
        let msg: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("worker {w} said {line:?}"))?;
        if msg["event"] == "ready" {
            ready[w] = true;
            setup_secs = setup_secs.max(msg["setup_secs"].as_f64().unwrap_or(0.0));
        }
    }
    let before = admin.case_count().await?;
    if before != 0 {
        bail!("the county holds {before} cases before the release");
    }

    // Release: every village dials now.
    let start = Instant::now();
    let worker_pids: Vec<u32> = workers.iter().filter_map(|w| w.child.id()).collect();
    let cpu_of = |pids: &[u32]| -> Option<f64> {
        if pids.is_empty() {
            return None;
        }
        pids.iter().map(|&p| cpu_secs(p)).sum()
    };
    let county_pids: Vec<u32> = county_pid.into_iter().collect();
    let cpu_at_start = (cpu_of(&county_pids), cpu_of(&worker_pids));
    let mut cpu_used = (None, None);
    for w in &mut workers {
        w.stdin.write_all(b"go\n").await?;
        w.stdin.flush().await?;
    }
    let mut wall_secs = None;
    let mut per_village: Vec<(f64, f64)> = Vec::with_capacity(cfg.villages);
    let (mut attempts, mut bytes_sent, mut bytes_received) = (0u64, 0u64, 0u64);
    let mut done = vec![false; workers_n];
    let mut late = Vec::new();
    let mut reports = String::new();
    let mut next_poll = start + COUNT_POLL;
    let deadline = start + cfg.timeout + Duration::from_secs(10);
    while wall_secs.is_none() || done.iter().any(|d| !d) {
        if Instant::now() > deadline {
            let held = admin.case_count().await.unwrap_or(0);
            bail!(
                "fan-in: not done within {:?}: the county holds {held} of {total} cases, {} of {} villages reported{}",
                cfg.timeout,
                per_village.len(),
                cfg.villages,
                if late.is_empty() {
                    String::new()
                } else {
                    format!("; late: {}", late.join(", "))
                }
            );
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next_poll.into()), if wall_secs.is_none() => {
                if admin.case_count().await.unwrap_or(0) >= total {
                    wall_secs = Some(start.elapsed().as_secs_f64());
                    let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
                    cpu_used = (
                        diff(cpu_at_start.0, cpu_of(&county_pids)),
                        diff(cpu_at_start.1, cpu_of(&worker_pids)),
                    );
                }
                let all_reported = per_village.len() + late.len() == cfg.villages;
                next_poll = Instant::now() + if all_reported { COUNT_POLL_FAST } else { COUNT_POLL };
            }
            got = rx.recv() => {
                let Some((w, line)) = got else { bail!("fan-in workers gone") };
                let Some(line) = line else {
                    if !done[w] {
                        return Err(fail(w, &workers, "ended before it was done"));
                    }
                    continue;
                };
                let msg: serde_json::Value = serde_json::from_str(&line)
                    .with_context(|| format!("worker {w} said {line:?}"))?;
                match msg["event"].as_str() {
                    Some("village") => {
                        reports.push_str(&line);
                        reports.push('\n');
                        attempts += msg["attempts"].as_u64().unwrap_or(0);
                        bytes_sent += msg["bytes_sent"].as_u64().unwrap_or(0);
                        bytes_received += msg["bytes_received"].as_u64().unwrap_or(0);
                        match (msg["cases_secs"].as_f64(), msg["all_secs"].as_f64()) {
                            (Some(c), Some(a)) => {
                                per_village.push((c, a));
                                if per_village.len() == cfg.villages {
                                    next_poll = Instant::now();
                                }
                            }
                            _ => late.push(format!(
                                "{} ({})",
                                msg["id"].as_str().unwrap_or("?"),
                                msg["last_error"].as_str().unwrap_or("no error")
                            )),
                        }
                    }
                    Some("done") => done[w] = true,
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
    if let Some(prefix) = &cfg.keep_logs {
        if let Some(dir) = prefix.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(with_suffix(prefix, ".villages.jsonl"), &reports);
    }
    if !late.is_empty() {
        bail!(
            "fan-in: {} villages not acknowledged within {:?}: {}",
            late.len(),
            cfg.timeout,
            late.join(", ")
        );
    }
    let held = admin.case_count().await?;
    if held != total {
        bail!("fan-in: the county holds {held} cases, expected {total}");
    }
    for w in &mut workers {
        let _ = w.stdin.write_all(b"stop\n").await;
    }
    for w in &mut workers {
        if tokio::time::timeout(Duration::from_secs(10), w.child.wait())
            .await
            .is_err()
        {
            let _ = w.child.kill().await;
        }
    }
    let mut cases: Vec<f64> = per_village.iter().map(|v| v.0).collect();
    let mut all: Vec<f64> = per_village.iter().map(|v| v.1).collect();
    cases.sort_by(f64::total_cmp);
    all.sort_by(f64::total_cmp);
    Ok(FanInRun {
        villages: cfg.villages,
        cases_per_village: cfg.cases_per_village,
        workers: workers_n,
        wall_secs: wall_secs.unwrap_or_default(),
        p50_village_secs: percentile(&cases, 0.50),
        p99_village_secs: percentile(&cases, 0.99),
        max_village_secs: cases.last().copied().unwrap_or_default(),
        p99_village_all_secs: percentile(&all, 0.99),
        setup_secs,
        attempts,
        bytes_sent,
        bytes_received,
        county_cpu_secs: cpu_used.0,
        workers_cpu_secs: cpu_used.1,
    })
}

/// CPU seconds (user + system, all threads) process `pid` has used, from `/proc/PID/stat`
/// (in clock ticks of 1/100 s, `USER_HZ` on Linux).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The pid of the `yiciban serve` process running `config`, from `/proc`.
fn pid_running(config: &Path) -> Option<u32> {
    let want = config.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        (args.iter().any(|a| a == "serve") && args.contains(&want)).then_some(pid)
    })
}

// ---------------------------------------------------------------------------------------------
// The worker process.

/// One simulated village, ready to dial.
struct Village {
    spec: VillageSpec,
    node: Arc<Node>,
    /// The feed position of its last case, and the end of its feed (audit segment included).
    cases_head: u64,
    all_head: u64,
}

/// This process's stdin, line by line (read on a thread of its own); ends with stdin.
fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Prints one JSON line on stdout at once.
fn say(line: &serde_json::Value) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// The config of a village folder: dials the county, default store and sync settings.
fn village_config(spec: &VillageSpec, county: std::net::SocketAddr) -> String {
    format!(
        r#"[node]
id = "{id}"
role = "village"
name = "{id}"
division = "{division}"
town_division = "{town}"
county_division = "{COUNTY_DIVISION}"

# Required by the config; a simulated village serves no HTTP.
[http]
listen = "127.0.0.1:1"

[store]
path = "village.redb"

[catalog]
path = "catalog.toml"

[sync]
county = "{county}"
"#,
        id = spec.node_id,
        division = spec.division,
        town = spec.town_division,
    )
}

/// Enrols with the county exactly as `yiciban enroll` does: a new key, its CSR under the
/// token's HMAC, the county's answer checked and saved in the TLS folder.
async fn enrol_village(
    http: &reqwest::Client,
    county_http: &str,
    cfg: &Config,
    token: &str,
) -> Result<()> {
    let want = NodeIdentity::new(&cfg.node.id, cfg.node.role.as_str(), &cfg.node.division)?;
    let key = NodeKey::generate()?;
    let request = enrol::request(token, &key)?;
    let resp = http
        .post(format!("http://{county_http}/api/v1/enroll"))
        .json(&request)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .context("enrolment request")?;
    let status = resp.status();
    if !status.is_success() {
        bail!(
            "the county refused the enrolment of {} ({status}): {}",
            cfg.node.id,
            resp.text().await.unwrap_or_default()
        );
    }
    let answer: enrol::EnrolAnswer = resp.json().await.context("enrolment answer")?;
    enrol::check_answer(token, &answer, &want)?;
    TlsDir::new(cfg.tls_dir()).save_enrolment(&key, &answer)?;
    Ok(())
}

/// The end of a village's feed as the county reads it.
fn feed_head(node: &Node) -> Result<u64> {
    let view = ScopedStore {
        store: &node.store,
        scope: &Scope::All,
    };
    Ok(view.feed_head()?)
}

/// Sets one village up: folder, store, certificate, cases filed offline, audit exported.
async fn set_up(
    spec: VillageSpec,
    ws: Arc<WorkerSpec>,
    catalog: Catalog,
    http: reqwest::Client,
) -> Result<Village> {
    let dir = ws.root.join(&spec.node_id);
    std::fs::create_dir_all(&dir)?;
    let config_path = dir.join("village.toml");
    std::fs::write(&config_path, village_config(&spec, ws.county_quic))?;
    let cfg = Config::load(&config_path)?;
    enrol_village(&http, &ws.county_http, &cfg, &spec.token)
        .await
        .with_context(|| format!("enrolling {}", spec.node_id))?;
    let store = Store::open(
        &cfg.store_path(),
        cfg.store.group_commit_max,
        cfg.store.blob_max_bytes,
    )?;
    let item = catalog
        .get(BENCH_ITEM)
        .context("bench item missing")?
        .clone();
    let node = Node::new(cfg, catalog, store)?;
    let mut workload = Workload::new(village_seed(ws.seed, spec.index));
    let mut filings = tokio::task::JoinSet::new();
    for _ in 0..ws.cases_per_village {
        let input: ApplicationInput = serde_json::from_value(workload.application(&item))?;
        let node = node.clone();
        filings.spawn(async move {
            let clerk = Actor {
                username: "clerk".into(),
                role: Role::Clerk,
            };
            node.file_application(&input, Vec::new(), &clerk)
                .await
                .map(|_| ())
        });
    }
    while let Some(filed) = filings.join_next().await {
        filed?.with_context(|| format!("filing at {}", spec.node_id))?;
    }
    let cases_head = feed_head(&node)?;
    // What a village's exporter (every 2 s while it runs) would have done while it was cut off.
    while node
        .store
        .export_audit(yiciban_core::audit_doc::EXPORT_MAX)
        .await?
        == yiciban_core::audit_doc::EXPORT_MAX
    {}
    let all_head = feed_head(&node)?;
    Ok(Village {
        spec,
        node,
        cases_head,
        all_head,
    })
}

/// Runs as a fan-in worker: sets up the villages of the spec at `spec_path`, says `ready`,
/// releases them all on `go`, reports each village once the county has acknowledged its feed,
/// says `done` and exits on `stop` (or the end of stdin).
pub async fn worker(spec_path: &Path) -> Result<()> {
    let started = Instant::now();
    // The villages' sync warnings (a link down and why) go to stderr, the worker's log.
    let filter = tracing_subscriber::EnvFilter::try_from_env("YICIBAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let ws: Arc<WorkerSpec> = Arc::new(
        serde_json::from_slice(&std::fs::read(spec_path)?)
            .with_context(|| format!("reading {}", spec_path.display()))?,
    );
    let catalog = Catalog::parse(yiciban_core::DEMO_CATALOG, Path::new("catalog.toml"))?;
    let http = reqwest::Client::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for spec in ws.villages.clone() {
        let (ws, catalog, http, sem) = (ws.clone(), catalog.clone(), http.clone(), sem.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            set_up(spec, ws, catalog, http).await
        });
    }
    let mut villages = Vec::with_capacity(ws.villages.len());
    while let Some(v) = tasks.join_next().await {
        villages.push(v??);
    }
    villages.sort_by_key(|v| v.spec.index);
    say(&json!({
        "event": "ready",
        "villages": villages.len(),
        "setup_secs": started.elapsed().as_secs_f64(),
    }))?;

    let mut stdin = stdin_lines();
    loop {
        match stdin.recv().await {
            Some(line) if line.trim() == "go" => break,
            Some(_) => continue,
            None => return Ok(()),
        }
    }
    let release = Instant::now();
    let mut endpoints = Vec::with_capacity(villages.len());
    for v in &villages {
        let endpoint = v
            .node
            .start_sync()
            .map_err(|e| anyhow::anyhow!("{}: {e}", v.spec.node_id))?
            .with_context(|| format!("{}: replication did not start", v.spec.node_id))?;
        endpoints.push(endpoint);
    }
    let started_secs = release.elapsed().as_secs_f64();

    // Watch every link until the county has acknowledged each village's feed.
    let limit = Duration::from_secs(ws.timeout_secs);
    let mut cases_at: Vec<Option<f64>> = vec![None; villages.len()];
    let mut connected_at: Vec<Option<f64>> = vec![None; villages.len()];
    let mut pending: Vec<usize> = (0..villages.len()).collect();
    while !pending.is_empty() && release.elapsed() < limit {
        tokio::time::sleep(LINK_POLL).await;
        let now = release.elapsed().as_secs_f64();
        let mut still = Vec::with_capacity(pending.len());
        for i in pending {
            let v = &villages[i];
            let link = v.node.links.get("county").unwrap_or_default();
            let held = link.peer_position.unwrap_or(0);
            if connected_at[i].is_none() && link.connected {
                connected_at[i] = Some(now);
            }
            if cases_at[i].is_none() && held >= v.cases_head {
                cases_at[i] = Some(now);
            }
            if held >= v.all_head {
                say(&json!({
                    "event": "village",
                    "id": v.spec.node_id,
                    "connected_secs": connected_at[i],
                    "cases_secs": cases_at[i],
                    "all_secs": now,
                    "attempts": link.attempts,
                    "last_error": link.last_error,
                    "bytes_sent": link.bytes_sent,
                    "bytes_received": link.bytes_received,
                }))?;
            } else {
                still.push(i);
            }
        }
        pending = still;
    }
    for i in pending {
        let v = &villages[i];
        let link = v.node.links.get("county").unwrap_or_default();
        say(&json!({
            "event": "village",
            "id": v.spec.node_id,
            "late": true,
            "peer_position": link.peer_position,
            "cases_head": v.cases_head,
            "all_head": v.all_head,
            "attempts": link.attempts,
            "last_error": link.last_error,
        }))?;
    }
    say(&json!({"event": "done", "start_secs": started_secs}))?;
    // Keep the links up (the county may still be answering) until told to stop.
    while let Some(line) = stdin.recv().await {
        if line.trim() == "stop" {
            break;
        }
    }
    drop(endpoints);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn villages_get_distinct_divisions_under_their_towns() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..500 {
            let (v, t) = village_division(i);
            assert_eq!(v.len(), 12);
            assert_eq!(&v[..9], &t[..9]);
            assert!(t.ends_with("000") && !v.ends_with("000"));
            assert!(seen.insert(v));
        }
        assert_eq!(village_division(0).0, "430181101001");
        assert_eq!(village_division(499).0, "430181105100");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v[..1], 0.99), 1.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
    }
}
