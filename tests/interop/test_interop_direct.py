"""grpc-go's interop client passes every credential-free case against the TestService served by the runtime.

Plaintext on purpose: a secured service port speaks mTLS only, and grpc-go's interop client has no flag for a
client certificate (only -use_tls, -use_test_ca, -ca_file, -server_host_override and ALTS or Google
credentials), so it cannot present one. The secured path (TLS, a token, mTLS behind the gateway) is
test_interop_gateway.py's.
"""

from __future__ import annotations

import interop_service
import pytest
from interop_client import CASES, run_case

from protomesh import Server, ServerSettings


@pytest.mark.parametrize("case", CASES)
async def test_the_grpc_go_interop_client_passes_the_case_against_the_runtime_directly(case: str) -> None:
    server = Server(ServerSettings(host="127.0.0.1", port=0), interop_service.bindings())
    port = await server.start()
    try:
        run = await run_case(case, port)
    finally:
        await server.stop(0)
    assert run.passed, run.report()
