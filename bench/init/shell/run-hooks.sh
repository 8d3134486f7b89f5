#!/bin/bash
# Bench fixture only (sourced by start.sh): run the hooks of one directory, docker-stacks style.
if [ "$#" -ne 1 ] || [ ! -d "$1" ]; then
    echo "ERROR[$(date '+%Y-%m-%d %H:%M:%S')] Directory $1 doesn't exist or is not a directory" >&2
    return 1
fi
echo "INFO[$(date '+%Y-%m-%d %H:%M:%S')] Running hooks in: $1 as uid: $(id -u) gid: $(id -g)" >&2
for f in "$1"/*; do
    [ -e "$f" ] || continue
    case "$f" in
        *.sh)
            # shellcheck source=/dev/null
            source "$f" || echo "ERROR[$(date '+%Y-%m-%d %H:%M:%S')] $f has failed, continuing execution" >&2
            ;;
        *)
            if [ -x "$f" ]; then
                "$f" || echo "ERROR[$(date '+%Y-%m-%d %H:%M:%S')] $f has failed, continuing execution" >&2
            else
                echo "INFO[$(date '+%Y-%m-%d %H:%M:%S')] Ignoring non-executable: $f" >&2
            fi
            ;;
    esac
done
echo "INFO[$(date '+%Y-%m-%d %H:%M:%S')] Done running hooks in: $1" >&2
