#!/usr/bin/env bash
# A/B of the "one package" scenario only: old and new nbrt alternately, each with its own store.
set -euo pipefail
w=$(dirname "$0"); export NBRT_INIT_BIN=$(/work/main/crates/init/build-static.sh)
for v in old new; do
  NBRT_HOME=$w/store-$v /work/nbrt-$v import /work/main/target/bench-build/base-1.tar --tag nbrt-bench/base:1 >/dev/null
  NBRT_HOME=$w/store-$v /work/nbrt-$v build $w/stack-$v >/dev/null
done
versions=(0.9.0 0.8.10 0.8.9 0.8.8 0.8.7 0.8.6)
for i in 0 1 2 3 4 5; do
  for v in old new; do
    sed "s/^  \"ipywidgets>=8\",$/  \"ipywidgets>=8\",\n  \"tabulate==${versions[$i]}\",/" $w/scipy.orig.toml > $w/stack-$v/scipy/runtime.toml
    t0=$(date +%s.%N); NBRT_HOME=$w/store-$v /work/nbrt-$v build $w/stack-$v >/dev/null; t1=$(date +%s.%N)
    printf '%s\t%s\t%s\n' "$v" "${versions[$i]}" "$(echo "$t1 - $t0" | bc)"
  done
done
