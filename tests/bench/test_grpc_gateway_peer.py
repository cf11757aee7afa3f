"""The grpc-gateway proxy built for bench figure p3g answers the REST API as the mesh's Envoy gateway does."""

from __future__ import annotations

from pathlib import Path

from bench._gateway import gateway_stack
from bench._rows import TINY_ID
from bench.vs_grpc_gateway import PROBES, differences, get, grpc_gateway


def test_grpc_gateway_answers_the_rest_api_with_the_same_json_as_envoy_for_the_same_backend(tmp_path: Path) -> None:
    with gateway_stack(tmp_path) as stack, grpc_gateway(tmp_path, stack.backend_port) as peer:
        user = get(f"{peer.url}/v1/users/{TINY_ID}")
        assert user.status == 200, user
        assert user.content_type == "application/json", user
        assert user.body["user"]["userId"] == TINY_ID
        assert get(f"{peer.url}{PROBES[-1]}").status == 404
        # Status, content type and JSON value alike: the timed GET, a list page (defaults printed) and a missing user.
        assert differences(stack.gateway.url, peer.url) == []
