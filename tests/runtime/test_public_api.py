"""The runtime's public surface is explicit: what `import protomesh` offers is pinned here."""

from __future__ import annotations

import protomesh
import protomesh.events
import protomesh.testing

EXPECTED = {
    "Binding", "ConfigError", "ConfigStore", "ConsulClient", "ConsulSettings", "Context", "DiscoveryChannel",
    "ProtomeshInterceptor", "Registration", "RunningService", "Server", "ServerSettings", "ServiceInstance",
    "ServiceSettings", "correlation_id", "default_interceptors", "load_settings", "run", "seed_config",
    "serve", "time_remaining",
}


def test_the_public_names_are_exactly_the_curated_ones() -> None:
    assert set(protomesh.__all__) == EXPECTED


def test_every_public_name_resolves() -> None:
    for module in (protomesh, protomesh.events, protomesh.testing):
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert not missing, module.__name__


def test_private_modules_stay_out_of_the_namespace_listing() -> None:
    assert not [name for name in protomesh.__all__ if name.startswith("_")]
