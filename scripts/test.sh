#!/usr/bin/env bash
# Installs what the tests need and runs every test: format, lints, unit, property,
# cross-process and browser tests. CI (.ci/run) calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."

# Browser tests drive Debian's Chromium through chromedriver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "installing chromium and chromium-driver"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver
fi
# Legal-time tests run again under faketime on each day of one week.
if ! command -v faketime >/dev/null; then
  echo "installing faketime"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq faketime
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build the node binary the cross-process tests run"
cargo build -p yiciban
echo "== tests"
export YICIBAN_BIN="$PWD/target/debug/yiciban"
cargo test --workspace --all-targets
cargo test --workspace --doc

# Deadlines, statistics and follow-ups count working days from today, so a test can hold on
# one weekday and fail on another. Run those tests again with the wall clock set to each day
# of one week, at 11:00 and at 01:00 China time (03:00 and 17:00 UTC: the UTC date differs
# from the local one). Only the wall clock moves; timers keep the real monotonic clock.
echo "== legal-time tests on each day of a week (faketime)"
# The lib test executables of the run above (the same build, so nothing compiles again).
lib_tests() {
  cargo test --workspace --all-targets --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]:
        print(m["target"]["name"], m["executable"])'
}
LIB_TESTS="$(lib_tests)"
CORE_TESTS="$(awk '$1 == "yiciban_core" {print $2}' <<<"$LIB_TESTS")"
WEB_TESTS="$(awk '$1 == "yiciban_web" {print $2}' <<<"$LIB_TESTS")"
[ -x "$CORE_TESTS" ] && [ -x "$WEB_TESTS" ] || { echo "lib test executables not found"; exit 1; }
for day in 07 08 09 10 11 12 13; do
  for hour in 03 17; do
    at="2026-12-$day $hour:00:00"
    echo "-- $at UTC"
    DONT_FAKE_MONOTONIC=1 faketime "$at" "$CORE_TESTS" -q \
      calendar:: deadline:: stats:: rating:: notice:: queue:: health::
    DONT_FAKE_MONOTONIC=1 faketime "$at" "$WEB_TESTS" -q
  done
done
