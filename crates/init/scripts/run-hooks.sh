# shellcheck shell=bash
# docker-stacks' hook runner, to be sourced by bash: `source run-hooks.sh DIR`.
#
# Runs the hooks of DIR with the rules nbrt-init applies to start-notebook.d and
# before-notebook.d: names in byte order, dot files skipped; `*.sh` files are sourced into
# this shell (executable or not), so what they export or unset stays; other executable files
# are run; anything else is logged as ignored. A failing hook is logged as an ERROR and the
# next one runs (errexit is off while hooks run and restored afterwards); a sourced hook
# that exits, or sets -e and then fails, ends the sourcing shell. Returns 1 with an ERROR
# when not given exactly one directory.
#
# Installed by `nbrt-init install`. Logs through _docker_stacks_log.sh.

if ! declare -F _log >/dev/null 2>&1; then
    if [[ "${BASH_SOURCE[0]}" == */* && -r "${BASH_SOURCE[0]%/*}/_docker_stacks_log.sh" ]]; then
        # shellcheck source=/dev/null
        source "${BASH_SOURCE[0]%/*}/_docker_stacks_log.sh"
    else
        # shellcheck source=/dev/null
        source /usr/local/bin/_docker_stacks_log.sh
    fi
fi

if [ "$#" -ne 1 ]; then
    _log_error "Should pass exactly one directory"
    return 1 2>/dev/null || exit 1
fi
if [[ ! -d "${1}" ]]; then
    _log_error "Directory ${1} doesn't exist or is not a directory"
    return 1 2>/dev/null || exit 1
fi

if [[ "$-" == *e* ]]; then
    __run_hooks_errexit=1
else
    __run_hooks_errexit=0
fi
set +e

# Byte order of the names whatever the locale: expand the glob in the C locale.
__run_hooks_lc_all_set="${LC_ALL+set}"
__run_hooks_lc_all="${LC_ALL:-}"
LC_ALL=C
__run_hooks_files=("${1}"/*)
if [[ -n "${__run_hooks_lc_all_set}" ]]; then
    LC_ALL="${__run_hooks_lc_all}"
else
    unset LC_ALL
fi
unset __run_hooks_lc_all_set __run_hooks_lc_all

_log_info "Running hooks in: ${1} as uid: $(id -u) gid: $(id -g)"
for __run_hooks_file in "${__run_hooks_files[@]}"; do
    case "${__run_hooks_file##*/}" in
        .*) continue ;;
    esac
    if [[ ! -e "${__run_hooks_file}" ]]; then
        continue
    fi
    if [[ -f "${__run_hooks_file}" && "${__run_hooks_file}" == *.sh ]]; then
        _log_info "Sourcing shell script: ${__run_hooks_file}"
        # shellcheck source=/dev/null
        source "${__run_hooks_file}"
        __run_hooks_rc=$?
        # The hook may have turned errexit on: keep it off for the next ones.
        set +e
        if [[ "${__run_hooks_rc}" -ne 0 ]]; then
            _log_error "${__run_hooks_file} has failed, continuing execution"
        fi
    elif [[ -f "${__run_hooks_file}" && -x "${__run_hooks_file}" ]]; then
        _log_info "Running executable: ${__run_hooks_file}"
        "${__run_hooks_file}"
        __run_hooks_rc=$?
        if [[ "${__run_hooks_rc}" -ne 0 ]]; then
            _log_error "${__run_hooks_file} has failed, continuing execution"
        fi
    else
        _log_info "Ignoring non-executable: ${__run_hooks_file}"
    fi
done
_log_info "Done running hooks in: ${1}"

if [[ "${__run_hooks_errexit:-0}" == 1 ]]; then
    set -e
fi
unset __run_hooks_errexit __run_hooks_files __run_hooks_file __run_hooks_rc
