#!/usr/bin/env bash
# Kubernetes backend (issue 16): the site's memory and CPU while its one watch takes N pods'
# worth of events (default 5,000 pods: a list of N running session pods, then for each an
# end — half OOMKilled, half failed — and a deletion, 2N watch events). No Kubernetes API
# server can be had on these machines: the API is scripted, a tower service under kube's
# Client (crates/site/examples/k8s_watch.rs) that makes each body as it is sent, so the
# figures are the site's watch (kube's watcher, nbrt's pod-status mapping), not a cluster's.
#
# Runs the example built in the dev profile, as the tests build it: dependencies (kube,
# serde_json, hyper, tokio) at opt-level 3 as the workspace sets, nbrt-site's own code not
# optimized. RUNS (default 3) runs per size; sizes 0 (no pods: the process's floor), 500 and
# PODS (default 5000), the list in the pages the watcher asks for (limit=500, as an API server
# pages it), and PODS again with the list in one page (as an API server answering from its
# watch cache with resourceVersion=0 may). Output: bench/results/k8s-watch-<date>.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
PODS="${PODS:-5000}"
export CARGO_INCREMENTAL=0
cargo build --quiet -p nbrt-site --example k8s_watch
bin="${CARGO_TARGET_DIR:-target}/debug/examples/k8s_watch"
stamp=$(date -u +%Y%m%d-%H%M%S)
out="bench/results/k8s-watch-$stamp"
: >"$out.json"
for args in 0 500 "$PODS" "$PODS --unpaged"; do
  for _ in $(seq "$RUNS"); do
    # shellcheck disable=SC2086
    "$bin" $args | tee -a "$out.json"
  done
done
python3 - "$out.json" "$out.md" "$(nproc)" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault((r["pods"], r["listPages"]), []).append(r)
md = ["# Kubernetes watch: the site's memory and CPU with scripted watch events", "",
      f"One run of bench/k8s-watch.sh on this machine ({sys.argv[3]} cores, shared). The API server",
      "is scripted (no cluster here): the watcher lists N running session pods, then gets, per pod,",
      "an end (half OOMKilled, half failed) and a deletion (2N watch events); the site's stream tells",
      "every end once. Peak RSS is the process's VmHWM; CPU is user + system of the whole watch.",
      "Dev profile (dependencies at opt-level 3, nbrt-site's code not optimized). Medians of "
      f"{len(next(iter(by.values())))} runs.", "",
      "| pods | list pages | watch events | peak RSS (MiB) | RSS before (MiB) | CPU user (s) | CPU sys (s) | wall (s) | ends told |",
      "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for key in sorted(by):
    n, pages = key
    rs = by[key]
    med = lambda k: statistics.median(r[k] for r in rs)
    told = rs[0]["told"]["oomKilled"] + rs[0]["told"]["ended"]
    md.append(f"| {n} | {pages} | {rs[0]['watchEvents']} | {med('peakRssKiB')/1024:.1f} | {med('rssBeforeKiB')/1024:.1f} | "
              f"{med('cpuUserS'):.2f} | {med('cpuSystemS'):.2f} | {med('wallS'):.2f} | {told} |")
open(sys.argv[2], "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
