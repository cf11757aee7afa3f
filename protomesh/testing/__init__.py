"""Test helpers for services written on protomesh: servicers behind a real Server, rich errors, a stepping clock.

Real components (Consul, RabbitMQ, the gateway, whole meshes) come from the local mesh's test kit,
`localmesh.testing`; waiting for a condition is protomesh.aio.poll_until.
"""

from __future__ import annotations

from protomesh.testing._clock import DEFAULT_CLOCK_START, SteppingClock
from protomesh.testing._grpc import ServedBindings, field_violations, serve_bindings

__all__ = [
    "DEFAULT_CLOCK_START",
    "ServedBindings",
    "SteppingClock",
    "field_violations",
    "serve_bindings",
]
