# Shared by the bench scripts. Source it from the repository root with $root set to it.

# bench_nbrt [release|debug]: sets $nbrt to $NBRT_BIN when given, else to this checkout's
# binary of that profile (default release), built now.
bench_nbrt() {
  if [ -n "${NBRT_BIN:-}" ]; then
    nbrt="$NBRT_BIN"
    return
  fi
  local dir="${CARGO_TARGET_DIR:-$root/target}"
  if [ "${1:-release}" = debug ]; then
    cargo build --quiet -p nbrt-cli
    nbrt="$dir/debug/nbrt"
  else
    cargo build --release --quiet -p nbrt-cli
    nbrt="$dir/release/nbrt"
  fi
}

# bench_stack STORE IMAGE STACK: builds the stock stack STACK (and the stacks it is built
# on) into STORE with $nbrt, once: nothing when STORE has IMAGE already.
bench_stack() {
  "$nbrt" --store "$1" inspect "$2" >/dev/null 2>&1 && return 0
  echo "bench: building stacks/$3 into $1 (once)" >&2
  NBRT_INIT_BIN="${NBRT_INIT_BIN:-$(crates/init/build-static.sh)}" \
  NBRT_CONDA_BIN="${NBRT_CONDA_BIN:-$(crates/conda/build-static.sh)}" \
    scripts/build-stacks "$nbrt" --store "$1" build stacks/ --only "$3" >&2
}

# bench_jupyter_store WORK: sets $store to the test fixture store
# (target/nbrt-fixtures/stock-store) when it holds jupyter:latest, else to WORK/store with
# the stock jupyter stack built into it.
bench_jupyter_store() {
  store="$root/target/nbrt-fixtures/stock-store"
  if [ -f "$store/index.json" ] && "$nbrt" --store "$store" inspect jupyter:latest >/dev/null 2>&1; then
    return 0
  fi
  store="$1/store"
  bench_stack "$store" jupyter:latest jupyter
}

# bench_image_id STORE IMAGE: the image's full ID (sha256:…).
bench_image_id() {
  "$nbrt" --store "$1" inspect "$2" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
