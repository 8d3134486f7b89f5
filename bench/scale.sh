#!/usr/bin/env bash
# The multi-GB stock stack, which CI does not build: stacks/pytorch-cuda (PyPI's torch,
# torchvision and torchaudio, with CUDA as nvidia-* wheels) built by nbrt from its committed
# lock into a bench store, its static checks (the profiles Kubeflow's jupyter-pytorch-cuda
# must meet), loaded into Docker and a CPU torch computation run in it (no GPU here).
# STACK=tensorflow-cuda builds that one instead (the computation is then TensorFlow's).
#
# Reports: the stack's build time and nbrt's peak RSS (GNU time), the image's size
# compressed (its layers in the store) and in Docker, `nbrt load` time, disk used by the
# store, the checks, and what the computation printed.
#
# Disk: the wheels unpacked in uv's cache, the step's staging tree, its layer pieces and
# blob, and the image in Docker each hold the stack once: NEED_GB (default 45) must be free
# under BENCH_WORK, checked before anything is built. The store and the Docker image are
# removed at the end unless KEEP=1. NBRT_BIN names an nbrt binary to use instead of building
# target/release/nbrt; REUSE=1 reuses an earlier run's build (and its time).
# Needs: scripts/setup (docker.io, mmdebstrap, runc, uv, GNU time).
# Output: a Markdown report on stdout and bench/results/scale-<stack>-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
stack="${STACK:-pytorch-cuda}"
need="${NEED_GB:-45}"
work="${BENCH_WORK:-$root/target/bench-scale}"
mkdir -p "$work" bench/results
free=$(df -BG --output=avail "$work" | tail -1 | tr -dc 0-9)
if [ "$free" -lt "$need" ]; then
  echo "scale: $free GB free under $work, $need GB needed for $stack (NEED_GB): not building" >&2
  exit 2
fi
. bench/lib.sh
bench_nbrt
export NBRT_INIT_BIN="${NBRT_INIT_BIN:-$(crates/init/build-static.sh)}"
export NBRT_CONDA_BIN="${NBRT_CONDA_BIN:-$(crates/conda/build-static.sh)}"
store="$work/store"
tag="nbrt-bench/$stack:scale"
cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    docker rmi -f "$tag" >/dev/null 2>&1 || true
    rm -rf "$store"
  fi
}
trap cleanup EXIT

# The parents, from their locks, outside the measurement.
scripts/build-stacks "$nbrt" --store "$store" build stacks/ --only jupyter >&2
# The stack alone: every wheel downloaded, installed, compiled and packed into its layer.
# REUSE=1 takes the build (and its time) an earlier run of this script left in $work.
if [ "${REUSE:-0}" = 1 ] && [ -s "$work/time.txt" ] && "$nbrt" --store "$store" inspect "$stack:latest" >/dev/null 2>&1; then
  echo "scale: REUSE=1: the build of an earlier run ($(cat "$work/time.txt"))" >&2
else
  /usr/bin/time -f '%e %M' -o "$work/time.txt" \
    "$nbrt" --store "$store" build stacks/ --only "$stack" --json >"$work/build.json"
fi
read -r build_s build_kb <"$work/time.txt"
inspect=$("$nbrt" --store "$store" inspect "$stack:latest" --json)
layers=$(python3 -c 'import json,sys; v=json.loads(sys.argv[1]); print(len(v["layers"]), sum(l["size"] for l in v["layers"]))' "$inspect")
read -r nlayers compressed <<<"$layers"
store_du=$(du -sb "$store" | cut -f1)

checks=""
for profile in kubeflow docker-stacks jupyterhub; do
  if "$nbrt" --store "$store" check --profile "$profile" "$stack:latest" >"$work/check-$profile.txt" 2>&1; then
    checks="$checks $profile: pass;"
  else
    checks="$checks $profile: FAIL (see $work/check-$profile.txt);"
  fi
done

if docker image inspect "$tag" >/dev/null 2>&1; then
  docker rmi -f "$(docker image inspect --format '{{.Id}}' "$tag")" >/dev/null
fi
"$nbrt" --store "$store" tag "$stack:latest" "$tag"
start=$(date +%s.%N)
if "$nbrt" --store "$store" load "$tag" >"$work/load.txt" 2>&1; then
  load_s=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
else
  # Said in the report, not hidden. Docker may go on loading what nbrt sent after nbrt gave
  # up: the time it has the image is the load's, the failure is reported beside it.
  failed_s=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
  for _ in $(seq 600); do docker image inspect "$tag" >/dev/null 2>&1 && break; sleep 1; done
  docker image inspect "$tag" >/dev/null
  load_s="$(python3 -c "import time; print(f'{time.time() - $start:.1f}')") (**nbrt load failed** after ${failed_s} s: \`$(tail -1 "$work/load.txt")\`; Docker had the image at this time)"
fi
docker_size=$(docker image inspect --format '{{.Size}}' "$tag")

case "$stack" in
  tensorflow*) code='import tensorflow as tf
a = tf.reshape(tf.range(4.0), (2, 2))
print("tensorflow", tf.__version__, "GPUs:", len(tf.config.list_physical_devices("GPU")))
print(tf.linalg.matmul(a, a).numpy().tolist())' ;;
  *) code='import torch
a = torch.arange(4.0).reshape(2, 2)
print("torch", torch.__version__, "CUDA build:", torch.version.cuda, "GPU:", torch.cuda.is_available())
print((a @ a).tolist())' ;;
esac
start=$(date +%s.%N)
computed=$(docker run --rm --entrypoint /opt/conda/bin/python "$tag" -c "$code" 2>&1)
run_s=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")

gb() { python3 -c "print(f'{$1 / 1e9:.2f} GB')"; }
report="bench/results/scale-$stack-$(date +%Y%m%d-%H%M%S).md"
{
  echo "# bench/scale.sh: $stack ($(date -u +%Y-%m-%d), $(nproc) CPUs)"
  echo
  echo "| what | value |"
  echo "| --- | --- |"
  echo "| \`nbrt build --only $stack\` (parents built before) | ${build_s} s, peak RSS $((build_kb / 1024)) MiB |"
  echo "| image layers / compressed size | $nlayers / $(gb "$compressed") |"
  if [ "${REUSE:-0}" = 1 ]; then
    echo "| store on disk now (REUSE=1: its caches may have been removed since the build) | $(gb "$store_du") |"
  else
    echo "| store on disk after the build | $(gb "$store_du") |"
  fi
  echo "| \`nbrt load\` into Docker | ${load_s} s, $(gb "$docker_size") in Docker |"
  echo "| static checks | $checks |"
  echo "| \`docker run … python -c\` (import and compute, CPU) | ${run_s} s |"
  echo
  echo '```'
  echo "$computed"
  echo '```'
} | tee "$report"
