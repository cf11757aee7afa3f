"""`protomesh top`: a live terminal view per service (req/s, error %, p50/p99, instances) read from Prometheus."""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from localmesh.mesh import MeshOptions, read_state

# Rates over the last 10 s: Prometheus scrapes every 2 s (observability/prometheus.yml), so 5 samples per rate.
DEFAULT_WINDOW = "10s"
DEFAULT_INTERVAL_S = 1.0
QUERY_TIMEOUT_S = 2.0
QUERIES = {
    "rps": "sum by (service) (rate(grpc_server_handled_total[{w}]))",
    # go-grpc-prometheus dashboards count every code but OK as an error.
    "errors": 'sum by (service) (rate(grpc_server_handled_total{{grpc_code!="OK"}}[{w}]))',
    "p50": "histogram_quantile(0.5, sum by (service, le) (rate(grpc_server_handling_seconds_bucket[{w}])))",
    "p99": "histogram_quantile(0.99, sum by (service, le) (rate(grpc_server_handling_seconds_bucket[{w}])))",
    "instances": 'count by (service) (up{{job="protomesh"}} == 1)',
}


@dataclass(frozen=True)
class Row:
    """One service as the view shows it."""

    service: str
    instances: int
    rps: float | None
    error_ratio: float | None
    p50_s: float | None
    p99_s: float | None


def query(prometheus: str, promql: str) -> dict[str, float]:
    """An instant query's value per `service` label (NaN results, e.g. a quantile without traffic, left out)."""
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=QUERY_TIMEOUT_S) as response:
        body = json.loads(response.read())
    values = {}
    for item in body.get("data", {}).get("result", []):
        value = float(item["value"][1])
        if not math.isnan(value):
            values[str(item["metric"].get("service", ""))] = value
    return values


def snapshot(prometheus: str, window: str = DEFAULT_WINDOW) -> list[Row]:
    """Every service Prometheus scrapes, with its gRPC figures where it serves gRPC."""
    results = {name: query(prometheus, promql.format(w=window)) for name, promql in QUERIES.items()}
    services = sorted(set(results["instances"]) | set(results["rps"]))
    rows = []
    for service in services:
        rps = results["rps"].get(service)
        errors = results["errors"].get(service, 0.0 if rps is not None else None)
        ratio = errors / rps if rps and errors is not None else (0.0 if rps == 0 else None)
        rows.append(Row(service, int(results["instances"].get(service, 0)), rps, ratio,
                        results["p50"].get(service), results["p99"].get(service)))
    return rows


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def render(rows: list[Row], prometheus: str, window: str, error: str = "") -> Group:
    """The screen: a title line and one table row per service."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column, justify in (("SERVICE", "left"), ("INSTANCES", "right"), ("REQ/S", "right"),
                            ("ERROR %", "right"), ("P50", "right"), ("P99", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(row.service, str(row.instances), "-" if row.rps is None else f"{row.rps:.1f}",
                      "-" if row.error_ratio is None else f"{row.error_ratio * 100:.1f}", _ms(row.p50_s),
                      _ms(row.p99_s))
    title = Text(f"protomesh top — {prometheus} — rates over {window} — {time.strftime('%H:%M:%S')}",
                 style="bold")
    parts: list[Text | Table] = [title, table]
    if error:
        parts.append(Text(f"Prometheus: {error}", style="red"))
    parts.append(Text("Ctrl-C quits", style="dim"))
    return Group(*parts)


def prometheus_url(project: Path, env: Mapping[str, str]) -> str | None:
    """Where the running mesh's Prometheus answers (from its state file), if it has one."""
    state = read_state(MeshOptions.from_env(project, env).state_dir)
    url = state.get("prometheus") if state else None
    return url if isinstance(url, str) and url else None


def _frame(prometheus: str, window: str) -> Group:
    try:
        return render(snapshot(prometheus, window), prometheus, window)
    except (OSError, ValueError) as exc:
        return render([], prometheus, window, error=str(exc))


def top(project: Path, env: Mapping[str, str], *, prometheus: str | None, window: str = DEFAULT_WINDOW,
        interval_s: float = DEFAULT_INTERVAL_S, once: bool = False) -> int:
    """Show the view, refreshed every interval_s until Ctrl-C (once: print it one time)."""
    url = (prometheus or prometheus_url(project, env) or "").rstrip("/")
    console = Console()
    if not url:
        console.print("protomesh top: no Prometheus known for this mesh (is it up? or pass --prometheus URL)")
        return 1
    if once:
        console.print(_frame(url, window))
        return 0
    try:
        with Live(_frame(url, window), console=console, screen=False, auto_refresh=False) as live:
            while True:
                time.sleep(interval_s)
                live.update(_frame(url, window), refresh=True)
    except KeyboardInterrupt:
        return 0
