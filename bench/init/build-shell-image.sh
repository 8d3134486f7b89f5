#!/usr/bin/env bash
# Bench fixture: the nbrt-init fixture image plus tini and the shell start scripts in
# shell/ (written to the docker-stacks contract), started as docker-stacks does:
# ENTRYPOINT tini -g -- start.sh, CMD start-notebook.sh. Prints the image tag.
# Usage: build-shell-image.sh NBRT_IMAGE_TAG
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
base="${1:?usage: $0 NBRT_IMAGE_TAG}"
tini="${TINI_STATIC:-/usr/bin/tini-static}"
[ -x "$tini" ] || { echo "needs a static tini at $tini (apt-get install tini)" >&2; exit 1; }
hash="$( (echo "$base"; cat "$here"/shell/* "$0" "$tini") | sha256sum | cut -c1-16)"
tag="nbrt-bench/init-shell:$hash"
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; exit 0; fi
cid="$(docker create --user root --entrypoint /bin/true "$base")"
trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
docker cp "$tini" "$cid:/usr/bin/tini" >&2
for f in start.sh run-hooks.sh start-notebook.sh; do
  docker cp "$here/shell/$f" "$cid:/usr/local/bin/$f" >&2
done
docker cp "$here/shell/jupyter_server_config.py" "$cid:/etc/jupyter_server_config.py" >&2
docker commit \
  --change 'ENTRYPOINT ["tini", "-g", "--", "start.sh"]' \
  --change 'CMD ["start-notebook.sh"]' \
  --change 'USER 1000' \
  --change 'ENV JUPYTER_CONFIG_PATH=/etc' \
  "$cid" "$tag" >/dev/null
echo "$tag"
