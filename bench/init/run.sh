#!/usr/bin/env bash
# nbrt-init vs tini + docker-stacks-style shell start scripts, side by side in one run.
# Needs scripts/setup (Docker, mmdebstrap, runc, uv: the stock jupyter stack is built by nbrt),
# tini (Debian package: tini-static).
# Env: ROUNDS (end-to-end starts per image, default 10), LOCAL_RUNS (default 100).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
command -v tini-static >/dev/null || [ -x /usr/bin/tini-static ] || apt-get install -y -qq tini >/dev/null
bin="$("$repo/crates/init/build-static.sh")"
# The stock jupyter stack, built by nbrt into a bench store and loaded into Docker.
cargo build --release --quiet -p nbrt-cli --manifest-path "$repo/Cargo.toml"
nbrt="$repo/target/release/nbrt"
export NBRT_CONDA_BIN="${NBRT_CONDA_BIN:-$("$repo/crates/conda/build-static.sh")}"
export NBRT_INIT_BIN="$bin" NBRT_HOME="${BENCH_STORE:-$repo/target/bench-init/store}"
"$nbrt" build "$repo/stacks" --only jupyter >&2
nbrt_img=nbrt-bench/jupyter:init
"$nbrt" tag jupyter:latest "$nbrt_img" >&2
"$nbrt" load "$nbrt_img" >&2
shell_img="$("$here/build-shell-image.sh" "$nbrt_img")"
echo "images: $nbrt_img (nbrt-init) vs $shell_img (tini + start.sh)" >&2
RESULT_JSON="$repo/bench/results/init-$(date +%Y%m%d-%H%M%S).json" python3 "$here/measure.py" "$nbrt_img" "$shell_img"
