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
