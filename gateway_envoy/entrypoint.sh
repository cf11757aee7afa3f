#!/bin/sh
# Entry point of the control plane image (gateway_envoy/Dockerfile): turns what docker-compose.yml mounts into what
# the control plane reads, then runs the command (the control plane, or the stack's issuer).
set -eu

# The Consul token from a mounted file (CONSUL_HTTP_TOKEN_FILE, as Consul's own client reads it): the control plane
# reads CONSUL_HTTP_TOKEN. A CONSUL_HTTP_TOKEN that is set wins, as it does for Consul's client.
if [ -z "${CONSUL_HTTP_TOKEN:-}" ] && [ -n "${CONSUL_HTTP_TOKEN_FILE:-}" ]; then
    CONSUL_HTTP_TOKEN=$(cat "$CONSUL_HTTP_TOKEN_FILE")
    export CONSUL_HTTP_TOKEN
fi

# GATEWAY_PLAINTEXT=true: the listener serves plaintext, so it takes no edge certificate (the flags exclude each
# other, and compose cannot leave a variable out depending on another).
case "${PROTOMESH_GATEWAY_PLAINTEXT:-}" in
    1 | true) unset PROTOMESH_EDGE_IDENTITY_DIR ;;
esac
exec "$@"
