#!/usr/bin/env bash
# Two nbrt binaries building the same runtime files cold, in one hyperfine run (each
# binary's runs back to back), so a change to the builder can be read against the
# run-to-run spread: every run starts from an empty store and no lock, so each resolves and
# runs every step (mmdebstrap, apt in the sandbox, a run step).
# Usage: bench/build-ab.sh OLD_NBRT NEW_NBRT [LABEL]
# Needs: root, hyperfine, mmdebstrap, runc; the Debian mirror. RUNS (default 3).
# Output: a Markdown table on stdout and bench/results/build-ab-<label>-<date>.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$(realpath "$1") new=$(realpath "$2") label="${3:-ab}"
runs="${RUNS:-3}"
work="${BENCH_WORK:-$PWD/target/bench-build-ab}"
rm -rf "$work" && mkdir -p "$work/stack/tools" bench/results
# Only what both binaries' runtime files read: a bootstrap, an apt step and a run step.
cat >"$work/stack/tools/runtime.toml" <<'TOML'
name = "tools"

[bootstrap]
suite = "trixie"
variant = "minbase"
packages = ["ca-certificates", "less", "procps"]

[apt]
packages = ["tree", "jq"]

[[run]]
network = false
command = "mkdir -p /opt/tools && for i in $(seq 500); do echo $i > /opt/tools/f$i; done"
TOML
stamp=$(date +%Y%m%d-%H%M%S)
json="bench/results/build-ab-$label-$stamp.json"
cmds=()
for side in old new; do
  bin=${!side}
  cmds+=(-n "cold build ($side)" --prepare "rm -rf $work/$side-store $work/stack/tools/runtime.lock"
         "$bin --store $work/$side-store build $work/stack >/dev/null 2>&1")
done
hyperfine --runs "$runs" --export-json "$json" "${cmds[@]}" >&2
python3 - "$json" "$old" "$new" "$runs" > "bench/results/build-ab-$label-$stamp.md" <<'PY'
import json, os, sys
data = json.load(open(sys.argv[1]))
old, new, runs = sys.argv[2:5]
r = {x["command"]: x for x in data["results"]}
a, b = r["cold build (old)"], r["cold build (new)"]
spread = max(a["stddev"] / a["mean"], b["stddev"] / b["mean"])
print(f"# cold build: {os.path.basename(old)} vs {os.path.basename(new)}\n")
print(f"One hyperfine run, {runs} runs each, {os.cpu_count()} CPUs, load average "
      f"{os.getloadavg()[0]:.1f} at the end. A bootstrap (trixie minbase + 3 packages), an apt "
      f"step (tree, jq) and a run step writing 500 files, from an empty store. old: {old}, "
      f"new: {new}.\n")
print("| old mean ± σ | new mean ± σ | new/old | spread (σ/mean, larger of the two) |")
print("| --- | --- | --- | --- |")
print(f"| {a['mean']:.1f} ± {a['stddev']:.1f} s | {b['mean']:.1f} ± {b['stddev']:.1f} s "
      f"| {b['mean']/a['mean']:.2f} | {spread:.0%} |")
PY
cat "bench/results/build-ab-$label-$stamp.md"
