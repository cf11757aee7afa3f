"""The composition root of a service: settings, Consul, servicers, server and registration, stopped in order."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Generic, TypeVar

from protomesh._config import ConfigStore, env_prefix, load_settings
from protomesh._discovery import DiscoveryChannel
from protomesh._logs import formatter
from protomesh._observability import Observability
from protomesh._process import freeze_startup_heap, loop_factory
from protomesh._registry import Registration
from protomesh._security import open_identity, start_security
from protomesh._server import Binding, Server
from protomesh._settings import ConfigError, S
from protomesh.consul import ConsulClient
from protomesh.identity import TRUST_DOMAIN, IdentityError, IdentityFolder

T = TypeVar("T")

_LOG = logging.getLogger("protomesh.app")

# Registering a wildcard bind address would send every client to itself.
_WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]", "")
# Exit status for invalid settings, distinct from a crash (1): restarting will not help, fixing the config will.
EXIT_CONFIG_ERROR = 2

Build = Callable[["Context[S]"], Awaitable[Sequence[Binding]]]


class Context(Generic[S]):
    """What a service's build() gets: settings, config, Consul, and a place to park resources.

        async def build(ctx: Context[UsersSettings]) -> list[Binding]:
            repo = await ctx.enter(SqliteUserRepository.open(ctx.settings.database_path))
            users = await ctx.channel("users")      # discovery channel, closed at shutdown
    """

    def __init__(self, service: str, config: ConfigStore[S], consul: ConsulClient, stack: AsyncExitStack, *,
                 observability: Observability | None = None, identity: IdentityFolder | None = None,
                 trust_domain: str = TRUST_DOMAIN) -> None:
        self.service = service
        self.config = config
        self.consul = consul
        # Metrics and tracer of the instance: event publishers and subscribers take it too.
        self.observability = observability or Observability(service, config.current.observability)
        self.identity = identity  # None with security.mode off
        self.trust_domain = trust_domain
        self._stack = stack
        self._channels: dict[str, DiscoveryChannel] = {}
        self._channels_lock = asyncio.Lock()
        self._before_server_stop: list[Callable[[], Awaitable[None] | None]] = []

    @property
    def settings(self) -> S:
        """The current settings (they follow Consul KV changes)."""
        return self.config.current

    async def enter(self, cm: AbstractAsyncContextManager[T]) -> T:
        """Enter cm now; it exits at shutdown, after the server stopped, in reverse order of entering."""
        return await self._stack.enter_async_context(cm)

    def before_server_stop(self, callback: Callable[[], Awaitable[None] | None]) -> None:
        """Run callback at shutdown once the instance is deregistered and drained, just before
        server.stop(grace): where long-lived streams are ended, so they finish with OK instead of being
        cancelled when the grace period runs out. Callbacks run in reverse order of registration."""
        self._before_server_stop.append(callback)

    async def _run_before_server_stop(self) -> None:
        for callback in reversed(self._before_server_stop):
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                _LOG.exception("before-server-stop callback %r failed", callback)

    async def channel(self, service: str) -> DiscoveryChannel:
        """A discovery channel to `service` (one per service, shared, closed at shutdown), over mTLS with this
        service's identity unless security.mode is off."""
        async with self._channels_lock:
            if service not in self._channels:
                channel = await DiscoveryChannel.open(self.consul, service,
                                                      interceptors=self.observability.client_interceptors(),
                                                      identity=self.identity, trust_domain=self.trust_domain)
                self._stack.push_async_callback(channel.close)
                self._channels[service] = channel
            return self._channels[service]


class RunningService(Generic[S]):
    """A started service (what serve() returns): its bound port, Consul instance id and ordered stop().

        service = await serve("users", UsersSettings, build)
        async with service:                      # or: try/finally await service.stop()
            ... service.port ...
    """

    def __init__(self, context: Context[S], server: Server, registration: Registration,
                 stack: AsyncExitStack) -> None:
        self.context = context
        self.server = server
        self.registration = registration
        self._stack = stack

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def instance_id(self) -> str:
        return self.registration.instance_id

    async def stop(self) -> None:
        """NOT_SERVING -> deregister -> drain_s -> server.stop(grace_s) -> build() resources -> config -> Consul."""
        await self._stack.aclose()

    async def __aenter__(self) -> RunningService[S]:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


async def serve(service: str, settings_type: type[S], build: Build[S], *,
                env: Mapping[str, str] | None = None, config_dir: Path | None = None) -> RunningService[S]:
    """Start a service in the running loop and return it; `await running.stop()` shuts it down in order.

    This is run() without logging setup and signal handling, for tests and embedding:

        running = await serve("users", UsersSettings, build, env={"CONSUL_HTTP_ADDR": consul.address,
                                                                  "USERS_SECURITY__IDENTITY_DIR": folder})
        channel = grpc.aio.secure_channel(f"127.0.0.1:{running.port}", identity.channel_credentials(), ...)
        ...
        await running.stop()

    env and config_dir replace os.environ and the config folder for the settings layers (see load_settings).
    """
    stack = AsyncExitStack()
    try:
        return await _start(stack, service, settings_type, build, env=env, config_dir=config_dir)
    except BaseException:
        await stack.aclose()
        raise


async def _start(stack: AsyncExitStack, service: str, settings_type: type[S], build: Build[S], *,
                 env: Mapping[str, str] | None, config_dir: Path | None) -> RunningService[S]:
    # The exit stack unwinds in reverse order of the pushes below, which makes the shutdown order:
    # NOT_SERVING -> deregister -> drain -> server.stop -> build() resources -> intentions -> identity -> config
    # watch -> Consul.
    static = await asyncio.to_thread(load_settings, settings_type, service, env=env, config_dir=config_dir)
    # Security is read from the static layers only (YAML, environment): a Consul KV value cannot turn it off.
    identity = open_identity(static.security, env_prefix(service))
    consul = ConsulClient.from_settings(static.consul)
    stack.push_async_callback(consul.close)
    config = await ConfigStore.open(settings_type, service, consul, env=env, config_dir=config_dir)
    stack.push_async_callback(config.close)
    address = _advertised_host(config.current)
    observability = Observability(service, config.current.observability, instance=config.current.server.instance_id)
    stack.push_async_callback(observability.close)  # last of the instance's own parts: spans of the shutdown too
    metrics_port = observability.start_metrics(config.current.server.host)
    security = await start_security(stack, identity, static.security, consul)
    context = Context(service, config, consul, stack, observability=observability, identity=identity,
                      trust_domain=static.security.trust_domain)
    bindings = await build(context)
    guard = security.guard(service, bindings) if security is not None else None
    server = Server(config.current.server, bindings, interceptors=observability.server_interceptors(guard=guard),
                    identity=identity)
    stack.push_async_callback(lambda: server.stop(config.current.server.grace_s))
    stack.push_async_callback(context._run_before_server_stop)
    await server.start()
    # Prometheus finds the instance through Consul: consul_sd_configs reads this meta key.
    meta = {"metrics_port": str(metrics_port)} if metrics_port else {}
    registration = Registration(consul, service=service, address=address, port=server.port,
                                grpc_services=server.service_names, version=config.current.server.version,
                                tags=config.current.server.tags, instance_id=config.current.server.instance_id,
                                meta=meta, tls=identity is not None)
    stack.push_async_callback(lambda: asyncio.sleep(config.current.server.drain_s))
    stack.push_async_callback(registration.deregister)
    stack.push_async_callback(server.set_not_serving)
    await registration.start()
    return RunningService(context, server, registration, stack)


def _advertised_host(settings: S) -> str:
    host = settings.server.advertise_host or settings.server.host
    if host in _WILDCARD_HOSTS:
        raise ConfigError(f"server.advertise_host: required when server.host is {settings.server.host!r} "
                          "(the address other services and Consul's health check should dial)")
    return host


def run(service: str, settings_type: type[S], build: Build[S]) -> None:
    """A service's whole main(): logging, serve(), then an ordered shutdown on SIGTERM/SIGINT (exit 0).

        def main() -> None:
            protomesh.run("users", UsersSettings, build)

    The loop is uvloop unless server.event_loop says asyncio, and start-up's heap is frozen once serving unless
    server.gc_freeze is false (protomesh/_process.py). Invalid settings exit with status 2 and one log line
    naming the key; a crash at startup with 1.
    """
    configure_logging("INFO")
    try:
        # Static layers only, to set the log level before anything else logs; serve() loads again with KV.
        static = load_settings(settings_type, service)
        configure_logging(static.log_level, json_logs=static.observability.json_logs)
        with asyncio.Runner(loop_factory=loop_factory(static.server.event_loop)) as runner:
            runner.run(_serve_until_signalled(service, settings_type, build))
    except ConfigError as exc:
        _LOG.error("invalid settings for %s: %s", service, exc)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    except IdentityError as exc:  # the issuer may not have written it yet: a restart can help, so exit 1
        _LOG.error("no usable identity for %s: %s", service, exc)
        raise SystemExit(1) from None
    except Exception:
        _LOG.exception("%s failed", service)
        raise SystemExit(1) from None


async def _serve_until_signalled(service: str, settings_type: type[S], build: Build[S]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, signum, stop)
    running = await serve(service, settings_type, build)
    running.context.config.subscribe(lambda settings: _apply_log_level(settings.log_level))
    if running.context.config.current.server.gc_freeze:
        freeze_startup_heap()
    _LOG.info("%s ready on port %d (instance %s)", service, running.port, running.instance_id)
    await stop.wait()
    _LOG.info("%s shutting down", service)
    await running.stop()
    _LOG.info("%s stopped", service)


def _on_signal(signum: int, stop: asyncio.Event) -> None:
    if stop.is_set():
        _LOG.warning("%s again during shutdown: exiting now", signal.Signals(signum).name)
        raise SystemExit(1)
    _LOG.info("%s received: graceful shutdown", signal.Signals(signum).name)
    stop.set()


def configure_logging(level: str, *, json_logs: bool = False) -> None:
    """Root logging to stderr, one line per record (text or JSON, with the call's cid, trace_id and span_id).
    Called by run() only."""
    numeric = _log_level(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(json_logs=json_logs))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)


def _log_level(level: str) -> int:
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ConfigError(f"log_level: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}")
    return numeric


def _apply_log_level(level: str) -> None:
    """Follow log_level changes from Consul KV (a bad value is logged and ignored)."""
    try:
        logging.getLogger().setLevel(_log_level(level))
    except ConfigError as exc:
        _LOG.error("keeping the current log level: %s", exc)
