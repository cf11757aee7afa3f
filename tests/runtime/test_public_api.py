"""The runtime's public surface is explicit: what each public module of protomesh offers is pinned here."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import protomesh

PINNED: dict[str, set[str]] = {
    "protomesh": {
        "Binding", "Caller", "ConfigError", "ConfigStore", "ConsulClient", "ConsulSettings", "Context",
        "DiscoveryChannel", "ObservabilitySettings", "ProtomeshInterceptor", "Registration", "RunningService",
        "SecuritySettings", "Server", "ServerSettings", "ServiceInstance", "ServiceSettings", "caller",
        "config_kv_prefix", "correlation_id", "default_interceptors", "load_settings", "run", "seed_config", "serve",
        "time_remaining",
    },
    "protomesh.auth": {
        "AUTH_OPTION", "CLAIMS_KEY", "MAX_CLAIMS_BYTES", "POLICY_KEY", "UNDECLARED", "Caller", "Policy", "RateLimit",
        "Rule", "bind_caller", "caller", "decode_claims", "descriptor_set_rules", "effective_rule",
        "forwarded_claims", "method_rule", "reset_caller", "scopes_of", "service_rules",
    },
    "protomesh.identity": {
        "AGENT_KIND", "CA_FILE", "CONSUL_AGENT", "DEFAULT_POLL_S", "GATEWAY", "IDENTITY_FILE", "SERVICE_KIND",
        "TRUST_DOMAIN", "Credentials", "IdentityError", "IdentityFolder", "Workload", "service_host_name",
    },
    "protomesh.intentions": {"FORWARD_CLAIMS_META", "INTENTIONS_PATH", "WILDCARD", "Intention", "Intentions",
                             "precedence", "read_intentions"},
    "protomesh.aio": {"BackgroundTasks", "Backoff", "poll_until", "with_heartbeats"},
    "protomesh.consul": {
        "DEFAULT_BACKOFF_INITIAL_S", "DEFAULT_REQUEST_TIMEOUT_S", "DEFAULT_WAIT", "ConsulClient", "ServiceInstance",
        "blocking_timeout", "wait_seconds", "watch", "watch_backoff",
    },
    "protomesh.convert": {"TimestampFields", "timestamp"},
    "protomesh.errors": {"AlreadyExists", "DomainError", "FailedPrecondition", "FieldViolation", "InvalidArgument",
                         "NotFound", "Unavailable"},
    "protomesh.paging": {"DEFAULT_MAX_PAGE_SIZE", "DEFAULT_PAGE_SIZE", "Cursor", "Page", "PageLimits", "PageSettings",
                         "decode_page_token", "encode_page_token", "list_page", "split_page"},
    "protomesh.sqlite": {"DEFAULT_BUSY_TIMEOUT_MS", "MEMORY", "Database", "Repository", "database_file", "from_micros",
                         "to_micros"},
    "protomesh.events": {
        "CONTENT_TYPE", "DEFAULT_BACKOFF_INITIAL_S", "DEFAULT_BACKOFF_MAX_S", "DEFAULT_DELIVERY_LIMIT",
        "DEFAULT_EXCHANGE", "DEFAULT_OUTBOX_BATCH", "DEFAULT_OUTBOX_POLL_S", "DEFAULT_PREFETCH",
        "DEFAULT_PUBLISH_TIMEOUT_S", "DEFAULT_RECONNECT_INTERVAL_S", "DEFAULT_RETRY_DELAY_S", "CountingOutboxStorage",
        "Delivery", "EventHandlers", "OutboxRecord", "OutboxRelay", "OutboxStorage", "PublishError", "Publisher",
        "Subscriber", "UndeliverableEvent", "Unroutable", "current_delivery", "current_trace_parent", "decode_event",
        "event_id_of", "event_type", "stamp_event",
    },
    "protomesh.testing": {"DEFAULT_CLOCK_START", "ServedBindings", "SteppingClock", "field_violations",
                          "serve_bindings"},
    "protomesh.validation": {"DEFAULT_MAX_ID_LENGTH", "id_problems", "raise_if", "text_problems"},
}


def _public_modules() -> list[str]:
    found = ["protomesh"]
    for info in pkgutil.walk_packages(protomesh.__path__, "protomesh."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return sorted(found)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_public_names_are_exactly_the_curated_ones(name: str) -> None:
    assert set(importlib.import_module(name).__all__) == PINNED[name]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_every_public_name_resolves(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    assert [n for n in module.__all__ if not hasattr(module, n)] == []


def test_every_public_module_of_the_runtime_is_pinned_here() -> None:
    # The command-line entry point is the one public module that is not a library.
    assert [name for name in _public_modules() if name not in PINNED] == ["protomesh.cli"]
