"""Prometheus, the OpenTelemetry Collector and Zipkin as local processes of the mesh (kinds prometheus, collector,
tracing): the programs `make setup` installs, on the loopback ports docker-compose.yml publishes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

from localmesh import acl
from localmesh.components import Component, MeshContext, digest, get_json, polled, supervised
from localmesh.process import RUNNER_CHECKOUT, ManagedProcess, MissingComponentError, free_port, port_open
from localmesh.topology import Spec

# Container ports of the official images (docker-compose.yml publishes them on loopback).
PROMETHEUS_HTTP = 9090
ZIPKIN_HTTP = 9411
OTLP_GRPC = 4317
# One template for both: docker-compose.yml's prometheus entry fills in consul:8500 with sed, the local mesh its
# loopback Consul address.
PROMETHEUS_TEMPLATE = Path("observability") / "prometheus.yml"
CONSUL_PLACEHOLDER = "@CONSUL@"
COLLECTOR_CONFIG = Path("observability") / "otelcol.yaml"
# Installed by `make setup` (scripts/bootstrap.sh steps prometheus, otelcol and zipkin).
ZIPKIN_VERSION = "3.5.1"
ZIPKIN_JAR = Path(".tools") / "zipkin" / f"zipkin-server-{ZIPKIN_VERSION}-exec.jar"
COLLECTOR_BINARY = "otelcol"
# A local trace store needs little: in-memory spans of one developer's calls. Tiered compilation stopped at C1
# and the serial collector halve the JVM's start-up CPU, which competes with the rest of the mesh on 2 cores.
ZIPKIN_JVM = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xss512k")
# Prometheus keeps what `protomesh top` and a developer look at: hours, not weeks.
PROMETHEUS_RETENTION = "6h"



def tool_path(project: Path, relative: Path) -> Path:
    """A file `make setup` put under .tools: the project's own, else the runner's checkout's. Never one on PATH:
    Debian's prometheus, say, has no Consul discovery."""
    for root in (project, RUNNER_CHECKOUT):
        if (root / relative).is_file():
            return root / relative
    raise MissingComponentError(f"{relative} is not installed: run `make setup`")


def project_tool(ctx: MeshContext, name: str) -> str:
    """A program `make setup` built into .tools/bin."""
    path = tool_path(ctx.topology.project, Path(".tools") / "bin" / name)
    if not os.access(path, os.X_OK):
        raise MissingComponentError(f"{path} is not executable: run `make setup`")
    return str(path)


def render_prometheus_config(template: str, consul_address: str, token: str = "", *, token_file: str = "") -> str:
    """The Prometheus configuration for a mesh whose Consul HTTP API is at consul_address (reading the catalog
    with token when Consul runs with ACLs, or with the token in token_file: consul_sd has no token file of its
    own, but its HTTP client sends `authorization` credentials as a bearer token, which Consul accepts)."""
    rendered = template.replace(CONSUL_PLACEHOLDER, consul_address)
    if not token and not token_file:
        return rendered
    config = yaml.safe_load(rendered)
    for job in config.get("scrape_configs", []):
        for discovery in job.get("consul_sd_configs", []):
            if token_file:
                discovery["authorization"] = {"type": "Bearer", "credentials_file": token_file}
            else:
                discovery["token"] = token
    return "# Rendered by localmesh/observability.py from observability/prometheus.yml\n" + yaml.safe_dump(
        config, sort_keys=False)


def prometheus(ctx: MeshContext, spec: Spec) -> Component:
    """Prometheus on the published port, every target found through Consul (consul_sd_configs)."""
    port = spec.ports.get(PROMETHEUS_HTTP) or free_port()
    folder = ctx.state_dir / "prometheus"
    config = folder / "prometheus.yml"
    template = (ctx.topology.project / PROMETHEUS_TEMPLATE).read_text()
    folder.mkdir(parents=True, exist_ok=True)
    token = ctx.security.token(acl.PROMETHEUS) if ctx.security is not None else ""
    config.touch(mode=0o600)  # it may hold Prometheus's Consul token
    config.write_text(render_prometheus_config(template, ctx.consul_address, token))
    argv = [project_tool(ctx, "prometheus"), f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}", f"--storage.tsdb.retention.time={PROMETHEUS_RETENTION}",
            f"--web.listen-address=127.0.0.1:{port}"]
    process = ManagedProcess(spec.instances[0], argv, log_dir=ctx.logs, env=ctx.environment(spec))
    url = f"http://127.0.0.1:{port}"
    ready = polled(lambda: get_json(f"{url}/api/v1/status/buildinfo") is not None)
    return Component(spec, [supervised(ctx, spec, spec.instances[0], process, ready)],
                     f"{url}/api/v1/targets (Prometheus API; `protomesh top` shows it live)",
                     digest(spec, template))


def tracing(ctx: MeshContext, spec: Spec) -> Component:
    """Zipkin (in-memory storage) with its UI and query API on the published port."""
    port = spec.ports.get(ZIPKIN_HTTP) or free_port()
    jar = tool_path(ctx.topology.project, ZIPKIN_JAR)
    java = shutil.which("java")
    if java is None:
        raise MissingComponentError(f"java (which runs Zipkin {ZIPKIN_VERSION}) is not installed: run `make setup`")
    # Armeria's own port settings, so it binds loopback only (--server.port would bind every interface).
    argv = [java, *ZIPKIN_JVM, "-jar", str(jar), f"--armeria.ports[0].port={port}",
            "--armeria.ports[0].ip=127.0.0.1", "--armeria.ports[0].protocols=http"]
    process = ManagedProcess(spec.instances[0], argv, log_dir=ctx.logs, env=ctx.environment(spec))
    url = f"http://127.0.0.1:{port}"
    ready = polled(lambda: get_json(f"{url}/health") is not None)
    return Component(spec, [supervised(ctx, spec, spec.instances[0], process, ready)], f"{url}/zipkin/ (traces)",
                     digest(spec))


def collector(ctx: MeshContext, spec: Spec) -> Component:
    """The OpenTelemetry Collector `make setup` builds: OTLP/gRPC in on the published port, batched to Zipkin."""
    port = spec.ports.get(OTLP_GRPC) or free_port()
    env = ctx.environment(spec)
    # The compose file has it listen on every interface of its container; locally it is loopback only.
    env["OTELCOL_OTLP_GRPC_ENDPOINT"] = f"127.0.0.1:{port}"
    config = ctx.topology.project / COLLECTOR_CONFIG
    argv = [project_tool(ctx, COLLECTOR_BINARY), f"--config={config}"]
    process = ManagedProcess(spec.instances[0], argv, log_dir=ctx.logs, env=env)
    ready = polled(lambda: port_open(port))
    return Component(spec, [supervised(ctx, spec, spec.instances[0], process, ready)],
                     f"OTLP/gRPC 127.0.0.1:{port}", digest(spec, config.read_text()))


FACTORIES: dict[str, Callable[[MeshContext, Spec], Component]] = {
    "prometheus": prometheus, "tracing": tracing, "collector": collector}
