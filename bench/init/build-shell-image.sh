#!/usr/bin/env bash
# Bench fixture: the stock jupyter image plus tini and the shell start scripts in shell/
# (written to the docker-stacks contract) in /opt/bench-shell, first on PATH (the stock
# image's /usr/local/bin/start*.sh are links to nbrt-init and stay untouched), started as
# docker-stacks does: ENTRYPOINT tini -g -- start.sh, CMD start-notebook.sh. Prints the tag.
# Usage: build-shell-image.sh NBRT_IMAGE_TAG
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
base="${1:?usage: $0 NBRT_IMAGE_TAG}"
tini="${TINI_STATIC:-/usr/bin/tini-static}"
[ -x "$tini" ] || { echo "needs a static tini at $tini (apt-get install tini)" >&2; exit 1; }
hash="$( (docker image inspect --format '{{.Id}}' "$base"; cat "$here"/shell/* "$0" "$tini") | sha256sum | cut -c1-16)"
tag="nbrt-bench/init-shell:$hash"
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; exit 0; fi
cid="$(docker create --user root --entrypoint /bin/true "$base")"
trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
docker cp "$tini" "$cid:/usr/bin/tini" >&2
stage="$(mktemp -d)"
trap 'docker rm -f "$cid" >/dev/null 2>&1 || true; rm -rf "$stage"' EXIT
mkdir "$stage/bench-shell"
cp "$here/shell/start.sh" "$here/shell/run-hooks.sh" "$here/shell/start-notebook.sh" "$stage/bench-shell/"
docker cp "$stage/bench-shell" "$cid:/opt/bench-shell" >&2
docker cp "$here/shell/jupyter_server_config.py" "$cid:/etc/jupyter_server_config.py" >&2
docker commit \
  --change 'ENTRYPOINT ["tini", "-g", "--", "start.sh"]' \
  --change 'CMD ["start-notebook.sh"]' \
  --change 'USER 1000' \
  --change 'ENV JUPYTER_CONFIG_PATH=/etc' \
  --change 'ENV PATH=/opt/bench-shell:/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "$cid" "$tag" >/dev/null
echo "$tag"
