#!/usr/bin/env bash
# nbrt manifest (reads the layers; warm = the layer indexes and the image's package list
# cached in the store, keyed by diff ID and manifest digest) against the
# container way the seeds use: `docker run --rm IMAGE pip list --format json`.
# Both in one hyperfine run, same machine, same image.
#
# The image: the stock scipy stack, built with `nbrt build stacks/ --only scipy` into a bench
# store (target/bench-manifest/store), unless BENCH_STORE and BENCH_IMAGE name another
# (e.g. a store where the stack is already built). NBRT_BIN names an nbrt binary to use
# instead of building target/release/nbrt.
# Needs: scripts/setup (docker.io, hyperfine, mmdebstrap, runc, uv).
# Output: a Markdown table on stdout and bench/results/manifest-<date>.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs="${RUNS:-10}"
work="${BENCH_WORK:-$root/target/bench-manifest}"
mkdir -p "$work" bench/results
. bench/lib.sh
bench_nbrt
store="${BENCH_STORE:-$work/store}"
image="${BENCH_IMAGE:-scipy:latest}"
bench_stack "$store" "$image" scipy
# The engine needs the image for the container way; loaded once, outside the timing.
ref="nbrt-bench/manifest:$(date +%s)"
"$nbrt" --store "$store" load "$image" --tag "$ref" >/dev/null 2>&1 \
  || "$nbrt" --store "$store" load "$image" >/dev/null
ref_id=$(bench_image_id "$store" "$image")
# Warm: the first run indexes the layers and caches the indexes.
"$nbrt" --store "$store" manifest "$image" >/dev/null
packages=$("$nbrt" --store "$store" manifest "$image" --no-debian | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
stamp=$(date +%Y%m%d-%H%M%S)
json="bench/results/manifest-$stamp.json"
hyperfine --warmup 1 --runs "$runs" --export-json "$json" \
  -n "nbrt manifest (warm)" "$nbrt --store $store manifest $image" \
  -n "docker run pip list" "docker run --rm --entrypoint /opt/conda/bin/python $ref_id -m pip list --format json" >&2
records=$("$nbrt" --store "$store" manifest "$image" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
if [ -n "${NBRT_BIN:-}" ]; then
  commit="$NBRT_BIN, built $(date -u -r "$NBRT_BIN" +%Y-%m-%dT%H:%MZ)"
else
  commit="target/release/nbrt at $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
fi
python3 - "$json" "$image" "$packages" "$runs" "$records" "$ref_id" "$commit" > "bench/results/manifest-$stamp.md" <<'PY'
import json, sys, os
data = json.load(open(sys.argv[1]))
image, packages, runs, records, image_id, commit = sys.argv[2:8]
r = {x["command"]: x for x in data["results"]}
n = r["nbrt manifest (warm)"]["mean"]
d = r["docker run pip list"]["mean"]
cpus = os.cpu_count()
print(f"# nbrt manifest vs docker run pip list ({image})\n")
print(f"One hyperfine run, {runs} runs each after a warm-up, {cpus} CPUs, load average {os.getloadavg()[0]:.1f} at the end; nbrt: {commit} (release build).")
print(f"Image {image_id}: nbrt lists {records} records ({packages} conda/Python, the rest Debian); pip list lists the Python ones.")
print("Warm: the layer indexes and the image's package list are already cached in the store (first run before the timing).\n")
print("Commands: `nbrt --store STORE manifest IMAGE` (all records, JSON) and `docker run --rm --entrypoint /opt/conda/bin/python IMAGE_ID -m pip list --format json` (entrypoint bypassed: the container way at its fastest).\n")
print("| command | mean | σ |")
print("| --- | --- | --- |")
for k in ("nbrt manifest (warm)", "docker run pip list"):
    print(f"| {k} | {r[k]['mean']*1000:.1f} ms | {r[k]['stddev']*1000:.1f} ms |")
print(f"\nnbrt manifest is **{d/n:.1f}x** faster (target: under 100 ms and at least 20x).")
PY
cat "bench/results/manifest-$stamp.md"
