#!/usr/bin/env bash
# Latency and throughput of headroom's routes over TLS keep-alive, at concurrency 1, 16 and 64,
# beside the trivial floor (GET /healthz on the same TLS listener). Needs wrk (Debian package).
#   bench/run.sh SNAPSHOT [SECONDS]
# Starts `target/release/headroom serve --snapshot SNAPSHOT` and prints one line per run. Then
# serves the same snapshot from bench/tls_floor.rs — the product's listener and routes with the
# harness-only /echo beside them — and prints /validate's and /mutate's requests per second as a
# share of /echo's: the same TLS listener reading the same body and answering a fixed review.
set -euo pipefail
cd "$(dirname "$0")/.."
snapshot=${1:?snapshot file}
secs=${2:-10}
bin=target/release/headroom
python3 bench/make_bodies.py
$bin serve --snapshot "$snapshot" --listen 127.0.0.1:18443 --admin-listen 127.0.0.1:19090 >/tmp/bench-serve.log 2>&1 &
serve=$!
trap 'kill $serve 2>/dev/null' EXIT
until curl -sf 127.0.0.1:19090/readyz >/dev/null; do sleep 0.5; done
echo "resident after load: $(grep VmRSS /proc/$serve/status | awk '{print $2/1024 " MiB"}')"
# First decision builds the accounting view once; warm it before measuring.
curl -sk -o /dev/null -H 'content-type: application/json' --data @/tmp/bench-pod-review.json https://127.0.0.1:18443/validate
base=https://127.0.0.1:18443
run() { # route body conc
  local route=$1 body=$2 conc=$3 threads=2
  [ "$conc" -ge 2 ] || threads=1
  local args=(-t"$threads" -c"$conc" -d"${secs}s" --latency)
  if [ "$body" != - ]; then args+=(-s bench/post.lua); fi
  BODY=$body wrk "${args[@]}" "$base$route" >/tmp/wrk.out
  awk -v r="$route" -v c="$conc" '
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    / requests in / {n=$1}
    /Non-2xx/ {bad=$NF}
    END {printf "%-22s c=%-3s p50=%-9s p99=%-9s %9s req/s  (%s requests, non-2xx %s)\n", r, c, p50, p99, rps, n, bad+0}' /tmp/wrk.out
  awk '/Requests\/sec/ {print $2}' /tmp/wrk.out >/tmp/wrk.rps
}
for conc in 1 16 64; do
  run /healthz - "$conc"
  run /validate /tmp/bench-pod-review.json "$conc"
  run /mutate /tmp/bench-pod-review.json "$conc"
  run /extender/filter /tmp/bench-extender-args.json "$conc"
  run /extender/prioritize /tmp/bench-extender-args.json "$conc"
done
echo "resident after the runs: $(grep VmRSS /proc/$serve/status | awk '{print $2/1024 " MiB"}')"
kill $serve; wait $serve 2>/dev/null || true

echo "--- the floor: bench/tls_floor.rs (product listener and routes, /echo beside them)"
floor_bin=$(cargo bench --bench tls_floor --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "tls_floor" and m.get("executable"):
        print(m["executable"])')
"$floor_bin" "$snapshot" 127.0.0.1:18445 >/tmp/bench-floor.log 2>&1 &
floor=$!
trap 'kill $floor 2>/dev/null' EXIT
base=https://127.0.0.1:18445
until curl -sfk -o /dev/null $base/healthz; do sleep 0.5; done
curl -sk -o /dev/null -H 'content-type: application/json' --data @/tmp/bench-pod-review.json $base/validate
# The server's own CPU (user + system ticks from /proc) per request answered, around one run.
cpu_ticks() { awk '{print $14 + $15}' /proc/$floor/stat; }
measured() { # route conc
  local before; before=$(cpu_ticks)
  run "$1" /tmp/bench-pod-review.json "$2"
  awk -v t="$(( $(cpu_ticks) - before ))" -v hz="$(getconf CLK_TCK)" -v n="$(awk '/ requests in / {print $1}' /tmp/wrk.out)" \
    'BEGIN {printf "  server CPU per request: %.1f us\n", t / hz * 1e6 / n}'
}
for conc in 1 16 64; do
  measured /echo "$conc"; echo_rps=$(cat /tmp/wrk.rps)
  for route in /validate /mutate; do
    measured $route "$conc"
    awk -v r=$route -v c="$conc" -v a="$(cat /tmp/wrk.rps)" -v e="$echo_rps" \
      'BEGIN {printf "  %s at c=%s: %.2f of /echo\n", r, c, a / e}'
  done
done
