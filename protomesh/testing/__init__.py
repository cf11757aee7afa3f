"""Test helpers: real components (Consul, Envoy, RabbitMQ, servers), never stand-ins, and a stepping clock."""

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
from protomesh.testing._clock import DEFAULT_CLOCK_START, SteppingClock
from protomesh.testing._envoy import TEST_ROUTE_TIMEOUT_S, EnvoyGateway
from protomesh.testing._grpc import ServedBindings, field_violations, serve_bindings

__all__ = [
    "DEFAULT_CLOCK_START",
    "DEFAULT_READY_TIMEOUT_S",
    "TEST_ROUTE_TIMEOUT_S",
    "ConsulAgent",
    "EnvoyGateway",
    "ManagedProcess",
    "MissingComponentError",
    "RabbitMQNode",
    "ServedBindings",
    "SteppingClock",
    "async_wait_until",
    "field_violations",
    "find_binary",
    "find_rabbitmq_script",
    "free_port",
    "port_open",
    "project_root",
    "serve_bindings",
    "wait_until",
]
