"""Typed settings schemas and the pure machinery that turns one config layer into checked field values."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from protomesh.identity import TRUST_DOMAIN

FieldPath = tuple[str, ...]


@dataclass(frozen=True)
class ServerSettings:
    """Where and how a service's gRPC server listens, and what it registers."""

    host: str = "127.0.0.1"
    port: int = 0
    advertise_host: str = ""
    grace_s: float = 5.0
    drain_s: float = 0.3
    version: str = "0.0.0"
    tags: tuple[str, ...] = ()
    # The instance's Consul service id; empty: "<service>-<host>-<port>". A supervisor that restarts
    # an instance sets it, so the restarted process takes over its registration instead of adding another.
    instance_id: str = ""
    # The process's event loop (uvloop or asyncio) and whether start-up's heap is frozen once serving: what
    # run() does, see protomesh/_process.py. serve() (tests, embedding) runs in the caller's loop either way.
    event_loop: str = "uvloop"
    gc_freeze: bool = True
    # Unary calls one instance runs at once; one more is shed with UNAVAILABLE (retryable) instead of queueing.
    # 0 = no bound. 256 is ~100 ms of queue for a small CPU-bound Python call; behind the gateway (whose own bound,
    # 256 per service, sheds first) it guards against direct callers. Raise it for handlers that wait on slow I/O.
    max_concurrent_rpcs: int = 256


@dataclass(frozen=True)
class ConsulSettings:
    """The Consul agent a service talks to; the token is a secret, read from the environment only."""

    address: str = "127.0.0.1:8500"
    token: str = field(default="", metadata={"secret": True})


# security.mode values: mutual TLS with the mesh's identities (the default), or plaintext without any check.
MTLS, SECURITY_OFF = "mtls", "off"


@dataclass(frozen=True)
class SecuritySettings:
    """How a service proves who it is and checks its callers (docs/SECURITY.md).

    `mtls` (default): TLS only, a client certificate from the mesh CA, intentions and rules on every call; the
    identity folder (`identity.pem` + `ca.pem`) is `identity_dir`. `off`: plaintext and no checks, an explicit
    setting for development and tests. Read once at start, from YAML and the environment.
    """

    mode: str = MTLS
    identity_dir: Path | None = None
    trust_domain: str = TRUST_DOMAIN


@dataclass(frozen=True)
class ObservabilitySettings:
    """Metrics (Prometheus), traces (OpenTelemetry over OTLP) and the log format of a service instance."""

    # /metrics on server.host; 0 = a free port. The port is registered in Consul (meta `metrics_port`),
    # which is how Prometheus finds the instance.
    metrics: bool = True
    metrics_port: int = 0
    # Server, client and event spans with W3C trace context; off, context still passes through untouched.
    tracing: bool = True
    # OTLP/gRPC collector, host:port; empty = spans are made (log lines carry their ids) but not exported.
    tracing_endpoint: str = ""
    # Share of new traces recorded (0..1); a caller's sampled/unsampled decision is always honoured. A recorded
    # call costs a Python service about 100 µs of CPU (span, batching, OTLP encoding): 1 % keeps a busy service's
    # bill small. The local mesh (docker-compose.yml) records every trace.
    sampling_ratio: float = 0.01
    # One JSON object per log line instead of text.
    json_logs: bool = False


@dataclass(frozen=True)
class ServiceSettings:
    """Base of every service's settings: subclass it and add fields."""

    server: ServerSettings = field(default_factory=ServerSettings)
    consul: ConsulSettings = field(default_factory=ConsulSettings)
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    log_level: str = "INFO"


S = TypeVar("S", bound=ServiceSettings)


class ConfigError(ValueError):
    """A config value is unknown, misplaced or of the wrong type; the message names the key and its layer."""


class _Mismatch(Exception):
    """A value does not fit a field type (turned into a ConfigError naming key and layer)."""


def dotted(path: FieldPath) -> str:
    return ".".join(path)


@functools.cache
def _fields(cls: type) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def is_secret(f: dataclasses.Field[Any]) -> bool:
    return bool(f.metadata.get("secret", False))


def resolve(cls: type, path: FieldPath, source: str) -> tuple[dataclasses.Field[Any], Any]:
    """The field (and its type) a path names; ConfigError when no such field exists."""
    owner: Any = cls
    for depth, name in enumerate(path):
        if not _is_section(owner) or name not in _fields(owner):
            raise ConfigError(f"{source}: {dotted(path[: depth + 1])}: unknown key")
        found, owner = _fields(owner)[name]
    return found, owner


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join("null" if arg is type(None) else _type_name(arg) for arg in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


# Field types a value may have, and which parsed YAML values each accepts (no silent bool -> int).
_SCALARS: dict[type, Callable[[object], bool]] = {
    bool: lambda value: isinstance(value, bool),
    int: lambda value: isinstance(value, int) and not isinstance(value, bool),
    float: lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    str: lambda value: isinstance(value, str),
    Path: lambda value: isinstance(value, str),
}


def _parse_text(raw: str) -> object:
    """A text value (env var or Consul KV) read as a YAML scalar or flow list; unparsable text stays text."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _typed(value: object, tp: Any) -> object:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        return _typed(value, next(arg for arg in typing.get_args(tp) if arg is not type(None)))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"settings fields must be tuple[X, ...], not {tp}")
        if isinstance(value, list | tuple):
            return tuple(_typed(item, args[0]) for item in value)
        raise _Mismatch
    accepts = _SCALARS.get(tp)
    if accepts is None:
        raise TypeError(f"unsupported settings field type {tp}")
    if accepts(value):
        return tp(value)
    raise _Mismatch


def _from_text(raw: str, tp: Any) -> object:
    parsed = _parse_text(raw)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if parsed is None:
            return None
        tp = next(arg for arg in typing.get_args(tp) if arg is not type(None))
    if tp in (str, Path):
        # "007" or "true" stay text for a str field; a quoted YAML string loses its quotes.
        return tp(parsed if isinstance(parsed, str) else raw)
    if typing.get_origin(tp) is tuple:
        if parsed is None:
            parsed = []
        elif isinstance(parsed, str):
            parsed = [item.strip() for item in parsed.split(",") if item.strip()]
    if tp is bool and parsed in (0, 1) and not isinstance(parsed, bool):
        parsed = bool(parsed)
    return _typed(parsed, tp)


def convert(value: object, tp: Any, *, source: str, path: FieldPath, text: bool) -> object:
    """One value checked/coerced against a field type; ConfigError naming the key and layer on mismatch."""
    try:
        if text:
            assert isinstance(value, str)
            return _from_text(value, tp)
        return _typed(value, tp)
    except _Mismatch:
        raise ConfigError(f"{source}: {dotted(path)}: expected {_type_name(tp)}, got {value!r}") from None


def mapping_layer(cls: type, data: object, source: str) -> dict[FieldPath, object]:
    """The values of a nested mapping (a YAML file) as field paths; unknown keys and secrets rejected."""
    values: dict[FieldPath, object] = {}

    def walk(owner: type, node: object, prefix: FieldPath) -> None:
        if node is None:  # an empty section (`server:` with nothing below) or an empty file
            return
        if not isinstance(node, Mapping):
            where = dotted(prefix) or "top level"
            raise ConfigError(f"{source}: {where}: expected a mapping, got {node!r}")
        for key, value in node.items():
            path = (*prefix, str(key))
            found, tp = resolve(cls, path, source)
            if is_secret(found):
                raise ConfigError(f"{source}: {dotted(path)}: is a secret, set it through the environment only")
            if _is_section(tp):
                walk(tp, value, path)
            else:
                values[path] = convert(value, tp, source=source, path=path, text=False)

    walk(cls, data, ())
    return values


def text_layer(cls: type, entries: Iterable[tuple[FieldPath, str, str]], *,
               secrets_allowed: bool) -> dict[FieldPath, object]:
    """Values given as text (env vars, Consul KV) as field paths: entries are (path, raw text, source)."""
    values: dict[FieldPath, object] = {}
    for path, raw, source in entries:
        found, tp = resolve(cls, path, source)
        if _is_section(tp):
            raise ConfigError(f"{source}: {dotted(path)}: is a section, set its fields one by one")
        if is_secret(found) and not secrets_allowed:
            raise ConfigError(f"{source}: {dotted(path)}: is a secret, set it through the environment only")
        values[path] = convert(raw, tp, source=source, path=path, text=True)
    return values


def build(cls: type[S], values: Mapping[FieldPath, object], *, env_prefix: str) -> S:
    """The settings object: dataclass defaults with the merged layer values on top."""
    try:
        built = _build(cls, values, (), None, env_prefix)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{cls.__name__}: {exc}") from exc
    assert isinstance(built, cls)
    return built


def _default(f: dataclasses.Field[Any]) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _build(cls: type, values: Mapping[FieldPath, object], prefix: FieldPath, base: object, env_prefix: str) -> object:
    changes: dict[str, object] = {}
    for name, (f, tp) in _fields(cls).items():
        path = (*prefix, name)
        if path in values:
            changes[name] = values[path]
        elif _is_section(tp) and any(key[: len(path)] == path for key in values):
            nested_base = getattr(base, name) if base is not None else _default(f)
            changes[name] = _build(tp, values, path, nested_base, env_prefix)
        elif base is None and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            env_name = env_prefix + "__".join(path).upper()
            raise ConfigError(f"{dotted(path)}: required, set it in the service's YAML, Consul KV or {env_name}")
    if base is None:
        return cls(**changes)
    return dataclasses.replace(base, **changes)  # type: ignore[type-var]  # base is a dataclass instance
