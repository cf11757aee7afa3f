"""The local mesh's `protomesh` subcommands: up, down, status, logs, restart, new, token and ca (an entry point
extension)."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from localmesh.compose import variable_defaults
from localmesh.mesh import DEFAULT_RABBITMQ_NODE, DEFAULT_STATE_DIR
from localmesh.process import TOPOLOGY_FILE, find_project, project_root

if TYPE_CHECKING:
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def environment_help() -> str:
    """The variables the project's docker-compose.yml reads (with their defaults) and the runner's own."""
    project = find_project()
    knobs = variable_defaults(project / TOPOLOGY_FILE) if project is not None else {}
    lines = [f"  {name:<24} {default or '(unset)'}" for name, default in knobs.items()]
    runner = [f"  {'PROTOMESH_VAR_DIR':<24} {DEFAULT_STATE_DIR} (state, data and logs)",
              f"  {'PROTOMESH_RABBITMQ_NODE':<24} {DEFAULT_RABBITMQ_NODE} (the broker's Erlang node name)"]
    source = f"{TOPOLOGY_FILE} reads" if knobs else f"the project's {TOPOLOGY_FILE} reads (none found here)"
    return "\n".join([f"environment ({source}; never passed on to services):", *lines, *runner])


def _project(args: argparse.Namespace) -> Path:
    return Path(args.project).resolve() if args.project else project_root()


def _up(args: argparse.Namespace) -> int:
    from localmesh import runner

    if args.detach:
        return runner.up_detached(_project(args), os.environ)
    return asyncio.run(runner.run_foreground(_project(args), os.environ))


def _down(args: argparse.Namespace) -> int:
    from localmesh import runner

    return runner.down(_project(args), os.environ)


def _status(args: argparse.Namespace) -> int:
    from localmesh import status

    return status.status(_project(args), os.environ)


def _logs(args: argparse.Namespace) -> int:
    from localmesh import status

    return status.logs(_project(args), os.environ, args.name, follow=args.follow, tail=args.tail)


def _restart(args: argparse.Namespace) -> int:
    from localmesh import runner

    return runner.restart(_project(args), os.environ, args.name)


def _top(args: argparse.Namespace) -> int:
    from localmesh import top

    return top.top(_project(args), os.environ, prometheus=args.prometheus, window=args.window,
                   interval_s=args.interval, once=args.once)


def _new_service(args: argparse.Namespace) -> int:
    from localmesh import scaffold

    return scaffold.main(_project(args), args.name)


def _token(args: argparse.Namespace) -> int:
    from localmesh import credentials

    return credentials.token_command(_project(args), os.environ, subject=args.sub, scopes=args.scope,
                                     all_scopes=args.all_scopes, ttl=args.ttl, audience=args.audience)


def _ca(args: argparse.Namespace) -> int:
    from localmesh import credentials

    return credentials.ca_command(_project(args), os.environ)


def _parser(commands: Commands, name: str, help_text: str, **kwargs: object) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help_text, description=help_text, **kwargs)  # type: ignore[arg-type]
    parser.add_argument("--project", help=f"the project folder (default: the nearest above the current one "
                                          f"holding {TOPOLOGY_FILE} and protos/)")
    return parser


def register(commands: Commands) -> None:
    """Add the local mesh's subcommands to `protomesh`."""
    raw = argparse.RawDescriptionHelpFormatter
    up = _parser(commands, "up", f"run the project's mesh ({TOPOLOGY_FILE}) as local processes; in the "
                 "foreground until Ctrl-C, or with --detach in the background (run again: applies changes)",
                 epilog=environment_help(), formatter_class=raw)
    up.add_argument("--detach", "-d", action="store_true",
                    help="run in the background; on a running mesh, start only what is new or changed")
    up.set_defaults(func=_up)
    _parser(commands, "down", "stop a mesh started with `up --detach` (reverse order)").set_defaults(func=_down)
    _parser(commands, "status", "each process (state, restarts, uptime, last exit), the instances in Consul, and "
            "the gateway's routes", epilog=environment_help(), formatter_class=raw).set_defaults(func=_status)
    logs = _parser(commands, "logs", "print the log of a component (all its instances) or of one instance")
    logs.add_argument("name", help="a component (users, consul, gateway) or an instance (users-2)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until Ctrl-C")
    logs.add_argument("--tail", type=int, metavar="N", help="only the last N lines of each log")
    logs.set_defaults(func=_logs)
    restart = _parser(commands, "restart", "restart a service instance by instance, with no failed call (or "
                      "one instance, or an infrastructure component)")
    restart.add_argument("name", help="a service (users), an instance (users-2) or a component (gateway)")
    restart.set_defaults(func=_restart)
    top = _parser(commands, "top", "a live view of the running mesh from Prometheus: per service req/s, error %, "
                  "p50/p99 latency and instances, refreshed every second (Ctrl-C quits)")
    top.add_argument("--prometheus", metavar="URL", help="Prometheus to read (default: the running mesh's)")
    top.add_argument("--window", default="10s", help="the range rates and quantiles are computed over (PromQL)")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true", help="print the view once and exit")
    top.set_defaults(func=_top)
    token = _parser(commands, "token", "print a development token signed by the local mesh's issuer (the gateway "
                    "of `protomesh up` trusts it): TOKEN=$(protomesh token --sub alice --scope orders:write)")
    token.add_argument("--sub", required=True, metavar="SUBJECT", help="who the token speaks for (its `sub`)")
    token.add_argument("--scope", action="append", default=[], metavar="SCOPE",
                       help="a scope to grant, e.g. orders:write (repeat for more)")
    token.add_argument("--all-scopes", action="store_true",
                       help="grant every scope the project's contracts name (from `make protos`' descriptor set)")
    token.add_argument("--ttl", default="1h", help="lifetime: 90s, 15m, 1h (default 1h, at most 24h)")
    token.add_argument("--audience", default=None, help="the `aud` claim (default: the one the gateway expects)")
    token.set_defaults(func=_token)
    _parser(commands, "ca", "create the local mesh's development CA if it has none, and print how to trust it"
            ).set_defaults(func=_ca)
    new = commands.add_parser("new", help="scaffold a new part of the project", description="scaffold a new part")
    kinds = new.add_subparsers(dest="kind", required=True, metavar="KIND")
    service = _parser(kinds, "service", "a working service in the house layout: contract, app, tests, config and "
                      "its entry in the topology")
    service.add_argument("name", help="lowercase letters and digits, starting with a letter (e.g. ledger)")
    service.set_defaults(func=_new_service)
