#!/usr/bin/env bash
# Soak: sustained mixed load on `headroom serve` for SECONDS (default 600), then checks that no
# request failed and that resident memory stayed flat. Needs wrk (Debian package) and a release
# build.
#   bench/soak.sh SNAPSHOT [SECONDS]
# Load: /validate and /mutate at 4 connections each, /extender/filter and /extender/prioritize
# at 2 each (bodies from bench/make_bodies.py), and a /metrics scrape every 5 s, all at once.
# Resident memory is sampled every 10 s. "Flat": the largest sample of the last third of the
# run exceeds the largest of the first third by at most 5% (allocator high-water marks settle
# in the first minutes; a leak keeps growing).
set -euo pipefail
cd "$(dirname "$0")/.."
snapshot=${1:?snapshot file}
secs=${2:-600}
bin=target/release/headroom
out=${SOAK_OUT:-/tmp/headroom-soak}
mkdir -p "$out"
python3 bench/make_bodies.py
$bin serve --snapshot "$snapshot" --listen 127.0.0.1:18443 --admin-listen 127.0.0.1:19090 >"$out/serve.log" 2>&1 &
serve=$!
pids=()
trap 'kill $serve "${pids[@]}" 2>/dev/null || true' EXIT
until curl -sf 127.0.0.1:19090/readyz >/dev/null; do sleep 0.5; done
curl -sk -o /dev/null -H 'content-type: application/json' --data @/tmp/bench-pod-review.json https://127.0.0.1:18443/validate

load() { # name route body conns
  BODY=$3 wrk -t1 -c"$4" -d"${secs}s" --latency -s bench/post.lua "https://127.0.0.1:18443$2" >"$out/wrk-$1.out" 2>&1 &
  pids+=($!)
}
load validate /validate /tmp/bench-pod-review.json 4
load mutate /mutate /tmp/bench-pod-review.json 4
load filter /extender/filter /tmp/bench-extender-args.json 2
load prioritize /extender/prioritize /tmp/bench-extender-args.json 2

: >"$out/rss"
scrapes=0 scrape_failures=0
start=$SECONDS
while [ $((SECONDS - start)) -lt "$secs" ]; do
  for _ in 1 2; do
    if curl -sf -o /dev/null 127.0.0.1:19090/metrics; then scrapes=$((scrapes + 1)); else scrape_failures=$((scrape_failures + 1)); fi
    sleep 5
  done
  echo "$((SECONDS - start)) $(awk '/VmRSS/ {print $2}' /proc/$serve/status)" >>"$out/rss"
done
wait "${pids[@]}"
pids=()

failed=0
for f in "$out"/wrk-*.out; do
  name=$(basename "$f" .out)
  requests=$(awk '/ requests in / {print $1}' "$f")
  errors=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$f")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$f")
  rps=$(awk '/Requests\/sec/ {print $2}' "$f")
  p99=$(awk '/^ +99%/ {print $2}' "$f")
  printf '%-16s %10s requests  %9s req/s  p99 %-8s socket errors %s  non-2xx %s\n' \
    "$name" "$requests" "$rps" "$p99" "${errors:-0}" "${non2xx:-0}"
  if [ "${errors:-0}" != 0 ] || [ "${non2xx:-0}" != 0 ] || [ -z "$requests" ]; then failed=1; fi
done
echo "metrics scrapes: $scrapes ok, $scrape_failures failed"
[ "$scrape_failures" = 0 ] || failed=1
kill -0 $serve 2>/dev/null || { echo "headroom exited during the soak"; failed=1; }

n=$(wc -l <"$out/rss")
third=$((n / 3))
first=$(head -n "$third" "$out/rss" | awk 'BEGIN {m = 0} $2 > m {m = $2} END {print m}')
last=$(tail -n "$third" "$out/rss" | awk 'BEGIN {m = 0} $2 > m {m = $2} END {print m}')
echo "resident (MiB), every 10 s: $(awk '{printf "%.0f ", $2 / 1024}' "$out/rss")"
awk -v a="$first" -v b="$last" 'BEGIN {printf "resident peak: first third %.1f MiB, last third %.1f MiB (%+.1f%%)\n", a / 1024, b / 1024, (b - a) * 100 / a}'
if awk -v a="$first" -v b="$last" 'BEGIN {exit !(b > a * 1.05)}'; then
  echo "memory grew by more than 5%"
  failed=1
fi
if [ "$failed" = 0 ]; then echo "soak: clean"; else echo "soak: FAILED"; fi
exit "$failed"
