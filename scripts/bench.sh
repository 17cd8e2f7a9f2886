#!/usr/bin/env bash
# Runs the benchmark suite of ../shared/BENCHMARKS.md in release mode.
#   scripts/bench.sh           full sizes, 3 runs per figure
#   scripts/bench.sh --quick   small sizes, a few minutes
# Writes target/bench/results.jsonl (one JSON line per figure) and target/bench/results.md.
# Figures so far: ingest (1 and 32 clients, group commit beside one commit per case);
# sync-new, sync-idle, sync-1pct at the relay (`--only ingest|sync` runs one family).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p yiciban -p yiciban-tests --bin yiciban --bin yiciban-bench
export YICIBAN_BIN="$PWD/target/release/yiciban"
exec target/release/yiciban-bench --out target/bench/results.jsonl --table target/bench/results.md "$@"
