#!/bin/bash
# Bench fixture only: start-notebook written to the docker-stacks contract (§1.5).
if [ -n "${JUPYTERHUB_API_TOKEN+set}" ]; then
    echo "WARNING: using start-singleuser instead of start-notebook"
    exec jupyterhub-singleuser "$@"
fi
cmd=(jupyter "${DOCKER_STACKS_JUPYTER_CMD:-lab}")
if [ -n "${NOTEBOOK_ARGS}" ]; then
    # shellcheck disable=SC2206
    cmd+=(${NOTEBOOK_ARGS})
fi
cmd+=("$@")
echo "Executing: ${cmd[*]}"
exec "${cmd[@]}"
