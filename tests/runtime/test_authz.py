"""The guard's parts that need no network: security off, the peer's SPIFFE id, the denial log's repeats."""

from __future__ import annotations

import base64
import json
import logging

import grpc
import pytest
from acme.users.v1 import users_service_pb2, users_service_pb2_grpc
from test_server_support import bindings

from protomesh._authz import DenialLog, spiffe_id_of
from protomesh.auth import CLAIMS_KEY
from protomesh.testing import serve_bindings


def _claims(claims: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()


@pytest.mark.parametrize(("metadata", "seen"), [
    (((CLAIMS_KEY, _claims({"sub": "alice", "scope": "users:read"})),), "None|alice|users:read"),
    ((), "None|None|"),
    (((CLAIMS_KEY, "%%% not claims"),), "None|None|"),
])
async def test_with_security_off_the_caller_reports_whatever_claims_came(metadata: tuple[tuple[str, str], ...],
                                                                         seen: str) -> None:
    async with serve_bindings(*bindings()) as served:
        reply = await users_service_pb2_grpc.UserServiceStub(served.channel).GetUser(
            users_service_pb2.GetUserRequest(user_id="caller"), metadata=metadata, timeout=5)

    assert reply.user.display_name == seen


def test_a_peer_speaks_for_a_workload_only_with_exactly_one_spiffe_id() -> None:
    one = [b"spiffe://protomesh.local/service/orders", b"orders.svc.protomesh.local"]
    two = [b"spiffe://protomesh.local/service/orders", b"spiffe://protomesh.local/service/users"]

    assert spiffe_id_of(one) == b"spiffe://protomesh.local/service/orders"
    assert spiffe_id_of(two) is None
    assert spiffe_id_of([b"orders.svc.protomesh.local"]) is None
    assert spiffe_id_of(None) is None


def test_repeated_denials_are_logged_once_per_interval_and_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    denials = DenialLog(interval_s=10.0, clock=lambda: now[0])
    source, destination = "spiffe://protomesh.local/service/orders", "spiffe://protomesh.local/service/users"

    def deny(method: str) -> None:
        denials.record(source, destination, method, grpc.StatusCode.PERMISSION_DENIED, "no intention")

    with caplog.at_level(logging.WARNING, logger="protomesh.authz"):
        for _ in range(5):
            deny("/a.B/C")
        deny("/a.B/D")
        now[0] += 10.0
        deny("/a.B/C")

    assert [record.getMessage() for record in caplog.records] == [
        f"denied PERMISSION_DENIED {source} -> {destination} /a.B/C: no intention",
        f"denied PERMISSION_DENIED {source} -> {destination} /a.B/D: no intention",
        f"denied PERMISSION_DENIED {source} -> {destination} /a.B/C: no intention (4 more like it not logged)",
    ]
