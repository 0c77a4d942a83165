#!/usr/bin/env bash
# Time from start to `/readyz` 200 and resident memory a second later, for `serve --snapshot`.
#   bench/startup.sh SNAPSHOT [RUNS] [BINARY...]
# With several binaries (e.g. an old build copied aside), runs alternate between them so that
# both see the same hour of this machine. Prints the snapshot read and accounting build times
# that `serve` logs.
set -euo pipefail
cd "$(dirname "$0")/.."
snapshot=${1:?snapshot file}
runs=${2:-3}
shift $(( $# >= 2 ? 2 : $# ))
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(target/release/headroom)
for _ in $(seq "$runs"); do
  for bin in "${bins[@]}"; do
    start=$(date +%s%N)
    MALLOC_ARENA_MAX=2 NO_COLOR=1 "$bin" serve --snapshot "$snapshot" \
      --listen 127.0.0.1:18443 --admin-listen 127.0.0.1:19090 >/tmp/bench-startup.log 2>&1 &
    pid=$!
    until curl -sf 127.0.0.1:19090/readyz >/dev/null 2>&1; do
      kill -0 $pid 2>/dev/null || { cat /tmp/bench-startup.log; exit 1; }
      sleep 0.02
    done
    ready_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    sleep 1
    rss=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' /proc/$pid/status)
    kill $pid; wait $pid 2>/dev/null || true
    load=$(grep -o 'elapsed_ms=[0-9]*' /tmp/bench-startup.log | head -1 | cut -d= -f2)
    built=$(grep -o 'built_ms=[0-9]*' /tmp/bench-startup.log | head -1 | cut -d= -f2)
    printf '%-40s /readyz %5d ms  (read %s ms, built %s ms)  resident %s MiB\n' \
      "$bin" "$ready_ms" "${load:-?}" "${built:-?}" "$rss"
  done
done
