"""The short chaos gate: each fault of `make chaos` for a few seconds under load, with issue 6's goals asserted."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from bench.chaos.harness import ChaosMesh
from bench.chaos.load import Workload, open_workload
from bench.chaos.model import SHORT, ScenarioResult
from bench.chaos.scenarios import REREGISTER_GOAL_S, SCENARIOS, run_scenario

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]
log = logging.getLogger("chaos")

# The self-healing mesh's recovery bound (issue 9): a killed instance is passing and routed again within 5 s.
HEAL_WITHIN_S = 5.0


class Chaos:
    """One mesh shared by the scenarios, which leave it whole (each waits for its recovery)."""

    def __init__(self, mesh: ChaosMesh, work: Workload) -> None:
        self.mesh = mesh
        self.work = work

    async def run(self, name: str) -> ScenarioResult:
        await self.mesh.settle_all()  # a scenario starts from a whole mesh, whatever the one before did
        result = await run_scenario(SCENARIOS[name], self.mesh, self.work, SHORT)
        log.info("%s\n  logs in %s", result.explain(), self.mesh.logs)
        assert "error" not in result.metrics, result.explain()
        return result


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chaos(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Chaos]:
    async with ChaosMesh(tmp_path_factory.mktemp("chaos")) as mesh, open_workload(mesh.client) as work:
        yield Chaos(mesh, work)


async def test_a_kill_9_of_one_of_two_users_instances_heals_within_5_s_failing_at_most_the_call_in_flight(
    chaos: Chaos,
) -> None:
    result = await chaos.run("kill9")
    assert result.tally.failed <= 1, result.explain()
    # Restarted by the mesh itself (not by the test), passing in Consul and routed by Envoy again.
    assert result.metrics["restarted_in_s"] <= HEAL_WITHIN_S, result.explain()
    assert chaos.mesh.dead() == [], "the rest of the mesh must keep running"
    assert chaos.mesh.mesh.status == "ready"


async def test_protomesh_restart_of_users_under_load_fails_no_call(chaos: Chaos) -> None:
    before = {instance.status.pid for instance in chaos.mesh.instances("users")}
    result = await chaos.run("restart")
    assert result.tally.failed == 0, result.explain()
    assert {instance.status.pid for instance in chaos.mesh.instances("users")}.isdisjoint(before)


async def test_a_rolling_sigterm_restart_of_every_instance_fails_no_call_and_loses_no_event(chaos: Chaos) -> None:
    result = await chaos.run("rolling")
    assert result.tally.failed == 0, result.explain()
    assert (result.metrics["lost_events"], result.metrics["duplicate_notifications"]) == (0, 0), result.explain()


async def test_a_consul_restart_that_loses_its_state_fails_no_call_and_instances_re_register_within_3_s(
    chaos: Chaos,
) -> None:
    result = await chaos.run("consul")
    assert result.tally.failed == 0, result.explain()
    assert result.metrics["reregistered_s"] <= REREGISTER_GOAL_S, result.explain()
    assert (result.metrics["lost_events"], result.metrics["duplicate_notifications"]) == (0, 0), result.explain()


async def test_a_control_plane_restart_fails_no_call(chaos: Chaos) -> None:
    result = await chaos.run("controlplane")
    assert result.tally.failed == 0, result.explain()


async def test_a_rabbitmq_restart_while_orders_are_placed_loses_and_duplicates_no_event(chaos: Chaos) -> None:
    result = await chaos.run("rabbitmq")
    assert result.metrics["lost_events"] == 0, result.explain()
    assert result.metrics["duplicate_notifications"] == 0, result.explain()
    assert result.tally.failed == 0, result.explain()
