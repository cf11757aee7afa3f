"""The REST API's document and browsable page: `GET /openapi.json` and `GET /docs`, served by the control plane.

The control plane's status server answers these paths (`DocsSite`); Envoy routes them there through a cluster
of their own (`docs_cluster`, `docs_routes`), ahead of the REST catch-all, with the transcoder off.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2
from google.protobuf.duration_pb2 import Duration

from gateway_envoy.clusters import fixed_address_cluster
from gateway_envoy.options import GatewayOptions
from gateway_envoy.routes import TRANSCODER_FILTER

# A name no Consul service can have (Consul's are DNS labels), so it never clashes with a service's cluster.
DOCS_CLUSTER = "protomesh.docs"
OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
# The files of swagger-ui-dist the page loads; nothing else of the package is served.
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
# The page's own script, beside the assets (a file rather than inline script, so a strict CSP can be added).
INIT_SCRIPT = "init.js"
# validatorUrl null: swagger-ui otherwise sends the document to an online validator; nothing leaves the machine.
INIT_JS = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
});
"""
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>protomesh REST API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""
# The document and page are small and local: a request that takes longer than this is stuck.
DOCS_TIMEOUT_S = 5


@dataclass(frozen=True)
class Reply:
    """One HTTP answer of the docs site."""

    status: int
    content_type: str
    body: bytes
    allow: str = ""


def _status(status: int, code: int, message: str, *, allow: str = "") -> Reply:
    """Errors have the gateway's one shape, a JSON google.rpc.Status."""
    body = json.dumps({"code": code, "message": message, "details": []}, separators=(",", ":")).encode()
    return Reply(status, "application/json", body, allow)


@dataclass(frozen=True)
class DocsSite:
    """What `/openapi.json` and `/docs/...` answer; a missing document or assets folder answers 404.

    Files are read on each request: `make openapi` rewrites the document (atomically) under a running gateway.
    """

    openapi: Path | None = None
    assets: Path | None = None

    @staticmethod
    def serves(path: str) -> bool:
        return path in (OPENAPI_PATH, DOCS_PATH) or path.startswith(DOCS_PATH + "/")

    async def reply(self, method: str, path: str) -> Reply:
        if method not in ("GET", "HEAD"):
            return _status(405, 12, f"{method} is not allowed on {path}", allow="GET, HEAD")
        if path == OPENAPI_PATH:
            return await self._file(self.openapi, "application/json", "the OpenAPI document (run `make openapi`)")
        if self.assets is None:
            return _status(404, 5, "the API page is not served here (no --docs-assets)")
        if path in (DOCS_PATH, DOCS_PATH + "/"):
            return Reply(200, "text/html; charset=utf-8", PAGE.encode())
        name = path.removeprefix(DOCS_PATH + "/")
        if name == INIT_SCRIPT:
            return Reply(200, ASSETS["swagger-ui-bundle.js"], INIT_JS.encode())
        if name not in ASSETS:
            return _status(404, 5, f"no such file: {path}")
        return await self._file(self.assets / name, ASSETS[name], f"swagger-ui's {name}")

    @staticmethod
    async def _file(path: Path | None, content_type: str, what: str) -> Reply:
        if path is None:
            return _status(404, 5, f"{what} is not served here")
        try:
            return Reply(200, content_type, await asyncio.to_thread(path.read_bytes))
        except OSError:
            return _status(404, 5, f"{what} is missing")


def encode(reply: Reply, *, head: bool = False) -> bytes:
    """The HTTP/1.1 response bytes; the connection closes after it (one request per connection)."""
    headers = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Error')}",
               f"content-type: {reply.content_type}", f"content-length: {len(reply.body)}",
               "cache-control: no-cache", "connection: close"]
    if reply.allow:
        headers.append(f"allow: {reply.allow}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + (b"" if head else reply.body)


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}


def docs_cluster(options: GatewayOptions) -> cluster_pb2.Cluster:
    """The control plane's docs server, by the address Envoy reaches it at: an IP (local) or a name (compose)."""
    host, _, port = options.docs_address.rpartition(":")
    return fixed_address_cluster(DOCS_CLUSTER, host, int(port), options.connect_timeout_s)


def docs_routes(options: GatewayOptions) -> list[route_components_pb2.Route]:
    """`/openapi.json`, `/docs` and `/docs/...` to the docs cluster (none without a docs address).

    The transcoder is off on them: it would answer 404 for a path no google.api.http rule names.
    """
    if not options.docs_address:
        return []
    matches = [("openapi", route_components_pb2.RouteMatch(path=OPENAPI_PATH)),
               ("docs", route_components_pb2.RouteMatch(path=DOCS_PATH)),
               ("docs assets", route_components_pb2.RouteMatch(prefix=DOCS_PATH + "/"))]
    timeout = Duration(seconds=DOCS_TIMEOUT_S)
    routes = []
    for name, match in matches:
        route = route_components_pb2.Route(
            name=name, match=match, route=route_components_pb2.RouteAction(cluster=DOCS_CLUSTER, timeout=timeout))
        route.typed_per_filter_config[TRANSCODER_FILTER].Pack(route_components_pb2.FilterConfig(disabled=True),
                                                              deterministic=True)
        routes.append(route)
    return routes
