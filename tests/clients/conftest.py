"""The conformance module's mesh is the end-to-end suite's fixture, shared rather than copied."""

from __future__ import annotations

from tests.e2e.conftest import running_mesh

__all__ = ["running_mesh"]
