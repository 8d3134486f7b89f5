#!/usr/bin/env bash
# Dockerfile benchmark: `DOCKER_BUILDKIT=1 /usr/bin/docker build` (BuildKit in Debian's
# engine 20.10) vs `nbrt build -f`, side by side in one run, from the same base image
# (Debian bookworm minbase, imported into nbrt's store and loaded into Docker):
#
#   cold            --no-cache on both sides
#   no change       the same build again (both caches)
#   RUN changed     one RUN line changed (a different value every run)
#   file changed    one copied file changed (new content every run)
#
# The Dockerfile is Kubeflow-jupyter-shaped (ARG, TARGETARCH, old-form ENV, SHELL, useradd,
# COPY --chown --chmod of s6 files, a RUN writing 3000 files) — no package downloads, so
# the numbers are the builders' own costs, offline.
#
# Needs: root, runc, mmdebstrap, Debian's docker.io. NBRT_BIN: the nbrt binary to measure
# (default: this checkout's debug build, whose dependencies are optimized). RUNS (default 3).
# Output: bench/results/dockerfile-<date>.md (or BENCH_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs="${RUNS:-3}"
work="${BENCH_WORK:-$root/target/bench-dockerfile}"
out="${BENCH_OUT:-$root/bench/results/dockerfile-$(date -u +%Y-%m-%d).md}"
docker=/usr/bin/docker
if [ -n "${NBRT_BIN:-}" ]; then nbrt="$NBRT_BIN"; else
  cargo build --quiet -p nbrt-cli
  nbrt="${CARGO_TARGET_DIR:-$root/target}/debug/nbrt"
fi
rm -rf "$work" && mkdir -p "$work/ctx/s6/cont-init.d" "$work/ctx/s6/services.d/jupyterlab"
store="$work/store"
rootfs="$root/target/nbrt-fixtures/minbase-bookworm.tar"
[ -f "$rootfs" ] || mmdebstrap --quiet --variant=minbase bookworm "$rootfs"
"$nbrt" --store "$store" import "$rootfs" -t bench/minbase:bookworm >/dev/null
"$nbrt" --store "$store" export bench/minbase:bookworm -o "$work/base.tar" >/dev/null
$docker load -q -i "$work/base.tar" >/dev/null
ctx="$work/ctx"
printf '#!/bin/sh\necho init\n' >"$ctx/s6/cont-init.d/01-init"
printf '#!/bin/sh\nexec jupyter lab\n' >"$ctx/s6/services.d/jupyterlab/run"
printf 'v0\n' >"$ctx/app.txt"
write_dockerfile() { # $1: the value the changing RUN line writes
  cat >"$ctx/Dockerfile" <<DF
ARG BASE_IMG=bench/minbase:bookworm
FROM \$BASE_IMG
ARG TARGETARCH
USER root
ENV NB_USER jovyan
ENV NB_UID 1000
ENV HOME /home/\$NB_USER
SHELL ["/bin/bash", "-c"]
RUN case "\${TARGETARCH}" in amd64|arm64) echo "\$TARGETARCH" > /etc/arch ;; *) exit 1 ;; esac
RUN useradd -M -s /bin/bash -N -u \${NB_UID} \${NB_USER} && mkdir -p \${HOME} && chown -R \${NB_USER}:users \${HOME}
RUN mkdir -p /opt/data && for i in \$(seq 1 3000); do echo "\$i" > /opt/data/f\$i; done
COPY --chown=\${NB_USER}:users --chmod=755 s6/ /etc
RUN echo "$1" > /etc/changing
COPY --chown=\${NB_USER}:users app.txt /home/jovyan/app.txt
RUN wc -c /home/jovyan/app.txt > /home/jovyan/size
USER \$NB_UID
WORKDIR \$HOME
ENTRYPOINT ["/init"]
DF
}
now() { date +%s.%N; }
timed() { local s e; s=$(now); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; e=$(now); echo "$e - $s" | bc; }
nb() { "$nbrt" --store "$store" build -f "$ctx/Dockerfile" "$ctx" -t bench/app:latest "$@"; }
dk() { DOCKER_BUILDKIT=1 $docker build -q -t bench/app:latest "$@" "$ctx"; }
declare -A T
add() { [ -n "$2" ] || { echo "a build failed ($1)" >&2; exit 1; }; T[$1]="${T[$1]:-} $2"; }
write_dockerfile start
for r in $(seq 1 "$runs"); do
  add "cold nbrt" "$(timed nb --no-cache)"
  add "cold buildkit" "$(timed dk --no-cache)"
  add "no change nbrt" "$(timed nb)"
  add "no change buildkit" "$(timed dk)"
  write_dockerfile "run-$r-$RANDOM"
  add "RUN changed nbrt" "$(timed nb)"
  add "RUN changed buildkit" "$(timed dk)"
  printf 'v%s %s\n' "$r" "$RANDOM" >"$ctx/app.txt"
  add "file changed nbrt" "$(timed nb)"
  add "file changed buildkit" "$(timed dk)"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
{
  echo "# Dockerfile builds: nbrt vs BuildKit ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "bench/dockerfile.sh, RUNS=$runs, medians in seconds; $(nproc) CPUs; nbrt: $nbrt;"
  echo "BuildKit: Debian's docker.io $($docker version --format '{{.Server.Version}}')."
  echo
  echo "| scenario | nbrt | BuildKit | BuildKit / nbrt |"
  echo "| --- | --- | --- | --- |"
  for s in "cold" "no change" "RUN changed" "file changed"; do
    a=$(echo "${T[$s nbrt]}" | median); b=$(echo "${T[$s buildkit]}" | median)
    printf '| %s | %.2f | %.2f | %.1fx |\n' "$s" "$a" "$b" "$(echo "$b / $a" | bc -l)"
  done
} | tee "$out"
$docker rmi -f bench/app:latest bench/minbase:bookworm >/dev/null 2>&1 || true
