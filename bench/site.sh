#!/usr/bin/env bash
# Site benchmark, one run, side by side on this machine (bench/site.py does the measuring):
#
#   session start   `POST /api/sessions {"wait": true}` to nbrt serve (container created with
#                   the runtime's limits, labels, home volume and token, started, and
#                   `<prefix>/api` answering through the site's readiness check) against a
#                   plain `docker run -d` of the same image with the same limits, environment
#                   and volume, polled with curl-like GETs every 10 ms until its first /api 200.
#                   Alternating order, one discarded warm-up each; median and min of RUNS.
#   warm start      the same POST to a runtime with warmPool 2, once both members are ready
#                   (the user's home mounted into a started session; no container start).
#   API latency     wrk on loopback against nbrt serve: GET /api/runtimes (30 runtimes) and
#                   GET /api/sessions (sessions running), with /api/health (no auth, no
#                   query) as the floor; p50 and p99 from wrk --latency.
#
# The image is the stock jupyter stack built by nbrt: the test fixture store
# (target/nbrt-fixtures/stock-store) when the tests built it, else built here into
# $BENCH_WORK/store. It is loaded into Docker before timing, so neither side loads anything.
#
# Needs: scripts/setup (docker.io, wrk, mmdebstrap, runc, uv), root.
# NBRT_BENCH_IMAGE: use this Docker image instead of the stock jupyter stack.
# RUNS (default 5), NBRT_BIN, WRK_SECONDS (default 10), WRK_CONNECTIONS (default 8).
# Output: bench/results/site-<date>-<hhmm>.md (a second run the same day does not overwrite the first).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work="${BENCH_WORK:-$root/target/bench-site}"
mkdir -p "$work" bench/results
command -v wrk >/dev/null || { echo "bench: wrk is missing (scripts/setup installs it)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "bench: no Docker engine (run scripts/setup)" >&2; exit 1; }
# NBRT_BIN: an nbrt binary to use instead of building target/release/nbrt.
. bench/lib.sh
bench_nbrt

store="${NBRT_BENCH_STORE:-}"
if [ -n "${NBRT_BENCH_IMAGE:-}" ]; then
  # An image already in Docker (e.g. while the stock stack does not build); empty store.
  store="${store:-$work/store}"
  image=$(docker image inspect --format '{{.Id}}' "$NBRT_BENCH_IMAGE")
  image_note="Docker image $NBRT_BENCH_IMAGE"
else
  if [ -z "$store" ]; then
    bench_jupyter_store "$work"
  fi
  "$nbrt" --store "$store" load jupyter:latest -t nbrt-bench/jupyter:latest >/dev/null
  image=$(docker image inspect --format '{{.Id}}' nbrt-bench/jupyter:latest)
  image_note="the stock jupyter stack built by nbrt (store $store)"
fi

exec python3 bench/site.py --nbrt "$nbrt" --store "$store" --image "$image" --work "$work" \
  --runs "${RUNS:-5}" --wrk-seconds "${WRK_SECONDS:-10}" --wrk-connections "${WRK_CONNECTIONS:-8}" \
  --image-note "$image_note" --out "bench/results/site-$(date -u +%Y-%m-%d-%H%M).md"
