"""A TLS front for the gateway that only forwards calls carrying one bearer token: Envoy with a test CA."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from localmesh.testing import ManagedProcess, find_binary, free_port, port_open, wait_until

TOKEN = "conformance-test-token"


@dataclass(frozen=True)
class TlsFront:
    """Where the front listens, the CA file its certificate chains to, and the token it requires."""

    address: str
    ca_file: Path
    token: str = TOKEN


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is missing: run 'apt-get install -y openssl'")
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key, cert, key, csr = (folder / n for n in ("ca.pem", "ca.key", "server.pem", "server.key", "server.csr"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    for argv in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=protomesh conformance CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "1",
         "-extfile", folder / "server.ext"],
    ):
        subprocess.run([openssl, *map(str, argv)], check=True, capture_output=True, timeout=30)
    return ca, cert, key


def front_config(*, port: int, admin_port: int, upstream_port: int, cert: Path, key: Path, token: str) -> object:
    """Envoy's static config: TLS (h2) on port, calls with the token go to the gateway, others get 401."""
    router = {"name": "envoy.filters.http.router",
              "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    routes = [
        {"match": {"prefix": "/", "headers": [{"name": "authorization",
                                               "string_match": {"exact": f"Bearer {token}"}}]},
         "route": {"cluster": "gateway", "timeout": "0s"}},
        {"match": {"prefix": "/"}, "direct_response": {"status": 401, "body": {"inline_string": "no valid token"}}},
    ]
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                    ".HttpConnectionManager",
           "stat_prefix": "front", "codec_type": "AUTO", "http_filters": [router],
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]}}
    tls = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
           "common_tls_context": {"alpn_protocols": ["h2"], "tls_certificates": [
               {"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}]}}
    upstream = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}
    endpoints = [{"lb_endpoints": [{"endpoint": upstream}]}]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{"name": "front", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                           "filter_chains": [{
                               "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
                               "filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}],
            "clusters": [{
                "name": "gateway", "type": "STATIC",
                "load_assignment": {"cluster_name": "gateway", "endpoints": endpoints},
                "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}},
            }],
        },
    }


@contextmanager
def tls_front(folder: Path, *, upstream_port: int) -> Iterator[TlsFront]:
    """Runs the front until the block ends; it forwards to the plaintext gateway on upstream_port."""
    ca, cert, key = make_certificates(folder / "pki")
    port, admin_port = free_port(), free_port()
    config = folder / "front.json"
    config.write_text(json.dumps(front_config(port=port, admin_port=admin_port, upstream_port=upstream_port,
                                              cert=cert, key=key, token=TOKEN)))
    envoy = ManagedProcess("tls-front", [find_binary("envoy"), "-c", str(config), "--disable-hot-restart",
                                         "--log-level", "warn"], log_dir=folder)

    def listening() -> bool:
        envoy.ensure_alive()
        return port_open(port)

    envoy.start()
    try:
        wait_until(listening, what="TLS front listener")
        yield TlsFront(f"127.0.0.1:{port}", ca)
    finally:
        envoy.stop()
