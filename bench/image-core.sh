#!/usr/bin/env bash
# Image core benchmark, each pair in one run on the same machine and image:
#   nbrt export  vs  docker save
#   nbrt import  vs  docker load     (of the same `docker save` tar)
#   nbrt push    vs  skopeo copy     (same image, same local registry, fresh registry each run)
# plus what the machine's disk and sha256 reach on the same data, for reference.
# The image is Debian bookworm + python3 + numpy, pandas, scipy, matplotlib, scikit-learn
# wheels (≥ 400 MB uncompressed), made with mmdebstrap and pip once and cached.
# Needs: scripts/setup (docker.io, docker-registry, skopeo, mmdebstrap, hyperfine).
# Output: a Markdown table on stdout and bench/results/image-core-<date>.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs="${RUNS:-3}"
work="${BENCH_WORK:-$root/target/bench-image-core}"
mkdir -p "$work" bench/results
cargo build --release --quiet -p nbrt-cli
nbrt="$root/target/release/nbrt"

rootfs="$work/python.tar"
if [ ! -f "$rootfs" ]; then
  echo "bench: building the Debian + Python + wheels root file system (once)" >&2
  # pip inside the chroot runs with a clean environment and trusts the host's CA bundle
  # (needed behind TLS-inspecting proxies); the bundle is removed before the tar is written.
  mmdebstrap --quiet --variant=minbase --include=python3,python3-pip,ca-certificates \
    --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/tmp/host-ca.crt"' \
    --customize-hook='chroot "$1" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_CERT=/tmp/host-ca.crt REQUESTS_CA_BUNDLE=/tmp/host-ca.crt pip install --quiet --break-system-packages --no-cache-dir numpy pandas scipy matplotlib scikit-learn' \
    --customize-hook='rm "$1/tmp/host-ca.crt"' \
    bookworm "$work/python.partial.tar"
  mv "$work/python.partial.tar" "$rootfs"
fi

name=nbrt-bench/python:1
export NBRT_HOME="$work/store"
rm -rf "$NBRT_HOME"
"$nbrt" import "$rootfs" --tag "$name" >/dev/null
docker rmi -f "$name" >/dev/null 2>&1 || true
"$nbrt" load "$name" >/dev/null
docker save -o "$work/saved.tar" "$name"
uncompressed=$(stat -c %s "$work/saved.tar")
echo "bench: image $(( uncompressed / 1000000 )) MB uncompressed" >&2

# A registry of our own with no blob cache, emptied before every push.
regdata="$work/registry-data"
port=5055
cat >"$work/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $regdata}
http: {addr: 127.0.0.1:$port}
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
regpid=$!
trap 'kill $regpid 2>/dev/null || true' EXIT
for _ in $(seq 30); do curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.3; done
"$nbrt" export "$name" -o "$work/layout" --format oci-dir >/dev/null 2>&1 || true
reset_registry="rm -rf $regdata/docker $NBRT_HOME/remotes.json"

hf() { hyperfine --style basic --runs "$runs" --export-json "$work/$1.json" "${@:2}" >&2; }

# Reference: how fast this machine reads, hashes and writes these bytes.
hf baseline \
  --prepare "sync" \
  -n "sha256sum (read+hash)" "sha256sum $work/saved.tar" \
  -n "cp (read+write)" "cp $work/saved.tar $work/copy.tar"
rm -f "$work/copy.tar"

hf export \
  -n "docker save" "docker save -o $work/docker-save.tar $name" \
  -n "nbrt export" "$nbrt export $name -o $work/nbrt-export.tar" \
  -n "nbrt export --format docker-archive" "$nbrt export $name -o $work/nbrt-export-legacy.tar --format docker-archive"

hf import \
  --prepare "docker rmi -f $name >/dev/null 2>&1 || true; rm -rf $work/import-store" \
  -n "docker load" "docker load -q -i $work/saved.tar" \
  -n "nbrt import" "NBRT_HOME=$work/import-store $nbrt import $work/saved.tar"

hf push \
  --prepare "$reset_registry" \
  -n "skopeo copy" "skopeo copy -q --dest-tls-verify=false oci:$work/layout:1 docker://127.0.0.1:$port/bench/python:1" \
  -n "nbrt push" "$nbrt push $name 127.0.0.1:$port/bench/python:1"

python3 bench/report.py "$work" "$uncompressed" "$(stat -c %s "$work/nbrt-export.tar")" | tee "bench/results/image-core-$(date +%F).md"
