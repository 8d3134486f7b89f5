#!/usr/bin/env bash
# Kernel image benchmark: kernel launch to the first execute_reply, Gateway Provisioners'
# docker-provisioner launching
#
#   nbrt      stacks/kernel-py built by nbrt (base + ipykernel/pycryptodomex as a pip step
#             + gateway_provisioners' `jupyter image-bootstrap install` run from a throwaway
#             venv)
#   docker    an image built with a Dockerfile in the seed 001 style: FROM the same base
#             (built by nbrt, loaded into Docker), `pip install gateway_provisioners
#             ipykernel`, `jupyter image-bootstrap install --languages python`, the chown/chmod
#             of the reference Dockerfile, `USER $NB_UID`, `CMD bootstrap-kernel.sh`
#
# in one run, on the same machine and Docker engine. Both specs are written by
# `nbrt kernelspec` (the same launch script), the client is jupyter_client's
# AsyncKernelManager from a venv with gateway_provisioners[docker]==0.5.0 (what Jupyter
# Server calls for POST /api/kernels). One launch is: start_kernel → wait_for_ready →
# execute("1+1") → execute_reply; then shutdown (not timed). RUNS (default 5) launches per
# image, alternating, after one untimed warm-up launch each. Image sizes as Docker reports
# them (uncompressed) and as stored compressed (nbrt: the store's layer blobs; docker: the
# gzip of `docker save`).
#
# Needs: scripts/setup (docker.io, mmdebstrap, runc, uv), root, PyPI.
# Output: bench/results/kernel-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs="${RUNS:-5}"
work="${BENCH_WORK:-$root/target/bench-kernel}"
date_tag=$(date -u +%Y-%m-%d)
mkdir -p "$work" bench/results
# NBRT_BIN: an nbrt binary to use (the launch time measured is the image's, not nbrt's).
. bench/lib.sh
bench_nbrt
export NBRT_INIT_BIN="${NBRT_INIT_BIN:-$(crates/init/build-static.sh)}"
export NBRT_CONDA_BIN="${NBRT_CONDA_BIN:-$(crates/conda/build-static.sh)}"
store="${BENCH_STORE:-$work/store}"

# --- nbrt: base and kernel-py ------------------------------------------------------------------
t0=$(date +%s.%N)
scripts/build-stacks "$nbrt" --store "$store" build stacks --only kernel-py >&2
t1=$(date +%s.%N)
nbrt_build_s=$(printf "%.2f" "$(echo "$t1 - $t0" | bc)")
base_tag="nbrt-bench/base:$("$nbrt" --store "$store" inspect base:latest --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"].split(":")[1][:12])')"
docker image inspect "$base_tag" >/dev/null 2>&1 || "$nbrt" --store "$store" load base:latest --tag "$base_tag" >&2

# --- docker: the seed 001 Dockerfile on the same base ------------------------------------------
ctx="$work/docker"
mkdir -p "$ctx"
# pip inside `docker build` trusts the host's CA bundle (as nbrt's run and pip steps do).
cp /etc/ssl/certs/ca-certificates.crt "$ctx/host-ca.crt"
cat >"$ctx/Dockerfile" <<EOF
FROM $base_tag
USER root
COPY host-ca.crt /tmp/host-ca.crt
# Install remote provisioners from PyPI, and the kernel itself
RUN PIP_CERT=/tmp/host-ca.crt pip install --no-cache-dir gateway_provisioners==0.5.0 ipykernel
# Install bootstrap and applicable launchers (per languages)
RUN jupyter image-bootstrap install --languages python
RUN chown jovyan:users /usr/local/bin/bootstrap-kernel.sh && \\
    chmod 0755 /usr/local/bin/bootstrap-kernel.sh && \\
    chown -R jovyan:users /usr/local/bin/kernel-launchers
ENV KERNEL_LANGUAGE=python
USER \$NB_UID
CMD /usr/local/bin/bootstrap-kernel.sh
EOF
t0=$(date +%s.%N)
docker build -q -t nbrt-bench/kernel-py-docker:1 "$ctx" >&2
t1=$(date +%s.%N)
docker_build_s=$(printf "%.2f" "$(echo "$t1 - $t0" | bc)")

# --- the client: a venv with Gateway Provisioners ----------------------------------------------
venv="${GP_VENV:-$work/gp-venv}"
if [ ! -x "$venv/bin/jupyter" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --progress-bar off 'gateway_provisioners[docker]==0.5.0' jupyter_server
fi
prefix="$work/prefix"
rm -rf "$prefix"
"$nbrt" --store "$store" kernelspec kernel-py --provisioner docker --kernel-name bench_nbrt \
  --display-name "kernel-py (nbrt)" --launch-timeout 120 --python "$venv/bin/python" \
  --prefix "$prefix" --json >"$work/spec-nbrt.json"
"$nbrt" --store "$store" kernelspec nbrt-bench/kernel-py-docker:1 --provisioner docker \
  --kernel-name bench_docker --display-name "kernel-py (Dockerfile)" --launch-timeout 120 \
  --python "$venv/bin/python" --prefix "$prefix" --json >"$work/spec-docker.json"
nbrt_image=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image_name"])' "$work/spec-nbrt.json")
docker_image=nbrt-bench/kernel-py-docker:1

# The bridge's gateway (IPAM's, else the first address of its subnet, as Docker picks it).
gateway=$(docker network inspect bridge --format '{{json .IPAM.Config}}' | python3 -c '
import ipaddress, json, sys
c = [x for x in json.load(sys.stdin) if "." in x.get("Subnet", "")]
g = [x["Gateway"] for x in c if x.get("Gateway")]
print(g[0] if g else ipaddress.ip_network(c[0]["Subnet"]).network_address + 1)')
cat >"$work/launch.py" <<'PY'
import asyncio, json, os, sys, time
from jupyter_client.manager import AsyncKernelManager

async def launch(name):
    env = {"PATH": os.environ["PATH"], "KERNEL_USERNAME": "bench"}
    t0 = time.perf_counter()
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        msg_id = kc.execute("1+1")
        while True:
            m = await kc.get_shell_msg(timeout=60)
            if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "execute_reply":
                assert m["content"]["status"] == "ok", m["content"]
                break
        return time.perf_counter() - t0
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=False)

async def main():
    runs = int(sys.argv[1])
    names = sys.argv[2:]
    for n in names:  # warm-up: page cache, the response socket, docker-py imports
        await launch(n)
    for i in range(runs):
        for n in names:
            print(json.dumps({"kernel": n, "run": i, "seconds": await launch(n)}), flush=True)

asyncio.run(main())
PY
env -i PATH="$venv/bin:/usr/bin:/bin" HOME="$work" JUPYTER_PATH="$prefix/share/jupyter" \
  JUPYTER_RUNTIME_DIR="$work/runtime" GP_RESPONSE_IP="$gateway" ${DOCKER_HOST:+DOCKER_HOST=$DOCKER_HOST} \
  "$venv/bin/python" "$work/launch.py" "$runs" bench_nbrt bench_docker >"$work/launches.jsonl"

size() { docker image inspect --format '{{.Size}}' "$1"; }
layers() { docker image inspect --format '{{len .RootFS.Layers}}' "$1"; }
nbrt_stored=$("$nbrt" --store "$store" inspect kernel-py:latest --json |
  python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))')
docker_stored=$(docker save "$docker_image" | gzip -1 | wc -c)

out="bench/results/kernel-$date_tag.md"
python3 - "$work/launches.jsonl" "$out" <<PY
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
t = {k: [r["seconds"] for r in rows if r["kernel"] == k] for k in ("bench_nbrt", "bench_docker")}
med = {k: statistics.median(v) for k, v in t.items()}
mb = lambda b: f"{int(b) / 1e6:.1f} MB"
lines = [
    "# Kernel launch: kernel-py (nbrt) vs a seed 001 Dockerfile image",
    "",
    "Run on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, Docker $(docker version --format '{{.Server.Version}}'), "
    "gateway_provisioners 0.5.0 docker-provisioner through jupyter_client's AsyncKernelManager; "
    "kernel specs by \`nbrt kernelspec\` for both images. Launch = start_kernel → wait_for_ready → "
    "first execute_reply of \`1+1\`. ${runs} launches per image, alternating, after one warm-up each. "
    "Script: bench/kernel.sh.",
    "",
    "| | nbrt kernel-py | Dockerfile (seed 001 style) | ratio |",
    "| --- | --- | --- | --- |",
    f"| launch → first execute_reply, median | {med['bench_nbrt']:.2f} s | {med['bench_docker']:.2f} s | {med['bench_nbrt'] / med['bench_docker']:.2f} |",
    f"| launch, min / max | {min(t['bench_nbrt']):.2f} / {max(t['bench_nbrt']):.2f} s | {min(t['bench_docker']):.2f} / {max(t['bench_docker']):.2f} s | |",
    f"| image size (docker image inspect) | {mb($(size "$nbrt_image"))} | {mb($(size "$docker_image"))} | {$(size "$nbrt_image") / $(size "$docker_image"):.2f} |",
    f"| compressed (store blobs / docker save \| gzip -1) | {mb($nbrt_stored)} | {mb($docker_stored)} | {$nbrt_stored / $docker_stored:.2f} |",
    f"| layers | $(layers "$nbrt_image") | $(layers "$docker_image") | |",
    f"| build (this run; nbrt may hit its step cache, docker its layer cache) | ${nbrt_build_s} s | ${docker_build_s} s | |",
    "",
    "Images: \`$nbrt_image\` (nbrt), \`$docker_image\` (docker build, base \`$base_tag\`).",
    "",
    "Every launch (seconds):",
    "",
    "| run | nbrt | Dockerfile |",
    "| --- | --- | --- |",
]
for i, (a, b) in enumerate(zip(t["bench_nbrt"], t["bench_docker"])):
    lines.append(f"| {i + 1} | {a:.2f} | {b:.2f} |")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "bench: wrote $out" >&2
