#!/usr/bin/env bash
# Image operations on the multi-GB image: the stock pytorch-cuda stack that `KEEP=1
# bench/scale.sh` built and kept (its store and its image in Docker). Each pair in one run,
# interleaved (the two sides take turns, the order swapped every run), every command timed by
# GNU time (wall seconds, peak RSS):
#
#   nbrt export (default tar, and --format docker-archive)  vs  docker save
#   nbrt import                  vs  docker load     (of the same `docker save` tar)
#   nbrt push                    vs  skopeo copy     (from an OCI layout of the image)
#   nbrt pull                    vs  docker pull     (of what nbrt pushed)
#   nbrt manifest (cold, warm)   vs  docker run … pip list --format json
#
# Push and pull go to a registry of this script's own (the same docker-registry as
# scripts/setup's, on 127.0.0.1:5055), emptied before every push and every pull-side setup,
# so neither side finds blobs the other left. docker load and docker pull run with the
# image removed from Docker first; nbrt import and pull go to an empty store.
#
# The floor: cat (read), sha256 (read + hash: coreutils' sha256sum, and OpenSSL's, which uses
# the CPU's SHA extensions where sha256sum does not; the faster is the floor) and cp (read +
# write) of the same bytes: the
# image's compressed layer blobs (what export, push and pull move) and the uncompressed
# `docker save` tar (what docker save and load move, and what nbrt import reads).
#
# The rebase pair (nbrt rebase vs Docker's rebuild) is in bench/build.sh's base-changed
# scenario (`STACKS="jupyter pytorch-cuda" bench/build.sh`): Docker's rebuild needs the
# Dockerfiles and warm caches that script keeps.
#
# Env: STORE / IMAGE / DOCKER_TAG (defaults: scale.sh's kept store, pytorch-cuda:latest,
# nbrt-bench/pytorch-cuda:scale), RUNS (default 2; the warm manifest runs 5x as many),
# NBRT_BIN.
# Disk: the docker save tar and one export at a time next to it (about 2.2x the image's
# size in Docker); the script stops when less than MIN_FREE_GB (default 15) would remain.
# Needs: scripts/setup (docker.io, docker-registry, skopeo, GNU time).
# Output: bench/results/image-scale-<date>.md and the raw times in $work/times.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs="${RUNS:-2}"
work="${BENCH_WORK:-$root/target/bench-image-scale}"
store="${STORE:-$root/target/bench-scale/store}"
image="${IMAGE:-pytorch-cuda:latest}"
tag="${DOCKER_TAG:-nbrt-bench/pytorch-cuda:scale}"
min_free="${MIN_FREE_GB:-15}"
mkdir -p "$work" bench/results
. bench/lib.sh
bench_nbrt
if ! "$nbrt" --store "$store" inspect "$image" >/dev/null 2>&1; then
  echo "image-scale: no $image in $store: run KEEP=1 bench/scale.sh first" >&2
  exit 2
fi
times="$work/times.tsv"
: >"$times"
timed() { bench_timed "$times" "$@"; }
id=$(bench_image_id "$store" "$image")
docker image inspect "$tag" >/dev/null 2>&1 || "$nbrt" --store "$store" load "$image" --tag "$tag" >/dev/null
docker_bytes=$(docker image inspect --format '{{.Size}}' "$tag")
# The image's layer blobs in the store, and their size.
mapfile -t blobs < <("$nbrt" --store "$store" inspect "$image" --json | python3 -c '
import json, sys
for l in json.load(sys.stdin)["layers"]:
    print(sys.argv[1] + "/blobs/sha256/" + l["digest"].split(":")[1])' "$store")
blob_bytes=$(stat -c %s "${blobs[@]}" | paste -sd+ | bc)
echo "image-scale: $image ($id): ${#blobs[@]} layers, $blob_bytes bytes compressed, $docker_bytes in Docker" >&2

swap() { # the run number: odd runs start with the peer, even runs with nbrt
  [ $(( $1 % 2 )) -eq 0 ]
}

# --- the floor on the compressed layer blobs -------------------------------------------------
bench_free_gb "$work" $(( min_free + blob_bytes / 1000000000 + 1 ))
for _ in $(seq "$runs"); do
  sync
  timed "floor: layer blobs" "cat" sh -c 'cat "$@" >/dev/null' cat "${blobs[@]}"
  timed "floor: layer blobs" "sha256sum" sh -c 'sha256sum "$@" >/dev/null' sha256sum "${blobs[@]}"
  timed "floor: layer blobs" "openssl sha256" sh -c 'cat "$@" | openssl dgst -sha256 >/dev/null' sha256 "${blobs[@]}"
  rm -rf "$work/copy" && mkdir -p "$work/copy"
  timed "floor: layer blobs" "cp" sh -c 'cp "$@" && sync' cp "${blobs[@]}" "$work/copy/"
  rm -rf "$work/copy"
done

# --- export vs docker save ---------------------------------------------------------------------
export_one() { # run: the three writers of one archive each, output removed after each
  local r=$1
  local nbrt_tar=("$nbrt" --store "$store" export "$image" -t "$tag" -o "$work/nbrt.tar")
  local nbrt_legacy=("$nbrt" --store "$store" export "$image" -t "$tag" -o "$work/nbrt-legacy.tar" --format docker-archive)
  bench_free_gb "$work" $(( min_free + docker_bytes / 1000000000 + 1 ))
  if swap "$r"; then
    timed export "nbrt export" "${nbrt_tar[@]}"
    nbrt_tar_bytes=$(stat -c %s "$work/nbrt.tar"); rm -f "$work/nbrt.tar"
    timed export "docker save" docker save -o "$work/saved.tar" "$tag"
  else
    timed export "docker save" docker save -o "$work/saved.tar" "$tag"
    timed export "nbrt export" "${nbrt_tar[@]}"
    nbrt_tar_bytes=$(stat -c %s "$work/nbrt.tar"); rm -f "$work/nbrt.tar"
  fi
  bench_free_gb "$work" $(( min_free + docker_bytes / 1000000000 + 1 ))
  timed export "nbrt export --format docker-archive" "${nbrt_legacy[@]}"
  legacy_bytes=$(stat -c %s "$work/nbrt-legacy.tar"); rm -f "$work/nbrt-legacy.tar"
}
rm -f "$work/saved.tar"
for r in $(seq "$runs"); do
  rm -f "$work/saved.tar"
  export_one "$r"
done
saved_bytes=$(stat -c %s "$work/saved.tar")

# --- the floor on the uncompressed tar ---------------------------------------------------------
for _ in $(seq "$runs"); do
  sync
  timed "floor: docker save tar" "cat" sh -c 'cat "$1" >/dev/null' cat "$work/saved.tar"
  timed "floor: docker save tar" "sha256sum" sh -c 'sha256sum "$1" >/dev/null' sha256sum "$work/saved.tar"
  timed "floor: docker save tar" "openssl sha256" sh -c 'openssl dgst -sha256 "$1" >/dev/null' sha256 "$work/saved.tar"
done

# --- import vs docker load ---------------------------------------------------------------------
docker_unload() { # every name of the image goes, so its layers go too
  docker image inspect "$tag" >/dev/null 2>&1 || return 0
  docker rmi -f "$(docker image inspect --format '{{.Id}}' "$tag")" >/dev/null
}
import_nbrt() {
  rm -rf "$work/import-store"
  timed import "nbrt import" "$nbrt" --store "$work/import-store" import "$work/saved.tar"
  rm -rf "$work/import-store"
}
import_docker() {
  docker_unload
  timed import "docker load" docker load -q -i "$work/saved.tar"
}
for r in $(seq "$runs"); do
  if swap "$r"; then import_nbrt; import_docker; else import_docker; import_nbrt; fi
done
rm -f "$work/saved.tar"

# --- push vs skopeo copy, pull vs docker pull --------------------------------------------------
port=5055
bench_registry "$work/registry" "$port"
reg="127.0.0.1:$port"
rm -rf "$work/layout"
"$nbrt" --store "$store" export "$image" -t "$tag" -o "$work/layout" --format oci-dir >/dev/null
ref_name=${tag##*:}
empty_registry() { rm -rf "$work/registry/data"; }
push_nbrt() {
  empty_registry
  rm -f "$store/remotes.json"
  timed push "nbrt push" "$nbrt" --store "$store" push "$image" "$reg/bench/pytorch:nbrt$1"
}
push_skopeo() {
  empty_registry
  timed push "skopeo copy" skopeo copy -q --dest-tls-verify=false "oci:$work/layout:$ref_name" "docker://$reg/bench/pytorch:skopeo$1"
}
for r in $(seq "$runs"); do
  bench_free_gb "$work" $(( min_free + blob_bytes / 1000000000 + 1 ))
  if swap "$r"; then push_nbrt "$r"; push_skopeo "$r"; else push_skopeo "$r"; push_nbrt "$r"; fi
done
rm -rf "$work/layout"

# Pull: the registry holds the image as nbrt pushed it, under one name for nbrt and one for
# Docker, fresh each run.
pull_nbrt() {
  rm -rf "$work/pull-store"
  timed pull "nbrt pull" "$nbrt" --store "$work/pull-store" pull "$reg/bench/pytorch:pull$1"
  rm -rf "$work/pull-store"
}
pull_docker() {
  docker_unload
  docker rmi -f "$reg/bench/pytorch:pull$1" >/dev/null 2>&1 || true
  timed pull "docker pull" docker pull -q "$reg/bench/pytorch:pull$1"
  docker tag "$reg/bench/pytorch:pull$1" "$tag"
  docker rmi "$reg/bench/pytorch:pull$1" >/dev/null
}
for r in $(seq "$runs"); do
  empty_registry
  rm -f "$store/remotes.json"
  "$nbrt" --store "$store" push "$image" "$reg/bench/pytorch:pull$r" >/dev/null
  bench_free_gb "$work" $(( min_free + blob_bytes / 1000000000 + 1 ))
  if swap "$r"; then pull_nbrt "$r"; pull_docker "$r"; else pull_docker "$r"; pull_nbrt "$r"; fi
done
empty_registry
docker image inspect "$tag" >/dev/null 2>&1 || "$nbrt" --store "$store" load "$image" --tag "$tag" >/dev/null

# --- manifest vs docker run pip list -----------------------------------------------------------
# Cold: the store's cached layer indexes and package lists removed first; warm: kept. The
# container way at its fastest: the entrypoint bypassed, Python run directly.
docker run --rm --entrypoint /opt/conda/bin/python "$tag" -m pip list --format json >"$work/pip-list.json"
"$nbrt" --store "$store" manifest "$image" >"$work/manifest.json"
for r in $(seq $(( runs * 5 ))); do
  if [ "$r" -le "$runs" ]; then # cold is slow on this image: RUNS of it
    rm -rf "$store"/cache/inspect-*
    timed manifest "nbrt manifest (cold)" sh -c '"$@" >/dev/null' nbrt "$nbrt" --store "$store" manifest "$image"
  fi
  timed manifest "nbrt manifest (warm)" sh -c '"$@" >/dev/null' nbrt "$nbrt" --store "$store" manifest "$image"
  timed manifest "docker run pip list" sh -c '"$@" >/dev/null' docker docker run --rm --entrypoint /opt/conda/bin/python "$tag" -m pip list --format json
done

# --- report ------------------------------------------------------------------------------------
if [ -n "${NBRT_BIN:-}" ]; then
  binary="$NBRT_BIN, built $(date -u -r "$NBRT_BIN" +%Y-%m-%dT%H:%MZ)"
else
  binary="target/release/nbrt at $(git rev-parse --short HEAD)"
fi
python3 - "$times" "bench/results/image-scale-$(date -u +%Y%m%d-%H%M%S).md" "$image ($id)" \
  "$blob_bytes" "$saved_bytes" "$docker_bytes" "${nbrt_tar_bytes:-0}" "${legacy_bytes:-0}" "$binary" \
  "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/pip-list.json")" \
  "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/manifest.json")" <<'PY'
import os, platform, statistics, sys
times, out, image, blob_b, saved_b, docker_b, tar_b, legacy_b, binary, pip_n, man_n = sys.argv[1:]
blob_b, saved_b, docker_b, tar_b, legacy_b = map(int, (blob_b, saved_b, docker_b, tar_b, legacy_b))
d = {}
for line in open(times):
    op, tool, s, kb = line.rstrip("\n").split("\t")
    d.setdefault((op, tool), []).append((float(s), int(kb)))
med = lambda k: statistics.median(s for s, _ in d[k])
rss = lambda k: max(kb for _, kb in d[k]) / 1024
n = lambda k: len(d[k])
gb = lambda b: f"{b / 1e9:.2f} GB"
floor_blob = {t: med(("floor: layer blobs", t)) for t in ("cat", "sha256sum", "openssl sha256", "cp")}
floor_tar = {t: med(("floor: docker save tar", t)) for t in ("cat", "sha256sum", "openssl sha256")}
# sha256: the faster of coreutils' and OpenSSL's
floor_blob["sha256"] = min(floor_blob["sha256sum"], floor_blob["openssl sha256"])
floor_tar["sha256"] = min(floor_tar["sha256sum"], floor_tar["openssl sha256"])
# What "sha256 and the disk" reach on an operation's bytes: hashing them while they are read,
# and written once where the operation writes (cp); the larger of the two for one pass.
floor_of = {
    "nbrt export": ("layer blobs: cp", floor_blob["cp"]),
    "nbrt export --format docker-archive": ("tar: sha256", floor_tar["sha256"]),
    "nbrt import": ("tar: sha256", floor_tar["sha256"]),
    "nbrt push": ("layer blobs: sha256", floor_blob["sha256"]),
    "nbrt pull": ("layer blobs: cp or sha256, the larger", max(floor_blob["cp"], floor_blob["sha256"])),
}
pairs = [
    ("export", "docker save", "nbrt export"),
    ("export", "docker save", "nbrt export --format docker-archive"),
    ("import", "docker load", "nbrt import"),
    ("push", "skopeo copy", "nbrt push"),
    ("pull", "docker pull", "nbrt pull"),
    ("manifest", "docker run pip list", "nbrt manifest (cold)"),
    ("manifest", "docker run pip list", "nbrt manifest (warm)"),
]
rows, verdicts = [], []
for op, peer, ours in pairs:
    p, o = med((op, peer)), med((op, ours))
    ratio = p / o
    fl = floor_of.get(ours)
    fl_txt = f"{fl[1]:.1f} s ({fl[0]}): {o / fl[1]:.2f}x" if fl else "–"
    rows.append(f"| {op} | `{peer}` {p:.2f} s | `{ours}` {o:.2f} s | **{ratio:.2f}x** | {rss((op, ours)):.0f} MiB | {fl_txt} | {n((op, ours))} |")
    miss = []
    if ratio < 1.5:
        miss.append(f"{ratio:.2f}x the peer (target ≥ 1.5x)")
    if fl and o / fl[1] > 1.5:
        miss.append(f"{o / fl[1]:.2f}x the floor (target ≤ 1.5x)")
    if rss((op, ours)) >= 300:
        miss.append(f"peak RSS {rss((op, ours)):.0f} MiB (target < 300 MB)")
    verdicts.append(f"- `{ours}`: " + ("**missed**: " + "; ".join(miss) if miss else "met (≥ 1.5x the peer" + (", within 1.5x of the floor" if fl else "") + ", RSS < 300 MB)"))
peer_rss = [f"`{t}` {rss((op, t)):.0f} MiB" for op, t, _ in pairs[:5] if (op, t) in d]
load = os.getloadavg()
text = f"""# Image operations at scale: {image}

`bench/image-scale.sh`, one run, {os.cpu_count()} CPUs, {platform.machine()}, kernel {platform.release()};
nbrt: {binary}. **The machine was shared**: other sessions compiled Rust (cargo, 2 cores)
during the run, so absolute times are noisy; every pair was run interleaved (the two sides
take turns, the order swapped each run) so both see the same load. Load average at the
end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.

The image: {gb(blob_b)} of compressed layer blobs in nbrt's store, {gb(saved_b)} as a `docker save`
tar, {gb(docker_b)} in Docker. Medians of the runs (last column) in wall seconds (GNU time);
ratio = peer time / nbrt time; nbrt's peak RSS is the largest of its runs.

| operation | peer | nbrt | ratio | nbrt peak RSS | nbrt / floor | runs |
| --- | --- | --- | --- | --- | --- | --- |
""" + "\n".join(rows) + f"""

Floors (the same bytes, medians):

| bytes | cat (read) | sha256sum (read + hash) | openssl dgst -sha256 (read + hash) | cp (read + write + sync) |
| --- | --- | --- | --- | --- |
| compressed layer blobs ({gb(blob_b)}) | {floor_blob['cat']:.1f} s | {floor_blob['sha256sum']:.1f} s | {floor_blob['openssl sha256']:.1f} s | {floor_blob['cp']:.1f} s |
| `docker save` tar ({gb(saved_b)}) | {floor_tar['cat']:.1f} s | {floor_tar['sha256sum']:.1f} s | {floor_tar['openssl sha256']:.1f} s | – |

"nbrt / floor" sets each nbrt command against one pass of sha256 (the faster of sha256sum
and OpenSSL) or the disk over the bytes it must move: export (default) writes the
compressed blobs (cp); export as docker-archive and import must hash the uncompressed tar
(sha256 of the `docker save` tar; the
docker-archive export also decompresses every layer, import also compresses every layer);
push reads and hashes the blobs (sha256 of the blobs); pull writes and hashes them (cp or
sha256, the larger). The manifest has no such floor.

Targets (issue 20): each ≥ 1.5x the peer, within 1.5x of the floor, peak RSS < 300 MB.

""" + "\n".join(verdicts) + f"""

Sizes written: nbrt export {gb(tar_b)} (layers as stored, compressed), nbrt export
--format docker-archive {gb(legacy_b)}, docker save {gb(saved_b)}.
Peers' peak RSS (GNU time of the client process; the work is in dockerd): {', '.join(peer_rss)}.
Manifest: nbrt lists {man_n} records (Python, conda and Debian), `pip list` {pip_n} Python
packages; `docker run --rm --entrypoint /opt/conda/bin/python IMAGE -m pip list --format json`
is the container way at its fastest.

How: push and pull go to a Distribution registry of the script's own on 127.0.0.1:5055,
emptied before each side's run; skopeo copies from an OCI layout of the image (`nbrt export
--format oci-dir`, compressed layers, so it uploads the same blobs nbrt pushes); docker pull
pulls what nbrt pushed. `docker load` and `docker pull` start with the image removed from
Docker (other images Docker holds may share the jupyter parent's layers, which Docker then
skips: that favours Docker); nbrt import and pull write into an empty store. The rebase pair
(nbrt rebase vs Docker's rebuild) is measured by `bench/build.sh` with
`STACKS="jupyter pytorch-cuda"`.
"""
open(out, "w").write(text)
print(text)
PY
