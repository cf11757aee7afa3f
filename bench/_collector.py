"""The OpenTelemetry Collector `make setup` builds, run beside a traced server so its spans have somewhere to go."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from bench._core import NotRun
from bench._proc import LOAD_CPU, free_port, started

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / ".tools" / "bin" / "otelcol"
# Receives OTLP/gRPC and drops every span (nop exporter): the figure is the server's cost of exporting.
CONFIG = Path(__file__).resolve().parent / "otelcol.yaml"


@contextlib.contextmanager
def collector(log_dir: Path) -> Iterator[str]:
    """A collector on a free loopback port, on the load core; yields its OTLP/gRPC address."""
    if not BINARY.exists():
        raise NotRun("the OpenTelemetry Collector is not built: run `make setup`", missing="otelcol")
    port = free_port()
    endpoint = f"127.0.0.1:{port}"
    with started("otelcol", [str(BINARY), f"--config={CONFIG}"], log_dir=log_dir, cpu=LOAD_CPU, port=port,
                 env={"OTELCOL_OTLP_GRPC_ENDPOINT": endpoint}):
        yield endpoint
