#!/usr/bin/env bash
# Two nbrt binaries on the same image in one hyperfine run (each command's runs back to back),
# so a change's cost can be read against the run-to-run spread:
#   import of a docker-archive tar into an empty store, export of the image in nbrt's format
#   and as a docker-archive.
# Usage: bench/ab.sh OLD_NBRT NEW_NBRT IMAGE_TAR [LABEL]
#   IMAGE_TAR: a `docker save` / `nbrt export --format docker-archive` file.
# Needs: hyperfine. Output: a Markdown table on stdout and bench/results/ab-<label>-<date>.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$(realpath "$1") new=$(realpath "$2") tar=$(realpath "$3") label="${4:-ab}"
runs="${RUNS:-5}"
work="${BENCH_WORK:-$PWD/target/bench-ab}"
rm -rf "$work" && mkdir -p "$work" bench/results
for side in old new; do
  bin=${!side}
  "$bin" --store "$work/$side-src" import "$tar" --tag ab/image:1 >/dev/null
done
stamp=$(date +%Y%m%d-%H%M%S)
json="bench/results/ab-$label-$stamp.json"
cmds=()
for op in import export export-docker; do
  for side in old new; do
    bin=${!side}
    case $op in
      import) cmd="rm -rf $work/$side-dst && $bin --store $work/$side-dst import $tar --tag ab/image:1 >/dev/null" ;;
      export) cmd="$bin --store $work/$side-src export ab/image:1 -o $work/$side.out >/dev/null && rm -f $work/$side.out" ;;
      export-docker) cmd="$bin --store $work/$side-src export ab/image:1 --format docker-archive -o $work/$side.out >/dev/null && rm -f $work/$side.out" ;;
    esac
    cmds+=(-n "$op ($side)" "$cmd")
  done
done
hyperfine --warmup 1 --runs "$runs" --export-json "$json" "${cmds[@]}" >&2
python3 - "$json" "$old" "$new" "$tar" "$runs" > "bench/results/ab-$label-$stamp.md" <<'PY'
import json, os, sys
data = json.load(open(sys.argv[1]))
old, new, tar, runs = sys.argv[2:6]
r = {x["command"]: x for x in data["results"]}
size = os.path.getsize(tar) / 1e6
print(f"# {os.path.basename(old)} vs {os.path.basename(new)}\n")
print(f"One hyperfine run, {runs} runs each after a warm-up, {os.cpu_count()} CPUs, load average "
      f"{os.getloadavg()[0]:.1f} at the end. Image: {os.path.basename(tar)}, {size:.0f} MB "
      "(docker-archive). old: " + old + ", new: " + new + ".\n")
print("| operation | old mean ± σ | new mean ± σ | new/old | spread (σ/mean, larger of the two) |")
print("| --- | --- | --- | --- | --- |")
for op in ("import", "export", "export-docker"):
    a, b = r[f"{op} (old)"], r[f"{op} (new)"]
    spread = max(a["stddev"] / a["mean"], b["stddev"] / b["mean"])
    print(f"| {op} | {a['mean']:.2f} ± {a['stddev']:.2f} s | {b['mean']:.2f} ± {b['stddev']:.2f} s "
          f"| {b['mean']/a['mean']:.2f} | {spread:.0%} |")
PY
cat "bench/results/ab-$label-$stamp.md"
