"""Tunables of the gateway that the builders read; defaults match the mesh's documented local ports."""

from __future__ import annotations

from dataclasses import dataclass

from protomesh.identity import TRUST_DOMAIN

# Documented local defaults (ARCHITECTURE.md): REST + gRPC on 8080, xDS on 18000.
DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_LISTEN_PORT = 8080
DEFAULT_XDS_PORT = 18000
# A unary call that has not answered in 15 s is stuck; REST clients get 504 instead of hanging forever.
# gRPC clients may ask for less with their deadline (grpc-timeout), never for more.
DEFAULT_ROUTE_TIMEOUT_S = 15.0
# Instances are on the same host or LAN: a connect that takes longer than this goes to another instance.
DEFAULT_CONNECT_TIMEOUT_S = 1.0
# Largest REST request body the transcoder buffers; gRPC's own default message limit is 4 MiB, and no
# JSON request of this API comes close to 1 MiB.
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
# Largest response the transcoder buffers to convert to JSON (gRPC's default message limit).
DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# Long enough for any real client on a slow link: one that has not sent its request headers by then is
# holding a connection open, and gets 408.
DEFAULT_REQUEST_HEADERS_TIMEOUT_S = 10.0
# Clocks of the issuer and the gateway may disagree by this much on `exp` and `nbf` (the mesh's documented skew).
DEFAULT_CLOCK_SKEW_S = 30
# A bearer token longer than this is refused (401) before it is parsed: the verified payload travels to every
# service as x-protomesh-claims, which the runtime reads up to 8 KiB (protomesh.auth.MAX_CLAIMS_BYTES).
DEFAULT_MAX_TOKEN_BYTES = 8192
# How long Envoy keeps a remote JWKS before fetching it again: an issuer publishes a new key well before it
# signs with it, and a compromised key must not stay trusted for long.
DEFAULT_JWKS_CACHE_S = 300.0
# Load shedding (README "Overload"): the most requests in flight to one service's instances, all together. Past it
# the gateway answers 503 UNAVAILABLE with Retry-After at once instead of queueing: two instances of a small Python
# service on one core finish ~2,500 calls/s, so 256 in flight is ~100 ms of queue (bench p10 picked it); a service
# whose handlers wait on slow I/O needs more in flight for the same rate (in flight = calls/s x latency).
DEFAULT_CLUSTER_MAX_REQUESTS = 256


@dataclass(frozen=True)
class JwtOptions:
    """One token issuer: who signs (issuer), for whom (audiences), and where its keys are.

    The keys are a JWKS document the control plane reads from a file and inlines (`jwks_uri` empty), or the
    issuer's JWKS URL that Envoy fetches itself (`jwks_uri`, checked against `jwks_ca` PEM or the system roots).
    """

    issuer: str
    audiences: tuple[str, ...]
    jwks_uri: str = ""
    jwks_ca: bytes = b""
    clock_skew_s: int = DEFAULT_CLOCK_SKEW_S
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES
    jwks_cache_s: float = DEFAULT_JWKS_CACHE_S


@dataclass(frozen=True)
class GatewayOptions:
    """Where the gateway listens and the limits every route and cluster gets."""

    listen_host: str = DEFAULT_LISTEN_HOST
    listen_port: int = DEFAULT_LISTEN_PORT
    route_timeout_s: float = DEFAULT_ROUTE_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    request_headers_timeout_s: float = DEFAULT_REQUEST_HEADERS_TIMEOUT_S
    # Requests in flight to one service (circuit breaker max_requests, also its pending queue); 0 = the old
    # high bounds that stop only a runaway client (clusters.LEGACY_*).
    cluster_max_requests: int = DEFAULT_CLUSTER_MAX_REQUESTS
    # Consul services the mesh declares (the local runner passes its topology's): while none of their
    # instances passes, their API answers UNAVAILABLE (coming back) rather than UNIMPLEMENTED (not here).
    expected_services: tuple[str, ...] = ()
    # host:port at which Envoy reaches the control plane's docs server (/openapi.json, /docs); "" = not routed.
    docs_address: str = ""
    # OpenTelemetry collector (OTLP/gRPC host:port) for the gateway's spans; empty = no tracing (tracing.py).
    tracing_endpoint: str = ""
    # Share of new traces the gateway records, in percent (a caller's sampled traceparent is always followed).
    tracing_sampling_percent: float = 100.0
    # TLS on the listener with the edge certificate (SDS secret `edge`); False is the plaintext dev setting.
    edge_tls: bool = False
    # mTLS to every service cluster with the gateway's workload identity (SDS secrets `mesh` and `mesh-ca`).
    mesh_tls: bool = False
    trust_domain: str = TRUST_DOMAIN
    # Bearer tokens verified at the edge (jwt_authn + rbac); None = no authentication at the gateway.
    jwt: JwtOptions | None = None
