#!/usr/bin/env bash
# nbrt-init vs tini + docker-stacks-style shell start scripts, side by side in one run.
# Needs Docker, mmdebstrap (for the interim fixture), tini (Debian package: tini-static).
# Env: ROUNDS (end-to-end starts per image, default 10), LOCAL_RUNS (default 100).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
command -v tini-static >/dev/null || [ -x /usr/bin/tini-static ] || apt-get install -y -qq tini >/dev/null
bin="$("$repo/crates/init/build-static.sh")"
nbrt_img="$("$repo/crates/init/tests/fixture/jupyter-fixture.sh" image "$bin")"
shell_img="$("$here/build-shell-image.sh" "$nbrt_img")"
echo "images: $nbrt_img (nbrt-init) vs $shell_img (tini + start.sh)" >&2
RESULT_JSON="$repo/bench/results/init-$(date +%Y%m%d-%H%M%S).json" python3 "$here/measure.py" "$nbrt_img" "$shell_img"
