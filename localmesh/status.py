"""`protomesh status` and `protomesh logs`: what the running mesh's supervisor, Consul and Envoy say."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from localmesh import acl
from localmesh.components import get_json, listed
from localmesh.mesh import MeshOptions, read_state
from localmesh.runner import running_supervisor
from localmesh.supervisor import describe_exit

# Consul lists itself; it is shown as a component, not as a service.
CONSUL_SELF = "consul"
# How often `protomesh logs -f` looks for new lines.
FOLLOW_INTERVAL_S = 0.2


def _uptime(started_at: float) -> str:
    if not started_at:
        return "-"
    seconds = int(time.time() - started_at)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _exit(code: object) -> str:
    return describe_exit(int(code)) if isinstance(code, int) else "-"


def status(project: Path, env: Mapping[str, str]) -> int:
    """Print each supervised process (state, pid, uptime, restarts, last exit), every instance Consul knows of
    (started by the mesh or not), and the gateway's routes."""
    options = MeshOptions.from_env(project, env)
    state = read_state(options.state_dir)
    pid = running_supervisor(options)
    print(f"mesh: {state.get('status') if state and pid else 'not running'}"
          + (f" (supervisor pid {pid})" if pid else ""))
    if not state or not pid:
        return 0
    instances = {name: info for component in _components(state).values()
                 for name, info in component.get("instances", {}).items()}
    print(f"  {'NAME':<20} {'STATE':<11} {'PID':>7} {'UPTIME':>7} {'RESTARTS':>8}  LAST EXIT")
    for name, info in instances.items():
        uptime = _uptime(float(info.get("started_at") or 0))
        print(f"  {name:<20} {info.get('state', '?'):<11} {info.get('pid') or '-':>7} {uptime:>7} "
              f"{info.get('restarts', 0):>8}  {_exit(info.get('last_exit'))}")
    consul = state.get("consul")
    if isinstance(consul, str):
        _print_consul(consul, set(instances), _runner_token(options.state_dir))
    gateway = state.get("gateway")
    if isinstance(gateway, dict):
        _print_routes(int(gateway["admin"]))
    return 0


def _components(state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    components = state.get("components")
    return components if isinstance(components, dict) else {}


def _runner_token(state_dir: Path) -> str:
    """The runner's Consul token, when the mesh runs with ACLs (its state holds the tokens it made)."""
    path = state_dir / acl.TOKENS_FILE
    return acl.MeshTokens.open(path).secret(acl.RUNNER) if path.exists() else ""


def _print_consul(address: str, ours: set[str], token: str) -> None:
    services = get_json(f"http://{address}/v1/catalog/services", token)
    if not isinstance(services, dict):
        print(f"  consul unreachable at {address}")
        return
    print(f"  {'SERVICE':<14} {'INSTANCE (CONSUL ID)':<34} {'ADDRESS':<22} HEALTH")
    for service in sorted(name for name in services if name != CONSUL_SELF):
        for entry in listed(get_json(f"http://{address}/v1/health/service/{service}", token)):
            svc, checks = entry["Service"], entry["Checks"]
            health = "passing" if all(c["Status"] == "passing" for c in checks) else "critical"
            # Scrape targets the control plane registers (itself, Envoy's admin) belong to components of the mesh.
            scrape = bool((svc.get("Meta") or {}).get("metrics_path"))
            origin = "" if svc["ID"] in ours or scrape else "  (not started by protomesh up)"
            print(f"  {service:<14} {svc['ID']:<34} {svc['Address'] + ':' + str(svc['Port']):<22} {health}{origin}")


def _print_routes(admin_port: int) -> None:
    dump = get_json(f"http://127.0.0.1:{admin_port}/config_dump?resource=dynamic_route_configs")
    if not isinstance(dump, dict):
        print(f"  gateway admin unreachable on :{admin_port}")
        return
    for config in dump.get("configs", []):
        for host in config.get("route_config", {}).get("virtual_hosts", []):
            for route in host.get("routes", []):
                print(f"  route          {route_match(route):<52} -> {route_target(route)}")


def route_match(route: Mapping[str, Any]) -> str:
    """What a route matches: its exact path (a retry-safe method) or its prefix (a whole service)."""
    match = route.get("match", {})
    return str(match.get("path") or match.get("prefix") or match.get("safe_regex", {}).get("regex") or "?")


def route_target(route: Mapping[str, Any]) -> str:
    if "route" in route:
        return str(route["route"].get("cluster", "?"))
    status = route.get("direct_response", {}).get("status")
    return f"(answers {status})" if status else "(direct response)"


def logs(project: Path, env: Mapping[str, str], name: str, *, follow: bool, tail: int | None) -> int:
    """Print one component's (or instance's) log; `-f` keeps printing new lines until Ctrl-C."""
    options = MeshOptions.from_env(project, env)
    state = read_state(options.state_dir) or {}
    paths = _log_paths(state, options.state_dir, name)
    if not paths:
        known = sorted({*_components(state), *(i for c in _components(state).values() for i in c.get("instances", {}))})
        print(f"protomesh logs: no component or instance named {name!r}"
              + (f" (known: {', '.join(known)})" if known else " (no mesh has run here: `protomesh up`)"),
              file=sys.stderr)
        return 1
    prefix = len(paths) > 1
    for path in paths:
        for line in _last_lines(path, tail):
            print(f"{path.stem:<12} | {line}" if prefix else line)
    if follow:
        try:
            for path, line in _follow(paths):
                print(f"{path.stem:<12} | {line}" if prefix else line, flush=True)
        except KeyboardInterrupt:
            return 0
    return 0


def _log_paths(state: Mapping[str, Any], state_dir: Path, name: str) -> list[Path]:
    component = _components(state).get(name)
    if component is not None:
        return [Path(info["log"]) for info in component.get("instances", {}).values()]
    for component in _components(state).values():
        if name in component.get("instances", {}):
            return [Path(component["instances"][name]["log"])]
    candidate = state_dir / "logs" / f"{name}.log"
    return [candidate] if candidate.is_file() else []


def _last_lines(path: Path, tail: int | None) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return lines[-tail:] if tail is not None else lines


def _follow(paths: list[Path]) -> Iterator[tuple[Path, str]]:
    offsets = {path: path.stat().st_size if path.exists() else 0 for path in paths}
    while True:
        for path in paths:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size < offsets[path]:  # truncated or replaced: read it from the start
                offsets[path] = 0
            if size > offsets[path]:
                with path.open("rb") as handle:
                    handle.seek(offsets[path])
                    chunk = handle.read()
                offsets[path] += len(chunk)
                for line in chunk.decode(errors="replace").splitlines():
                    yield path, line
        time.sleep(FOLLOW_INTERVAL_S)
