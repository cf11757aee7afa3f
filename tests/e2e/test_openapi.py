"""The OpenAPI document against the live gateway: served at /openapi.json, true to real answers, and fuzzed."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from localmesh.testing import project_root
from tests.e2e.conftest import RunningMesh
from tests.e2e.openapi_schema import (
    DOCUMENT,
    LOWER_CAMEL,
    RFC3339,
    Json,
    field_names,
    load_document,
    problems,
    response_schema,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")
log = logging.getLogger("e2e")

SCHEMATHESIS = project_root() / ".tools" / "fuzz-venv" / "bin" / "schemathesis"
# The checks schemathesis does not run, each with why (at most 3).
EXCLUDED_CHECKS = {
    # The services check meaning the contract cannot state (an email's shape, lengths, page_size >= 0, an order's
    # user must exist): a schema-valid request may rightly get 400 INVALID_ARGUMENT / FAILED_PRECONDITION, with the
    # violations in google.rpc.BadRequest.
    "positive_data_acceptance": "semantic validation lives in the services, not in the contract",
    # Envoy's transcoder answers a method no google.api.http rule names with 404 (reject_unknown_method), and an
    # unknown method token (QUERY) with 400 from the HTTP codec, instead of 405 + Allow: a gateway fix, reported.
    "unsupported_method": "the gateway answers undeclared methods 404 (or 400), not 405",
}
# Operations left out of the run: a server stream stays open until the route timeout; the walkthrough tests it.
EXCLUDED_OPERATIONS = ("NotificationService_WatchNotifications",)
# Bounds of each run (2 shared cores): examples per operation, seconds, and one worker (schemathesis' threads
# trip a CPython 3.11 ast.parse race inside hypothesis).
MAX_EXAMPLES = 10
MAX_SECONDS = 25
SERVICES = ("users", "orders", "notifications")
# Share of the generated requests that must reach a service (the rest stop at the gateway).
MIN_REACHED = 0.95


@pytest.fixture(scope="module")
def document() -> Json:
    return load_document()


async def get(mesh: RunningMesh, path: str) -> tuple[int, str, bytes]:
    async with mesh.http.get(f"http://{mesh.gateway}{path}") as response:
        return response.status, response.headers.get("content-type", ""), await response.read()


async def call(mesh: RunningMesh, document: Json, method: str, template: str, path: str,
               body: object | None = None) -> tuple[int, Any]:
    """One REST call whose answer must match the document's schema for it, in every field."""
    async with mesh.http.request(method, f"http://{mesh.gateway}{path}", json=body) as response:
        status, content_type, payload = response.status, response.headers.get("content-type", ""), await response.read()
    assert content_type == "application/json", (status, content_type, payload)
    value = json.loads(payload)
    found = problems(value, response_schema(document, method, template, status), document)
    assert not found, (method, path, status, value, found)
    assert all(LOWER_CAMEL.match(name) for name in field_names(value)), value
    log.info("step: %s %s -> %d matches the document", method, template, status)
    return status, value


async def test_the_gateway_serves_the_generated_document_and_a_docs_page_from_local_assets(
        running_mesh: RunningMesh) -> None:
    status, content_type, body = await get(running_mesh, "/openapi.json")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == json.loads(DOCUMENT.read_text())
    status, content_type, page = await get(running_mesh, "/docs")
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    assert b'src="/docs/swagger-ui-bundle.js"' in page
    assert b"http" not in page  # every asset is the gateway's own: no CDN, no other host
    status, content_type, bundle = await get(running_mesh, "/docs/swagger-ui-bundle.js")
    assert (status, content_type) == (200, "text/javascript; charset=utf-8")
    assert len(bundle) > 100_000
    log.info("step: /openapi.json is make openapi's file; /docs and its assets are served locally")


async def test_users_answers_match_the_document_with_camel_case_names_and_rfc_3339_times(
        running_mesh: RunningMesh, document: Json) -> None:
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    _, created = await call(running_mesh, document, "POST", "/v1/users", "/v1/users",
                            {"email": email, "displayName": "Ada"})
    user = created["user"]
    assert RFC3339.match(user["createTime"]), user
    item = "/v1/users/{userId}"
    _, got = await call(running_mesh, document, "GET", item, f"/v1/users/{user['userId']}")
    assert got["user"] == user
    _, changed = await call(running_mesh, document, "PATCH", item, f"/v1/users/{user['userId']}?updateMask=displayName",
                            {"displayName": "Ada L.", "email": "ignored@example.com"})
    assert (changed["user"]["displayName"], changed["user"]["email"]) == ("Ada L.", email)  # the mask is honoured
    _, page = await call(running_mesh, document, "GET", "/v1/users", "/v1/users?pageSize=1")
    assert isinstance(page["nextPageToken"], str)  # printed even when empty: required in the document


async def test_orders_answers_carry_int64_as_strings_and_enums_as_names(running_mesh: RunningMesh,
                                                                      document: Json) -> None:
    _, created = await call(running_mesh, document, "POST", "/v1/users", "/v1/users",
                            {"email": f"{uuid.uuid4().hex[:10]}@example.com", "displayName": "Bo"})
    user_id = created["user"]["userId"]
    _, placed = await call(running_mesh, document, "POST", "/v1/orders", "/v1/orders", {
        "userId": user_id, "lineItems": [{"sku": "book", "quantity": 2, "unitPriceCents": "1250"}]})
    order = placed["order"]
    assert (order["totalCents"], order["lineItems"][0]["unitPriceCents"]) == ("2500", "1250")
    assert order["state"] == "ORDER_STATE_CREATED"
    _, cancelled = await call(running_mesh, document, "POST", "/v1/orders/{orderId}:cancel",
                              f"/v1/orders/{order['orderId']}:cancel", {"reason": "test"})
    assert cancelled["order"]["state"] == "ORDER_STATE_CANCELLED"
    await call(running_mesh, document, "GET", "/v1/orders", f"/v1/orders?userId={user_id}")
    await call(running_mesh, document, "GET", "/v1/users/{userId}/notifications", f"/v1/users/{user_id}/notifications")


async def test_errors_from_services_and_from_the_gateway_are_the_documented_google_rpc_status(
        running_mesh: RunningMesh, document: Json) -> None:
    assert response_schema(document, "GET", "/v1/users/{userId}", 404) == {"$ref": "#/definitions/google.rpc.Status"}
    status, missing = await call(running_mesh, document, "GET", "/v1/users/{userId}", "/v1/users/nobody")
    assert (status, missing["code"]) == (404, 5)
    status, invalid = await call(running_mesh, document, "POST", "/v1/users", "/v1/users",
                                 {"email": "nope", "displayName": ""})
    assert (status, invalid["details"][0]["@type"]) == (400, "type.googleapis.com/google.rpc.BadRequest")
    # Refused by the transcoder itself (an int64 that is no number), before any service.
    status, wrong_type = await call(running_mesh, document, "POST", "/v1/orders", "/v1/orders",
                                    {"userId": "x", "lineItems": [{"unitPriceCents": "ten"}]})
    assert (status, wrong_type["code"]) == (400, 3)


async def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(running_mesh: RunningMesh,
                                                                                tmp_path: Path) -> None:
    assert SCHEMATHESIS.is_file(), f"{SCHEMATHESIS} is missing: run `scripts/bootstrap.sh fuzz` (`make test` does)"
    before = reached_counts(running_mesh)
    report = await run_schemathesis(running_mesh, tmp_path / "all.json", mode="all")
    (sent, reached), failures = delta(before, reached_counts(running_mesh)), report["failures"]
    # Not asserted here: schema-invalid requests (wrong JSON types) are rightly refused by the transcoder.
    log.info("step: schemathesis --mode all: %d test cases, %d requests, %d (%.1f %%) reached a service; "
             "failures %s, errors %s", report["test_cases"]["generated"], sent, reached, 100 * reached / max(sent, 1),
             [f["code"] for f in failures], report["errors"])
    assert report["errors"] == [], report["errors"]
    assert failures == [], json.dumps(failures, indent=1)  # incl. 5xx and schema or content-type misfits
    assert report["operations"]["tested"] == report["operations"]["selected"]


async def test_nearly_every_request_schemathesis_generates_within_the_schema_reaches_a_service(
        running_mesh: RunningMesh, tmp_path: Path) -> None:
    assert SCHEMATHESIS.is_file(), f"{SCHEMATHESIS} is missing: run `scripts/bootstrap.sh fuzz` (`make test` does)"
    before = reached_counts(running_mesh)
    report = await run_schemathesis(running_mesh, tmp_path / "positive.json", mode="positive")
    sent, reached = delta(before, reached_counts(running_mesh))
    log.info("step: schemathesis --mode positive: %d requests, %d (%.1f %%) reached a service; failures %s",
             sent, reached, 100 * reached / max(sent, 1), [f["code"] for f in report["failures"]])
    assert report["failures"] == [], json.dumps(report["failures"], indent=1)
    assert sent > 100
    assert reached >= MIN_REACHED * sent


def delta(before: tuple[int, int], after: tuple[int, int]) -> tuple[int, int]:
    return after[0] - before[0], after[1] - before[1]


def reached_counts(mesh: RunningMesh) -> tuple[int, int]:
    """Requests the gateway received, and requests it sent to a service's instances (retries not counted)."""
    gateway = mesh.mesh.ctx.gateway
    assert gateway is not None
    upstream = sum(gateway.stat(f"cluster.{name}.upstream_rq_total") - gateway.stat(f"cluster.{name}.upstream_rq_retry")
                   for name in SERVICES)
    return gateway.stat("http.gateway.downstream_rq_total"), upstream


async def run_schemathesis(mesh: RunningMesh, report: Path, *, mode: str) -> Json:
    """`schemathesis run` with every check but the excluded ones; returns its JSON report."""
    argv = [str(SCHEMATHESIS), "run", str(DOCUMENT), "--url", f"http://{mesh.gateway}", "--checks", "all",
            "--exclude-checks", ",".join(EXCLUDED_CHECKS), "--mode", mode, "--max-examples", str(MAX_EXAMPLES),
            "--max-time", str(MAX_SECONDS), "--workers", "1", "--request-timeout", "5", "--seed", "1",
            "--report", "json", "--report-json-path", str(report)]
    for operation in EXCLUDED_OPERATIONS:
        argv += ["--exclude-operation-id", operation]
    # Its own cwd: hypothesis keeps an example database in .hypothesis/ there.
    process = await asyncio.create_subprocess_exec(*argv, cwd=report.parent, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=MAX_SECONDS + 60)
    return read_report(report, output.decode(errors="replace"))


def read_report(report: Path, output: str) -> Json:
    assert report.is_file(), output[-4000:]
    result: Json = json.loads(report.read_text())
    if result["exit_code"] != 0:
        log.info("schemathesis output:\n%s", output[-6000:])
    return result
