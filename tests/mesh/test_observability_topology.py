"""The observability entries of the topology: one Prometheus template for compose and the local mesh, and top's view."""

from __future__ import annotations

from pathlib import Path

import yaml
from rich.console import Console

from localmesh.observability import CONSUL_PLACEHOLDER, PROMETHEUS_TEMPLATE, render_prometheus_config
from localmesh.top import Row, render
from localmesh.topology import Topology

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, dict[str, object]]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert isinstance(loaded, dict)
    return loaded


def test_compose_and_the_local_mesh_render_the_one_prometheus_template_with_their_consul_address() -> None:
    template = (ROOT / PROMETHEUS_TEMPLATE).read_text()
    # In containers the issuer renders it (localmesh/issuer.py) into Prometheus's own folder.
    issuer, prometheus = _compose()["issuer"], _compose()["prometheus"]
    assert f"./{PROMETHEUS_TEMPLATE}:/etc/protomesh/prometheus.yml:ro" in issuer["volumes"]  # type: ignore[operator]
    assert "--config.file=/run/protomesh/prometheus.yml" in prometheus["command"]  # type: ignore[operator]
    local = yaml.safe_load(render_prometheus_config(template, "127.0.0.1:18500"))
    [job] = local["scrape_configs"]
    assert job["consul_sd_configs"][0]["server"] == "127.0.0.1:18500"
    assert "static_configs" not in job  # no target is written down: Consul has them all
    assert CONSUL_PLACEHOLDER not in render_prometheus_config(template, "consul:8500")


def test_the_catalog_is_read_with_a_token_inline_locally_and_from_a_token_file_in_containers() -> None:
    template = (ROOT / PROMETHEUS_TEMPLATE).read_text()
    [local] = yaml.safe_load(render_prometheus_config(template, "127.0.0.1:1", "s3cret"))["scrape_configs"]
    assert local["consul_sd_configs"][0]["token"] == "s3cret"
    rendered = render_prometheus_config(template, "consul:8500", token_file="/run/protomesh/consul-token")
    [job] = yaml.safe_load(rendered)["scrape_configs"]
    # Prometheus's consul_sd has no token file: its HTTP client's bearer credentials, which Consul 1.8 accepts.
    assert job["consul_sd_configs"][0]["authorization"] == {"type": "Bearer",
                                                            "credentials_file": "/run/protomesh/consul-token"}
    assert "token" not in job["consul_sd_configs"][0]


def test_the_observability_entries_are_background_components_on_loopback_ports() -> None:
    topology = Topology.load(ROOT, {})
    for name, kind in (("prometheus", "prometheus"), ("otelcol", "collector"), ("zipkin", "tracing")):
        spec = topology.specs[name]
        assert (spec.kind, spec.background) == (kind, True)
    for name in ("prometheus", "otelcol", "zipkin"):
        assert all(str(port).startswith("127.0.0.1:") for port in _compose()[name]["ports"])  # type: ignore[attr-defined]


def test_every_service_of_the_local_mesh_traces_to_the_collector_and_samples_every_trace() -> None:
    topology = Topology.load(ROOT, {})
    for spec in topology.services:
        env = topology.local_environment(spec, state_dir=ROOT / "var" / "mesh")
        assert env[f"{spec.settings_prefix}OBSERVABILITY__TRACING_ENDPOINT"] == "127.0.0.1:4317"
        assert env[f"{spec.settings_prefix}OBSERVABILITY__SAMPLING_RATIO"] == "1.0"


def test_top_shows_one_line_per_service_with_dashes_where_there_is_no_traffic() -> None:
    console = Console(width=100, record=True)
    console.print(render([Row("users", 2, 12.5, 0.04, 0.00043, 0.0021), Row("gateway", 1, None, None, None, None)],
                         "http://127.0.0.1:9090", "10s"))
    lines = {line.split()[0]: line.split() for line in console.export_text().splitlines() if line.strip()}
    assert lines["users"] == ["users", "2", "12.5", "4.0", "0.43", "ms", "2.10", "ms"]
    assert lines["gateway"] == ["gateway", "1", "-", "-", "-", "-"]
