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

# bench_timed TSV OP TOOL COMMAND...: runs COMMAND once and appends "OP<tab>TOOL<tab>wall
# seconds<tab>peak RSS in KiB" to TSV (the line goes to stderr too). A program is run under
# GNU time; a shell function may run its programs through bench_rss, and the largest peak
# RSS they report is the line's (0 when none did). The peak RSS GNU time reports is that of
# the largest process in the tree (a program and the children it waited for). A failing
# command fails the caller.
bench_timed() {
  local tsv=$1 op=$2 tool=$3 t0 t1 kb
  shift 3
  BENCH_RSS=$(mktemp)
  export BENCH_RSS
  # What the run before wrote is on the disk first, so its writeback is not in this time.
  sync
  bench_settle
  t0=$(date +%s.%N)
  if [ "$(type -t "$1")" = function ]; then
    "$@"
  else
    bench_rss "$@"
  fi
  t1=$(date +%s.%N)
  kb=$(grep -E '^[0-9]+$' "$BENCH_RSS" | sort -n | tail -1 || true)
  rm -f "$BENCH_RSS"
  unset BENCH_RSS
  printf '%s\t%s\t%.2f\t%s\n' "$op" "$tool" "$(echo "$t1 - $t0" | bc)" "${kb:-0}" | tee -a "$tsv" >&2
}

# bench_settle: with BENCH_SETTLE=N (seconds), the disk is let settle before a timed run: the
# file system is trimmed (fstrim, where it can be) and N seconds pass. On a virtual disk
# whose file system discards online, writes right after a large removal (a store or images
# removed for a cold run) were once measured up to 2x slower here (not seen again inside the
# build benchmark); both sides of a pair get the same wait.
bench_settle() {
  [ "${BENCH_SETTLE:-0}" -gt 0 ] || return 0
  fstrim "$(df --output=target "${work:-.}" | tail -1)" >/dev/null 2>&1 || true
  sleep "$BENCH_SETTLE"
}

# bench_rss COMMAND...: runs COMMAND, under GNU time when bench_timed is measuring (its peak
# RSS added to the measurement's).
bench_rss() {
  if [ -n "${BENCH_RSS:-}" ]; then
    /usr/bin/time -f '%M' -a -o "$BENCH_RSS" "$@"
  else
    "$@"
  fi
}

# bench_free_gb DIR MIN: fails (with a message) when less than MIN GB are free under DIR.
bench_free_gb() {
  local free
  free=$(df -BG --output=avail "$1" | tail -1 | tr -dc 0-9)
  if [ "$free" -lt "$2" ]; then
    echo "bench: only $free GB free under $1, $2 GB needed here: stopping" >&2
    return 1
  fi
}

# bench_registry DIR PORT: starts a Distribution registry of our own on 127.0.0.1:PORT with
# its data in DIR/data (no blob cache; empty it with `rm -rf DIR/data` between runs, so no
# side finds the other's blobs) and stops it when the calling script exits.
bench_registry() {
  mkdir -p "$1"
  cat >"$1/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $1/data}
http: {addr: 127.0.0.1:$2}
YAML
  docker-registry serve "$1/registry.yml" >"$1/registry.log" 2>&1 &
  bench_registry_pid=$!
  trap 'kill $bench_registry_pid 2>/dev/null || true' EXIT
  for _ in $(seq 30); do curl -fsS "http://127.0.0.1:$2/v2/" >/dev/null 2>&1 && break; sleep 0.3; done
  curl -fsS "http://127.0.0.1:$2/v2/" >/dev/null
}
