"""The control plane's own /metrics and Envoy's admin, registered in Consul as Prometheus scrape targets.

Prometheus finds every target through Consul (`consul_sd_configs`): a registration with meta `metrics_port` (and
`metrics_path` where it is not /metrics) is scraped. These two carry no `grpc_services` meta, so the catalog watch
gives them no cluster or route.
"""

from __future__ import annotations

from protomesh import Registration
from protomesh.consul import ConsulClient

CONTROL_PLANE_SERVICE = "controlplane"
GATEWAY_SERVICE = "gateway"
ENVOY_METRICS_PATH = "/stats/prometheus"
# A scrape target that stops answering leaves Consul (and so Prometheus) this long after its check fails.
DEREGISTER_AFTER = "1m"


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def scrape_registrations(consul: ConsulClient, *, advertise_host: str, status_port: int, envoy_admin: str,
                         version: str) -> list[Registration]:
    """Registrations of the control plane's status endpoint (when it has one) and of Envoy's admin (when known)."""
    registrations = []
    if status_port:
        registrations.append(Registration(
            consul, service=CONTROL_PLANE_SERVICE, address=advertise_host, port=status_port, grpc_services=[],
            version=version, tags=("metrics",), deregister_after=DEREGISTER_AFTER,
            instance_id=f"{CONTROL_PLANE_SERVICE}-{advertise_host}-{status_port}",
            meta={"metrics_port": str(status_port), "metrics_path": "/metrics"},
            http_check=f"http://{advertise_host}:{status_port}/status"))
    if envoy_admin:
        host, port = _host_port(envoy_admin)
        registrations.append(Registration(
            consul, service=GATEWAY_SERVICE, address=host, port=port, grpc_services=[], version=version,
            tags=("metrics", "envoy"), deregister_after=DEREGISTER_AFTER,
            instance_id=f"{GATEWAY_SERVICE}-{host}-{port}",
            meta={"metrics_port": str(port), "metrics_path": ENVOY_METRICS_PATH},
            http_check=f"http://{host}:{port}/ready"))
    return registrations
