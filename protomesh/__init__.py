"""protomesh: the runtime every service is written with (serve, register, configure, discover)."""

from __future__ import annotations

__all__: list[str] = []
