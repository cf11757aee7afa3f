"""The control plane process: Consul + descriptor watches in, xDS (ADS) out; `python -m gateway_envoy.controlplane`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway_envoy.ads import AdsServer
from gateway_envoy.consul_watch import CatalogWatcher
from gateway_envoy.descriptor import Descriptor, DescriptorError, read_descriptor, watch_descriptor
from gateway_envoy.docs import DocsSite, encode
from gateway_envoy.edge_inputs import PolicyWatcher, follow_edge_inputs, read_when_ready
from gateway_envoy.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway_envoy.options import DEFAULT_LISTEN_HOST, DEFAULT_LISTEN_PORT, DEFAULT_XDS_PORT, GatewayOptions, JwtOptions
from gateway_envoy.reflection import GatewayReflection
from gateway_envoy.scrape import scrape_registrations
from gateway_envoy.snapshot import EdgeInputs
from gateway_envoy.state import ControlPlane
from protomesh import ConsulSettings
from protomesh.aio import BackgroundTasks
from protomesh.consul import ConsulClient
from protomesh.identity import TRUST_DOMAIN

log = logging.getLogger("gateway_envoy.controlplane")

# Where `make protos` writes the descriptor set, relative to the checkout (the mesh runner's cwd).
DEFAULT_DESCRIPTOR = Path("gen/descriptors/protomesh.binpb")
# Envoy pings its xDS connection (bootstrap keepalive); gRPC's default policy would answer frequent pings
# with GOAWAY "too_many_pings" and drop the ADS stream.
XDS_SERVER_OPTIONS = (
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_ping_strikes", 0),
)
# On SIGTERM, open ADS streams get this long to end; Envoy keeps its config and reconnects elsewhere.
STOP_GRACE_S = 1.0


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or DEFAULT_LISTEN_HOST, int(port)


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gateway_envoy.controlplane", description=__doc__)
    parser.add_argument("--consul", default=env.get("CONSUL_HTTP_ADDR", "127.0.0.1:8500"),
                        help="Consul HTTP address (default: $CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
    parser.add_argument("--xds-host", default=env.get("PROTOMESH_XDS_HOST", "127.0.0.1"),
                        help="address the xDS server binds (default: $PROTOMESH_XDS_HOST or 127.0.0.1)")
    parser.add_argument("--xds-port", type=int, default=int(env.get("PROTOMESH_XDS_PORT", DEFAULT_XDS_PORT)),
                        help="xDS (ADS) gRPC port (default: $PROTOMESH_XDS_PORT or 18000)")
    listen = (f"{env.get('PROTOMESH_GATEWAY_HOST', DEFAULT_LISTEN_HOST)}:"
              f"{env.get('PROTOMESH_GATEWAY_PORT', DEFAULT_LISTEN_PORT)}")
    parser.add_argument("--listen", default=listen, help="host:port of the gateway listener Envoy opens "
                        "(REST + gRPC; default: $PROTOMESH_GATEWAY_HOST:$PROTOMESH_GATEWAY_PORT or 127.0.0.1:8080)")
    parser.add_argument("--descriptor", type=Path, default=DEFAULT_DESCRIPTOR,
                        help="descriptor set written by `make protos`; watched for changes")
    parser.add_argument("--route-timeout", type=float, default=GatewayOptions.route_timeout_s,
                        help="seconds before a call through the gateway fails with 504 / DEADLINE_EXCEEDED")
    parser.add_argument("--max-request-bytes", type=int, default=GatewayOptions.max_request_bytes,
                        help="largest REST request body; larger ones get 413")
    parser.add_argument("--request-headers-timeout", type=float, default=GatewayOptions.request_headers_timeout_s,
                        help="seconds a client may take to send its request headers; slower ones get 408")
    parser.add_argument("--cluster-max-requests", type=int, default=GatewayOptions.cluster_max_requests,
                        metavar="N", help="requests in flight to one service, all its instances together; past it "
                        "callers get 503 / UNAVAILABLE with Retry-After (0: the old bounds, no shedding)")
    parser.add_argument("--expect", default=env.get("PROTOMESH_EXPECTED_SERVICES", ""), metavar="NAMES",
                        help="Consul services the mesh declares, comma-separated: while none of their instances "
                             "passes, their API answers UNAVAILABLE instead of UNIMPLEMENTED "
                             "(default: $PROTOMESH_EXPECTED_SERVICES)")
    parser.add_argument("--status-port", type=int, default=int(env.get("PROTOMESH_STATUS_PORT", 0)),
                        help="serve GET /status (JSON), GET /metrics (Prometheus), and the API docs when given, on "
                             "PORT; 0 = off (default: $PROTOMESH_STATUS_PORT or 0)")
    parser.add_argument("--status-host", default=env.get("PROTOMESH_STATUS_HOST", "127.0.0.1"),
                        help="address the status server binds (default: $PROTOMESH_STATUS_HOST or 127.0.0.1)")
    parser.add_argument("--openapi", type=Path, default=env.get("PROTOMESH_OPENAPI") or None,
                        help="the OpenAPI document `make openapi` writes, served at /openapi.json "
                             "(default: $PROTOMESH_OPENAPI; without it, 404)")
    parser.add_argument("--docs-assets", type=Path, default=env.get("PROTOMESH_DOCS_ASSETS") or None,
                        help="swagger-ui-dist's folder, for the page at /docs (default: $PROTOMESH_DOCS_ASSETS; "
                             "without it, 404)")
    parser.add_argument("--docs-address", default=env.get("PROTOMESH_DOCS_ADDRESS", ""), metavar="HOST:PORT",
                        help="where Envoy reaches the status server for /openapi.json and /docs (default: "
                             "$PROTOMESH_DOCS_ADDRESS, else 127.0.0.1:STATUS_PORT when --openapi or --docs-assets)")
    parser.add_argument("--advertise-host", default=env.get("PROTOMESH_ADVERTISE_HOST", "127.0.0.1"),
                        help="address registered in Consul for the status endpoint, which Prometheus scrapes "
                             "(default: $PROTOMESH_ADVERTISE_HOST or 127.0.0.1)")
    parser.add_argument("--envoy-admin", default=env.get("PROTOMESH_ENVOY_ADMIN", ""), metavar="HOST:PORT",
                        help="Envoy's admin address, registered in Consul so Prometheus scrapes /stats/prometheus "
                             "(default: $PROTOMESH_ENVOY_ADMIN; empty = not registered)")
    parser.add_argument("--otlp-endpoint", default=env.get("PROTOMESH_OTLP_ENDPOINT", ""), metavar="HOST:PORT",
                        help="OpenTelemetry collector (OTLP/gRPC) Envoy sends request spans to "
                             "(default: $PROTOMESH_OTLP_ENDPOINT; empty = the gateway does not trace)")
    parser.add_argument("--tracing-sampling", type=float, default=GatewayOptions.tracing_sampling_percent,
                        metavar="PERCENT", help="share of new traces the gateway records (a caller's decision wins)")
    _security_arguments(parser, env)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    _check_security(parser, args)
    return args


def _path(value: str) -> Path | None:
    return Path(value) if value else None


def _security_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    group = parser.add_argument_group("security", "TLS at the edge, tokens, mTLS to services (docs/SECURITY.md)")
    group.add_argument("--edge-identity-dir", type=_path, default=_path(env.get("PROTOMESH_EDGE_IDENTITY_DIR", "")),
                       metavar="DIR", help="the listener's certificate: a folder with identity.pem and ca.pem, "
                       "followed for rotation; the listener serves TLS (default: $PROTOMESH_EDGE_IDENTITY_DIR)")
    group.add_argument("--plaintext", action="store_true",
                       default=env.get("PROTOMESH_GATEWAY_PLAINTEXT", "") in ("1", "true"),
                       help="a plaintext listener, for development only (default: $PROTOMESH_GATEWAY_PLAINTEXT=1)")
    group.add_argument("--identity-dir", type=_path, default=_path(env.get("PROTOMESH_IDENTITY_DIR", "")),
                       metavar="DIR", help="the gateway's workload identity (spiffe://<trust domain>/service/gateway):"
                       " calls to services use mTLS and check each one's SPIFFE id (default: $PROTOMESH_IDENTITY_DIR)")
    group.add_argument("--trust-domain", default=env.get("PROTOMESH_TRUST_DOMAIN", TRUST_DOMAIN),
                       help=f"the mesh's SPIFFE trust domain (default: $PROTOMESH_TRUST_DOMAIN or {TRUST_DOMAIN})")
    jwks = group.add_mutually_exclusive_group()
    jwks.add_argument("--jwks-file", type=_path, default=_path(env.get("PROTOMESH_JWKS_FILE", "")), metavar="PATH",
                      help="the issuer's keys (JWKS), re-read when the file changes; turns on token checks "
                      "(default: $PROTOMESH_JWKS_FILE)")
    jwks.add_argument("--jwks-uri", default=env.get("PROTOMESH_JWKS_URI", ""), metavar="URL",
                      help="the issuer's JWKS URL, fetched by Envoy; turns on token checks "
                      "(default: $PROTOMESH_JWKS_URI)")
    group.add_argument("--jwks-ca", type=_path, default=_path(env.get("PROTOMESH_JWKS_CA", "")), metavar="PEM",
                       help="CA bundle the JWKS URL's certificate must chain to (default: the system's roots)")
    group.add_argument("--jwt-issuer", default=env.get("PROTOMESH_JWT_ISSUER", ""),
                       help="the `iss` every token must carry (default: $PROTOMESH_JWT_ISSUER)")
    audiences = [a for a in env.get("PROTOMESH_JWT_AUDIENCES", "").split(",") if a]
    group.add_argument("--jwt-audience", action="append", default=None, metavar="AUD",
                       help="an accepted `aud`; repeatable (default: $PROTOMESH_JWT_AUDIENCES, comma-separated)")
    parser.set_defaults(env_audiences=audiences)


def _check_security(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.jwt_audience = args.jwt_audience or args.env_audiences
    if args.plaintext and args.edge_identity_dir is not None:
        parser.error("--plaintext and --edge-identity-dir exclude each other: the listener serves TLS or it does not")
    if not args.plaintext and args.edge_identity_dir is None:
        parser.error("the listener needs a certificate: pass --edge-identity-dir DIR (a folder with identity.pem and "
                     "ca.pem), or --plaintext for a development gateway without TLS")
    if args.jwks_file is not None and args.jwks_uri:
        parser.error("--jwks-file and --jwks-uri exclude each other")
    if (args.jwks_file is not None or args.jwks_uri) and not (args.jwt_issuer and args.jwt_audience):
        parser.error("token checks need --jwt-issuer and at least one --jwt-audience")
    if args.jwks_uri and not args.jwks_uri.startswith(("https://", "http://")):
        parser.error(f"--jwks-uri {args.jwks_uri!r} is not an http(s) URL")
    if args.jwks_ca is not None and not args.jwks_ca.is_file():
        parser.error(f"--jwks-ca {args.jwks_ca}: no such file")


def options_from(args: argparse.Namespace) -> GatewayOptions:
    host, port = _host_port(args.listen)
    expected = tuple(sorted(name.strip() for name in args.expect.split(",") if name.strip()))
    return GatewayOptions(listen_host=host, listen_port=port, route_timeout_s=args.route_timeout,
                          max_request_bytes=args.max_request_bytes, expected_services=expected,
                          request_headers_timeout_s=args.request_headers_timeout,
                          cluster_max_requests=args.cluster_max_requests,
                          docs_address=docs_address(args), tracing_endpoint=args.otlp_endpoint,
                          tracing_sampling_percent=args.tracing_sampling, edge_tls=not args.plaintext,
                          mesh_tls=args.identity_dir is not None, trust_domain=args.trust_domain,
                          jwt=jwt_options(args))


def jwt_options(args: argparse.Namespace) -> JwtOptions | None:
    """The issuer to verify tokens of, when a JWKS is given (file or URL); None: the gateway checks no token."""
    if args.jwks_file is None and not args.jwks_uri:
        return None
    ca = args.jwks_ca.read_bytes() if args.jwks_ca is not None else b""
    return JwtOptions(issuer=args.jwt_issuer, audiences=tuple(dict.fromkeys(args.jwt_audience)),
                      jwks_uri=args.jwks_uri, jwks_ca=ca)


def docs_address(args: argparse.Namespace) -> str:
    """Where Envoy sends /openapi.json and /docs: the flag, or this host's status port when there are docs."""
    if args.docs_address:
        return str(args.docs_address)
    serves_docs = args.openapi is not None or args.docs_assets is not None
    return f"127.0.0.1:{args.status_port}" if serves_docs and args.status_port else ""


async def wait_for_descriptor(path: Path) -> Descriptor:
    """The descriptor set, once it is readable: the gateway has nothing to serve before `make protos`."""
    return await read_when_ready(read_descriptor, path, DescriptorError,
                                 what="the descriptor set (run `make protos`)")


async def start_status_server(port: int, status: Callable[[], dict[str, object]], *, host: str = "127.0.0.1",
                              docs: DocsSite | None = None,
                              metrics: Callable[[], bytes] | None = None,
                              pushes: Callable[[], list[dict[str, object]]] | None = None) -> asyncio.Server:
    """A minimal HTTP endpoint: the docs paths answer from `docs`, GET /metrics Prometheus text, GET /status/pushes
    only the status' recent pushes (cheap to poll at 1,000 services), any other GET the control plane's status."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            head = await reader.readuntil(b"\r\n\r\n")
            method, _, target = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = target.split(" ", 1)[0].split("?", 1)[0]
            if docs is not None and docs.serves(path):
                writer.write(encode(await docs.reply(method, path), head=method == "HEAD"))
            elif metrics is not None and path == "/metrics":
                writer.write(_ok(metrics(), METRICS_CONTENT_TYPE))
            elif pushes is not None and path == "/status/pushes":
                writer.write(_ok(json.dumps(pushes()).encode(), "application/json"))
            else:
                writer.write(_ok(json.dumps(status()).encode(), "application/json"))
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, port)


def _ok(body: bytes, content_type: str) -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
            % (content_type.encode(), len(body), body))


async def start_xds_server(args: argparse.Namespace, ads: AdsServer, health_servicer: health.aio.HealthServicer,
                           reflection: GatewayReflection) -> grpc.aio.Server:
    """ADS, the gateway's reflection (Envoy routes it here), and grpc.health ("" turns SERVING with the first
    snapshot: the container healthcheck waits for it)."""
    server = grpc.aio.server(options=XDS_SERVER_OPTIONS)
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    reflection.add_to_server(server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    server.add_insecure_port(f"{args.xds_host}:{args.xds_port}")
    await server.start()
    log.info("xDS (ADS) listening on %s:%d", args.xds_host, args.xds_port)
    return server


async def serve(args: argparse.Namespace) -> None:
    """Run until SIGTERM/SIGINT: first snapshot only after Consul (catalog and policy), the descriptor, the
    certificates and the JWKS were read."""
    descriptor = await wait_for_descriptor(args.descriptor)
    # The control plane's own token (default deny): it reads the catalog and the policy, nothing else.
    consul = ConsulClient.from_settings(ConsulSettings(address=args.consul,
                                                       token=os.environ.get("CONSUL_HTTP_TOKEN", "")))
    plane = ControlPlane(options_from(args), descriptor, EdgeInputs())
    watcher = CatalogWatcher(consul, lambda: plane.set_catalog(watcher.services, caused_at=watcher.answered_at,
                                                               index=watcher.answered_index))
    policy = PolicyWatcher(consul, lambda value: plane.set_edge(policy=value))
    health_servicer = health.aio.HealthServicer()
    reflection = GatewayReflection(descriptor)
    plane.on_accepted.append(reflection.update)
    server = await start_xds_server(args, plane.ads, health_servicer, reflection)
    docs = DocsSite(openapi=args.openapi, assets=args.docs_assets)
    status = await start_status_server(args.status_port, plane.status, host=args.status_host, docs=docs,
                                       metrics=plane.metrics.text, pushes=plane.pushes.recent,
                                       ) if args.status_port else None
    status_port = status.sockets[0].getsockname()[1] if status is not None else 0
    registrations = scrape_registrations(consul, advertise_host=args.advertise_host, status_port=status_port,
                                         envoy_admin=args.envoy_admin, version="controlplane")
    tasks = BackgroundTasks()
    tasks.start(watcher.run(), name="consul-watch")
    tasks.start(policy.run(), name="policy-watch")
    try:
        await follow_edge_inputs(plane.set_edge, tasks, edge=args.edge_identity_dir, mesh=args.identity_dir,
                                 jwks=args.jwks_file)
        await _wait_ready(watcher, policy)
        plane.set_catalog(watcher.services)
        plane.rebuild()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        for registration in registrations:
            await registration.start()
        tasks.start(plane.run_coalescer(), name="coalescer")
        tasks.start(watch_descriptor(args.descriptor, plane.set_descriptor, current=descriptor), name="descriptor")
        await _until_signalled()
    finally:
        log.info("control plane stopping")
        for registration in registrations:
            await registration.deregister()
        await tasks.stop()
        await server.stop(STOP_GRACE_S)
        if status is not None:
            status.close()
        await consul.close()


async def _wait_ready(watcher: CatalogWatcher, policy: PolicyWatcher) -> None:
    log.info("reading Consul (catalog and security policy) before serving any configuration")
    await watcher.ready.wait()
    await policy.ready.wait()


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
