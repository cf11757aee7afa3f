"""The order `protomesh up` starts a topology in: dependencies first, background components after the rest."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from localmesh import mesh as mesh_module
from localmesh.components import Component, MeshContext
from localmesh.mesh import Mesh, MeshOptions
from localmesh.supervisor import Status
from localmesh.topology import Spec, Topology
from protomesh.aio import poll_until

COMPOSE = """
x-protomesh: {security: {enabled: false}}
services:
  consul:
    image: hashicorp/consul:1.8.7
    ports: ["127.0.0.1:${CONSUL_PORT:-8500}:8500"]
    x-protomesh: {run: consul}
  rabbitmq:
    image: rabbitmq:3.10.8
    ports: ["127.0.0.1:${AMQP_PORT:-5672}:5672"]
    x-protomesh: {run: rabbitmq}
  prometheus:
    image: prom/prometheus
    depends_on:
      consul: {condition: service_healthy}
    x-protomesh: {run: prometheus, background: true}
  tracing:
    image: openzipkin/zipkin
    x-protomesh: {run: tracing, background: true}
"""


class _Instance:
    """A supervised instance that only records when it started and takes a moment to be healthy."""

    def __init__(self, name: str, events: list[str], seconds: float) -> None:
        self.name = name
        self._events = events
        self._seconds = seconds
        self.status = Status()

    async def start(self) -> float:
        self._events.append(f"{self.name} starting")
        await asyncio.sleep(self._seconds)
        self._events.append(f"{self.name} healthy")
        return self._seconds

    async def stop(self) -> None:
        self._events.append(f"{self.name} stopped")


def _topology(tmp_path: Path) -> Topology:
    (tmp_path / "protos").mkdir()
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)
    return Topology.load(tmp_path, {})


async def test_background_components_start_only_once_every_other_component_is_healthy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    # RabbitMQ takes longest: the background components must still wait for it, though neither depends on it.
    seconds = {"consul": 0.05, "rabbitmq": 0.3, "prometheus": 0.01, "tracing": 0.01}

    def fake(ctx: MeshContext, spec: Spec) -> Component:
        return Component(spec, [_Instance(spec.name, events, seconds[spec.name])], "", "")  # type: ignore[list-item]

    topology = _topology(tmp_path)
    monkeypatch.setattr(mesh_module, "FACTORIES", {spec.kind: fake for spec in topology.start_order()})
    mesh = Mesh(topology, MeshOptions(tmp_path / "state"), environ={}, say=lambda line: None)
    await mesh.start()
    try:
        await poll_until(lambda: {"prometheus healthy", "tracing healthy"} <= set(events), timeout=5,
                         what="both background components healthy")
    finally:
        await mesh.stop()
    healthy = events.index("rabbitmq healthy")
    assert events.index("consul starting") < healthy
    assert events.index("rabbitmq starting") < healthy
    assert events.index("prometheus starting") > healthy
    assert events.index("tracing starting") > healthy
