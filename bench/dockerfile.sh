#!/usr/bin/env bash
# Dockerfile benchmark: `DOCKER_BUILDKIT=1 /usr/bin/docker build` (BuildKit in Debian's
# engine) vs `nbrt build -f`, side by side in one run, two Dockerfiles, four scenarios each:
#
#   cold            --no-cache on both sides
#   no change       the same build again (both caches)
#   RUN changed     one RUN line changed (a different value every run)
#   file changed    one copied file changed (new content every run)
#
# kubeflow  Kubeflow-jupyter-shaped (ARG, TARGETARCH, old-form ENV, SHELL, useradd, COPY
#           --chown --chmod of s6 files, a RUN writing 3000 files) on Debian bookworm
#           minbase: no downloads, the builders' own costs.
# scipy     the scientific stack on top of the stock jupyter image, docker-stacks style:
#           `pip install` of numpy, pandas, scipy, matplotlib, scikit-learn and seaborn from
#           PyPI (~110 MB of wheels, a 400 MB layer; downloaded again on each cold build, by
#           both), fix-permissions, then a changing RUN, a copied script and a RUN using it.
#           The host's CA bundle reaches pip through a bind mount, on both sides.
#
# Both builders start from the same base images: imported into nbrt's store (jupyter built
# by nbrt from stacks/ when the store lacks it) and loaded into Docker.
# Needs: root, runc, mmdebstrap, Debian's docker.io, the network to PyPI. NBRT_BIN: the nbrt
# binary to measure (default: this checkout's debug build, whose dependencies are
# optimized). RUNS (default 3). ONLY=kubeflow|scipy runs one Dockerfile. BENCH_STORE: a
# store that has jupyter:latest already (it is copied, not written to).
# Output: bench/results/dockerfile-<date>.md (or BENCH_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs="${RUNS:-3}"
work="${BENCH_WORK:-$root/target/bench-dockerfile}"
out="${BENCH_OUT:-$root/bench/results/dockerfile-$(date -u +%Y-%m-%d).md}"
docker=/usr/bin/docker
. bench/lib.sh
bench_nbrt debug
rm -rf "$work/ctx" "$work/scipy" && mkdir -p "$work/ctx/s6/cont-init.d" "$work/ctx/s6/services.d/jupyterlab" "$work/scipy"
store="$work/store"
want() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }

# --- the bases ---------------------------------------------------------------------------------
if want kubeflow; then
  rootfs="$root/target/nbrt-fixtures/minbase-bookworm.tar"
  [ -f "$rootfs" ] || mmdebstrap --quiet --variant=minbase bookworm "$rootfs"
  "$nbrt" --store "$store" import "$rootfs" -t bench/minbase:bookworm >/dev/null
  "$nbrt" --store "$store" export bench/minbase:bookworm -o "$work/base.tar" >/dev/null
  $docker load -q -i "$work/base.tar" >/dev/null
fi
if want scipy; then
  if ! "$nbrt" --store "$store" inspect jupyter:latest >/dev/null 2>&1 && [ -n "${BENCH_STORE:-}" ]; then
    "$nbrt" --store "$BENCH_STORE" export jupyter:latest -o "$work/jupyter.tar" >/dev/null
    "$nbrt" --store "$store" import "$work/jupyter.tar" -t jupyter:latest >/dev/null
    rm -f "$work/jupyter.tar"
  fi
  bench_stack "$store" jupyter:latest jupyter
  "$nbrt" --store "$store" load jupyter:latest -t bench/jupyter:latest >/dev/null
fi

# --- the Dockerfiles ---------------------------------------------------------------------------
ctx="$work/ctx"
printf '#!/bin/sh\necho init\n' >"$ctx/s6/cont-init.d/01-init"
printf '#!/bin/sh\nexec jupyter lab\n' >"$ctx/s6/services.d/jupyterlab/run"
printf 'v0\n' >"$ctx/app.txt"
kubeflow_dockerfile() { # $1: the value the changing RUN line writes
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
scipy_ctx="$work/scipy"
cp /etc/ssl/certs/ca-certificates.crt "$scipy_ctx/host-ca.pem"
printf 'import scipy, pandas\nprint("v0", scipy.__version__, pandas.__version__)\n' >"$scipy_ctx/analysis.py"
scipy_dockerfile() { # $1: the value the changing RUN line writes
  cat >"$scipy_ctx/Dockerfile" <<DF
FROM bench/jupyter:latest
RUN --mount=type=bind,source=host-ca.pem,target=/tmp/host-ca.pem \\
    pip install --no-cache-dir --cert /tmp/host-ca.pem \\
      'numpy>=2' 'pandas>=2.2' 'scipy>=1.13' 'matplotlib>=3.9' 'scikit-learn>=1.5' 'seaborn>=0.13' && \\
    fix-permissions "\${CONDA_DIR}" && \\
    fix-permissions "/home/\${NB_USER}"
RUN echo "$1" > /home/\${NB_USER}/.changing
COPY --chown=\${NB_UID}:\${NB_GID} analysis.py /home/\${NB_USER}/work/analysis.py
RUN python /home/\${NB_USER}/work/analysis.py > /home/\${NB_USER}/work/result.txt
DF
}

now() { date +%s.%N; }
timed() { local s e; s=$(now); "$@" >/dev/null 2>"$work/last.err" || { echo "failed: $*" >&2; tail -20 "$work/last.err" >&2; exit 1; }; e=$(now); echo "$e - $s" | bc; }
declare -A T
add() { [ -n "$2" ] || { echo "a build failed ($1)" >&2; exit 1; }; T[$1]="${T[$1]:-} $2"; }
# bench NAME DIR WRITE FILE: the four scenarios, RUNS times, nbrt and BuildKit in turn.
bench() {
  local name=$1 dir=$2 write=$3 file=$4 tag="bench/$1:latest"
  nb() { "$nbrt" --store "$store" build -f "$dir/Dockerfile" "$dir" -t "$tag" "$@"; }
  dk() { DOCKER_BUILDKIT=1 $docker build -q -t "$tag" "$@" "$dir"; }
  # both SCENARIO ARGS…: each builder once, in turn; who goes first alternates by run, so
  # neither always meets a cold network path (downloads) or a warm page cache first.
  both() {
    local s=$1
    shift
    if [ $((r % 2)) = 1 ]; then
      add "$name $s nbrt" "$(timed nb "$@")"
      add "$name $s buildkit" "$(timed dk "$@")"
    else
      add "$name $s buildkit" "$(timed dk "$@")"
      add "$name $s nbrt" "$(timed nb "$@")"
    fi
  }
  $write start
  for r in $(seq 1 "$runs"); do
    both cold --no-cache
    both "no change"
    $write "run-$r-$RANDOM"
    both "RUN changed"
    printf '# v%s %s\n' "$r" "$RANDOM" >>"$dir/$file"
    both "file changed"
  done
  $docker rmi -f "$tag" >/dev/null 2>&1 || true
}
names=()
if want kubeflow; then bench kubeflow "$ctx" kubeflow_dockerfile app.txt; names+=(kubeflow); fi
if want scipy; then bench scipy "$scipy_ctx" scipy_dockerfile analysis.py; names+=(scipy); fi

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
{
  echo "# Dockerfile builds: nbrt vs BuildKit ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "bench/dockerfile.sh, RUNS=$runs, medians in seconds; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg) at the end; nbrt: $nbrt;"
  echo "BuildKit: Debian's docker.io $($docker version --format '{{.Server.Version}}')."
  echo
  echo "| Dockerfile | scenario | nbrt | BuildKit | BuildKit / nbrt |"
  echo "| --- | --- | --- | --- | --- |"
  for n in "${names[@]}"; do
    for s in "cold" "no change" "RUN changed" "file changed"; do
      a=$(echo "${T[$n $s nbrt]}" | median); b=$(echo "${T[$n $s buildkit]}" | median)
      printf '| %s | %s | %.2f | %.2f | %.1fx |\n' "$n" "$s" "$a" "$b" "$(echo "$b / $a" | bc -l)"
    done
  done
} | tee "$out"
$docker rmi -f bench/minbase:bookworm bench/jupyter:latest >/dev/null 2>&1 || true
$docker builder prune -af >/dev/null 2>&1 || true
# Every cold build left a layer of its own in the bench store: keep only what is named.
"$nbrt" --store "$store" rm bench/kubeflow:latest bench/scipy:latest >/dev/null 2>&1 || true
"$nbrt" --store "$store" gc >/dev/null || true
