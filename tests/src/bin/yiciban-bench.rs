//! The benchmark driver behind `scripts/bench.sh` (see ../shared/BENCHMARKS.md).
//!
//! Figures so far: `ingest` — cases accepted per second and p50/p99 latency through the real
//! HTTP API into redb (`Durability::Immediate`), with 1 and 32 concurrent clients, beside a
//! one-commit-per-case baseline (`group_commit_max = 1`) in the same run.
//!
//! Writes one JSON line per figure to `--out` (results.jsonl) and a Markdown table to `--table`.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::json;
use yiciban_core::catalog::Catalog;
use yiciban_tests::workload::{BENCH_ITEM, Workload};
use yiciban_tests::{Api, DEMO_PASSWORD, NodeProcess, free_base_port};

#[derive(Debug, Parser)]
struct Args {
    /// Small sizes, for a run of a few minutes.
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Run one family of figures only: `ingest`, `sync`, `sync-edge`, `fan-in`, `cold-start`,
    /// `queue` or `county-year`.
    #[arg(long)]
    only: Option<String>,
    #[arg(long, default_value = "target/bench/results.jsonl")]
    out: PathBuf,
    #[arg(long, default_value = "target/bench/results.md")]
    table: PathBuf,
    /// Print the first N cases the sync figures file with `--seed` (run r uses seed r + 1) as
    /// JSON lines and exit: the peers' workload (scripts/peers).
    #[arg(long, value_name = "N")]
    dump_workload: Option<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The sync figures at these sizes only (comma-separated), e.g. to profile one of them.
    #[arg(long, value_delimiter = ',')]
    sync_sizes: Option<Vec<usize>>,
    /// Fan-in: the worker processes that host the simulated villages.
    #[arg(long, default_value_t = 4)]
    fan_in_workers: usize,
    /// For profiling: one 32-client ingest run of N cases (group commit, or one commit per
    /// case with `--one-commit`), printing the rate and the node's CPU time per case, which
    /// varies less than the rate on this shared machine. Writes no results.
    #[arg(long, value_name = "N")]
    ingest_burst: Option<usize>,
    #[arg(long, requires = "ingest_burst")]
    one_commit: bool,
    /// Internal: host the fan-in villages that FILE names (`yiciban_tests::fanin::worker`).
    #[arg(long, hide = true, value_name = "FILE")]
    fan_in_worker: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
struct IngestRun {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

/// `--ingest-burst`: one run and the CPU time of the bench's children (the node, and the
/// `demo` run that set it up) per case.
async fn ingest_burst(cases: usize, group_commit: bool) -> Result<()> {
    let r = ingest(group_commit, 32, cases, 1).await?;
    let ticks = children_cpu_ticks().context("reading /proc/self/stat")?;
    eprintln!(
        "ingest burst, {}, 32 clients, {cases} cases: {:.0} cases/s p50 {:.2} ms p99 {:.2} ms; node CPU {:.1} s = {:.0} µs a case",
        if group_commit {
            "group commit"
        } else {
            "one commit per case"
        },
        r.rate,
        r.p50_ms,
        r.p99_ms,
        ticks / 100.0,
        ticks * 10_000.0 / cases as f64,
    );
    Ok(())
}

/// User and system time of the waited-for children, in clock ticks (100 a second on Linux).
fn children_cpu_ticks() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state is field 3 of proc(5), cutime 16 and cstime 17.
    let cutime: f64 = fields.get(13)?.parse().ok()?;
    let cstime: f64 = fields.get(14)?.parse().ok()?;
    Some(cutime + cstime)
}

/// Enrols the village at `config` with a county made for it in `root` on port `base`, then
/// stops the county: the village files alone, signing every filing as an enrolled one does.
fn enrol_alone(root: &std::path::Path, config: &std::path::Path, base: u16) -> Result<()> {
    use yiciban_tests::cluster::{
        COUNTY_ID, enroll, folder, free_udp_port, init_county, node_toml, token,
    };
    let quic = free_udp_port()?;
    let county_cfg = folder(
        root,
        "county",
        &node_toml(
            COUNTY_ID,
            "county",
            "430181000000",
            base,
            &format!("listen = \"{quic}\""),
        ),
    )?;
    init_county(&county_cfg)?;
    let t = token(
        &county_cfg,
        yiciban_tests::cluster::VILLAGE_ID,
        "village",
        "430181101001",
    )?;
    let mut county = NodeProcess::serve(&county_cfg, base)?;
    enroll(config, &format!("127.0.0.1:{base}"), &t)?;
    county.kill9()?;
    Ok(())
}

/// One ingest measurement on a fresh node: an enrolled village with its county down.
async fn ingest(group_commit: bool, clients: usize, cases: usize, seed: u64) -> Result<IngestRun> {
    let dir = tempfile::tempdir()?;
    let base = free_base_port()?;
    // `demo` writes the config and creates the users; restart with the store settings wanted.
    let mut node = NodeProcess::village(dir.path(), base)?;
    node.kill9()?;
    drop(node);
    let config = dir.path().join("village.toml");
    enrol_alone(dir.path(), &config, base)?;
    if !group_commit {
        let text = std::fs::read_to_string(&config)?;
        std::fs::write(
            &config,
            text.replace(
                "path = \"village.redb\"",
                "path = \"village.redb\"\ngroup_commit_max = 1",
            ),
        )?;
    }
    let node = NodeProcess::serve(&config, base + 2)?;
    let catalog = Catalog::parse(
        yiciban_core::DEMO_CATALOG,
        std::path::Path::new("catalog.toml"),
    )?;
    let item = catalog.get(BENCH_ITEM).context("bench item missing")?;
    let per_client = cases / clients;
    let mut bodies = Vec::new();
    for c in 0..clients {
        let mut w = Workload::new(seed * 1000 + c as u64);
        bodies.push(
            (0..per_client)
                .map(|_| w.application(item))
                .collect::<Vec<_>>(),
        );
    }
    let mut apis = Vec::new();
    for _ in 0..clients {
        apis.push(Api::login(&node.base_url, "clerk", DEMO_PASSWORD).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (api, cases) in apis.into_iter().zip(bodies) {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(cases.len());
            for case in cases {
                let t = Instant::now();
                let (status, body) = api.post("/api/v1/applications", &case).await?;
                if status != 201 {
                    bail!("filing failed: {status} {body}");
                }
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    drop(node);
    // Keep the node's log beside the results, for diagnosis (set YICIBAN_LOG=debug for more).
    let label = if group_commit { "group" } else { "single" };
    let _ = std::fs::copy(
        dir.path().join("node.log"),
        format!("target/bench/ingest-{label}-{clients}-{seed}.log"),
    );
    Ok(IngestRun {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    })
}

/// Sync figures at one size, each on a fresh session (the village process restarted while
/// the county runs), timed by the county from the session's start (just after the QUIC
/// handshake) until it has pulled and durably applied the village's feed (its link's
/// `catch_up_us`, µs):
/// - `sync-new`: N cases filed while the county was down;
/// - `sync-idle`: nothing changed;
/// - `sync-1pct`: 1% of the cases got a comment while the link was dark.
///
/// Bytes: `wire` is everything at the relay (QUIC, TLS handshake and all) until the link is
/// quiet; `stream` is the session's own bytes both ways by the catch-up (after the handshake).
/// Between figures the link settles (see [`settle`]); what crosses meanwhile — the county's
/// `notice_sent` marks on the new cases, audit segments — is `sync-new.settle.bytes`.
#[derive(Debug, Clone, Copy)]
struct SyncRun {
    /// The county's catch-up, from its session's start (after the handshake).
    new_secs: f64,
    /// From the village's exec until the county counts every case (polled).
    new_exec_secs: f64,
    /// From the village's dial until the county caught up durably ([`connect_wall`]).
    new_wall_secs: f64,
    /// Bytes each way (village → county, county → village) at the moment the county held
    /// every case.
    new_done_up: u64,
    new_done_down: u64,
    new_bytes: u64,
    new_stream: u64,
    settle_bytes: u64,
    idle_secs: f64,
    idle_wall_secs: f64,
    idle_bytes: u64,
    idle_wire: u64,
    pct_secs: f64,
    pct_wall_secs: f64,
    pct_bytes: u64,
    pct_stream: u64,
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl AsyncFnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ok().await {
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        // Each poll costs the county a health report (~0.8 ms at 10,000 cases): every 10 ms
        // that was 8% of its samples during sync-new. The timed figures are the county's own
        // (`catch_up_us`), so a coarser poll only blurs the wall figure beside them.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Waits until the link is quiet — under 1 KiB in 3 s, keep-alives only — so that work one
/// figure sets off is not counted in the next; returns the bytes that crossed meanwhile.
async fn settle(relay: &yiciban_tests::relay::Relay) -> Result<u64> {
    let first = relay.traffic().bytes();
    let start = Instant::now();
    loop {
        let before = relay.traffic().bytes();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = relay.traffic().bytes();
        if now - before < 1024 {
            return Ok(now - first);
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("the link did not settle within 300 s");
        }
    }
}

/// The county's view of its link to the village (`/api/v1/health`).
async fn county_link(admin: &Api) -> serde_json::Value {
    let (_, health) = admin.get("/api/v1/health").await.unwrap_or_default();
    health["links"]
        .as_array()
        .and_then(|links| {
            links
                .iter()
                .find(|l| l["name"] == yiciban_tests::cluster::VILLAGE_ID)
                .cloned()
        })
        .unwrap_or_default()
}

/// Stops the village gracefully and waits until the county has seen it leave.
async fn stop_village(mut village: NodeProcess, admin: &Api) -> Result<()> {
    village.terminate()?;
    drop(village);
    wait_for(
        "the county sees the village leave",
        Duration::from_secs(60),
        async || county_link(admin).await["connected"] != true,
    )
    .await
}

/// The wall time of the village's latest reconnection, like the peers' (their figures are whole
/// replications from the first connection): from the moment the village began to dial the
/// county (its link's `dialed_at_us`) until the county had caught up durably
/// (`caught_up_at_us`), the QUIC and TLS handshake included. Both clocks are this machine's.
async fn connect_wall(admin: &Api, village_url: &str) -> Result<f64> {
    let village = Api::login(village_url, "clerk", DEMO_PASSWORD).await?;
    let (_, health) = village.get("/api/v1/health").await?;
    let dialed = health["links"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "county"))
        .and_then(|l| l["dialed_at_us"].as_u64())
        .context("the village's link has no dial time")?;
    let done = county_link(admin).await["caught_up_at_us"]
        .as_u64()
        .context("the county's link has no catch-up time")?;
    Ok(done.saturating_sub(dialed) as f64 / 1e6)
}

/// Waits for the current session's catch-up at the county: (seconds, stream bytes).
async fn catch_up(admin: &Api, what: &str) -> Result<(f64, u64)> {
    let mut got = (0.0, 0);
    let mut last = serde_json::Value::Null;
    let waited = wait_for(what, Duration::from_secs(600), async || {
        let link = county_link(admin).await;
        last = link.clone();
        let secs = link["catch_up_us"].as_u64().map(|us| us as f64 / 1e6);
        match (link["connected"].as_bool(), secs) {
            (Some(true), Some(secs)) => {
                got = (secs, link["catch_up_bytes"].as_u64().unwrap_or(0));
                true
            }
            _ => false,
        }
    })
    .await;
    waited.with_context(|| format!("the county's link to the village: {last}"))?;
    Ok(got)
}

/// With `new_only`, stops after `sync-new` (the EDGE figure).
async fn sync_run(
    cases: usize,
    seed: u64,
    shape: yiciban_tests::relay::Shape,
    new_only: bool,
) -> Result<SyncRun> {
    use yiciban_tests::cluster::{
        COUNTY_ID, VILLAGE_ID, add_user, enroll, folder, free_udp_port, init_county, node_toml,
        token,
    };
    use yiciban_tests::relay::Relay;
    let mut root = tempfile::tempdir()?;
    // YICIBAN_BENCH_KEEP=1 keeps the nodes' folders (configs, stores, logs) for diagnosis.
    if std::env::var_os("YICIBAN_BENCH_KEEP").is_some() {
        root.disable_cleanup(true);
        eprintln!("sync run folders kept in {}", root.path().display());
    }
    let base = free_base_port()?;
    let quic = free_udp_port()?;
    let relay = Relay::start(quic, shape, seed)?;
    let county_cfg = folder(
        root.path(),
        "county",
        &node_toml(
            COUNTY_ID,
            "county",
            "430181000000",
            base,
            &format!("listen = \"{quic}\""),
        ),
    )?;
    let village_cfg = folder(
        root.path(),
        "village",
        &yiciban_tests::village_toml(base + 2, Some(relay.addr())),
    )?;
    init_county(&county_cfg)?;
    add_user(&county_cfg, "admin", "county_admin")?;
    add_user(&village_cfg, "clerk", "clerk")?;
    let t = token(&county_cfg, VILLAGE_ID, "village", "430181101001")?;
    let mut county = NodeProcess::serve(&county_cfg, base)?;
    enroll(&village_cfg, &format!("127.0.0.1:{base}"), &t)?;
    county.kill9()?;
    drop(county);

    // File while the county is down.
    let mut village = NodeProcess::serve(&village_cfg, base + 2)?;
    let cat = Catalog::parse(
        yiciban_core::DEMO_CATALOG,
        std::path::Path::new("catalog.toml"),
    )?;
    let item = cat.get(BENCH_ITEM).context("bench item")?;
    let mut w = Workload::new(seed);
    let bodies: Vec<_> = (0..cases).map(|_| w.application(item)).collect();
    let mut ids = Vec::with_capacity(cases);
    let mut tasks = Vec::new();
    for chunk in bodies.chunks(cases.div_ceil(16)) {
        let api = Api::login(&village.base_url, "clerk", DEMO_PASSWORD).await?;
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for body in chunk {
                let (status, reply) = api.post("/api/v1/applications", &body).await?;
                if status != 201 {
                    bail!("filing: {status} {reply}");
                }
                ids.push(reply["id"].as_str().unwrap_or_default().to_string());
            }
            Ok(ids)
        }));
    }
    for t in tasks {
        ids.extend(t.await??);
    }
    village.terminate()?;
    drop(village);

    // New: the county is up, the village comes back with N cases it never sent.
    let _county = NodeProcess::serve(&county_cfg, base)?;
    let admin = Api::login(&format!("http://127.0.0.1:{base}"), "admin", DEMO_PASSWORD).await?;
    let before_all = relay.traffic();
    let before = before_all.bytes();
    let start = Instant::now();
    let village = NodeProcess::serve(&village_cfg, base + 2)?;
    wait_for("sync-new", Duration::from_secs(600), async || {
        admin.case_count().await.unwrap_or(0) >= cases as u64
    })
    .await?;
    let new_exec_secs = start.elapsed().as_secs_f64();
    let done = relay.traffic();
    let new_done_up = done.bytes_up - before_all.bytes_up;
    let new_done_down = done.bytes_down - before_all.bytes_down;
    let (new_secs, new_stream) = catch_up(&admin, "sync-new catch-up").await?;
    let new_wall_secs = connect_wall(&admin, &village.base_url).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let new_bytes = relay.traffic().bytes() - before;
    if new_only {
        return Ok(SyncRun {
            new_secs,
            new_exec_secs,
            new_wall_secs,
            new_done_up,
            new_done_down,
            new_bytes,
            new_stream,
            settle_bytes: 0,
            idle_secs: 0.0,
            idle_wall_secs: 0.0,
            idle_bytes: 0,
            idle_wire: 0,
            pct_secs: 0.0,
            pct_wall_secs: 0.0,
            pct_bytes: 0,
            pct_stream: 0,
        });
    }
    let settle_bytes = settle(&relay).await?;

    // Idle: the village restarts with nothing changed.
    stop_village(village, &admin).await?;
    settle(&relay).await?;
    let before = relay.traffic().bytes();
    let village = NodeProcess::serve(&village_cfg, base + 2)?;
    let (idle_secs, idle_bytes) = catch_up(&admin, "sync-idle").await?;
    let idle_wall_secs = connect_wall(&admin, &village.base_url).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_wire = relay.traffic().bytes() - before;
    settle(&relay).await?;

    // 1%: comments recorded while the link is dark, then the village comes back.
    stop_village(village, &admin).await?;
    relay.set_blackout(true);
    let mut village = NodeProcess::serve(&village_cfg, base + 2)?;
    let clerk = Api::login(&village.base_url, "clerk", DEMO_PASSWORD).await?;
    let touched: Vec<&String> = ids.iter().step_by(100).collect();
    for id in &touched {
        let (status, reply) = clerk
            .post(
                &format!("/api/v1/applications/{id}/events"),
                &json!({"kind": "comment", "text": "已电话联系申请人"}),
            )
            .await?;
        if status != 201 && status != 200 {
            bail!("comment: {status} {reply}");
        }
    }
    village.terminate()?;
    drop(village);
    relay.set_blackout(false);
    let before = relay.traffic().bytes();
    let village = NodeProcess::serve(&village_cfg, base + 2)?;
    let (pct_secs, pct_stream) = catch_up(&admin, "sync-1pct").await?;
    let pct_wall_secs = connect_wall(&admin, &village.base_url).await?;
    for id in &touched {
        let (_, body) = admin.get(&format!("/api/v1/applications/{id}")).await?;
        if body["events"].as_array().is_none_or(|e| e.len() < 2) {
            bail!("sync-1pct: case {id} lacks its comment at the county after the catch-up");
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pct_bytes = relay.traffic().bytes() - before;
    Ok(SyncRun {
        new_secs,
        new_exec_secs,
        new_wall_secs,
        new_done_up,
        new_done_down,
        new_bytes,
        new_stream,
        settle_bytes,
        idle_secs,
        idle_wall_secs,
        idle_bytes,
        idle_wire,
        pct_secs,
        pct_wall_secs,
        pct_bytes,
        pct_stream,
    })
}

/// `sync-edge`: 1,000 new cases (200 with `--quick`) over the emulated EDGE link (240 kbit/s
/// each way, 420 ms one way, 1% loss): wall time from the village's exec until the county
/// holds them all, divided by what the link allows, `bytes × 8 ÷ bandwidth + 3 RTT`. Bytes
/// are those at the relay (handshake and retransmissions included) until that moment, in
/// the busier direction: the relay shapes each direction on its own, and the county's
/// answers (acks, notice marks) cross the other way at the same time, so counting both
/// ways as if in series would flatter the ratio (it read 0.56–0.82 that way). Target: at
/// most 1.3.
async fn edge_figure(args: &Args, out: &mut std::fs::File, table: &mut String) -> Result<()> {
    let shape = yiciban_tests::relay::Shape::edge();
    let n = if args.quick { 200 } else { 1000 };
    let rate = shape.rate_bps.unwrap_or(1) as f64;
    let rtt = 2.0 * shape.delay.as_secs_f64();
    let mut runs = Vec::new();
    for run in 0..args.runs {
        let r = sync_run(n, run as u64 + 1, shape, true).await?;
        let busier = r.new_done_up.max(r.new_done_down);
        let floor = busier as f64 * 8.0 / rate + 3.0 * rtt;
        eprintln!(
            "sync-edge cases={n} run {}: {:.2} s, {} bytes up, {} down, floor {floor:.2} s, ratio {:.2}",
            run + 1,
            r.new_exec_secs,
            r.new_done_up,
            r.new_done_down,
            r.new_exec_secs / floor
        );
        runs.push((r.new_exec_secs, busier as f64, r.new_exec_secs / floor));
    }
    type Pick = fn(&(f64, f64, f64)) -> f64;
    let figures: [(&str, &str, Pick); 3] = [
        ("sync-edge.secs", "s", |r| r.0),
        ("sync-edge.bytes.busier", "bytes", |r| r.1),
        ("sync-edge.ratio", "x", |r| r.2),
    ];
    for (id, unit, pick) in figures {
        let mut values: Vec<f64> = runs.iter().map(pick).collect();
        let (median, min, max) = stats(&mut values);
        let line = json!({
            "id": id,
            "parameters": { "cases": n, "runs": args.runs, "link": "EDGE: 240 kbit/s, 840 ms RTT, 1% loss" },
            "median": median, "min": min, "max": max, "unit": unit,
            "target": if id == "sync-edge.ratio" { Some(1.3) } else { None },
        });
        writeln!(out, "{line}")?;
        table.push_str(&format!(
            "| {id} | {n} cases, EDGE relay | {median:.2} | {min:.2} | {max:.2} | {unit} |\n"
        ));
    }
    Ok(())
}

fn stats(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(|a, b| a.total_cmp(b));
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(spec) = &args.fan_in_worker {
        return yiciban_tests::fanin::worker(spec).await;
    }
    if let Some(n) = args.dump_workload {
        let cat = Catalog::parse(
            yiciban_core::DEMO_CATALOG,
            std::path::Path::new("catalog.toml"),
        )?;
        let item = cat.get(BENCH_ITEM).context("bench item")?;
        let mut w = Workload::new(args.seed);
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        for _ in 0..n {
            writeln!(stdout, "{}", w.application(item))?;
        }
        stdout.flush()?;
        return Ok(());
    }
    let cases = if args.quick { 320 } else { 3200 };
    if let Some(n) = args.ingest_burst {
        return ingest_burst(n, !args.one_commit).await;
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::fs::File::create(&args.out)?;
    let mut table = String::from(
        "| figure | parameters | median | min | max | unit |\n|---|---|---|---|---|---|\n",
    );
    let run_ingest = args.only.as_deref().is_none_or(|o| o == "ingest");
    let run_sync = args.only.as_deref().is_none_or(|o| o == "sync");
    let ingest_modes: &[(&str, bool)] = if run_ingest {
        &[("group-commit", true), ("one-commit-per-case", false)]
    } else {
        &[]
    };
    // The two commit modes take turns run by run, so a drift of this shared machine's disk
    // between minutes falls on both, and the ratio is taken within each pair of runs.
    let mut ingest_runs: std::collections::BTreeMap<(&str, usize), Vec<IngestRun>> =
        std::collections::BTreeMap::new();
    for clients in [1usize, 32] {
        for run in 0..args.runs {
            for &(label, group) in ingest_modes {
                let r = ingest(group, clients, cases, run as u64 + 1).await?;
                eprintln!(
                    "ingest {label} clients={clients} run {}: {:.0} cases/s p50 {:.2} ms p99 {:.2} ms",
                    run + 1,
                    r.rate,
                    r.p50_ms,
                    r.p99_ms
                );
                ingest_runs.entry((label, clients)).or_default().push(r);
            }
        }
    }
    for (&(label, clients), runs) in &ingest_runs {
        for (metric, unit, pick) in [
            (
                "rate",
                "cases/s",
                (|r: &IngestRun| r.rate) as fn(&IngestRun) -> f64,
            ),
            ("p50", "ms", |r: &IngestRun| r.p50_ms),
            ("p99", "ms", |r: &IngestRun| r.p99_ms),
        ] {
            let mut values: Vec<f64> = runs.iter().map(pick).collect();
            let (median, min, max) = stats(&mut values);
            let line = json!({
                "id": format!("ingest.{metric}"),
                "parameters": { "commit": label, "clients": clients, "cases": cases, "runs": args.runs },
                "median": median, "min": min, "max": max, "unit": unit,
            });
            writeln!(out, "{line}")?;
            table.push_str(&format!("| ingest {metric} | {label}, {clients} clients, {cases} cases | {median:.2} | {min:.2} | {max:.2} | {unit} |\n"));
        }
    }
    let sizes: &[usize] = match (run_sync, args.quick, &args.sync_sizes) {
        (false, _, _) => &[],
        (true, _, Some(sizes)) => sizes,
        (true, true, None) => &[200, 1000],
        (true, false, None) => &[1000, 10_000],
    };
    for &n in sizes {
        let mut runs = Vec::new();
        for run in 0..args.runs {
            let r = sync_run(n, run as u64 + 1, yiciban_tests::relay::Shape::CLEAN, false).await?;
            eprintln!("sync cases={n} run {}: {r:?}", run + 1);
            runs.push(r);
        }
        for (id, unit, pick) in [
            (
                "sync-new.secs",
                "s",
                (|r: &SyncRun| r.new_secs) as fn(&SyncRun) -> f64,
            ),
            ("sync-new.wall.secs", "s", |r: &SyncRun| r.new_wall_secs),
            ("sync-new.exec.secs", "s", |r: &SyncRun| r.new_exec_secs),
            ("sync-new.bytes", "bytes", |r: &SyncRun| r.new_bytes as f64),
            ("sync-new.stream.bytes", "bytes", |r: &SyncRun| {
                r.new_stream as f64
            }),
            ("sync-new.settle.bytes", "bytes", |r: &SyncRun| {
                r.settle_bytes as f64
            }),
            ("sync-idle.secs", "s", |r: &SyncRun| r.idle_secs),
            ("sync-idle.wall.secs", "s", |r: &SyncRun| r.idle_wall_secs),
            ("sync-idle.bytes", "bytes", |r: &SyncRun| {
                r.idle_bytes as f64
            }),
            ("sync-idle.wire.bytes", "bytes", |r: &SyncRun| {
                r.idle_wire as f64
            }),
            ("sync-1pct.secs", "s", |r: &SyncRun| r.pct_secs),
            ("sync-1pct.wall.secs", "s", |r: &SyncRun| r.pct_wall_secs),
            ("sync-1pct.bytes", "bytes", |r: &SyncRun| r.pct_bytes as f64),
            ("sync-1pct.stream.bytes", "bytes", |r: &SyncRun| {
                r.pct_stream as f64
            }),
        ] {
            let mut values: Vec<f64> = runs.iter().map(pick).collect();
            let (median, min, max) = stats(&mut values);
            let line = json!({
                "id": id,
                "parameters": { "cases": n, "runs": args.runs, "link": "loopback relay" },
                "median": median, "min": min, "max": max, "unit": unit,
            });
            writeln!(out, "{line}")?;
            table.push_str(&format!("| {id} | {n} cases, loopback relay | {median:.2} | {min:.2} | {max:.2} | {unit} |\n"));
        }
    }
    fan_in_figures(&args, &mut out, &mut table).await?;
    town_figures(&args, &mut out, &mut table).await?;
    county_year_figures(&args, &mut out, &mut table).await?;
    if args.only.as_deref().is_none_or(|o| o == "sync-edge") {
        edge_figure(&args, &mut out, &mut table).await?;
    }
    if let (Some(g), Some(b)) = (
        ingest_runs.get(&("group-commit", 32)),
        ingest_runs.get(&("one-commit-per-case", 32)),
    ) {
        // Each run's group-commit rate over the one-commit rate measured right after it.
        let mut ratios: Vec<f64> = g.iter().zip(b).map(|(g, b)| g.rate / b.rate).collect();
        let (median, min, max) = stats(&mut ratios);
        writeln!(
            out,
            "{}",
            json!({"id": "ingest.group_commit_ratio", "parameters": {"clients": 32, "paired_runs": ratios.len()}, "median": median, "min": min, "max": max, "unit": "x", "target": 3.0})
        )?;
        table.push_str(&format!("| ingest group-commit ÷ one-commit-per-case, run by run | 32 clients | {median:.2} | {min:.2} | {max:.2} | × (target ≥ 3) |\n"));
    }
    std::fs::write(&args.table, &table)?;
    println!("{table}");
    println!(
        "results: {} and {}",
        args.out.display(),
        args.table.display()
    );
    Ok(())
}

/// `fan-in`: one county, many simulated villages (several per worker process, each with its
/// own store, certificate and QUIC connection) each pushing new cases at once
/// (`yiciban_tests::fanin`): wall time until the county counts them all, and per village the
/// time until the county holds its cases (p50, p99). Target: 500 × 20 within 30 s.
async fn fan_in_figures(args: &Args, out: &mut std::fs::File, table: &mut String) -> Result<()> {
    use yiciban_tests::fanin::{FanInConfig, FanInRun, run_with};
    if args.only.as_deref().is_some_and(|o| o != "fan-in") {
        return Ok(());
    }
    let (villages, cases) = if args.quick { (50, 20) } else { (500, 20) };
    let mut runs = Vec::new();
    for run in 0..args.runs {
        let seed = run as u64 + 1;
        let mut cfg = FanInConfig::new(villages, cases, seed)?;
        cfg.workers = args.fan_in_workers;
        let stem = format!("target/bench/fan-in-{villages}x{cases}-{seed}");
        cfg.keep_logs = Some(PathBuf::from(stem));
        let r = run_with(&cfg).await?;
        eprintln!("fan-in {villages}x{cases} run {}: {r:?}", run + 1);
        runs.push(r);
    }
    for (id, pick) in [
        (
            "fan-in.wall.secs",
            (|r: &FanInRun| r.wall_secs) as fn(&FanInRun) -> f64,
        ),
        ("fan-in.village.p50.secs", |r: &FanInRun| r.p50_village_secs),
        ("fan-in.village.p99.secs", |r: &FanInRun| r.p99_village_secs),
    ] {
        let mut values: Vec<f64> = runs.iter().map(pick).collect();
        let (median, min, max) = stats(&mut values);
        let line = json!({
            "id": id,
            "parameters": {
                "villages": villages, "cases_per_village": cases,
                "workers": args.fan_in_workers, "runs": args.runs, "link": "loopback",
            },
            "median": median, "min": min, "max": max, "unit": "s", "target": 30.0,
        });
        writeln!(out, "{line}")?;
        table.push_str(&format!(
            "| {id} | {villages} villages × {cases} cases, {} workers, loopback | {median:.2} | {min:.2} | {max:.2} | s (target: all within 30) |\n",
            args.fan_in_workers
        ));
    }
    Ok(())
}

/// `cold-start` and `queue` (`yiciban_tests::coldstart`): a town node holding N cases, all
/// waiting for its review (`--quick` 10,000, else 100,000; filled once per size and seed and
/// cached under `target/bench/cache/`). Each run serves a fresh copy of that store (synced,
/// then dropped from the page cache so the node reads it from disk): the time
/// from exec to the first HTTP 200 (`GET /login`, polled every 2 ms), resident memory 1 s
/// after that and after the first queue page, then the queue page's round-trip time over 200
/// GETs by a logged-in reviewer (after 5 unmeasured) with the server's mean from `/metrics`.
/// Targets: under 0.5 s and 80 MB; p99 under 30 ms.
async fn town_figures(args: &Args, out: &mut std::fs::File, table: &mut String) -> Result<()> {
    use yiciban_tests::coldstart::{
        queue_page, queue_times, reviewer, rss_mb, start_town, town_folder, town_store,
    };
    let cold = args.only.as_deref().is_none_or(|o| o == "cold-start");
    let queue = args.only.as_deref().is_none_or(|o| o == "queue");
    if !cold && !queue {
        return Ok(());
    }
    let n = if args.quick { 10_000 } else { 100_000 };
    let fill = town_store(n, args.seed).await?;
    eprintln!(
        "town store: {n} cases, {:.1} MB, {}",
        fill.bytes as f64 / 1e6,
        if fill.cached {
            "from the cache".to_string()
        } else {
            format!("filled in {:.1} s", fill.secs)
        }
    );
    let mut rows: Vec<[f64; 6]> = Vec::new();
    for run in 0..args.runs {
        let dir = tempfile::tempdir()?;
        let port = free_base_port()?;
        let config = town_folder(dir.path(), &fill.path, port, true)?;
        let town = start_town(&config, port)?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_start = rss_mb(town.pid())?;
        let api = reviewer(&town.base_url).await?;
        let shown = queue_page(&api).await?;
        if shown != n {
            eprintln!("warning: the queue page says {shown} cases wait, not {n}");
        }
        let rss_queue = rss_mb(town.pid())?;
        let (p50, p99, server) = if queue {
            let (times, server) = queue_times(&api, 5, 200).await?;
            (
                percentile(&times, 0.50),
                percentile(&times, 0.99),
                server.unwrap_or(f64::NAN),
            )
        } else {
            (f64::NAN, f64::NAN, f64::NAN)
        };
        eprintln!(
            "town {n} run {}: start {:.3} s, rss {rss_start:.1} MB, after queue {rss_queue:.1} MB, queue p50 {p50:.2} ms p99 {p99:.2} ms (server mean {server:.2} ms)",
            run + 1,
            town.start_secs
        );
        let start_secs = town.start_secs;
        drop(town);
        let _ = std::fs::copy(
            dir.path().join("node.log"),
            format!("target/bench/town-{n}-{}.log", run + 1),
        );
        rows.push([start_secs, rss_start, rss_queue, p50, p99, server]);
    }
    let figures: &[(&str, usize, &str, Option<f64>, bool)] = &[
        ("cold-start.secs", 0, "s", Some(0.5), cold),
        ("cold-start.rss.start.mb", 1, "MB", Some(80.0), cold),
        ("cold-start.rss.queue.mb", 2, "MB", Some(80.0), cold),
        ("queue.p50.ms", 3, "ms", None, queue),
        ("queue.p99.ms", 4, "ms", Some(30.0), queue),
        ("queue.server.mean.ms", 5, "ms", None, queue),
    ];
    for &(id, col, unit, target, wanted) in figures {
        if !wanted {
            continue;
        }
        let mut values: Vec<f64> = rows.iter().map(|r| r[col]).collect();
        let (median, min, max) = stats(&mut values);
        let line = json!({
            "id": id,
            "parameters": {
                "cases": n, "runs": args.runs, "role": "town", "queue_requests": 200,
                "store_mb": fill.bytes as f64 / 1e6, "fill_secs": fill.secs, "fill_cached": fill.cached,
                "store_page_cache": "dropped before exec",
            },
            "median": median, "min": min, "max": max, "unit": unit, "target": target,
        });
        writeln!(out, "{line}")?;
        let target = target.map_or(String::new(), |t| format!(" (target < {t})"));
        let p = if unit == "s" { 3 } else { 2 };
        table.push_str(&format!(
            "| {id} | town, {n} cases in its queue | {median:.p$} | {min:.p$} | {max:.p$} | {unit}{target} |\n"
        ));
    }
    Ok(())
}

/// `county-year` (`yiciban_tests::countyyear`): a county holding a year of a county's cases,
/// 1,000,000 from 500 villages (`--quick` 100,000 from 50; filled once and cached). Each run
/// serves a fresh copy of the store, dropped from the page cache: exec to the first HTTP 200,
/// resident memory 1 s after it and after every page below, and the round-trip p99 of the
/// county admin's queue, supervision, follow-ups and node table, each as a page and as JSON
/// (100 GETs after 5 unmeasured), and of the statistics (20 after 2). Targets: start under
/// 1 s, memory under 300 MB, every page under 50 ms, statistics under 1 s.
async fn county_year_figures(
    args: &Args,
    out: &mut std::fs::File,
    table: &mut String,
) -> Result<()> {
    use yiciban_tests::coldstart::{rss_mb, start_town};
    use yiciban_tests::countyyear::{ADMIN, county_folder, county_store};
    if args.only.as_deref().is_some_and(|o| o != "county-year") {
        return Ok(());
    }
    let (n, villages) = if args.quick {
        (100_000, 50)
    } else {
        (1_000_000, 500)
    };
    let fill = county_store(n, villages, args.seed).await?;
    eprintln!(
        "county store: {n} cases from {villages} villages, {:.1} MB, {}",
        fill.bytes as f64 / 1e6,
        if fill.cached {
            "from the cache".to_string()
        } else {
            format!("filled in {:.1} s", fill.secs)
        }
    );
    // (figure, path, requests, target ms)
    let pages: [(&str, &str, usize, f64); 10] = [
        ("queue.page", "/queue", 100, 50.0),
        ("queue.json", "/api/v1/queue", 100, 50.0),
        ("supervision.page", "/supervision", 100, 50.0),
        ("supervision.json", "/api/v1/supervision", 100, 50.0),
        ("followups.page", "/followups", 100, 50.0),
        ("followups.json", "/api/v1/followups", 100, 50.0),
        ("nodes.page", "/nodes", 100, 50.0),
        ("nodes.json", "/api/v1/nodes", 100, 50.0),
        ("stats.page", "/stats", 20, 1000.0),
        ("stats.json", "/api/v1/stats", 20, 1000.0),
    ];
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for run in 0..args.runs {
        let dir = tempfile::tempdir_in("target/bench")?;
        let port = free_base_port()?;
        let config = county_folder(dir.path(), &fill.path, port, true)?;
        let county = start_town(&config, port)?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_start = rss_mb(county.pid())?;
        let api = Api::login(&county.base_url, ADMIN, DEMO_PASSWORD).await?;
        let mut row = vec![county.start_secs, rss_start];
        for (name, path, requests, _) in pages {
            let warm = if requests > 20 { 5 } else { 2 };
            let mut times = Vec::with_capacity(requests);
            for i in 0..warm + requests {
                let t = Instant::now();
                let (status, body) = api.get_text(path).await;
                let took = t.elapsed();
                if status != 200 {
                    bail!(
                        "GET {path}: {status} {}",
                        body.chars().take(300).collect::<String>()
                    );
                }
                if i >= warm {
                    times.push(took);
                }
            }
            times.sort();
            let p99 = percentile(&times, 0.99);
            eprintln!(
                "county-year {n} run {}: {name} p50 {:.2} ms p99 {p99:.2} ms",
                run + 1,
                percentile(&times, 0.5)
            );
            row.push(p99);
        }
        row.push(rss_mb(county.pid())?);
        eprintln!(
            "county-year {n} run {}: start {:.3} s, rss {rss_start:.1} MB, after the pages {:.1} MB",
            run + 1,
            county.start_secs,
            row[row.len() - 1]
        );
        drop(county);
        let _ = std::fs::copy(
            dir.path().join("node.log"),
            format!("target/bench/county-{n}-{}.log", run + 1),
        );
        rows.push(row);
    }
    let mut figures: Vec<(String, usize, &str, f64)> = vec![
        ("county-year.cold-start.secs".into(), 0, "s", 1.0),
        ("county-year.rss.start.mb".into(), 1, "MB", 300.0),
    ];
    for (i, (name, _, _, target)) in pages.iter().enumerate() {
        figures.push((format!("county-year.{name}.p99.ms"), 2 + i, "ms", *target));
    }
    figures.push((
        "county-year.rss.pages.mb".into(),
        2 + pages.len(),
        "MB",
        300.0,
    ));
    for (id, col, unit, target) in figures {
        let mut values: Vec<f64> = rows.iter().map(|r| r[col]).collect();
        let (median, min, max) = stats(&mut values);
        let line = json!({
            "id": id,
            "parameters": {
                "cases": n, "villages": villages, "runs": args.runs, "role": "county",
                "store_mb": fill.bytes as f64 / 1e6, "fill_secs": fill.secs, "fill_cached": fill.cached,
                "store_page_cache": "dropped before exec",
            },
            "median": median, "min": min, "max": max, "unit": unit, "target": target,
        });
        writeln!(out, "{line}")?;
        let p = if unit == "s" { 3 } else { 2 };
        let met = if median < target { "met" } else { "NOT met" };
        table.push_str(&format!(
            "| {id} | county, {n} cases from {villages} villages | {median:.p$} | {min:.p$} | {max:.p$} | {unit} (target < {target}: {met}) |\n"
        ));
    }
    Ok(())
}
