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
    /// Run one family of figures only: `ingest` or `sync`.
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

/// One ingest measurement on a fresh node.
async fn ingest(group_commit: bool, clients: usize, cases: usize, seed: u64) -> Result<IngestRun> {
    let dir = tempfile::tempdir()?;
    let base = free_base_port()?;
    // `demo` writes the config and creates the users; restart with the store settings wanted.
    let mut node = NodeProcess::village(dir.path(), base)?;
    node.kill9()?;
    drop(node);
    let config = dir.path().join("village.toml");
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

/// Sync figures at one size: `sync-new` (N cases filed while the county was down, then
/// the link comes up: time until the county holds them all, bytes at the relay), `sync-idle`
/// (the village restarts with nothing changed: bytes both ways, including the QUIC and TLS
/// handshake) and `sync-1pct` (1% of cases get a comment while the link is dark: time and
/// bytes after it heals). Between the figures the link is left to settle (see [`settle`]);
/// what crosses meanwhile — the county's `notice_sent` marks on the new cases, the village's
/// audit segments and health reports — is `sync-new.settle.bytes`.
#[derive(Debug, Clone, Copy)]
struct SyncRun {
    new_secs: f64,
    new_bytes: u64,
    settle_bytes: u64,
    idle_bytes: u64,
    pct_secs: f64,
    pct_bytes: u64,
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl AsyncFnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ok().await {
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
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

async fn sync_run(cases: usize, seed: u64) -> Result<SyncRun> {
    use yiciban_tests::cluster::{
        COUNTY_ID, VILLAGE_ID, add_user, enroll, folder, free_udp_port, init_county, node_toml,
        token,
    };
    use yiciban_tests::relay::{Relay, Shape};
    let root = tempfile::tempdir()?;
    let base = free_base_port()?;
    let quic = free_udp_port()?;
    let relay = Relay::start(quic, Shape::CLEAN, seed)?;
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
    let village = NodeProcess::serve(&village_cfg, base + 2)?;
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
    let before = relay.traffic().bytes();
    let start = Instant::now();
    let _county = NodeProcess::serve(&county_cfg, base)?;
    let admin = Api::login(&format!("http://127.0.0.1:{base}"), "admin", DEMO_PASSWORD).await?;
    wait_for("sync-new", Duration::from_secs(600), async || {
        admin.case_count().await.unwrap_or(0) >= cases as u64
    })
    .await?;
    let new_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let new_bytes = relay.traffic().bytes() - before;
    let settle_bytes = settle(&relay).await?;

    // Idle: the village restarts with nothing changed.
    let mut village = village;
    village.kill9()?;
    drop(village);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = relay.traffic().bytes();
    let village = NodeProcess::serve(&village_cfg, base + 2)?;
    let clerk = Api::login(&village.base_url, "clerk", DEMO_PASSWORD).await?;
    wait_for("sync-idle", Duration::from_secs(60), async || {
        let (_, h) = clerk.get("/api/v1/health").await.unwrap_or_default();
        h["links"][0]["last_sync_ms"].is_u64()
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_bytes = relay.traffic().bytes() - before;
    settle(&relay).await?;

    // 1%: comments recorded while the link is dark, then it heals.
    relay.set_blackout(true);
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = relay.traffic().bytes();
    let start = Instant::now();
    relay.set_blackout(false);
    let last = touched.last().map(|s| s.to_string()).unwrap_or_default();
    wait_for("sync-1pct", Duration::from_secs(300), async || {
        let (_, body) = admin
            .get(&format!("/api/v1/applications/{last}"))
            .await
            .unwrap_or_default();
        body["events"].as_array().is_some_and(|e| e.len() >= 2)
    })
    .await?;
    for id in &touched {
        wait_for(
            "sync-1pct (every case)",
            Duration::from_secs(300),
            async || {
                let (_, body) = admin
                    .get(&format!("/api/v1/applications/{id}"))
                    .await
                    .unwrap_or_default();
                body["events"].as_array().is_some_and(|e| e.len() >= 2)
            },
        )
        .await?;
    }
    let pct_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pct_bytes = relay.traffic().bytes() - before;
    Ok(SyncRun {
        new_secs,
        new_bytes,
        settle_bytes,
        idle_bytes,
        pct_secs,
        pct_bytes,
    })
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
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::fs::File::create(&args.out)?;
    let mut table = String::from(
        "| figure | parameters | median | min | max | unit |\n|---|---|---|---|---|---|\n",
    );
    let mut medians = std::collections::BTreeMap::new();
    let run_ingest = args.only.as_deref().is_none_or(|o| o == "ingest");
    let run_sync = args.only.as_deref().is_none_or(|o| o == "sync");
    let ingest_modes: &[(&str, bool)] = if run_ingest {
        &[("group-commit", true), ("one-commit-per-case", false)]
    } else {
        &[]
    };
    for &(label, group) in ingest_modes {
        for clients in [1usize, 32] {
            let mut runs = Vec::new();
            for run in 0..args.runs {
                let r = ingest(group, clients, cases, run as u64 + 1).await?;
                eprintln!(
                    "ingest {label} clients={clients} run {}: {:.0} cases/s p50 {:.2} ms p99 {:.2} ms",
                    run + 1,
                    r.rate,
                    r.p50_ms,
                    r.p99_ms
                );
                runs.push(r);
            }
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
                if metric == "rate" {
                    medians.insert((label, clients), median);
                }
            }
        }
    }
    let sizes: &[usize] = match (run_sync, args.quick) {
        (false, _) => &[],
        (true, true) => &[200, 1000],
        (true, false) => &[1000, 10_000],
    };
    for &n in sizes {
        let mut runs = Vec::new();
        for run in 0..args.runs {
            let r = sync_run(n, run as u64 + 1).await?;
            eprintln!("sync cases={n} run {}: {r:?}", run + 1);
            runs.push(r);
        }
        for (id, unit, pick) in [
            (
                "sync-new.secs",
                "s",
                (|r: &SyncRun| r.new_secs) as fn(&SyncRun) -> f64,
            ),
            ("sync-new.bytes", "bytes", |r: &SyncRun| r.new_bytes as f64),
            ("sync-new.settle.bytes", "bytes", |r: &SyncRun| {
                r.settle_bytes as f64
            }),
            ("sync-idle.bytes", "bytes", |r: &SyncRun| {
                r.idle_bytes as f64
            }),
            ("sync-1pct.secs", "s", |r: &SyncRun| r.pct_secs),
            ("sync-1pct.bytes", "bytes", |r: &SyncRun| r.pct_bytes as f64),
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
    if let (Some(g), Some(b)) = (
        medians.get(&("group-commit", 32)),
        medians.get(&("one-commit-per-case", 32)),
    ) {
        let ratio = g / b;
        writeln!(
            out,
            "{}",
            json!({"id": "ingest.group_commit_ratio", "parameters": {"clients": 32}, "median": ratio, "min": ratio, "max": ratio, "unit": "x", "target": 3.0})
        )?;
        table.push_str(&format!("| ingest group-commit ÷ one-commit-per-case | 32 clients | {ratio:.2} | | | × (target ≥ 3) |\n"));
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
