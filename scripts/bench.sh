#!/usr/bin/env bash
# Runs the benchmark suite in release mode (the figures and their targets: docs/bench.md).
#   scripts/bench.sh           full sizes, 3 runs per figure
#   scripts/bench.sh --quick   small sizes, a few minutes
#   scripts/bench.sh --only F  one family: ingest, sync, sync-edge, fan-in, cold-start, queue
#                              or county-year
# Writes target/bench/results.jsonl (one JSON line per figure) and target/bench/results.md.
# Figures: ingest (1 and 32 clients, group commit beside one commit per case); sync-new,
# sync-idle, sync-1pct at the relay; cold-start and queue (a town holding 100,000 cases);
# county-year (a county holding a year of 1,000,000 cases: start, memory, console pages);
# then the same sync figures for automerge-repo and PouchDB (scripts/peers), and a table of
# ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p yiciban -p yiciban-tests --bin yiciban --bin yiciban-bench
export YICIBAN_BIN="$PWD/target/release/yiciban"
target/release/yiciban-bench --out target/bench/results.jsonl --table target/bench/results.md "$@"

# The peers (scripts/peers/README.md): automerge-repo and PouchDB on the same generated cases,
# installed here from the npm registry at the versions pinned in scripts/peers/package-lock.json.
quick=""; runs=""; only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --runs) runs="$2"; shift ;;
    --runs=*) runs="${1#--runs=}" ;;
    --only) only="$2"; shift ;;
    --only=*) only="${1#--only=}" ;;
  esac
  shift
done
# The peers only run the sync figures.
case "$only" in ingest|sync-edge|fan-in|cold-start|queue|county-year) exit 0 ;; esac
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq nodejs npm
fi
# `npm install` (not `npm ci`): npm 11 refuses this lock file in `npm ci` for optional platform
# packages of cbor-extract it never records; `install` takes the locked versions all the same.
[ -f scripts/peers/node_modules/.package-lock.json ] ||
  (cd scripts/peers && npm install --no-audit --no-fund --no-save)
if [ -n "$quick" ]; then max=1000; runs="${runs:-1}"; else max=10000; runs="${runs:-3}"; fi
for seed in $(seq 1 "$runs"); do
  target/release/yiciban-bench --dump-workload "$max" --seed "$seed" >"target/bench/workload-$seed.jsonl"
done
peer_args=(--runs "$runs" --workload 'target/bench/workload-{seed}.jsonl')
[ -n "$quick" ] && peer_args+=(--quick)
for peer in automerge-repo pouchdb; do
  node "scripts/peers/$peer.js" "${peer_args[@]}" | tee -a target/bench/results.jsonl
done
{
  echo
  echo "## Sync beside the peers (ratio = yiciban ÷ peer)"
  echo
  node scripts/peers/table.js target/bench/results.jsonl
} | tee -a target/bench/results.md
