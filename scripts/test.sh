#!/usr/bin/env bash
# The one test command (README, CI): installs what the tests need, then lints and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Toolchain components the lints need (present on most rustup installs; cheap when they are).
rustup component add rustfmt clippy >/dev/null 2>&1 || true

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
