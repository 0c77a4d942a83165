#!/usr/bin/env bash
# The one test command (README, CI): installs what the tests need, then lints and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Toolchain components the lints need (present on most rustup installs; cheap when they are).
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# fakepve (PyPI): the fake Proxmox VE API the provisioner tests run against.
python3 -c 'import fakepve, cryptography' 2>/dev/null || python3 -m pip install --quiet 'fakepve[crypto]>=0.5,<0.6'

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
