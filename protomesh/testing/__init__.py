"""Test helpers that start real components (Consul, Envoy, RabbitMQ, services); no stand-ins."""

from __future__ import annotations

from protomesh._mesh.consul import ConsulAgent
from protomesh._mesh.rabbitmq import RabbitMQNode, find_rabbitmq_script
from protomesh._process import (
    DEFAULT_READY_TIMEOUT_S,
    ManagedProcess,
    MissingComponentError,
    async_wait_until,
    find_binary,
    free_port,
    port_open,
    project_root,
    wait_until,
)
from protomesh.testing._envoy import TEST_ROUTE_TIMEOUT_S, EnvoyGateway

__all__ = [
    "DEFAULT_READY_TIMEOUT_S",
    "TEST_ROUTE_TIMEOUT_S",
    "ConsulAgent",
    "EnvoyGateway",
    "ManagedProcess",
    "MissingComponentError",
    "RabbitMQNode",
    "async_wait_until",
    "find_binary",
    "find_rabbitmq_script",
    "free_port",
    "port_open",
    "project_root",
    "wait_until",
]
