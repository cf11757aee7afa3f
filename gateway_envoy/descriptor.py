"""Reads the descriptor set from `make protos`: which gRPC services it holds, and a watch for rewrites."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from protomesh.auth import Rule, descriptor_set_rules

log = logging.getLogger("gateway_envoy.descriptor")

# `make protos` replaces the file atomically; polling twice a second keeps a rollout well under a second
# without inotify (not portable) and costs one stat() per poll.
DEFAULT_POLL_S = 0.5


class DescriptorError(ValueError):
    """The file is not a descriptor set (unreadable or not a FileDescriptorSet)."""


# Idempotency levels (google/protobuf/descriptor.proto MethodOptions) under which a call may run twice.
RETRY_SAFE_LEVELS = (descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT)


@dataclass(frozen=True)
class Descriptor:
    """The descriptor set's bytes, the full names of its services and a short content hash."""

    data: bytes
    services: tuple[str, ...]
    digest: str
    # gRPC paths ("/acme.users.v1.UserService/GetUser") of the unary methods the contract marks
    # `idempotency_level = NO_SIDE_EFFECTS` (or IDEMPOTENT): safe to send again after an instance got them.
    retry_safe_methods: tuple[str, ...] = ()
    # gRPC paths of the methods that stream requests or responses: they get no route timeout of their own.
    streaming_methods: tuple[str, ...] = ()
    # gRPC paths of every method, and the rule each one's contract declares with `(protomesh.v1.auth)` (methods
    # of contracts the project does not own declare none: their rules come from the topology's policy).
    methods: tuple[str, ...] = ()
    declared_rules: tuple[tuple[str, Rule], ...] = ()


def parse_descriptor(data: bytes) -> Descriptor:
    """Parse a FileDescriptorSet; services are "<package>.<Service>" names, sorted."""
    files = descriptor_pb2.FileDescriptorSet()
    try:
        files.ParseFromString(data)
    except DecodeError as exc:
        raise DescriptorError(f"not a descriptor set: {exc}") from exc
    if not files.file:
        raise DescriptorError("descriptor set holds no files")
    services = sorted(
        f"{proto.package}.{service.name}" if proto.package else service.name
        for proto in files.file
        for service in proto.service
    )
    methods = [(f"/{proto.package + '.' if proto.package else ''}{service.name}/{method.name}", method)
               for proto in files.file for service in proto.service for method in service.method]
    streaming = sorted(path for path, method in methods if method.client_streaming or method.server_streaming)
    retry_safe = sorted(path for path, method in methods
                        if method.options.idempotency_level in RETRY_SAFE_LEVELS and path not in streaming)
    try:
        declared = descriptor_set_rules(data)
    except (TypeError, KeyError) as exc:  # the pool refuses a set whose files do not fit together
        raise DescriptorError(f"descriptor set does not build a pool: {exc}") from exc
    return Descriptor(data, tuple(services), hashlib.sha256(data).hexdigest()[:16], tuple(retry_safe),
                      tuple(streaming), tuple(sorted(path for path, _ in methods)), tuple(sorted(declared.items())))


def read_descriptor(path: Path) -> Descriptor:
    try:
        return parse_descriptor(path.read_bytes())
    except OSError as exc:
        raise DescriptorError(f"cannot read {path}: {exc}") from exc


async def watch_descriptor(path: Path, on_change: Callable[[Descriptor], Awaitable[None]], *,
                           current: Descriptor | None, poll_s: float = DEFAULT_POLL_S) -> None:
    """Poll path (stat, then hash on change) until cancelled; on_change gets each new valid descriptor."""
    last_stat: tuple[int, int] | None = None
    digest = current.digest if current else ""
    while True:
        await asyncio.sleep(poll_s)
        try:
            stat = await asyncio.to_thread(path.stat)
        except OSError:
            continue  # between unlink and rename, or not generated yet: look again next poll
        if (stat.st_mtime_ns, stat.st_size) == last_stat:
            continue
        last_stat = (stat.st_mtime_ns, stat.st_size)
        try:
            descriptor = await asyncio.to_thread(read_descriptor, path)
        except DescriptorError as exc:
            log.error("ignoring %s: %s", path, exc)
            continue
        if descriptor.digest != digest:
            digest = descriptor.digest
            log.info("descriptor %s changed (%s): %d services", path, digest, len(descriptor.services))
            await on_change(descriptor)
