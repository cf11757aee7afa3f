#!/bin/sh
# As in the official image: flags, or a consul subcommand, run under `consul`; anything else runs as is.
set -e
if [ "${1#-}" != "$1" ]; then set -- consul agent "$@"
elif consul "$1" --help >/dev/null 2>&1; then set -- consul "$@"
fi
exec "$@"
