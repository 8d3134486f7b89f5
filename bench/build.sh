#!/usr/bin/env bash
# Builder benchmark: nbrt against Docker's builders, for a chain of stock stacks (default the
# jupyter and scipy runtimes), side by side in one run on the same machine, from the same
# base image. The peers (PEERS, default "legacy buildkit"):
#
#   legacy     Docker 20.10's legacy builder (`docker build`), `RUN pip install --no-cache-dir`
#   buildkit   BuildKit, built into Debian's engine (`DOCKER_BUILDKIT=1 /usr/bin/docker build`;
#              the `docker` first on PATH may be a client without BuildKit), with
#              `RUN --mount=type=cache,… uv pip install --compile-bytecode`: the fast way to
#              build Python images today. uv is the host's binary (`which uv`, the one nbrt
#              runs), COPY'd into the image, so both sides run the same uv.
#
# The scenarios (SCENARIOS, default all, in this order):
#
#   cold          no cache at all: legacy --no-cache; BuildKit --no-cache with its cache mounts
#                 pruned; nbrt with an empty store (its uv cache lives in the store). Every
#                 side downloads every wheel.
#   cold-warm     cold with warm download caches (a CI machine with a cache volume):
#                 BuildKit --no-cache with its uv cache mount kept; nbrt with its uv cache
#                 (store/cache/uv) kept and everything else in the store removed (images,
#                 step cache, pip pieces), the base imported again. The legacy builder has no
#                 cache to keep, so it is not run (it is its cold figure).
#   no-change     the same build again (Docker's layer cache; nbrt's step cache), 5 runs
#   one-package   one more pip package in the last stack (a different tabulate pin every run,
#                 so no side has it): Docker re-runs that stack's pip RUN, nbrt its pip step
#   base-changed  a new base image (the old one plus a layer): Docker builds the chain again
#                 FROM it (BuildKit with its cache mount warm); nbrt rebases each stack
#                 onto the new one below it (`nbrt rebase`)
#
# The cold scenarios remove GBs (images, the store) right before the timed build; writes on
# this machine's virtual disk were once seen slower right after such a removal (online
# discard: not confirmed in the benchmark since, see build-2026-12-07-uv-python.md), so every
# side's cold and cold-warm run first waits COLD_SETTLE seconds (default 30) on a trimmed
# disk (bench/lib.sh bench_settle). COLD_SETTLE=0 times them right after the removal.
#
# Bytecode: nbrt's pip step compiles every installed .py (checked-hash .pyc, both CPUs); the
# BuildKit side runs `uv pip install --compile-bytecode`; the legacy side's pip compiles too
# (pip's default).
#
# The base is stacks/base built once by nbrt (mmdebstrap, nbrt-init, the /opt/conda venv
# owned by jovyan), exported and loaded into Docker, and imported into nbrt's store, so all
# start from the same bytes. The Dockerfiles are generated from the runtime files: the
# same apt packages (run as nbrt's apt step runs them: apt-get update, install
# --no-install-recommends, clean), the same pip requirements (resolved afresh on every side:
# the stacks' locks are removed), the same files (COPY) and run steps.
#
# STACKS (default "jupyter scipy") names the chain, each built on the one before, the first on
# the base: `STACKS="jupyter pytorch-cuda" RUNS=1 SCENARIOS="cold one-package"` is the
# multi-GB PyTorch set (its base-changed scenario is the rebase pair of the image benchmark
# on that image). RUNS (default 2) sets the runs of the slow scenarios. NBRT_BIN names an nbrt
# binary to measure instead of this checkout's release build. MIN_FREE_GB (default 15): the
# script stops before a build when less disk is free. SIDES (default "peers nbrt") runs only
# the peers or only nbrt, and APPEND=1 keeps the times of an earlier run in $work/times.tsv:
# two runs, one side each with the other's caches and images removed in between, when the
# disk cannot hold both sides of a multi-GB chain at once (not interleaved then: say so).
# Needs: scripts/setup (docker.io, mmdebstrap, runc, uv, GNU time), root, PyPI, Debian.
# Output: bench/results/build-<stacks>-<date>.md (build-<date>.md for the default
# chain; with the time added when that file exists), or BENCH_OUT; the raw times (with
# nbrt's peak RSS) in $work/times.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs="${RUNS:-2}"
read -r -a chain <<<"${STACKS:-jupyter scipy}"
read -r -a peers <<<"${PEERS-legacy buildkit}"
sides=" ${SIDES:-peers nbrt} "
[[ "$sides" == *" peers "* ]] || peers=()
ours() { [[ "$sides" == *" nbrt "* ]]; }
scenarios=" ${SCENARIOS:-cold cold-warm no-change one-package base-changed} "
min_free="${MIN_FREE_GB:-15}"
last=${chain[${#chain[@]} - 1]}
if [ "${STACKS:-jupyter scipy}" = "jupyter scipy" ]; then suffix=""; else suffix="-${chain[*]}"; suffix=${suffix// /-}; fi
work="${BENCH_WORK:-$root/target/bench-build$suffix}"
date_tag=$(date -u +%Y-%m-%d)
# A run never writes over the results of an earlier one (of the same day): the time is added.
out="${BENCH_OUT:-bench/results/build$suffix-$date_tag.md}"
[ -n "${BENCH_OUT:-}" ] || [ ! -e "$out" ] || out="bench/results/build$suffix-$(date -u +%Y-%m-%d-%H%M).md"
mkdir -p "$work" bench/results
. bench/lib.sh
bench_nbrt
export NBRT_INIT_BIN="${NBRT_INIT_BIN:-$(crates/init/build-static.sh)}"
export NBRT_CONDA_BIN="${NBRT_CONDA_BIN:-$(crates/conda/build-static.sh)}"
times="$work/times.tsv"
[ "${APPEND:-0}" = 1 ] || : >"$times"
has() { [[ "$scenarios" == *" $1 "* ]]; }
peer() { [[ " ${peers[*]} " == *" $1 "* ]]; }

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
base_user=$(docker image inspect --format '{{.Config.User}}' nbrt-bench/base:1)

# An "upgraded" base number N: base 1 plus a layer (made with nbrt, loaded into both).
make_base() {
  local n=$1 dir="$work/base-next"
  mkdir -p "$dir"
  # A base-1.tar copied from another run's work directory comes without its store.
  "$nbrt" --store "$base_store" inspect nbrt-bench/base:1 >/dev/null 2>&1 \
    || "$nbrt" --store "$base_store" import "$work/base-1.tar" --tag nbrt-bench/base:1 >/dev/null
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

# --- the definitions ------------------------------------------------------------------------
stack="$work/stack"
rm -rf "$stack" && mkdir -p "$stack"
for s in "${chain[@]}"; do cp -r "$work/stacks/$s" "$stack/"; done
# The first stack is built on the bench base; the others on the one before (as in stacks/).
sed -i "s|^from = \".*\"$|from = \"nbrt-bench/base:1\"|" "$stack/${chain[0]}/runtime.toml"
grep -q '^from = "nbrt-bench/base:1"$' "$stack/${chain[0]}/runtime.toml"
for i in $(seq 1 $(( ${#chain[@]} - 1 ))); do
  grep -q "^from = \"${chain[$((i - 1))]}\"$" "$stack/${chain[$i]}/runtime.toml"
done

# Dockerfiles with the same apt packages, pip requirements, files and run steps, read from the
# runtime files: $work/legacy/<stack> and $work/buildkit/<stack>.
rm -rf "$work/legacy" "$work/buildkit"
python3 - "$stack" "$work" "$base_user" "$(command -v uv)" "${chain[@]}" <<'PY'
import pathlib, shlex, sys, tomllib
stack, work = map(pathlib.Path, sys.argv[1:3])
user, uv, chain = sys.argv[3], pathlib.Path(sys.argv[4]), sys.argv[5:]
ca = pathlib.Path("/etc/ssl/certs/ca-certificates.crt")
apt_script = ("set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; "
              "apt-get install -y -qq --no-install-recommends {}; apt-get clean; rm -rf /var/lib/apt/lists/*")
for kind in ("legacy", "buildkit"):
    for i, name in enumerate(chain):
        parent = "nbrt-bench/base:1" if i == 0 else f"nbrt-bench/{chain[i - 1]}:{kind}"
        rt = tomllib.loads((stack / name / "runtime.toml").read_text())
        out = work / kind / name
        out.mkdir(parents=True, exist_ok=True)
        lines = [f"FROM {parent}"]
        if i == 0:
            if ca.exists():
                # pip and uv in the build container trust what the host trusts (a
                # TLS-inspecting proxy's CA, say); a small layer, the same on both builders.
                (out / "host-ca.crt").write_bytes(ca.read_bytes())
                lines += ["COPY host-ca.crt /tmp/host-ca.crt",
                          "ENV PIP_CERT=/tmp/host-ca.crt SSL_CERT_FILE=/tmp/host-ca.crt"]
            if kind == "buildkit":
                # The host's uv, the binary nbrt's pip step runs.
                (out / "uv").write_bytes(uv.read_bytes())
                (out / "uv").chmod(0o755)
                lines.append("COPY uv /usr/local/bin/uv")
        apt = rt.get("apt", {}).get("packages", [])
        if apt:
            lines += ["USER root", "RUN " + apt_script.format(" ".join(shlex.quote(p) for p in apt))]
            if user:
                lines.append(f"USER {user}")
        pkgs = " ".join(shlex.quote(p) for p in rt.get("pip", {}).get("packages", []))
        if pkgs and kind == "legacy":
            lines.append(f"RUN pip install --no-cache-dir {pkgs}")
        elif pkgs:
            # The cache mount belongs to the user pip runs as (the base's user); uv copies out
            # of it (it is another file system than the image's).
            uid = "0" if not user or user == "root" else user.split(":")[0]
            lines.append(
                f"RUN --mount=type=cache,id=nbrt-bench-uv,target=/tmp/uv-cache,uid={uid} "
                "UV_CACHE_DIR=/tmp/uv-cache UV_LINK_MODE=copy "
                f"uv pip install --python /opt/conda/bin/python --compile-bytecode {pkgs}")
        for f in rt.get("files", []):
            if "source" not in f:
                continue  # builtins (nbrt-init) live in the base
            (out / f["source"]).write_bytes((stack / name / f["source"]).read_bytes())
            chown = f"--chown={f['owner']} " if "owner" in f else ""
            lines.append(f"COPY {chown}{f['source']} {f['destination']}")
        for run in rt.get("run", []):
            lines.append("RUN " + " ".join(run["command"].split()))
        (out / "Dockerfile").write_text("\n".join(lines) + "\n")
PY

export NBRT_HOME="$work/store"
fresh_store() { # [keep-uv]: an empty store (but for uv's cache with keep-uv) and the base
  if [ "${1:-}" = keep-uv ] && [ -d "$NBRT_HOME/cache/uv" ]; then
    rm -rf "$work/uv-cache.kept"
    mv "$NBRT_HOME/cache/uv" "$work/uv-cache.kept"
    rm -rf "$NBRT_HOME"
    mkdir -p "$NBRT_HOME/cache"
    mv "$work/uv-cache.kept" "$NBRT_HOME/cache/uv"
  else
    rm -rf "$NBRT_HOME"
  fi
  "$nbrt" import "$work/base-1.tar" --tag nbrt-bench/base:1 >/dev/null
}
docker_build() { # legacy|buildkit, extra docker build flags...
  local kind=$1 s
  shift
  for s in "${chain[@]}"; do
    if [ "$kind" = buildkit ]; then
      DOCKER_BUILDKIT=1 /usr/bin/docker build -q "$@" -t "nbrt-bench/$s:$kind" "$work/$kind/$s" >/dev/null
    else
      DOCKER_BUILDKIT=0 docker build -q "$@" -t "nbrt-bench/$s:$kind" "$work/$kind/$s" >/dev/null
    fi
  done
}
docker_forget() { # legacy|buildkit: the chain's images out of Docker
  local s
  for s in "${chain[@]}"; do docker rmi -f "nbrt-bench/$s:$1" >/dev/null 2>&1 || true; done
}
# BuildKit's cache mounts (the uv cache) pruned; its layer cache is bypassed by --no-cache.
buildkit_prune_mounts() { /usr/bin/docker builder prune -af --filter type=exec.cachemount >/dev/null; }
nbrt_build() { bench_rss "$nbrt" build "$stack" >/dev/null; }
timed() { bench_timed "$times" "$@"; }
# The cold scenarios start right after a large removal (the store, the images): each side's
# timed run waits COLD_SETTLE seconds (default 30) first, with the disk trimmed (bench_settle).
settled() { BENCH_SETTLE="${COLD_SETTLE:-30}" "$@"; }
room() { bench_free_gb "$work" "$min_free"; }

# Both sides of a scenario run in turns, in one order on odd runs and the reverse on even
# runs, so they see the same load.
turns() { # run-number command...: the commands (each one word, a function) in turn order
  local r=$1
  shift
  local cmds=("$@") i
  if [ $(( r % 2 )) -eq 0 ]; then
    for (( i = ${#cmds[@]} - 1; i >= 0; i-- )); do ${cmds[$i]}; done
  else
    for i in "${cmds[@]}"; do $i; done
  fi
}

# --- cold -----------------------------------------------------------------------------------
cold_legacy() { room; docker_forget legacy; settled timed cold legacy docker_build legacy --no-cache; }
cold_buildkit() { room; docker_forget buildkit; buildkit_prune_mounts; settled timed cold buildkit docker_build buildkit --no-cache; }
cold_nbrt() { room; fresh_store; settled timed cold nbrt nbrt_build; }
if has cold; then
  for r in $(seq "$runs"); do
    list=()
    peer legacy && list+=(cold_legacy)
    peer buildkit && list+=(cold_buildkit)
    if ours; then list+=(cold_nbrt); fi
    turns "$r" "${list[@]}"
  done
fi

# --- cold with warm download caches ---------------------------------------------------------
warm_buildkit() { room; docker_forget buildkit; settled timed cold-warm buildkit docker_build buildkit --no-cache; }
warm_nbrt() { room; fresh_store keep-uv; settled timed cold-warm nbrt nbrt_build; }
if has cold-warm; then
  # The caches filled once, outside the timing, when no cold run filled them.
  if peer buildkit && ! has cold; then docker_build buildkit --no-cache; fi
  if ours && ! has cold; then fresh_store; nbrt_build; fi
  for r in $(seq "$runs"); do
    list=()
    peer buildkit && list+=(warm_buildkit)
    if ours; then list+=(warm_nbrt); fi
    turns "$r" "${list[@]}"
  done
fi

# Every side holds the built chain from here on (from its caches, when it has them).
if ours; then
  [ -f "$NBRT_HOME/index.json" ] || fresh_store
  nbrt_build
fi
for p in "${peers[@]}"; do docker_build "$p"; done

# --- no change ------------------------------------------------------------------------------
if has no-change; then
  for r in $(seq 5); do
    list=()
    for p in "${peers[@]}"; do eval "nochange_$p() { timed no-change $p docker_build $p; }"; list+=("nochange_$p"); done
    nochange_nbrt() { timed no-change nbrt nbrt_build; }
    if ours; then list+=(nochange_nbrt); fi
    turns "$r" "${list[@]}"
  done
fi

# --- one package added ----------------------------------------------------------------------
versions=(0.9.0 0.8.10 0.8.9 0.8.8 0.8.7 0.8.6)
last_toml="$stack/$last/runtime.toml"
cp "$last_toml" "$work/$last.orig.toml"
add_package() { # PIN: in the last stack's runtime file and Dockerfiles
  python3 - "$work/$last.orig.toml" "$last_toml" "$1" <<'PY'
import re, sys
src, dst, pin = sys.argv[1:]
text = open(src).read()
m = re.search(r"^\[pip\]\n(?:.*\n)*?packages = \[", text, re.M)
assert m, "no [pip] packages in " + src
open(dst, "w").write(text[:m.end()] + f'"{pin}", ' + text[m.end():])
PY
  grep -q "\"$1\"" "$last_toml"
  sed -i "s/^RUN .*pip install .*/& $1/" "$work/legacy/$last/Dockerfile" "$work/buildkit/$last/Dockerfile"
}
remove_package() { # PIN
  cp "$work/$last.orig.toml" "$last_toml"
  sed -i "s/ $1$//" "$work/legacy/$last/Dockerfile" "$work/buildkit/$last/Dockerfile"
}
if has one-package; then
  for r in $(seq "$runs"); do
    v=${versions[$(( (r - 1) % ${#versions[@]} ))]}
    add_package "tabulate==$v"
    list=()
    for p in "${peers[@]}"; do eval "onepkg_$p() { room; timed one-package $p docker_build $p; }"; list+=("onepkg_$p"); done
    onepkg_nbrt() { room; timed one-package nbrt nbrt_build; }
    if ours; then list+=(onepkg_nbrt); fi
    turns "$r" "${list[@]}"
    remove_package "tabulate==$v"
  done
  for p in "${peers[@]}"; do docker_build "$p"; done
  if ours; then nbrt_build; fi
fi

# --- base changed: Docker's rebuild vs nbrt rebase ------------------------------------------
nbrt_rebase() { # new base: each stack of the chain onto the new one below it
  local below=$1 s
  for s in "${chain[@]}"; do
    bench_rss "$nbrt" rebase "$s:latest" --onto "$below" >/dev/null
    below="$s:latest"
  done
}
if has base-changed; then
  for r in $(seq "$runs"); do
    n=$(( r + 1 ))
    make_base "$n"
    if ours; then "$nbrt" import "$work/base-$n.tar" --tag "nbrt-bench/base:$n" >/dev/null; fi
    sed -i "s|^FROM nbrt-bench/base:.*|FROM nbrt-bench/base:$n|" "$work/legacy/${chain[0]}/Dockerfile" "$work/buildkit/${chain[0]}/Dockerfile"
    list=()
    for p in "${peers[@]}"; do eval "rebase_$p() { room; timed base-changed $p docker_build $p; }"; list+=("rebase_$p"); done
    rebase_nbrt() { timed base-changed nbrt nbrt_rebase "nbrt-bench/base:$n"; }
    if ours; then list+=(rebase_nbrt); fi
    turns "$r" "${list[@]}"
  done
  if ours; then # (a run of the peers alone keeps the report of nbrt's run before it)
    "$nbrt" rebase "$last:latest" --onto "${chain[$(( ${#chain[@]} - 2 ))]}:latest" --json >"$work/rebase-report.json" 2>/dev/null \
      || echo '{"steps": []}' >"$work/rebase-report.json"
  fi
fi

# --- report ---------------------------------------------------------------------------------
if [ -n "${NBRT_BIN:-}" ]; then
  binary="$NBRT_BIN, built $(date -u -r "$NBRT_BIN" +%Y-%m-%dT%H:%MZ)"
else
  binary="target/release/nbrt at $(git rev-parse --short HEAD)"
fi
python3 - "$times" "$out" "$runs" "$work/rebase-report.json" "${chain[*]}" "$binary" "$last" "$date_tag" <<'PY'
import json, os, statistics, sys, subprocess
times, out, runs, report, chain, binary, last, date = sys.argv[1:]
data = {}
for line in open(times):
    scenario, tool, t, kb = line.rstrip("\n").split("\t")
    data.setdefault(scenario, {}).setdefault(tool, []).append((float(t), int(kb)))
med = lambda xs: statistics.median(t for t, _ in xs)
targets = {"cold": 1.5, "cold-warm": 1.5, "no-change": None, "one-package": 10, "base-changed": 50}
rows, verdicts = [], []
for s in ["cold", "cold-warm", "no-change", "one-package", "base-changed"]:
    if s not in data:
        continue
    d = data[s]
    if "nbrt" not in d:
        continue
    n = med(d["nbrt"])
    leg = med(d["legacy"]) if "legacy" in d else None
    bk = med(d["buildkit"]) if "buildkit" in d else None
    t = targets[s]
    cell = lambda x: f"{x:.2f}" if x is not None else "–"
    ratio = lambda x: f"**{x / n:.1f}x**" if x is not None else "–"
    rss = max(kb for _, kb in d["nbrt"]) / 1024
    rows.append(f"| {s} | {cell(leg)} | {cell(bk)} | {n:.2f} | {ratio(leg)} | {ratio(bk)} | "
                f"{f'≥ {t}x BuildKit' if t else '–'} | {rss:.0f} MiB | {len(d['nbrt'])} |")
    if t and bk is not None:
        r = bk / n
        verdicts.append(f"- {s}: {r:.1f}x BuildKit + uv, target ≥ {t}x: " + ("met" if r >= t else "**missed**"))
raw = "\n".join(f"| {s} | {tool} | " + ", ".join(f"{t:.2f}" for t, _ in xs) + " |"
                 for s, tools in data.items() for tool, xs in tools.items())
steps = json.load(open(report)).get("steps", []) if os.path.exists(report) else []
uname = subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip()
docker = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True).stdout.strip()
uv = subprocess.run(["uv", "--version"], capture_output=True, text=True).stdout.strip()
load = os.getloadavg()
text = f"""# Builder: nbrt vs Docker's legacy builder vs BuildKit + uv ({chain}; {date})

`bench/build.sh` (STACKS="{chain}"): the stock stacks built as generated Dockerfiles by Docker's
legacy builder (`RUN pip install --no-cache-dir …`) and by BuildKit
(`DOCKER_BUILDKIT=1 /usr/bin/docker build`, `RUN --mount=type=cache,… uv pip install
--compile-bytecode …`, the host's {uv} copied into the image), and by nbrt, `FROM` the same
base image, in one run. Medians in seconds of wall time; ratio = peer / nbrt. Machine:
{uname}, {os.cpu_count()} CPUs, Docker {docker}; nbrt: {binary}. Single runs are noisy
(downloads, the disk; other work on the machine shows in the load average below); the sides
ran in turns (order swapped every run) so both saw the same conditions. Load average at the end: {load[0]:.1f} /
{load[1]:.1f} / {load[2]:.1f}.

| scenario | legacy docker build | BuildKit + uv | nbrt | legacy / nbrt | BuildKit / nbrt | target | nbrt peak RSS | runs |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
""" + "\n".join(rows) + """

""" + "\n".join(verdicts) + f"""

- cold: legacy `--no-cache`; BuildKit `--no-cache` with its cache mounts pruned (`docker
  builder prune --filter type=exec.cachemount`); nbrt with an empty store (its uv cache
  lives in the store). Every side downloads every wheel from PyPI and every .deb.
- cold-warm: BuildKit `--no-cache` with the uv cache mount kept; nbrt with the store's
  `cache/uv` kept and everything else (images, step cache, pip pieces) removed. No legacy
  run: it has no download cache to keep.
- one-package: `tabulate==<a new pin each run>` added to {last}'s pip packages.
- base-changed: a new base (the old one plus a layer). Docker builds the chain again `FROM`
  it (BuildKit's uv cache mount warm); nbrt runs `nbrt rebase <stack>:latest --onto <the
  new one below>` for each stack of the chain.
- nbrt's peak RSS: GNU time's, the largest process of the build (uv and the bytecode
  compiler included).
- Bytecode compiled on every side: nbrt's pip step compiles every installed .py; BuildKit
  runs `uv pip install --compile-bytecode`; pip compiles by default. apt packages are
  installed by the same command on every side.

What the last {last} rebase did:
""" + "\n".join(f"  - {s['step'][:70]}: {s['action']} ({s['reason']})" for s in steps) + f"""

Raw seconds, in run order:

| scenario | tool | seconds |
| --- | --- | --- |
{raw}
"""
open(out, "w").write(text)
print(text)
PY
