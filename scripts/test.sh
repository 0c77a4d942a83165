#!/usr/bin/env bash
# The one test command (README, CI): installs what the tests need, then lints and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Toolchain components the lints need (present on most rustup installs; cheap when they are).
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# fakepve (PyPI): the fake Proxmox VE API the provisioner tests run against.
python3 -c 'import fakepve, cryptography' 2>/dev/null || python3 -m pip install --quiet 'fakepve[crypto]>=0.5,<0.6'

# promtool and prometheus (Debian package prometheus): alert rule checks, unit tests, and one
# test with a real Prometheus scraping headroom. Recommends are not needed.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# kubernetes-validate (PyPI) checks the rendered manifests against the Kubernetes schema;
# kubectl renders them (kustomize is built in).
python3 -c 'import kubernetes_validate' 2>/dev/null || python3 -m pip install --quiet 'kubernetes-validate>=1.33'
if ! command -v kubectl >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi

# curl and openssl: real TLS peers for the listener tests (client certificates, CA bundles).
if ! command -v curl >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl openssl >/dev/null
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
