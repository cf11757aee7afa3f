"""How docker-compose.yml is read as the mesh: interpolation, kinds, order, restart policies and the local rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from localmesh.components import MeshContext
from localmesh.compose import TopologyError, interpolate, variable_defaults
from localmesh.topology import Restart, Topology

COMPOSE = """
x-protomesh: {trust: local}
services:
  consul:
    image: hashicorp/consul:1.8.7
    ports: ["127.0.0.1:${CONSUL_PORT:-8500}:8500"]
    x-protomesh: {run: consul}
  rabbitmq:
    image: rabbitmq:3.10.8
    ports: ["${AMQP_PORT:-5672}:5672"]
    x-protomesh: {run: rabbitmq}
  ledger:
    build: {context: ., dockerfile: services/Dockerfile, args: [SERVICE=ledger]}
    restart: on-failure:3
    deploy: {replicas: "${LEDGER_REPLICAS:-2}"}
    volumes: ["ledger-data:/data", "./config:/etc/ledger:ro"]
    depends_on:
      rabbitmq: {condition: service_healthy}
      consul: {condition: service_healthy}
    environment:
      CONSUL_HTTP_ADDR: consul:8500
      LEDGER_AMQP_URL: amqp://guest:guest@rabbitmq:5672/
      LEDGER_SERVER__HOST: 0.0.0.0
      LEDGER_SERVER__PORT: "50051"
      LEDGER_DATABASE_PATH: /data/ledger.db
      LEDGER_RULES: /etc/ledger/rules.yaml
      LEDGER_NOTE: price $$5 at consul-ish:8500
volumes:
  ledger-data:
"""


def project(tmp_path: Path, compose: str = COMPOSE) -> Path:
    (tmp_path / "services" / "ledger" / "app").mkdir(parents=True)
    (tmp_path / "protos").mkdir()
    (tmp_path / "docker-compose.yml").write_text(compose)
    return tmp_path


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("${A:-x}", {}, "x"), ("${A:-x}", {"A": ""}, "x"), ("${A-x}", {"A": ""}, ""), ("${A-x}", {}, "x"),
    ("$A/${B}", {"A": "1", "B": "2"}, "1/2"), ("$$A", {"A": "1"}, "$A"), ("${A:+set}", {"A": "1"}, "set"),
])
def test_variables_are_interpolated_the_way_compose_does(text: str, env: dict[str, str], expected: str) -> None:
    used: set[str] = set()
    assert interpolate(text, env, used) == expected
    assert used <= {"A", "B"}


def test_a_required_variable_that_is_missing_says_so() -> None:
    with pytest.raises(TopologyError, match="TOKEN is required: set it first"):
        interpolate("${TOKEN:?set it first}", {}, set())


def test_a_service_entry_is_read_with_its_replicas_policy_dependencies_and_volumes(tmp_path: Path) -> None:
    topology = Topology.load(project(tmp_path), {"LEDGER_REPLICAS": "3"})
    ledger = topology.specs["ledger"]

    assert (ledger.kind, ledger.source, ledger.replicas) == ("service", "ledger", 3)
    assert ledger.instances == ["ledger-1", "ledger-2", "ledger-3"]
    assert ledger.restart == Restart("on-failure", 3)
    assert ledger.depends_on == {"rabbitmq": "service_healthy", "consul": "service_healthy"}
    assert [spec.name for spec in topology.start_order()] == ["consul", "rabbitmq", "ledger"]
    assert topology.settings == {"trust": "local"}


def test_the_files_variables_are_mesh_knobs_with_their_defaults(tmp_path: Path) -> None:
    path = project(tmp_path)
    assert Topology.load(path, {}).variables == {"CONSUL_PORT", "AMQP_PORT", "LEDGER_REPLICAS"}
    assert variable_defaults(path / "docker-compose.yml") == {"AMQP_PORT": "5672", "CONSUL_PORT": "8500",
                                                               "LEDGER_REPLICAS": "2"}


def test_container_values_become_local_ones_by_the_documented_rules(tmp_path: Path) -> None:
    topology = Topology.load(project(tmp_path), {"CONSUL_PORT": "18500", "AMQP_PORT": "15672"})

    local = topology.local_environment(topology.specs["ledger"], state_dir=tmp_path / "state")

    assert local == {
        "CONSUL_HTTP_ADDR": "127.0.0.1:18500",
        "LEDGER_AMQP_URL": "amqp://guest:guest@127.0.0.1:15672/",
        "LEDGER_DATABASE_PATH": str(tmp_path / "state" / "volumes" / "ledger-data" / "ledger.db"),
        "LEDGER_RULES": str(topology.project / "config" / "rules.yaml"),
        "LEDGER_NOTE": "price $5 at consul-ish:8500",
    }


def test_the_meshs_own_knobs_never_reach_a_service(tmp_path: Path) -> None:
    topology = Topology.load(project(tmp_path), {"LEDGER_REPLICAS": "1"})
    ctx = MeshContext(topology, tmp_path / "state", "node", {"LEDGER_REPLICAS": "1", "PROTOMESH_VAR_DIR": "x",
                                                            "LEDGER_LOG_LEVEL": "DEBUG"}, lambda: None)

    env = ctx.environment(topology.specs["ledger"])

    assert "LEDGER_REPLICAS" not in env
    assert "PROTOMESH_VAR_DIR" not in env
    assert env["LEDGER_LOG_LEVEL"] == "DEBUG"  # a service's own setting still passes through


def _load_and_localize(folder: Path) -> None:
    topology = Topology.load(folder, {})
    topology.local_environment(topology.specs["ledger"], state_dir=folder / "state")


@pytest.mark.parametrize(("old", "new", "message"), [
    ("consul:8500\n", "consul:8501\n", "names port 8501 of consul, which consul does not publish"),
    ("rabbitmq: {condition: service_healthy}", "nothere: {condition: service_healthy}", "depends_on names 'nothere'"),
    ("restart: on-failure:3", "restart: sometimes", "restart: expected one of"),
    ("x-protomesh: {run: rabbitmq}", "x-protomesh: {run: kafka}", "x-protomesh.run: expected one of"),
])
def test_a_mistake_in_the_file_is_an_error_naming_the_place(tmp_path: Path, old: str, new: str,
                                                           message: str) -> None:
    folder = project(tmp_path, COMPOSE.replace(old, new))
    with pytest.raises(TopologyError, match=message):
        _load_and_localize(folder)


def test_an_entry_the_runner_cannot_run_says_what_to_add(tmp_path: Path) -> None:
    compose = COMPOSE + "  redis:\n    image: redis:7\n"
    with pytest.raises(TopologyError, match=r"services.redis: protomesh up cannot run it locally"):
        Topology.load(project(tmp_path, compose.replace("volumes:\n  ledger-data:\n", "") +
                              "volumes:\n  ledger-data:\n"), {})


def test_a_dependency_cycle_is_refused_with_the_cycle_named(tmp_path: Path) -> None:
    compose = COMPOSE.replace("    x-protomesh: {run: consul}", "    x-protomesh: {run: consul}\n"
                              "    depends_on: [ledger]")
    with pytest.raises(TopologyError, match="depends_on cycle: consul -> ledger -> consul"):
        Topology.load(project(tmp_path, compose), {})


@pytest.mark.parametrize(("policy", "code", "restarts", "expected"), [
    ("no", 1, 0, False), ("always", 0, 9, True), ("unless-stopped", -9, 0, True),
    ("on-failure", 0, 0, False), ("on-failure:2", 1, 1, True), ("on-failure:2", 1, 2, False),
])
def test_restart_policies_keep_compose_meanings(policy: str, code: int, restarts: int, expected: bool) -> None:
    assert Restart.parse(policy, "x").restarts(code, restarts) is expected
