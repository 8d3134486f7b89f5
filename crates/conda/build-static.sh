#!/usr/bin/env bash
# Build nbrt-conda (conda, mamba) as a static executable (glibc, crt-static) that runs in any
# Linux image. Names are resolved by hickory (feature `static`: /etc/resolv.conf and
# /etc/hosts read directly), so no NSS module from the image is loaded; TLS is rustls with
# the image's CA bundle and the webpki roots. The RUSTFLAGS apply to this build only: with an
# explicit --target, cargo keeps the artifacts in target/<triple>/ and never mixes them with
# the workspace's normal builds. Prints the path of the binary on stdout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../.."
triple="${NBRT_CONDA_TARGET:-x86_64-unknown-linux-gnu}"
RUSTFLAGS='-C target-feature=+crt-static -C strip=symbols' \
  cargo build --quiet -p nbrt-conda --features static --bin nbrt-conda --release --target "$triple" >&2
target_dir="$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo "$PWD/target")"
bin="$target_dir/$triple/release/nbrt-conda"
if ! file "$bin" | grep -q 'statically linked\|static-pie linked'; then
  echo "error: $bin is not statically linked: $(file "$bin")" >&2
  exit 1
fi
echo "$bin"
