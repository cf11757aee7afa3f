"""The benchmark harness in smoke mode (seconds, no targets) still runs end to end, so `make bench` never rots."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench._proc import find_tool
from bench.vs_grpc_gateway import BINARY as GRPC_GATEWAY
from localmesh.process import find_binary
from localmesh.testing import MissingComponentError, find_rabbitmq_script, project_root

# The cheap figures: gRPC servers (plaintext and mTLS), FastAPI (when the bench venv exists), RabbitMQ, and the
# gateway in each of its security settings, beside grpc-gateway and under overload, and the control plane's
# propagation both polled and from its own push record (one short round each, so none of them can rot).
FIGURES = "p1,p2,p3,p3g,p5,p6,p7,p8,p10"
# p1 + p2 + p3 + p3g + p7 + p8 + p10 take ~150 s on an idle 2-core machine (p5 + p6 ~12 s more); a loaded one
# needs the slack.
TIMEOUT_S = 720
# p3's stacks, side by side: security off, TLS at the edge, + JWT, + mTLS to the service, and observability on.
GATEWAY_SETTINGS = ["off", "tls", "tls+jwt", "tls+jwt+mtls", "ratelimit", "observed"]


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
    results_path: Path


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> SmokeRun:
    out = tmp_path_factory.mktemp("bench")
    json_path, page_path = out / "smoke.json", out / "BENCHMARKS.md"
    argv = [sys.executable, "-m", "bench", "--smoke", "--only", FIGURES,
            "--out", str(json_path), "--docs", str(page_path)]
    done = subprocess.run(argv, cwd=project_root(), capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    return SmokeRun(results, page_path.read_text() if page_path.exists() else "", done, json_path)


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
        assert 0 <= detail["cpu_busy_before"] <= 1
        assert detail["busy_machine"] == (detail["cpu_busy_before"] >= 0.25)


def test_the_runtime_figure_always_measures_because_it_needs_no_external_tool(smoke_run: SmokeRun) -> None:
    results = smoke_run.results
    _measured_or_missing(results, "p1", ("p1_runtime_vs_bare", "p1_mtls_vs_bare", "p1_mtls_vs_plaintext"),
                         available=True)
    detail = results["details"]["p1"]
    assert detail["commands"][0].endswith("-m bench --only p1 --smoke")
    assert [row[0] for row in detail["table"]["rows"]] == ["bare", "protomesh", "bare_uvloop", "protomesh_asyncio",
                                                           "metrics", "tracing", "observed", "traced", "mtls"]
    # The price of each feature by itself, in CPU µs per call: a difference, so either sign in a smoke run.
    prices = results["p1_feature_cpu_us"]
    assert set(prices) == {"metrics", "tracing", "observed", "traced", "mtls"}, prices
    assert all(isinstance(value, float) and math.isfinite(value) for value in prices.values()), prices
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


def test_grpc_gateway_is_compared_with_the_gateway_whenever_envoy_and_consul_exist(smoke_run: SmokeRun) -> None:
    results = smoke_run.results
    # `make test` builds the Go proxy (bootstrap step grpcgateway): under CI a missing binary fails, never skips.
    built = find_tool(GRPC_GATEWAY) is not None or os.environ.get("CI") == "true"
    _measured_or_missing(results, "p3g", ("p3g_rps_envoy_vs_grpc_gateway",), available=_gateway_installed() and built)
    detail = results["details"]["p3g"]
    if detail["status"] != "measured":
        return
    for key in ("p3g_envoy_added_p50_ms", "p3g_grpc_gateway_added_p50_ms"):  # differences: either sign in a smoke run
        assert isinstance(results[key], float), (key, results[key])
        assert math.isfinite(results[key]), (key, results[key])
    assert isinstance(results["p3g_added_p50_envoy_vs_grpc_gateway"], float)
    # Both proxies answered the timed GET with the same JSON, a real user's.
    assert detail["subject"]["answer"] == detail["baseline"]["answer"]
    assert detail["subject"]["answer"]["user"]["userId"]
    assert [row[0] for row in detail["table"]["rows"]] == ["envoy_rest", "direct_grpc", "grpc_gateway_rest",
                                                           "envoy_rest_loaded", "grpc_gateway_rest_loaded"]
    assert sum(" -c32 " in command for command in detail["commands"]) == 2


def test_overload_runs_every_connection_count_with_shedding_on_and_off_whenever_the_gateway_exists(
        smoke_run: SmokeRun) -> None:
    results = smoke_run.results
    _measured_or_missing(results, "p10", (), available=_gateway_installed())
    if results["details"]["p10"]["status"] == "measured":
        rows = results["details"]["p10"]["table"]["rows"]
        assert [(row[0], row[1]) for row in rows] == [(setting, n) for setting in ("shedding", "tight", "off")
                                                      for n in (10, 100, 400)]
        assert isinstance(results["p10_cancelled_4000"], int)


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


def test_the_chart_is_drawn_next_to_the_page_and_shown_on_it_whenever_the_bench_venv_exists(
        smoke_run: SmokeRun) -> None:
    if not _bench_venv_exists(project_root()):
        assert "no chart: the bench venv" in smoke_run.process.stdout
        return
    chart = Path(smoke_run.results_path).with_name("benchmarks.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](benchmarks.png)" in smoke_run.page


def test_the_page_lists_each_figure_with_its_machine_and_commands(smoke_run: SmokeRun) -> None:
    page = smoke_run.page
    assert "`p1_runtime_vs_bare`" in page
    assert "`p2_runtime_vs_fastapi`" in page
    assert "`p3_jwt_mtls_added_p50_ms`" in page
    if smoke_run.results["details"]["p3"]["status"] == "measured":
        assert "| tls+jwt+mtls |" in page
    assert smoke_run.results["machine"]["cpu"] in page
    assert "-m bench --only p1 --smoke" in page
