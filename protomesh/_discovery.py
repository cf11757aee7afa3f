"""Client-side discovery: a grpc.aio.Channel that spreads calls over the passing instances of a service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator, Sequence
from types import TracebackType
from typing import Any, NoReturn

import grpc

from protomesh._context import CORRELATION_ID_KEY, correlation_id, outgoing_timeout
from protomesh.aio import BackgroundTasks
from protomesh.auth import CLAIMS_KEY, forwarded_claims
from protomesh.consul import DEFAULT_WAIT, ConsulClient, ServiceInstance, watch
from protomesh.identity import TRUST_DOMAIN, Credentials, IdentityFolder, service_host_name

log = logging.getLogger("protomesh.discovery")

# In-flight calls on an instance that left the passing list get this long to finish before its channel closes.
DEFAULT_CLOSE_GRACE_S = 5.0
# open() waits this long for the first instance list (so the first call does not fail needlessly), then
# returns anyway: a caller must never hang on Consul.
DEFAULT_OPEN_TIMEOUT_S = 2.0
# After a certificate rotation every instance is dialled again; calls in flight on the old channels get this
# long to finish (closing returns as soon as they have). Established TLS sessions stay valid meanwhile.
DEFAULT_ROTATION_GRACE_S = 60.0

# Best first: the state reported for the whole channel is the best state of any instance's channel.
_STATE_RANK = [grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.CONNECTING, grpc.ChannelConnectivity.IDLE,
               grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN]
# The order grpc.aio multi-callables take their arguments in, for calls that pass some positionally.
_CALL_ARGS = ("request", "timeout", "metadata", "credentials", "wait_for_ready", "compression")

Metadata = grpc.aio.Metadata | Sequence[tuple[str, str | bytes]] | None


class _Endpoint:
    """One instance: its grpc.aio channel and that channel's multi-callables, made once per method."""

    __slots__ = ("callables", "channel", "instance")

    def __init__(self, instance: ServiceInstance, channel: grpc.aio.Channel) -> None:
        self.instance = instance
        self.channel = channel
        self.callables: dict[tuple[str, str], Callable[..., Any]] = {}


class _UnavailableCall:
    """What a call returns while no instance is known: awaiting or iterating it raises UNAVAILABLE."""

    def __init__(self, service: str) -> None:
        self._error = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                           details=f"no healthy instance of {service}")

    def __await__(self) -> Generator[Any, None, NoReturn]:
        raise self._error
        yield  # makes this a generator, as __await__ must return an iterator

    def __aiter__(self) -> _UnavailableCall:
        return self

    async def __anext__(self) -> NoReturn:
        raise self._error

    async def read(self) -> NoReturn:
        raise self._error

    async def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    async def details(self) -> str | None:
        return self._error.details()

    def cancel(self) -> bool:
        return False

    def done(self) -> bool:
        return True


class _Routed:
    """A multi-callable that picks an instance per call, with the propagated deadline and correlation id."""

    def __init__(self, owner: DiscoveryChannel, kind: str, method: str, serializer: Any, deserializer: Any,
                 registered: bool) -> None:
        self._owner = owner
        self._key = (kind, method)
        self._factory_args = (method, serializer, deserializer, registered)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.update(zip(_CALL_ARGS, args, strict=False))
        endpoint = self._owner._pick()
        if endpoint is None:
            return _UnavailableCall(self._owner.service)
        target = endpoint.callables.get(self._key)
        if target is None:
            method, serializer, deserializer, registered = self._factory_args
            target = getattr(endpoint.channel, self._key[0])(method, request_serializer=serializer,
                                                             response_deserializer=deserializer,
                                                             _registered_method=registered)
            endpoint.callables[self._key] = target
        kwargs["timeout"] = outgoing_timeout(kwargs.get("timeout"))
        kwargs["metadata"] = _with_call_metadata(kwargs.get("metadata"))
        request = kwargs.pop("request", None)
        return target(kwargs.pop("request_iterator", request), **kwargs)


class _UnaryUnary(_Routed, grpc.aio.UnaryUnaryMultiCallable[Any, Any]):
    pass


class _UnaryStream(_Routed, grpc.aio.UnaryStreamMultiCallable[Any, Any]):
    pass


class _StreamUnary(_Routed, grpc.aio.StreamUnaryMultiCallable[Any, Any]):
    pass


class _StreamStream(_Routed, grpc.aio.StreamStreamMultiCallable[Any, Any]):
    pass


def _with_call_metadata(metadata: Metadata) -> Metadata:
    """The caller's metadata plus the served call's correlation id and trusted claims, unless it set its own."""
    cid, claims = correlation_id(), forwarded_claims()
    if cid is None and claims is None:
        return metadata
    pairs = tuple(metadata or ())
    keys = {key for key, _ in pairs}
    if cid is not None and CORRELATION_ID_KEY not in keys:
        pairs = (*pairs, (CORRELATION_ID_KEY, cid))
    if claims is not None and CLAIMS_KEY not in keys:
        pairs = (*pairs, (CLAIMS_KEY, claims))
    return pairs


class DiscoveryChannel(grpc.aio.Channel):
    """Generated stubs over every passing instance of a Consul service, round robin per call.

    >>> channel = await DiscoveryChannel.open(consul, "users", identity=identity)
    >>> reply = await users_service_pb2_grpc.UserServiceStub(channel).GetUser(request)
    >>> await channel.close()

    With an identity, every instance is dialled over mTLS presenting it, and must present a certificate for
    `users.svc.<trust domain>` from the identity's trust bundle; after each rotation of the identity every
    instance is dialled again with the new certificate (old channels retire with grace, no call fails).
    Calls made while serving one carry its correlation id, remaining deadline and trusted claims.
    """

    def __init__(self, consul: ConsulClient, service: str, *, close_grace_s: float = DEFAULT_CLOSE_GRACE_S,
                 options: Sequence[tuple[str, Any]] | None = None, identity: IdentityFolder | None = None,
                 trust_domain: str = TRUST_DOMAIN, rotation_grace_s: float = DEFAULT_ROTATION_GRACE_S,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None) -> None:
        self.service = service
        self._consul = consul
        self._close_grace_s = close_grace_s
        self._rotation_grace_s = rotation_grace_s
        self._options = list(options or ())
        self._identity = identity
        # Every instance's channel gets them: metrics and trace context (see protomesh._observability).
        self._interceptors = list(interceptors) if interceptors else None
        self._credentials: grpc.ChannelCredentials | None = None
        self._unsubscribe: Callable[[], None] | None = None
        if identity is not None:
            # The server's certificate must name this service: its DNS SAN, not the address dialled.
            self._options.append(("grpc.ssl_target_name_override", service_host_name(service, trust_domain)))
            self._credentials = identity.channel_credentials()
            self._unsubscribe = identity.subscribe(self._rotated)
        self._endpoints: dict[str, _Endpoint] = {}
        self._rotation: list[_Endpoint] = []
        self._turn = 0
        self._resolved = asyncio.Event()
        self._changed = asyncio.Event()  # set (then replaced) whenever the instance list changes
        self._retiring = BackgroundTasks()  # closing the channels of instances that left, with grace
        self._retired: set[grpc.aio.Channel] = set()  # ...and those channels until they are closed
        self._watch = BackgroundTasks()

    @classmethod
    async def open(cls, consul: ConsulClient, service: str, *, wait: str = DEFAULT_WAIT,
                   open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S, **options: Any) -> DiscoveryChannel:
        """Start following the service's passing instances; waits briefly for the first list."""
        channel = cls(consul, service, **options)

        async def fetch(index: int | None) -> tuple[int, list[ServiceInstance]]:
            return await consul.healthy_instances(service, index=index, wait=wait)

        channel._watch.start(watch(fetch, channel._update, wait=wait, what=f"discovery {service}"),
                             name=f"protomesh-discovery-{service}")
        try:
            async with asyncio.timeout(open_timeout_s):
                await channel._resolved.wait()
        except TimeoutError:
            log.warning("discovery %s: no instance list from Consul yet; calls fail until one arrives", service)
        return channel

    @property
    def targets(self) -> list[str]:
        """host:port of every instance calls currently go to."""
        return [endpoint.instance.target for endpoint in self._rotation]

    def _pick(self) -> _Endpoint | None:
        rotation = self._rotation
        if not rotation:
            return None
        self._turn = (self._turn + 1) % len(rotation)
        return rotation[self._turn]

    async def _update(self, instances: list[ServiceInstance]) -> None:
        self._resolved.set()
        if not instances and self._rotation:
            # A restarted agent reports nothing until services re-register: keep the last known instances.
            log.warning("discovery %s: Consul lists no passing instance; keeping the %d last known",
                        self.service, len(self._rotation))
            return
        wanted = {instance.target: instance for instance in instances}
        for target in self._endpoints.keys() - wanted.keys():
            self._retire(self._endpoints.pop(target))
        for target, instance in wanted.items():
            if target in self._endpoints:
                self._endpoints[target].instance = instance
            else:
                self._endpoints[target] = _Endpoint(instance, self._dial(target))
        self._rotation = [self._endpoints[target] for target in sorted(self._endpoints)]
        self._changed.set()
        self._changed = asyncio.Event()
        log.info("discovery %s: %d instance(s): %s", self.service, len(self._rotation), ", ".join(self.targets))

    def _dial(self, target: str) -> grpc.aio.Channel:
        if self._credentials is None:
            return grpc.aio.insecure_channel(target, options=self._options, interceptors=self._interceptors)
        return grpc.aio.secure_channel(target, self._credentials, options=self._options,
                                       interceptors=self._interceptors)

    def _rotated(self, credentials: Credentials) -> None:
        """The identity rotated: dial every instance again with it; calls on the old channels may finish."""
        assert self._identity is not None
        self._credentials = self._identity.channel_credentials()
        for target, old in list(self._endpoints.items()):
            self._endpoints[target] = _Endpoint(old.instance, self._dial(target))
            self._retire(old, grace=self._rotation_grace_s)
        self._rotation = [self._endpoints[target] for target in sorted(self._endpoints)]
        self._changed.set()
        self._changed = asyncio.Event()
        log.info("discovery %s: new certificate, %d instance(s) dialled again", self.service, len(self._rotation))

    def _retire(self, endpoint: _Endpoint, *, grace: float | None = None) -> None:
        channel = endpoint.channel
        self._retired.add(channel)

        async def close_with_grace() -> None:
            await channel.close(grace=self._close_grace_s if grace is None else grace)
            self._retired.discard(channel)  # not when cancelled: close() then closes it

        self._retiring.start(close_with_grace(), name=f"protomesh-retire-{endpoint.instance.target}")

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                    _registered_method: bool = False) -> _UnaryUnary:
        return _UnaryUnary(self, "unary_unary", method, request_serializer, response_deserializer,
                           _registered_method)

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: bool = False) -> _UnaryStream:
        return _UnaryStream(self, "unary_stream", method, request_serializer, response_deserializer,
                            _registered_method)

    def stream_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: bool = False) -> _StreamUnary:
        return _StreamUnary(self, "stream_unary", method, request_serializer, response_deserializer,
                            _registered_method)

    def stream_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                      _registered_method: bool = False) -> _StreamStream:
        return _StreamStream(self, "stream_stream", method, request_serializer, response_deserializer,
                             _registered_method)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        if not self._rotation:
            known = self._resolved.is_set()
            return grpc.ChannelConnectivity.TRANSIENT_FAILURE if known else grpc.ChannelConnectivity.IDLE
        states = {endpoint.channel.get_state(try_to_connect) for endpoint in self._rotation}
        return min(states, key=_STATE_RANK.index)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        while self.get_state() == last_observed_state:
            await self._next_change()

    async def channel_ready(self) -> None:
        while self.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
            await self._next_change()

    async def _next_change(self) -> None:
        """Return once any instance's channel changes state or the instance list changes."""
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(endpoint.channel.wait_for_state_change(endpoint.channel.get_state()))
            for endpoint in self._rotation]
        waiters.append(asyncio.ensure_future(self._changed.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def close(self, grace: float | None = None) -> None:
        """Stop following Consul and close every instance's channel; calls in flight get `grace` seconds, also
        on channels still retiring (after an instance left or a rotation)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self._watch.stop()
        channels = [endpoint.channel for endpoint in self._endpoints.values()]
        self._endpoints, self._rotation = {}, []
        await self._retiring.stop()
        channels += self._retired
        self._retired = set()
        await asyncio.gather(*(channel.close(grace) for channel in channels))

    async def __aenter__(self) -> DiscoveryChannel:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None,
                        exc_tb: TracebackType | None) -> None:
        await self.close()
