"""The OpenAPI document against the live, secured gateway: served at /openapi.json without a token, true to real
answers and to each operation's declared security, and fuzzed over TLS with a token holding every scope."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from localmesh.credentials import contract_scopes
from localmesh.testing import project_root
from tests.e2e.conftest import RunningMesh
from tests.e2e.openapi_schema import (
    DOCUMENT,
    LOWER_CAMEL,
    RFC3339,
    Json,
    field_names,
    load_document,
    operations,
    problems,
    required_scopes,
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
# Checks off for one operation only, each with why (the check runs everywhere else). Every check is on by default;
# `--checks all` on the command line would turn these back on (schemathesis 4.32: the CLI outranks the file).
EXCLUDED_OPERATION_CHECKS = {
    # Schemathesis' stateful phase deletes a user, then lists /v1/users/{id}/notifications and expects 404. That list
    # belongs to the notifications service, nested under the user in REST only: it answers any user id it holds no
    # notification for (a deleted user too) with an empty list, and may not ask users whether the user exists (its
    # intentions do not allow it). Seen once in CI (ST301 "Deleted resource still available").
    ("NotificationService_ListNotifications", "use_after_free"):
        "another service's list nested under a user answers an empty list for a deleted user",
}
# Operations left out of the run: a server stream stays open until its client ends it; the walkthrough tests it.
EXCLUDED_OPERATIONS = ("NotificationService_WatchNotifications",)
# Bounds of each run (2 shared cores): examples per operation, seconds, and one worker (schemathesis' threads
# trip a CPython 3.11 ast.parse race inside hypothesis).
MAX_EXAMPLES = 10
MAX_SECONDS = 25
SERVICES = ("users", "orders", "notifications")
# Share of the generated requests that must reach a service (the rest stop at the gateway).
MIN_REACHED = 0.95
# What the gateway itself answers a refused caller (docs/SECURITY.md).
UNAUTHENTICATED = (401, {"code": 16, "message": "authentication required", "details": []})
PERMISSION_DENIED = (403, {"code": 7, "message": "permission denied", "details": []})
CHALLENGE = 'Bearer realm="protomesh"'


@pytest.fixture(scope="module")
def document() -> Json:
    return load_document()


async def get(mesh: RunningMesh, path: str) -> tuple[int, str, bytes]:
    async with mesh.http.get(f"{mesh.url}{path}") as response:
        return response.status, response.headers.get("content-type", ""), await response.read()


async def call(mesh: RunningMesh, document: Json, method: str, template: str, path: str,
               body: object | None = None) -> tuple[int, Any]:
    """One REST call whose answer must match the document's schema for it, in every field."""
    async with mesh.http.request(method, f"{mesh.url}{path}", json=body) as response:
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
    async with running_mesh.client.session() as anonymous:  # paths of no contract need no token
        for path in ("/openapi.json", "/docs", "/docs/swagger-ui-bundle.js"):
            async with anonymous.get(f"{running_mesh.url}{path}") as response:
                assert response.status == 200, (path, response.status)
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
    log.info("step: /openapi.json is make openapi's file; /docs and its assets are served locally, without a token")


async def test_every_operation_is_guarded_as_the_document_declares(running_mesh: RunningMesh,
                                                                   document: Json) -> None:
    """Without a token an operation with `security` gets the documented 401, a public one reaches its service;
    a token lacking any one of its `x-scopes` gets 403, and one holding exactly them gets past the gateway."""
    every_scope = set(contract_scopes(project_root()))
    before = security_counts(running_mesh)
    unauthenticated = forbidden = 0
    for method, template, operation in operations(document):
        scopes = required_scopes(document, operation)
        status, value = await probe(running_mesh, None, method, template)
        if scopes is None:
            assert status not in (401, 403), (method, template, status, value)
            log.info("step: %s %s is public: %d without a token", method, template, status)
            continue
        assert (status, value) == UNAUTHENTICATED, (method, template, status, value)
        unauthenticated += 1
        assert not problems(value, response_schema(document, method, template, status), document)
        for missing in sorted(scopes):
            status, value = await probe(running_mesh, sorted(every_scope - {missing}), method, template)
            assert (status, value) == PERMISSION_DENIED, (method, template, missing, status, value)
            forbidden += 1
        status, value = await probe(running_mesh, sorted(scopes), method, template)
        assert status not in (401, 403), (method, template, sorted(scopes), status, value)
        log.info("step: %s %s: 401 without a token, 403 without %s, %d with exactly its x-scopes", method, template,
                 " or ".join(sorted(scopes)), status)
    # The counters the fuzzing runs read count exactly these refusals: they are the right ones, read right.
    assert delta(before, security_counts(running_mesh)) == (unauthenticated, forbidden)


async def probe(mesh: RunningMesh, scopes: list[str] | None, method: str, template: str) -> tuple[int, Any]:
    """One call of an operation with made-up path values and an empty body, with a token holding scopes (None:
    no token). Only the status of a 200 is read: a watch would stream until its deadline."""
    token = mesh.client.token(*scopes, subject="openapi-security") if scopes is not None else None
    path = template.replace("{", "openapi-security-").replace("}", "")
    body = {} if method in ("POST", "PATCH", "PUT") else None
    async with mesh.client.session(token) as session, session.request(
            method, f"{mesh.url}{path}", json=body, timeout=aiohttp.ClientTimeout(total=10)) as response:
        if response.status == 200:
            return response.status, None
        if response.status == 401:
            assert response.headers.get("www-authenticate") == CHALLENGE
        return response.status, await response.json(content_type=None)


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
    before = reached_counts(running_mesh), security_counts(running_mesh)
    run = await run_schemathesis(running_mesh, tmp_path, mode="all")
    (sent, reached), failures = delta(before[0], reached_counts(running_mesh)), run.report["failures"]
    refused = delta(before[1], security_counts(running_mesh))
    # Not asserted here: schema-invalid requests (wrong JSON types) are rightly refused by the transcoder.
    log.info("step: schemathesis --mode all: %d test cases, %d requests, %d (%.1f %%) reached a service; %d sent "
             "without the run's token on purpose; failures %s, errors %s", run.report["test_cases"]["generated"], sent,
             reached, 100 * reached / max(sent, 1), len(run.without_token()), [f["code"] for f in failures],
             run.report["errors"])
    assert run.report["errors"] == [], run.report["errors"]
    assert failures == [], json.dumps(failures, indent=1)  # incl. 5xx, schema or content-type misfits, ignored auth
    assert run.report["operations"]["tested"] == run.report["operations"]["selected"]
    assert_no_token_refused(run, refused)


async def test_nearly_every_request_schemathesis_generates_within_the_schema_reaches_a_service(
        running_mesh: RunningMesh, tmp_path: Path) -> None:
    before = reached_counts(running_mesh), security_counts(running_mesh)
    run = await run_schemathesis(running_mesh, tmp_path, mode="positive")
    sent, reached = delta(before[0], reached_counts(running_mesh))
    refused = delta(before[1], security_counts(running_mesh))
    # Requests sent without the token on purpose (ignored_auth's probes) count as sent and not reached.
    log.info("step: schemathesis --mode positive: %d requests, %d (%.1f %%) reached a service; %d sent without the "
             "run's token on purpose; failures %s", sent, reached, 100 * reached / max(sent, 1),
             len(run.without_token()), [f["code"] for f in run.report["failures"]])
    assert run.report["failures"] == [], json.dumps(run.report["failures"], indent=1)
    assert_no_token_refused(run, refused)
    assert sent > 100
    assert reached >= MIN_REACHED * sent


def assert_no_token_refused(run: FuzzRun, refused: tuple[int, int]) -> None:
    """No request that carried the run's token was refused by jwt_authn or RBAC, so no 401 or 403 stands in for what
    a service would have answered; the gateway's refusals are exactly the 401s of requests sent without it."""
    assert [entry for entry in run.with_token() if entry.status in (401, 403)] == []
    unauthenticated, forbidden = refused
    assert forbidden == 0
    assert unauthenticated == sum(entry.status == 401 for entry in run.without_token())


def delta(before: tuple[int, int], after: tuple[int, int]) -> tuple[int, int]:
    return after[0] - before[0], after[1] - before[1]


def security_counts(mesh: RunningMesh) -> tuple[int, int]:
    """Requests the gateway refused for their token (jwt_authn: none, or invalid) and for their scopes (RBAC)."""
    gateway = mesh.mesh.ctx.gateway
    assert gateway is not None
    return gateway.stat("http.gateway.jwt_authn.denied"), gateway.stat("http.gateway.rbac.denied")


def reached_counts(mesh: RunningMesh) -> tuple[int, int]:
    """Requests the gateway received, and requests it sent to a service's instances (retries not counted)."""
    gateway = mesh.mesh.ctx.gateway
    assert gateway is not None
    upstream = sum(gateway.stat(f"cluster.{name}.upstream_rq_total") - gateway.stat(f"cluster.{name}.upstream_rq_retry")
                   for name in SERVICES)
    return gateway.stat("http.gateway.downstream_rq_total"), upstream


@dataclass(frozen=True)
class Exchange:
    """One request schemathesis sent (from its HAR log): what it called, whether it carried the run's token, and
    the status it got."""

    method: str
    url: str
    token: bool
    status: int


@dataclass(frozen=True)
class FuzzRun:
    report: Json
    exchanges: tuple[Exchange, ...]

    def with_token(self) -> list[Exchange]:
        return [exchange for exchange in self.exchanges if exchange.token]

    def without_token(self) -> list[Exchange]:
        return [exchange for exchange in self.exchanges if not exchange.token]


async def run_schemathesis(mesh: RunningMesh, folder: Path, *, mode: str) -> FuzzRun:
    """`schemathesis run` with every check but the excluded ones, over TLS trusting the mesh's CA and with a token
    holding every scope; its JSON report and every request it sent (its HAR log, unsanitised so that the run's
    token can be told from the ones its checks make up)."""
    assert SCHEMATHESIS.is_file(), f"{SCHEMATHESIS} is missing: run `scripts/bootstrap.sh fuzz` (`make test` does)"
    assert mesh.client.ca_file is not None
    report, har, config = folder / f"{mode}.json", folder / f"{mode}.har", folder / "schemathesis.toml"
    config.write_text("".join(
        f'[[operations]]\ninclude-operation-id = "{operation}"\nchecks.{check}.enabled = false\n\n'
        for operation, check in EXCLUDED_OPERATION_CHECKS))
    argv = [str(SCHEMATHESIS), "--config-file", str(config), "run", str(DOCUMENT), "--url", mesh.url,
            "--tls-verify", str(mesh.client.ca_file),
            "--header", f"Authorization: Bearer {mesh.token}", "--exclude-checks", ",".join(EXCLUDED_CHECKS),
            "--mode", mode, "--max-examples", str(MAX_EXAMPLES),
            "--max-time", str(MAX_SECONDS), "--workers", "1", "--request-timeout", "5", "--seed", "1",
            "--output-sanitize", "false", "--report", "json,har", "--report-json-path", str(report),
            "--report-har-path", str(har)]
    for operation in EXCLUDED_OPERATIONS:
        argv += ["--exclude-operation-id", operation]
    # Its own cwd: hypothesis keeps an example database in .hypothesis/ there.
    process = await asyncio.create_subprocess_exec(*argv, cwd=folder, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=MAX_SECONDS + 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    result = read_report(report, output.decode(errors="replace"))
    return FuzzRun(result, tuple(exchanges(har, f"Bearer {mesh.token}")))


def exchanges(har: Path, authorization: str) -> list[Exchange]:
    found = []
    for entry in json.loads(har.read_text())["log"]["entries"]:
        sent = [h["value"] for h in entry["request"]["headers"] if h["name"].lower() == "authorization"]
        found.append(Exchange(entry["request"]["method"], entry["request"]["url"], sent == [authorization],
                              entry["response"]["status"]))
    return found


def read_report(report: Path, output: str) -> Json:
    assert report.is_file(), output[-4000:]
    result: Json = json.loads(report.read_text())
    if result["exit_code"] != 0:
        log.info("schemathesis output:\n%s", output[-6000:])
    return result
