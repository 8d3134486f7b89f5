#!/usr/bin/env bash
# Swarm benchmark on the lab (`scripts/swarm-lab up`), one run, side by side (bench/swarm.py
# does the measuring):
#
#   session start   hyperfine, RUNS runs each after a warm-up that put the image on every
#                   node, a `--prepare` stopping the last one (not timed):
#                   - nbrt serve --backend swarm: `POST /api/sessions {"wait": true}` (service
#                     created with the runtime's limits, image by digest from the site
#                     registry, the task running, `<prefix>/api` answering through the
#                     site's readiness check);
#                   - nbrt serve --backend docker on the host's one engine: the same request
#                     (a container with the same limits; the image loaded before timing);
#                   - `docker service create` by hand of the same image by digest with the
#                     same limits, mounts and environment, then GET `<prefix>/api` on the
#                     published port of every node every 10 ms until one answers 200.
#   20 at once      20 users' `POST /api/sessions {"wait": true}` sent together to the swarm
#                   site: time until all answered; every session ready, 20 services running,
#                   how they spread over the nodes.
#
# The image is the stock jupyter stack built by nbrt, from the test fixture store
# (target/nbrt-fixtures/stock-store) when the tests built it, else built here.
#
# Needs: scripts/setup, scripts/swarm-lab up, hyperfine, root.
# RUNS (default 5), NBRT_BIN (default: build target/release/nbrt), CONCURRENT (default 20).
# Output: bench/results/swarm-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work="${BENCH_WORK:-$root/target/bench-swarm}"
mkdir -p "$work" bench/results
command -v hyperfine >/dev/null || { echo "bench: hyperfine is missing (scripts/setup installs it)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "bench: no Docker engine (run scripts/setup)" >&2; exit 1; }
scripts/swarm-lab status >/dev/null 2>&1 || { echo "bench: the swarm lab is not up (scripts/swarm-lab up)" >&2; exit 1; }
lab="${NBRT_SWARM_LAB:-/var/lib/nbrt-swarm-lab}"
. bench/lib.sh
bench_nbrt
if [ -n "${NBRT_BENCH_STORE:-}" ]; then
  store=$NBRT_BENCH_STORE
else
  bench_jupyter_store "$work"
fi
# In the host's engine for the docker backend before timing (the swarm site pushes it to the
# lab's registry itself, in the warm-up).
"$nbrt" --store "$store" load jupyter:latest -t nbrt-bench/jupyter:latest >/dev/null
image=$(docker image inspect --format '{{.Id}}' nbrt-bench/jupyter:latest)

exec python3 bench/swarm.py --nbrt "$nbrt" --store "$store" --image "$image" --work "$work" \
  --lab "$lab" --runs "${RUNS:-5}" --concurrent "${CONCURRENT:-20}" \
  --out "bench/results/swarm-$(date -u +%Y-%m-%d).md"
