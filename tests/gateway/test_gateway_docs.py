"""The docs site: what the control plane answers at /openapi.json and /docs, and how Envoy is told to route there."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2

from gateway_envoy.catalog import ConsulService, Endpoint
from gateway_envoy.controlplane import docs_address as docs_address_of
from gateway_envoy.controlplane import parse_args, start_status_server
from gateway_envoy.descriptor import read_descriptor
from gateway_envoy.docs import ASSETS, DOCS_CLUSTER, DocsSite, docs_cluster
from gateway_envoy.options import GatewayOptions
from gateway_envoy.routes import TRANSCODER_FILTER
from gateway_envoy.snapshot import CLUSTER_TYPE, ROUTE_TYPE, build_snapshot

USERS = ConsulService("users", ("acme.users.v1.UserService",), (Endpoint("127.0.0.1", 1),))


@pytest.fixture
def site(tmp_path: Path) -> DocsSite:
    (tmp_path / "openapi.json").write_text('{"swagger": "2.0"}')
    assets = tmp_path / "swagger-ui-dist"
    assets.mkdir()
    for name in ASSETS:
        (assets / name).write_text(f"/* {name} */")
    (assets / "package.json").write_text("{}")
    return DocsSite(openapi=tmp_path / "openapi.json", assets=assets)


def routes_of(options: GatewayOptions, gateway_descriptor: Path) -> tuple[list[route_components_pb2.Route], list[str]]:
    descriptor = read_descriptor(gateway_descriptor)
    snapshot = build_snapshot({"users": USERS}, descriptor, descriptor.services, options)
    config = route_pb2.RouteConfiguration.FromString(snapshot.resources[ROUTE_TYPE]["protomesh"].value)
    return list(config.virtual_hosts[0].routes), list(snapshot.resources[CLUSTER_TYPE])


def test_without_a_docs_address_the_gateway_has_no_docs_cluster_or_route(gateway_descriptor: Path) -> None:
    routes, clusters = routes_of(GatewayOptions(), gateway_descriptor)
    assert clusters == ["users"]
    assert all(route.route.cluster != DOCS_CLUSTER for route in routes)


def test_docs_routes_come_before_the_rest_catch_all_with_the_transcoder_off(gateway_descriptor: Path) -> None:
    routes, clusters = routes_of(GatewayOptions(docs_address="127.0.0.1:18001"), gateway_descriptor)
    assert clusters == [DOCS_CLUSTER, "users"]
    docs = [route for route in routes if route.route.cluster == DOCS_CLUSTER]
    assert [(r.match.path or r.match.prefix) for r in docs] == ["/openapi.json", "/docs", "/docs/"]
    assert [route.name for route in routes[-2:]] == ["unknown (grpc)", "rest"]
    assert routes.index(docs[-1]) == len(routes) - 3
    for route in docs:
        off = route_components_pb2.FilterConfig()
        route.typed_per_filter_config[TRANSCODER_FILTER].Unpack(off)
        assert off.disabled


def test_the_docs_cluster_is_static_on_an_ip_and_resolved_by_dns_on_a_container_name() -> None:
    local = docs_cluster(GatewayOptions(docs_address="127.0.0.1:18001"))
    compose = docs_cluster(GatewayOptions(docs_address="controlplane:18001"))
    assert (local.type, compose.type) == (cluster_pb2.Cluster.STATIC, cluster_pb2.Cluster.STRICT_DNS)
    address = compose.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("controlplane", 18001)


def test_the_docs_address_defaults_to_the_status_port_only_when_there_are_docs() -> None:
    dev = ["--plaintext"]
    assert docs_address_of(parse_args([*dev, "--status-port", "7"], env={})) == ""
    assert docs_address_of(parse_args([*dev, "--status-port", "7", "--openapi", "x.json"], env={})) == "127.0.0.1:7"
    flagged = parse_args([*dev, "--status-port", "7", "--openapi", "x", "--docs-address", "controlplane:7"], env={})
    assert docs_address_of(flagged) == "controlplane:7"


async def test_the_site_serves_the_document_the_page_and_only_the_listed_assets(site: DocsSite) -> None:
    document = await site.reply("GET", "/openapi.json")
    assert (document.status, document.content_type, document.body) == (200, "application/json", b'{"swagger": "2.0"}')
    page = await site.reply("GET", "/docs")
    assert page.status == 200
    assert b"/docs/swagger-ui-bundle.js" in page.body
    init = await site.reply("GET", "/docs/init.js")
    assert b'url: "/openapi.json"' in init.body
    assert b"validatorUrl: null" in init.body  # swagger-ui would otherwise send the document to a web service
    assert (await site.reply("GET", "/docs/swagger-ui.css")).content_type.startswith("text/css")
    for path in ("/docs/package.json", "/docs/../openapi.json", "/docs/%2e%2e/x"):
        assert (await site.reply("GET", path)).status == 404


async def test_errors_are_json_status_and_other_methods_are_not_allowed(site: DocsSite) -> None:
    missing = await DocsSite().reply("GET", "/openapi.json")
    assert (missing.status, json.loads(missing.body)["code"]) == (404, 5)
    assert (await DocsSite(openapi=site.openapi).reply("GET", "/docs")).status == 404
    post = await site.reply("POST", "/docs")
    assert (post.status, post.allow, json.loads(post.body)["code"]) == (405, "GET, HEAD", 12)


async def test_the_status_server_answers_docs_paths_from_the_site_and_anything_else_with_the_status(
        site: DocsSite) -> None:
    server = await start_status_server(0, lambda: {"ready": True}, docs=site)
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await _get(port, "/openapi.json?x=1")).endswith(b'{"swagger": "2.0"}')
        assert (await _get(port, "/status")).endswith(b'{"ready": true}')
        head = await _get(port, "/docs", method="HEAD")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert head.endswith(b"\r\n\r\n")  # HEAD: the headers only
    finally:
        server.close()
        await server.wait_closed()


async def _get(port: int, path: str, *, method: str = "GET") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    return answer
