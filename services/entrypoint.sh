#!/bin/sh
# Entry point of every service image (services/Dockerfile): fills in the container defaults of the
# service's settings, each only where the orchestrator has not set it, then runs the command.
# `service-entrypoint probe` is the image's HEALTHCHECK: the server's overall gRPC health on its port.
set -eu

# The runtime reads <SERVICE>_<FIELD> variables (e.g. USERS_SERVER__PORT); $SERVICE is set by the image.
: "${SERVICE:?is not set (the image sets it from its SERVICE build argument)}"
prefix=$(printf '%s' "$SERVICE" | tr 'a-z-' 'A-Z_')
case "$prefix" in
    "" | [0-9]* | *[!A-Z0-9_]*) echo "service-entrypoint: SERVICE=$SERVICE is not a service name" >&2; exit 2 ;;
esac

# default FIELD VALUE: export <PREFIX>_FIELD=VALUE unless it is set and not empty (VALUE is not evaluated).
default() {
    eval "export ${prefix}_$1=\"\${${prefix}_$1:-\$2}\""
}

# A container listens on all interfaces on a known port (the runtime's default, port 0, suits hosts),
# and keeps its database on the /data volume.
default SERVER__HOST 0.0.0.0
default SERVER__PORT 50051
default DATABASE_PATH "/data/$SERVICE.db"

if [ "${1:-}" = probe ]; then
    eval "port=\${${prefix}_SERVER__PORT}"
    exec python -m protomesh.cli probe "127.0.0.1:$port"
fi

# The runtime refuses to register a wildcard address (0.0.0.0): unless the orchestrator sets one, the
# instance registers the container's own IP, so each replica is checked and routed to on its own.
default SERVER__ADVERTISE_HOST "$(hostname -i | cut -d' ' -f1)"
exec "$@"
