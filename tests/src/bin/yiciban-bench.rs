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
    #[arg(long, default_value = "target/bench/results.jsonl")]
    out: PathBuf,
    #[arg(long, default_value = "target/bench/results.md")]
    table: PathBuf,
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
    let mut node = NodeProcess::demo(dir.path(), base)?;
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
    let cases = if args.quick { 320 } else { 3200 };
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::fs::File::create(&args.out)?;
    let mut table = String::from(
        "| figure | parameters | median | min | max | unit |\n|---|---|---|---|---|---|\n",
    );
    let mut medians = std::collections::BTreeMap::new();
    for (label, group) in [("group-commit", true), ("one-commit-per-case", false)] {
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
