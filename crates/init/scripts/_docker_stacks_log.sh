# shellcheck shell=sh
# docker-stacks' log helpers, for start scripts and hooks to source (bash or POSIX sh):
#
#   _log [LEVEL] MESSAGE...   LEVEL: INFO, WARNING, ERROR, FATAL or DEBUG; any other first
#                             word is part of an INFO message
#   _log_info MESSAGE...      _log INFO
#   _log_warn MESSAGE...      _log WARNING
#   _log_error MESSAGE...     _log ERROR
#   _log_fatal MESSAGE...     _log FATAL, then exit 1
#
# A line goes to stderr as `LEVEL[YYYY-MM-DD HH:MM:SS] message`. A non-empty
# JUPYTER_DOCKER_STACKS_QUIET hides INFO and DEBUG (never WARNING, ERROR or FATAL). On a
# terminal, unless NO_COLOR is set, WARNING is yellow (\e[0;33m), ERROR red (\e[0;31m),
# FATAL bold red (\e[0;1;31m) and DEBUG cyan (\e[0;36m).
#
# Installed by `nbrt-init install`; nbrt-init logs in the same format, and defines these
# functions in the shell that sources `*.sh` hooks.

_log () {
    _log_level="${1:-}"
    case "${_log_level}" in
        INFO|WARNING|ERROR|FATAL|DEBUG) shift ;;
        *) _log_level=INFO ;;
    esac
    case "${_log_level}" in
        INFO|DEBUG)
            if [ -n "${JUPYTER_DOCKER_STACKS_QUIET:-}" ]; then
                unset _log_level
                return 0
            fi
            ;;
    esac
    _log_colour=""
    if [ -t 2 ] && [ -z "${NO_COLOR:-}" ]; then
        case "${_log_level}" in
            WARNING) _log_colour='0;33' ;;
            ERROR) _log_colour='0;31' ;;
            FATAL) _log_colour='0;1;31' ;;
            DEBUG) _log_colour='0;36' ;;
        esac
    fi
    if [ -n "${_log_colour}" ]; then
        printf '\033[%sm%s[%s] %s\033[0m\n' "${_log_colour}" "${_log_level}" "$(date '+%Y-%m-%d %H:%M:%S')" "$*" >&2
    else
        printf '%s[%s] %s\n' "${_log_level}" "$(date '+%Y-%m-%d %H:%M:%S')" "$*" >&2
    fi
    unset _log_level _log_colour
    return 0
}
_log_info () { _log INFO "$@"; }
_log_warn () { _log WARNING "$@"; }
_log_error () { _log ERROR "$@"; }
_log_fatal () { _log FATAL "$@"; exit 1; }
