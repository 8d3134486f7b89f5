#!/usr/bin/env bash
# bench/swarm.sh's helpers (not timed unless hyperfine says so):
#   stop-sessions LAB BASE TOKEN   stop the user's sessions on the site at BASE and wait
#                                  until their containers are gone (host and lab nodes)
#   peer-start                     `docker service create` of $IMAGE as a session by hand,
#                                  then GET $PREFIX/api on $PORT of every node until a 200
#   peer-rm                        remove that service and wait until its container is gone
#   cleanup LAB SITE...            remove what the sites left (services, configs, volumes)
set -euo pipefail
NODES=(n1 n2 n3)
dk() { local n=$1; shift; docker -H "unix://$LAB/$n/docker.sock" "$@"; }

gone() { # filter: no container matching it on the host or any node
  for _ in $(seq 600); do
    local left=""
    left+=$(docker ps -aq --filter "$1" 2>/dev/null || true)
    for n in "${NODES[@]}"; do left+=$(dk "$n" ps -aq --filter "$1" 2>/dev/null || true); done
    [ -z "$left" ] && return 0
    sleep 0.1
  done
  echo "swarm-peer: containers matching $1 did not go" >&2
  return 1
}

case "$1" in
stop-sessions)
  LAB=$2 base=$3 token=$4
  ids=$(curl -sf -H "Authorization: Bearer $token" "$base/api/sessions" |
        python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)["sessions"]))')
  for id in $ids; do
    curl -sf -X DELETE -H "Authorization: Bearer $token" "$base/api/sessions/$id" >/dev/null
    gone "label=io.nbrt.session=$id"
  done
  ;;
peer-start)
  dk n1 service create --detach --quiet --name "$NAME" \
    --restart-condition none --endpoint-mode dnsrr --network "$NETWORK" \
    --publish "mode=host,target=8888,published=$PORT" \
    --limit-cpu 1 --limit-memory 1g --reserve-cpu 0.25 --reserve-memory 1g \
    --mount "type=volume,source=$NAME-home,target=/home/jovyan" \
    --mount "type=tmpfs,target=/dev/shm,tmpfs-size=67108864" \
    -e "NB_PREFIX=$PREFIX" -e "JUPYTER_TOKEN=$TOKEN" -e JUPYTER_PORT=8888 -e NBRT_AUTH=token \
    "$IMAGE" >/dev/null
  while :; do
    for ip in 10.77.0.11 10.77.0.12 10.77.0.13; do
      code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://$ip:$PORT$PREFIX/api" || true)
      [ "$code" = 200 ] && exit 0
    done
    sleep 0.01
  done
  ;;
peer-rm)
  dk n1 service rm "$NAME" >/dev/null 2>&1 || true
  gone "label=com.docker.swarm.service.name=$NAME"
  ;;
cleanup)
  LAB=$2; shift 2
  for site in "$@"; do
    f="label=io.nbrt.site=$site"
    for what in service config secret; do
      ids=$(dk n1 "$what" ls -q --filter "$f")
      [ -n "$ids" ] && dk n1 "$what" rm $ids >/dev/null 2>&1 || true
    done
    gone "$f" || true
    docker volume ls -q --filter "$f" | xargs -r docker volume rm -f >/dev/null
    for n in "${NODES[@]}"; do
      dk "$n" volume ls -q --filter "$f" | xargs -r docker -H "unix://$LAB/$n/docker.sock" volume rm -f >/dev/null
    done
  done
  for n in "${NODES[@]}"; do dk "$n" volume rm -f nbrt-bench-by-hand-home >/dev/null 2>&1 || true; done
  ;;
*) echo "usage: $0 stop-sessions|peer-start|peer-rm|cleanup" >&2; exit 2 ;;
esac
