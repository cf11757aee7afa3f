"""The benchmark harness in smoke mode (seconds, no targets) still runs end to end, so `make bench` never rots."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localmesh.process import find_binary
from localmesh.testing import MissingComponentError, find_rabbitmq_script, project_root

# The cheap figures: gRPC servers (plaintext and mTLS), FastAPI (when the bench venv exists), RabbitMQ, and the
# gateway in each of its security settings (one short round each, so none of them can rot).
FIGURES = "p1,p2,p3,p7,p8"
# p1 + p2 + p3 + p7 + p8 take ~100 s on an idle 2-core machine; a loaded one needs the slack.
TIMEOUT_S = 480
# p3's stacks, side by side: security off, TLS at the edge, + JWT, + mTLS to the service, and observability on.
GATEWAY_SETTINGS = ["off", "tls", "tls+jwt", "tls+jwt+mtls", "observed"]


def _bench_venv_exists(root: Path) -> bool:
    return (root / ".tools" / "bench-venv" / "bin" / "python").exists()


def _gateway_installed() -> bool:
    try:
        find_binary("envoy")
        find_binary("consul")
    except MissingComponentError:
        return False
    return True


def _rabbitmq_installed() -> bool:
    try:
        find_rabbitmq_script()
    except MissingComponentError:
        return False
    return True


@dataclass(frozen=True)
class SmokeRun:
    results: dict[str, Any]
    page: str
    process: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> SmokeRun:
    out = tmp_path_factory.mktemp("bench")
    json_path, page_path = out / "smoke.json", out / "BENCHMARKS.md"
    argv = [sys.executable, "-m", "bench", "--smoke", "--only", FIGURES,
            "--out", str(json_path), "--docs", str(page_path)]
    done = subprocess.run(argv, cwd=project_root(), capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    return SmokeRun(results, page_path.read_text() if page_path.exists() else "", done)


def _measured_or_missing(results: dict[str, Any], figure: str, keys: tuple[str, ...], available: bool) -> None:
    detail = results["details"][figure]
    if available:
        assert detail["status"] == "measured", detail.get("why")
        for key in keys:
            values = results[key].values() if isinstance(results[key], dict) else [results[key]]
            assert all(isinstance(value, float) and value > 0 for value in values), (key, results[key])
    else:
        assert detail["status"] == "not run"
        assert detail["missing"], "a figure may only be skipped for a missing tool or component"


def test_the_smoke_run_exits_cleanly_and_records_every_requested_figure(smoke_run: SmokeRun) -> None:
    done, results = smoke_run.process, smoke_run.results
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert results["smoke"] is True
    assert set(results["details"]) == set(FIGURES.split(","))
    for detail in results["details"].values():
        assert detail["status"] in ("measured", "not run"), detail
        assert detail["load_average"]["before"]
        assert detail["load_average"]["after"]


def test_the_runtime_figure_always_measures_because_it_needs_no_external_tool(smoke_run: SmokeRun) -> None:
    results = smoke_run.results
    _measured_or_missing(results, "p1", ("p1_runtime_vs_bare", "p1_mtls_vs_bare", "p1_mtls_vs_plaintext"),
                         available=True)
    detail = results["details"]["p1"]
    assert detail["commands"][0].endswith("-m bench --only p1 --smoke")
    assert [row[0] for row in detail["table"]["rows"]] == ["bare", "protomesh", "mtls", "observed", "traced"]
    # The mTLS server was called with a client certificate (every call answered: failures abort a figure).
    assert "--cert " in detail["commands"][2]
    assert "--cname users.svc." in detail["commands"][2]


def test_the_gateway_is_measured_in_every_security_setting_whenever_envoy_and_consul_exist(smoke_run: SmokeRun) -> None:
    results = smoke_run.results
    available = _gateway_installed()
    _measured_or_missing(results, "p3", (), available=available)
    if not available:
        return
    detail = results["details"]["p3"]
    assert [row[0] for row in detail["table"]["rows"]] == GATEWAY_SETTINGS
    for key in ("p3_gateway_added_p50_ms", "p3_observed_added_p50_ms"):
        assert isinstance(results[key], float), (key, results[key])
        assert math.isfinite(results[key]), (key, results[key])
    for key in ("p3_jwt_mtls_added_p50_ms", "p3_secured_added_p50_ms"):  # differences: either sign in a smoke run
        assert set(results[key]) == {"rest", "grpc"}, results[key]
        assert all(isinstance(v, float) and math.isfinite(v) for v in results[key].values()), results[key]
    secured = detail["subject"]["tls+jwt+mtls"]
    assert all(run["requests"] > 0 and run["errors"] == 0 for path in secured.values() if isinstance(path, dict)
               for run in path["rounds"])
    commands = "\n".join(detail["commands"])
    assert "https://" in commands
    assert "Bearer $TOKEN" in commands
    assert "Bearer ey" not in commands


def test_fastapi_is_compared_whenever_the_bench_venv_exists(smoke_run: SmokeRun) -> None:
    results = smoke_run.results
    _measured_or_missing(results, "p2", ("p2_runtime_vs_fastapi",), available=_bench_venv_exists(project_root()))
    if results["details"]["p2"]["status"] == "measured":
        assert set(results["p2_runtime_vs_fastapi"]) == {"tiny", "list50"}


def test_events_are_measured_against_faststream_whenever_rabbitmq_and_the_bench_venv_exist(smoke_run: SmokeRun) -> None:
    results = smoke_run.results
    keys = ("p7_events_per_s", "p7_event_p50_ms", "p7_events_vs_faststream", "p7_faststream_events_per_s",
            "p7_faststream_p50_ms")
    _measured_or_missing(results, "p7", keys, available=_rabbitmq_installed() and _bench_venv_exists(project_root()))


def test_the_page_lists_each_figure_with_its_machine_and_commands(smoke_run: SmokeRun) -> None:
    page = smoke_run.page
    assert "`p1_runtime_vs_bare`" in page
    assert "`p2_runtime_vs_fastapi`" in page
    assert "`p3_jwt_mtls_added_p50_ms`" in page
    if smoke_run.results["details"]["p3"]["status"] == "measured":
        assert "| tls+jwt+mtls |" in page
    assert smoke_run.results["machine"]["cpu"] in page
    assert "-m bench --only p1 --smoke" in page
