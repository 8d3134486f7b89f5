#!/bin/bash
# Bench fixture only: the tini + shell start path, written for this benchmark to the
# docker-stacks start contract (shared/research/docker-stacks.md §1.3). nbrt images do not
# use it; nbrt-init does all of this itself.

log() {
    local level="$1"
    shift
    if [ -n "${JUPYTER_DOCKER_STACKS_QUIET}" ] && { [ "$level" = INFO ] || [ "$level" = DEBUG ]; }; then
        return 0
    fi
    echo "${level}[$(date '+%Y-%m-%d %H:%M:%S')] $*" >&2
    if [ "$level" = FATAL ]; then exit 1; fi
}

log INFO "Entered start.sh with args: $*"
if [ "$#" -eq 0 ]; then
    set -- bash
fi
if [ "${_START_SH_EXECUTED}" = 1 ]; then
    log WARNING "start.sh is the default ENTRYPOINT, do not include it in CMD"
    exec "$@"
fi
export _START_SH_EXECUTED=1

# shellcheck source=/dev/null
source /opt/bench-shell/run-hooks.sh /usr/local/bin/start-notebook.d

NB_USER="${NB_USER:-jovyan}"
unset_requested() {
    local IFS=,
    for name in ${JUPYTER_ENV_VARS_TO_UNSET}; do
        unset "${name// /}"
    done
    unset JUPYTER_ENV_VARS_TO_UNSET
}

if [ "$(id -u)" = 0 ]; then
    if id jovyan >/dev/null 2>&1; then
        if [ "${NB_USER}" != jovyan ]; then log INFO "Renaming old user 'jovyan' to: '${NB_USER}'"; fi
        usermod --home "/home/${NB_USER}" --login "${NB_USER}" jovyan
    elif ! id "${NB_USER}" >/dev/null 2>&1; then
        log FATAL "neither jovyan nor ${NB_USER} exists"
    fi
    if [ "${NB_UID}" != "$(id -u "${NB_USER}")" ] || [ "${NB_GID}" != "$(id -g "${NB_USER}")" ]; then
        if [ "${NB_GID}" != "$(id -g "${NB_USER}")" ]; then
            groupadd --force --gid "${NB_GID}" --non-unique "${NB_GROUP:-${NB_USER}}"
        fi
        userdel "${NB_USER}"
        useradd --no-log-init --home "/home/${NB_USER}" --shell /bin/bash --uid "${NB_UID}" --gid "${NB_GID}" --groups 100 "${NB_USER}"
    fi
    if [ "${NB_USER}" != jovyan ] && [ ! -e "/home/${NB_USER}" ]; then
        mkdir "/home/${NB_USER}" && cp -a /home/jovyan/. "/home/${NB_USER}/" \
            || ln -s /home/jovyan "/home/${NB_USER}" || log FATAL "cannot set up /home/${NB_USER}"
        case "${PWD}/" in /home/jovyan/*) cd "/home/${NB_USER}/${PWD#/home/jovyan}" || true ;; esac
    fi
    if [ "${CHOWN_HOME}" = 1 ] || [ "${CHOWN_HOME}" = yes ]; then
        # shellcheck disable=SC2086
        chown ${CHOWN_HOME_OPTS} "${NB_UID}:${NB_GID}" "/home/${NB_USER}"
    fi
    if [ -n "${CHOWN_EXTRA}" ]; then
        for p in ${CHOWN_EXTRA//,/ }; do
            # shellcheck disable=SC2086
            chown ${CHOWN_EXTRA_OPTS} "${NB_UID}:${NB_GID}" "$p"
        done
    fi
    if [ "${GRANT_SUDO}" = 1 ] || [ "${GRANT_SUDO}" = yes ]; then
        echo "${NB_USER} ALL=(ALL) NOPASSWD:ALL" > /etc/sudoers.d/added-by-start-script
    fi
    source /opt/bench-shell/run-hooks.sh /usr/local/bin/before-notebook.d
    unset_requested
    log INFO "Running as ${NB_USER}: $*"
    exec sudo --preserve-env --set-home --user "${NB_USER}" \
        LD_LIBRARY_PATH="${LD_LIBRARY_PATH}" PATH="${PATH}" PYTHONPATH="${PYTHONPATH:-}" "$@"
else
    if [ -n "${GRANT_SUDO}" ]; then log WARNING "container must be started as root to grant sudo permissions!"; fi
    if ! whoami >/dev/null 2>&1; then log WARNING "no passwd entry for uid $(id -u)"; fi
    if [ "${NB_USER}" != jovyan ] && [ "${NB_USER}" != "$(id -un)" ]; then
        log WARNING "container must be started as root to change the desired user's name with NB_USER=\"${NB_USER}\"!"
    fi
    if [ ! -w /home/jovyan ]; then log WARNING "no write access to /home/jovyan"; fi
    source /opt/bench-shell/run-hooks.sh /usr/local/bin/before-notebook.d
    unset_requested
    log INFO "Executing the command: $*"
    exec "$@"
fi
