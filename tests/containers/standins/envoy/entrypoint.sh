#!/bin/sh
# As in the official image: arguments that start with "-" are Envoy's own.
set -e
if [ "${1#-}" != "$1" ]; then set -- envoy "$@"; fi
exec "$@"
