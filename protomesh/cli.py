"""The `protomesh` command: code generation, health probes and config seeding, plus the commands of installed
extensions (entry point group `protomesh.commands`; the local mesh adds up, down, status, logs, restart, new)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

# Extensions register their subcommands here: `register(commands)` gets the subparsers of `protomesh`.
COMMANDS_GROUP = "protomesh.commands"


def _protos(args: argparse.Namespace) -> int:
    from protomesh._codegen import CodegenError, generate

    try:
        files = generate(Path(args.root), Path(args.python_out), Path(args.descriptor_out))
    except CodegenError as exc:
        print(f"protomesh protos: {exc}", file=sys.stderr)
        return 1
    print(f"==> generated {len(files)} contracts into {args.python_out} and {args.descriptor_out}")
    return 0


def _probe(args: argparse.Namespace) -> int:
    import asyncio

    from protomesh._probe import ProbeTls, probe
    from protomesh.identity import IdentityError

    if args.plaintext:
        tls = None
    elif args.identity_dir:
        from_env = ProbeTls.from_env(os.environ)
        server_name = args.server_name or (from_env.server_name if from_env is not None else None)
        if server_name is None:
            print("protomesh probe: --identity-dir needs --server-name, the DNS name the server's certificate "
                  "holds (e.g. users.svc.protomesh.local)", file=sys.stderr)
            return 2
        tls = ProbeTls(Path(args.identity_dir), server_name)
    else:
        tls = ProbeTls.from_env(os.environ)
        if tls is not None and args.server_name:
            tls = ProbeTls(tls.identity_dir, args.server_name)
    try:
        status = asyncio.run(probe(args.target, args.service, timeout=args.timeout, tls=tls))
    except IdentityError as exc:
        print(f"protomesh probe: {exc}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status == "SERVING" else 1


def _config_seed(args: argparse.Namespace) -> int:
    import asyncio

    from protomesh._config import default_config_dir, seed_config
    from protomesh._settings import ConfigError, ConsulSettings
    from protomesh.consul import ConsulClient

    async def seed() -> int:
        settings = ConsulSettings(address=args.consul or os.environ.get("CONSUL_HTTP_ADDR", "127.0.0.1:8500"),
                                  token=os.environ.get("CONSUL_HTTP_TOKEN", ""))
        config_dir = Path(args.config_dir) if args.config_dir else default_config_dir()
        async with ConsulClient.from_settings(settings) as consul:
            return await seed_config(consul, config_dir, args.services or None, env=args.env)

    try:
        count = asyncio.run(seed())
    except (ConfigError, OSError, TimeoutError) as exc:
        print(f"protomesh config seed: {exc}", file=sys.stderr)
        return 1
    print(f"==> seeded {count} keys into Consul KV under protomesh/config/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protomesh",
        description="gRPC-first service mesh for Python: contracts, runtime, Consul, Envoy, RabbitMQ.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    protos = commands.add_parser(
        "protos", help="generate Python stubs and the gateway descriptor set from the contracts"
    )
    protos.add_argument("--root", default="protos", help="folder holding the contracts (default: protos)")
    protos.add_argument("--python-out", default="gen/python", help="stub folder (default: gen/python)")
    protos.add_argument(
        "--descriptor-out",
        default="gen/descriptors/protomesh.binpb",
        help="descriptor set for Envoy's transcoder (default: gen/descriptors/protomesh.binpb)",
    )
    protos.set_defaults(func=_protos)

    probe = commands.add_parser(
        "probe", help="ask a gRPC server's health service; exit 0 when SERVING (container healthchecks)"
    )
    probe.add_argument("target", help="host:port of the server")
    probe.add_argument("service", nargs="?", default="", help="full service name (default: the whole server)")
    probe.add_argument("--timeout", type=float, default=2.0, help="seconds to wait (default: 2)")
    probe.add_argument("--identity-dir", metavar="DIR",
                       help="probe over mTLS with the identity in DIR (identity.pem + ca.pem); default: the one "
                            "<SERVICE>_SECURITY__IDENTITY_DIR in the environment, else plaintext")
    probe.add_argument("--server-name", metavar="NAME",
                       help="the DNS name the server's certificate must hold (default with the environment's "
                            "identity: <service>.svc.<trust domain>)")
    probe.add_argument("--plaintext", action="store_true", help="plaintext even if the environment has an identity")
    probe.set_defaults(func=_probe)

    config = commands.add_parser("config", help="service configuration in Consul KV")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    seed = config_commands.add_parser(
        "seed", help="write config/<service>.yaml (+ the environment overlay) into Consul KV"
    )
    seed.add_argument("services", nargs="*", help="only these services (default: every config/*.yaml)")
    seed.add_argument("--config-dir", help="folder of the YAML files (default: $PROTOMESH_CONFIG_DIR or ./config)")
    seed.add_argument("--consul", help="Consul HTTP address (default: CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
    seed.add_argument("--env", help="environment overlay to merge (default: PROTOMESH_ENV or local)")
    seed.set_defaults(func=_config_seed)

    _add_extensions(commands)
    return parser


def _add_extensions(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Subcommands of installed extensions; one that cannot load (e.g. in a service image) is left out."""
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            register = entry.load()
        except ImportError as exc:
            logging.getLogger("protomesh.cli").debug("extension %s not loaded: %s", entry.name, exc)
            continue
        register(commands)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `protomesh status | head`: the reader has seen enough
        # Python flushes stdout at exit again: point it at /dev/null so that flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
