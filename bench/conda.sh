#!/usr/bin/env bash
# The conda command in a running stock image (nbrt-conda, /opt/conda/bin/conda) against the
# same operation done the other way a user has:
#   - install one small package from a channel on loopback (`conda install`) vs the same
#     package as a wheel from a simple index on loopback (`pip install`), both cold: before
#     each run the package is removed and conda's package and index caches are cleaned, pip
#     runs with --no-cache-dir;
#   - `conda list --json` (seed 000's manifest command) vs `pip list --format json` in the
#     same container, and vs nbrt's own reader (`nbrt manifest --no-debian`, warm) on the
#     store; `docker exec C true` is timed too, so the command's own time can be read off.
# All in one hyperfine run, same machine, same image, same container.
#
# The image: the stock scipy stack, built with `nbrt build stacks/ --only scipy` into a bench
# store (target/bench-conda/store), unless BENCH_STORE and BENCH_IMAGE name another.
# NBRT_BIN names an nbrt binary to use instead of building target/release/nbrt.
# Needs: scripts/setup (docker.io, hyperfine, mmdebstrap, runc, uv, python3).
# Output: a Markdown table on stdout and bench/results/conda-<date>.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs="${RUNS:-10}"
work="${BENCH_WORK:-$root/target/bench-conda}"
mkdir -p "$work" bench/results
. bench/lib.sh
bench_nbrt
store="${BENCH_STORE:-$work/store}"
image="${BENCH_IMAGE:-scipy:latest}"
bench_stack "$store" "$image" scipy
"$nbrt" --store "$store" load "$image" >/dev/null
image_id=$(bench_image_id "$store" "$image")

# One small package, both ways: a noarch conda package depending on python (as real ones
# do) in a channel, and a py3-none-any wheel in a simple index; the same module in each.
serve="$work/serve"
rm -rf "$serve"
python3 - "$serve" <<'PY'
import base64, hashlib, io, json, os, sys, tarfile, zipfile, bz2
out = sys.argv[1]
module = {f"benchpkg/m{i}.py": f"VALUE = {i}\n" for i in range(8)}
module["benchpkg/__init__.py"] = "VERSION = '1.0'\n"

def add(tar, name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 1700000000
    tar.addfile(info, io.BytesIO(data))

# conda: noarch python, files under site-packages/ as conda-build writes them.
files = {f"site-packages/{k}": v.encode() for k, v in module.items()}
index = {"name": "benchpkg", "version": "1.0", "build": "py_0", "build_number": 0,
         "depends": ["python"], "license": "MIT", "subdir": "noarch", "noarch": "python",
         "timestamp": 1700000000000}
paths = {"paths_version": 1, "paths": [
    {"_path": p, "path_type": "hardlink", "sha256": hashlib.sha256(d).hexdigest(),
     "size_in_bytes": len(d)} for p, d in files.items()]}
link = {"noarch": {"type": "python", "entry_points": []}, "package_metadata_version": 1}
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w") as tar:
    add(tar, "info/index.json", json.dumps(index).encode())
    add(tar, "info/paths.json", json.dumps(paths).encode())
    add(tar, "info/files", "".join(p + "\n" for p in files).encode())
    add(tar, "info/link.json", json.dumps(link).encode())
    for p, d in files.items():
        add(tar, p, d)
pkg = bz2.compress(raw.getvalue())
noarch = os.path.join(out, "channel", "noarch")
os.makedirs(noarch)
os.makedirs(os.path.join(out, "channel", "linux-64"))
with open(os.path.join(noarch, "benchpkg-1.0-py_0.tar.bz2"), "wb") as f:
    f.write(pkg)
record = dict(index, sha256=hashlib.sha256(pkg).hexdigest(), size=len(pkg))
for subdir, packages in (("noarch", {"benchpkg-1.0-py_0.tar.bz2": record}), ("linux-64", {})):
    with open(os.path.join(out, "channel", subdir, "repodata.json"), "w") as f:
        json.dump({"info": {"subdir": subdir}, "packages": packages, "packages.conda": {},
                   "repodata_version": 1}, f)

# pip: the wheel and a PEP 503 index page.
wheel_name = "benchpkg-1.0-py3-none-any.whl"
dist = "benchpkg-1.0.dist-info"
entries = dict(module)
entries[f"{dist}/METADATA"] = "Metadata-Version: 2.1\nName: benchpkg\nVersion: 1.0\n"
entries[f"{dist}/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: nbrt-bench\n"
                            "Root-Is-Purelib: true\nTag: py3-none-any\n")
record_lines = []
simple = os.path.join(out, "simple", "benchpkg")
os.makedirs(simple)
with zipfile.ZipFile(os.path.join(simple, wheel_name), "w") as z:
    for name, text in entries.items():
        data = text.encode()
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record_lines.append(f"{name},sha256={digest},{len(data)}")
    record_lines.append(f"{dist}/RECORD,,")
    z.writestr(f"{dist}/RECORD", "\n".join(record_lines) + "\n")
with open(os.path.join(simple, "index.html"), "w") as f:
    f.write(f'<!DOCTYPE html><html><body><a href="{wheel_name}">{wheel_name}</a></body></html>\n')
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$serve" "$port" >"$work/http.log" 2>&1 &
http_pid=$!
name="nbrt-bench-conda-$$"
cleanup() {
  kill "$http_pid" 2>/dev/null || true
  docker rm -f "$name" >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$port/channel/noarch/repodata.json" >/dev/null 2>&1 && break; sleep 0.1; done

# One container for every command; host network, so loopback is the host's.
docker run -d --name "$name" --network host --entrypoint sleep "$image_id" infinity >/dev/null
ex="docker exec -u jovyan $name"
channel="http://127.0.0.1:$port/channel"
index="http://127.0.0.1:$port/simple"
conda_install="$ex /opt/conda/bin/conda install --yes --quiet --override-channels -c $channel benchpkg"
conda_reset="$ex sh -c '/opt/conda/bin/conda remove --yes --quiet benchpkg >/dev/null 2>&1; /opt/conda/bin/conda clean -y -a >/dev/null'"
pip_install="$ex /opt/conda/bin/python -m pip install --quiet --no-cache-dir --index-url $index benchpkg"
pip_reset="$ex /opt/conda/bin/python -m pip uninstall --yes --quiet benchpkg"
# Both ways work before anything is timed; each leaves the package importable.
for way in conda pip; do
  eval "$conda_reset"; $pip_reset >/dev/null 2>&1 || true
  if [ "$way" = conda ]; then $conda_install >/dev/null; else $pip_install; fi
  $ex /opt/conda/bin/python -c 'import benchpkg.m7 as m; assert m.VALUE == 7'
done
eval "$conda_reset"; $pip_reset >/dev/null 2>&1 || true

"$nbrt" --store "$store" manifest "$image" --no-debian >/dev/null  # warm the store's indexes
records=$($ex /opt/conda/bin/conda list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
stamp=$(date +%Y%m%d-%H%M%S)
json="bench/results/conda-$stamp.json"
hyperfine --warmup 1 --runs "$runs" --export-json "$json" \
  -n "conda install (loopback channel)" --prepare "$conda_reset" "$conda_install" \
  -n "pip install (loopback index)" --prepare "$pip_reset >/dev/null 2>&1 || true" "$pip_install" \
  -n "conda list --json" --prepare true "$ex /opt/conda/bin/conda list --json" \
  -n "pip list --format json" --prepare true "$ex /opt/conda/bin/python -m pip list --format json" \
  -n "nbrt manifest --no-debian (warm)" --prepare true "$nbrt --store $store manifest $image --no-debian" \
  -n "docker exec true" --prepare true "$ex true" >&2
if [ -n "${NBRT_BIN:-}" ]; then
  commit="$NBRT_BIN, built $(date -u -r "$NBRT_BIN" +%Y-%m-%dT%H:%MZ)"
else
  commit="target/release/nbrt at $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
fi
python3 - "$json" "$image" "$image_id" "$runs" "$records" "$commit" > "bench/results/conda-$stamp.md" <<'PY'
import json, os, sys
data = json.load(open(sys.argv[1]))
image, image_id, runs, records, commit = sys.argv[2:7]
r = {x["command"]: x for x in data["results"]}
ms = lambda k: r[k]["mean"] * 1000
exec_ms = ms("docker exec true")
print(f"# conda in a running stock image ({image})\n")
print(f"One hyperfine run, {runs} runs each after a warm-up, {os.cpu_count()} CPUs, load average "
      f"{os.getloadavg()[0]:.1f} at the end; nbrt: {commit} (release build); image {image_id}; "
      f"`conda list --json` lists {records} records.\n")
print("Installs are cold: before each run the package is removed, `conda clean -y -a` empties "
      "conda's caches, and pip runs with `--no-cache-dir`. Channel and index are served by "
      "`python3 -m http.server` on loopback; the container uses the host's network. Every "
      "in-container command is a `docker exec`, whose own cost is the last row.\n")
print("| command | mean | σ | less docker exec |")
print("| --- | --- | --- | --- |")
for k in r:
    net = "" if k.startswith(("nbrt", "docker")) else f"{ms(k) - exec_ms:.0f} ms"
    print(f"| {k} | {ms(k):.1f} ms | {r[k]['stddev']*1000:.1f} ms | {net} |")
ci, pi = ms("conda install (loopback channel)"), ms("pip install (loopback index)")
cl, pl = ms("conda list --json"), ms("pip list --format json")
print(f"\nconda install / pip install: **{ci/pi:.2f}x** the time. "
      f"conda list --json / pip list: **{cl/pl:.2f}x**; "
      f"conda list --json less docker exec: {cl - exec_ms:.0f} ms (target: under 200 ms).")
PY
cat "bench/results/conda-$stamp.md"
