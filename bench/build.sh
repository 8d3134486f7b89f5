#!/usr/bin/env bash
# Builder benchmark: `docker build` vs nbrt for the stock jupyter and scipy runtimes, side by
# side in one run on the same machine, from the same base image:
#
#   cold            no cache at all (docker build --no-cache; nbrt with an empty store, so an
#                   empty uv cache too); both download every wheel from PyPI
#   no change       the same build again (docker's layer cache; nbrt's step cache)
#   one package     one more pip package in scipy (a different pin every run, so neither
#                   side has it cached): docker re-runs scipy's `RUN pip install`, nbrt its pip step
#   base changed    a new base image (the old one plus a layer): docker builds jupyter and scipy
#                   again FROM it; nbrt rebases jupyter onto it and scipy onto the new jupyter
#
# The base is stacks/base built once by nbrt (mmdebstrap, nbrt-init, the /opt/conda venv
# owned by jovyan), exported and loaded into Docker, and imported into nbrt's store, so both
# start from the same bytes. The Dockerfiles are generated from stacks/jupyter and
# stacks/scipy: `RUN pip install --no-cache-dir <the same requirements>`, the same files
# (COPY) and run steps. Docker 20.10's builder is used as Debian ships it.
#
# Needs: scripts/setup (docker.io, mmdebstrap, runc, uv, hyperfine), root, PyPI.
# RUNS (default 2) sets the runs of the slow scenarios; the no-change case runs 5 times.
# NBRT_BIN names an nbrt binary to measure instead of this checkout's release build (to
# compare two versions of nbrt, run the script once with each).
# Output: bench/results/build-<date>.md, or BENCH_OUT (and the raw times in $work/times.tsv).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs="${RUNS:-2}"
work="${BENCH_WORK:-$root/target/bench-build}"
date_tag=$(date -u +%Y-%m-%d)
mkdir -p "$work" bench/results
. bench/lib.sh
bench_nbrt
export NBRT_INIT_BIN="${NBRT_INIT_BIN:-$(crates/init/build-static.sh)}"
export NBRT_CONDA_BIN="${NBRT_CONDA_BIN:-$(crates/conda/build-static.sh)}"
times="$work/times.tsv"
: >"$times"

# --- the shared base ------------------------------------------------------------------------
rm -rf "$work/stacks" && cp -r stacks "$work/stacks"
rm -f "$work"/stacks/*/runtime.lock
base_store="$work/base-store"
if [ ! -f "$work/base-1.tar" ]; then
  echo "bench: building the base with nbrt (once)" >&2
  rm -rf "$base_store"
  "$nbrt" --store "$base_store" build "$work/stacks" --only base >&2
  "$nbrt" --store "$base_store" tag base:latest nbrt-bench/base:1
  "$nbrt" --store "$base_store" export nbrt-bench/base:1 -o "$work/base-1.tar"
fi
docker load -i "$work/base-1.tar" >/dev/null

# An "upgraded" base number N: base 1 plus a layer (made with nbrt, loaded into both).
make_base() {
  local n=$1 dir="$work/base-next"
  mkdir -p "$dir"
  # The time makes every run's base new: nbrt builds reproducibly, so "release 2" alone would
  # be the very image an earlier run of this script made, still in Docker's build cache.
  printf 'release %s %s\n' "$n" "$(date +%s%N)" >"$dir/release"
  cat >"$dir/base-next.toml" <<TOML
name = "base-next"
from = "nbrt-bench/base:1"
[[files]]
source = "release"
destination = "/etc/nbrt-bench-release"
TOML
  "$nbrt" --store "$base_store" build "$dir/base-next.toml" >/dev/null
  "$nbrt" --store "$base_store" export base-next:latest -t "nbrt-bench/base:$n" -o "$work/base-$n.tar"
  docker load -i "$work/base-$n.tar" >/dev/null
}

# --- the two definitions --------------------------------------------------------------------
stack="$work/stack"
rm -rf "$stack" && mkdir -p "$stack"
cp -r "$work/stacks/jupyter" "$work/stacks/scipy" "$stack/"
sed -i 's/^from = "base"$/from = "nbrt-bench\/base:1"/' "$stack/jupyter/runtime.toml"
grep -q '^from = "nbrt-bench/base:1"$' "$stack/jupyter/runtime.toml"

# Dockerfiles with the same pip requirements and run steps, read from the runtime files.
python3 - "$stack" "$work/docker" <<'PY'
import pathlib, shlex, sys, tomllib
stack, out = map(pathlib.Path, sys.argv[1:])
for name, parent in [("jupyter", "nbrt-bench/base:1"), ("scipy", "nbrt-bench/jupyter:docker")]:
    rt = tomllib.loads((stack / name / "runtime.toml").read_text())
    lines = [f"FROM {parent}"]
    (out / name).mkdir(parents=True, exist_ok=True)
    ca = pathlib.Path("/etc/ssl/certs/ca-certificates.crt")
    if ca.exists() and name == "jupyter":
        # pip in the build container trusts what the host trusts (a TLS-inspecting proxy's
        # CA, say); the legacy builder has no build secrets, so it is a small layer here.
        (out / name / "host-ca.crt").write_bytes(ca.read_bytes())
        lines += ["COPY host-ca.crt /tmp/host-ca.crt", "ENV PIP_CERT=/tmp/host-ca.crt"]
    pkgs = rt.get("pip", {}).get("packages", [])
    if pkgs:
        lines.append("RUN pip install --no-cache-dir " + " ".join(shlex.quote(p) for p in pkgs))
    for f in rt.get("files", []):
        if "source" not in f:
            continue  # builtins (nbrt-init) live in the base
        (out / name / f["source"]).write_bytes((stack / name / f["source"]).read_bytes())
        chown = f"--chown={f['owner']} " if "owner" in f else ""
        lines.append(f"COPY {chown}{f['source']} {f['destination']}")
    for run in rt.get("run", []):
        lines.append("RUN " + " ".join(run["command"].split()))
    (out / name / "Dockerfile").write_text("\n".join(lines) + "\n")
PY

export NBRT_HOME="$work/store"
fresh_store() {
  rm -rf "$NBRT_HOME"
  "$nbrt" import "$work/base-1.tar" --tag nbrt-bench/base:1 >/dev/null
}
docker_build() { # extra docker build flags...
  docker build -q "$@" -t nbrt-bench/jupyter:docker "$work/docker/jupyter" >/dev/null
  docker build -q "$@" -t nbrt-bench/scipy:docker "$work/docker/scipy" >/dev/null
}
nbrt_build() { "$nbrt" build "$stack" >/dev/null; }

# timed SCENARIO TOOL COMMAND...: seconds of one run, appended to $times.
timed() {
  local scenario=$1 tool=$2 t0 t1
  shift 2
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  printf '%s\t%s\t%s\n' "$scenario" "$tool" "$(echo "$t1 - $t0" | bc)" | tee -a "$times" >&2
}

# --- cold -----------------------------------------------------------------------------------
for _ in $(seq "$runs"); do
  docker rmi -f nbrt-bench/jupyter:docker nbrt-bench/scipy:docker >/dev/null 2>&1 || true
  timed cold docker docker_build --no-cache
  fresh_store
  timed cold nbrt nbrt_build
done

# --- no change ------------------------------------------------------------------------------
docker_build
nbrt_build
hyperfine --style basic --warmup 1 --runs 5 --export-json "$work/nochange.json" \
  -n docker "bash -c 'docker build -q -t nbrt-bench/jupyter:docker $work/docker/jupyter >/dev/null && docker build -q -t nbrt-bench/scipy:docker $work/docker/scipy >/dev/null'" \
  -n nbrt "$nbrt build $stack" >&2
python3 - "$work/nochange.json" >>"$times" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    for t in r["times"]:
        print(f"no change\t{r['command']}\t{t}")
PY

# --- one package changed --------------------------------------------------------------------
versions=(0.9.0 0.8.10 0.8.9 0.8.8 0.8.7 0.8.6)
scipy_toml="$stack/scipy/runtime.toml"
cp "$scipy_toml" "$work/scipy.orig.toml"
for i in $(seq "$runs"); do
  v=${versions[$(( (i - 1) % ${#versions[@]} ))]}
  sed "s/^  \"ipywidgets>=8\",$/  \"ipywidgets>=8\",\n  \"tabulate==$v\",/" "$work/scipy.orig.toml" >"$scipy_toml"
  grep -q "tabulate==$v" "$scipy_toml"
  sed -i "s/^RUN pip install --no-cache-dir .*/& tabulate==$v/" "$work/docker/scipy/Dockerfile"
  timed "one package" docker docker_build
  timed "one package" nbrt nbrt_build
  sed -i "s/ tabulate==$v$//" "$work/docker/scipy/Dockerfile"
done
cp "$work/scipy.orig.toml" "$scipy_toml"
docker_build
nbrt_build

# --- base changed: docker rebuild vs nbrt rebase --------------------------------------------
nbrt_rebase() { # new base
  "$nbrt" rebase jupyter:latest --onto "$1" >/dev/null
  "$nbrt" rebase scipy:latest --onto jupyter:latest >/dev/null
}
for i in $(seq "$runs"); do
  n=$(( i + 1 ))
  make_base "$n"
  "$nbrt" import "$work/base-$n.tar" --tag "nbrt-bench/base:$n" >/dev/null
  sed -i "s|^FROM nbrt-bench/base:.*|FROM nbrt-bench/base:$n|" "$work/docker/jupyter/Dockerfile"
  timed "base changed" docker docker_build
  timed "base changed" nbrt nbrt_rebase "nbrt-bench/base:$n"
done
"$nbrt" rebase scipy:latest --onto jupyter:latest --json >"$work/rebase-report.json"

# --- report ---------------------------------------------------------------------------------
python3 - "$times" "${BENCH_OUT:-bench/results/build-$date_tag.md}" "$runs" "$work/rebase-report.json" <<'PY'
import json, statistics, sys, subprocess
times, out, runs, report = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
data = {}
for line in open(times):
    scenario, tool, t = line.rstrip("\n").split("\t")
    tool = "docker" if tool.startswith("docker") or "docker build" in tool else "nbrt"
    data.setdefault(scenario, {}).setdefault(tool, []).append(float(t))
targets = {"cold": 2, "no change": None, "one package": 10, "base changed": 50}
rows = []
for s in ["cold", "no change", "one package", "base changed"]:
    d, n = statistics.median(data[s]["docker"]), statistics.median(data[s]["nbrt"])
    t = targets[s]
    rows.append(f"| {s} | {d:.2f} | {n:.2f} | {d / n:.1f}x | {f'≥ {t}x' if t else '–'} | {len(data[s]['nbrt'])} |")
steps = json.load(open(report))["steps"]
uname = subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip()
cpus = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
docker = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True).stdout.strip()
text = f"""# Builder: docker build vs nbrt ({out.split('build-')[-1][:-3]})

`bench/build.sh`: the stock jupyter and scipy runtimes (stacks/), built with `docker build`
from generated Dockerfiles (`FROM` the same base image, `RUN pip install --no-cache-dir …`
with the same requirements, the same files and run steps) and with nbrt, in one run. Medians in seconds
of wall time; ratio = docker / nbrt. Machine: {uname}, {cpus} CPUs, Docker {docker} (legacy
builder), shared with other work (see the note below).

| scenario | docker build | nbrt | ratio | target | runs |
| --- | --- | --- | --- | --- | --- |
""" + "\n".join(rows) + f"""

- cold: docker `--no-cache`; nbrt with an empty store (its uv cache lives in the store). Both
  download every wheel.
- one package: `tabulate==<a new version each run>` added to scipy's pip packages.
- base changed: a new base (the old one plus a layer). Docker builds jupyter and scipy
  again; nbrt runs `nbrt rebase jupyter:latest --onto <new base>` and `nbrt rebase
  scipy:latest --onto jupyter:latest`. What the last scipy rebase did:
""" + "\n".join(f"  - {s['step'][:70]}: {s['action']} ({s['reason']})" for s in steps) + "\n"
open(out, "w").write(text)
print(text)
PY
