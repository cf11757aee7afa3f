"""Renders Envoy's bootstrap: only the xDS cluster and ADS; `python -m gateway_envoy.bootstrap > envoy.yaml`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml
from google.protobuf import json_format

from gateway_envoy.clusters import http2_protocol_options
from gateway_envoy.options import DEFAULT_XDS_PORT

# Documented local defaults (ARCHITECTURE.md): the admin API only on loopback, the control plane beside Envoy.
DEFAULT_ADMIN_HOST = "127.0.0.1"
DEFAULT_ADMIN_PORT = 9901
DEFAULT_XDS_HOST = "127.0.0.1"
# docker-compose: Envoy's admin must be reachable from the host, the control plane is another container.
COMPOSE_ADMIN_HOST = "0.0.0.0"
COMPOSE_XDS_HOST = "controlplane"
# Envoy's identity in the control plane's logs; one gateway per mesh needs no more.
DEFAULT_NODE_ID = "protomesh-gateway"
DEFAULT_NODE_CLUSTER = "protomesh"
XDS_CLUSTER = "xds"
# The control plane runs next to Envoy; a connect slower than this means it is down, and Envoy retries.
XDS_CONNECT_TIMEOUT = "1s"
# Envoy's default xDS reconnect backoff (0.5 s doubling to 30 s, jittered) left the gateway on its last
# configuration for up to 9 s after a 2 s control-plane restart (make chaos); the control plane is close by.
XDS_RETRY_BACK_OFF = {"base_interval": "0.1s", "max_interval": "1s"}
# The overload manager's connection limit (README "Overload"): past it Envoy closes a new connection at accept,
# before it reads a request. Every open connection with a request in it lengthens each turn of a worker's event
# loop, and so every request's wait, shed ones included: in bench p10 (one worker sharing a core with wrk) 4,000
# connections put admitted requests' p99 at seconds, 1,024 kept it at a few times the 100-connection p99.
# Raise it with Envoy's workers (--concurrency), which each serve their share of it.
DEFAULT_MAX_DOWNSTREAM_CONNECTIONS = 1024
CONNECTION_MONITOR = "envoy.resource_monitors.global_downstream_max_connections"
CONNECTION_MONITOR_TYPE = ("type.googleapis.com/"
                           "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig")


def _ads_source() -> dict[str, Any]:
    return {"ads": {}, "resource_api_version": "V3"}


def overload_manager(max_connections: int) -> dict[str, Any]:
    """The overload manager with the global downstream connection limit (none when `max_connections` is 0)."""
    if max_connections <= 0:
        return {}
    monitor = {"name": CONNECTION_MONITOR, "typed_config": {
        "@type": CONNECTION_MONITOR_TYPE, "max_active_downstream_connections": max_connections}}
    return {"overload_manager": {"resource_monitors": [monitor]}}


def build_bootstrap(*, admin_port: int = DEFAULT_ADMIN_PORT, admin_host: str = DEFAULT_ADMIN_HOST,
                    xds_host: str = DEFAULT_XDS_HOST, xds_port: int = DEFAULT_XDS_PORT,
                    node_id: str = DEFAULT_NODE_ID, node_cluster: str = DEFAULT_NODE_CLUSTER,
                    max_connections: int = DEFAULT_MAX_DOWNSTREAM_CONNECTIONS) -> dict[str, Any]:
    """The bootstrap as a dict: everything except the xDS cluster (and the overload manager, which only the
    bootstrap can hold) comes over ADS from the control plane."""
    protocol = {key: json.loads(json_format.MessageToJson(value, preserving_proto_field_name=True))
                for key, value in http2_protocol_options().items()}
    return {
        "node": {"id": node_id, "cluster": node_cluster},
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": admin_port}}},
        "dynamic_resources": {
            # Delta: a change sends only the resources that changed (gateway_envoy/ads_delta.py).
            "ads_config": {"api_type": "DELTA_GRPC", "transport_api_version": "V3",
                           "set_node_on_first_message_only": True,
                           "grpc_services": [{"envoy_grpc": {
                               "cluster_name": XDS_CLUSTER,
                               "retry_policy": {"retry_back_off": XDS_RETRY_BACK_OFF}}}]},
            "cds_config": _ads_source(),
            "lds_config": _ads_source(),
        },
        "static_resources": {"clusters": [{
            "name": XDS_CLUSTER,
            # STRICT_DNS takes an IP as well as a host name (the control plane's container in compose).
            "type": "STRICT_DNS",
            "connect_timeout": XDS_CONNECT_TIMEOUT,
            "typed_extension_protocol_options": protocol,
            "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": xds_host, "port_value": xds_port}}}}]}]},
        }]},
        **overload_manager(max_connections),
    }


def render_bootstrap(**kwargs: Any) -> str:
    """build_bootstrap() as YAML, e.g. render_bootstrap(admin_port=9901, xds_port=18000)."""
    header = "# Envoy bootstrap for the protomesh gateway, rendered by `python -m gateway_envoy.bootstrap`.\n"
    return header + yaml.safe_dump(build_bootstrap(**kwargs), sort_keys=False)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway_envoy.bootstrap", description=__doc__)
    parser.add_argument("--admin-port", type=int, default=DEFAULT_ADMIN_PORT)
    parser.add_argument("--admin-host", default=DEFAULT_ADMIN_HOST)
    parser.add_argument("--xds-host", default=DEFAULT_XDS_HOST, help="control plane host (IP or DNS name)")
    parser.add_argument("--xds-port", type=int, default=DEFAULT_XDS_PORT, help="control plane xDS port")
    parser.add_argument("--node-id", default=DEFAULT_NODE_ID)
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_DOWNSTREAM_CONNECTIONS,
                        help="downstream connections Envoy keeps open at most (0: no limit)")
    args = parser.parse_args(argv)
    sys.stdout.write(render_bootstrap(admin_port=args.admin_port, admin_host=args.admin_host, xds_host=args.xds_host,
                                      xds_port=args.xds_port, node_id=args.node_id,
                                      max_connections=args.max_connections))


if __name__ == "__main__":
    main()
