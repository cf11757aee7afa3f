"""Intentions as Consul evaluates them, and AccessState following them and the policy in a real Consul with ACLs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from mtls_support import Pki, SecureConsul, secure_consul, until_intentions

from protomesh._access import AccessState
from protomesh.aio import poll_until
from protomesh.auth import Policy, Rule
from protomesh.intentions import Intention, Intentions, precedence


def test_an_exact_intention_beats_a_wildcard_whatever_the_order() -> None:
    intentions = Intentions.of([Intention("*", "*"), Intention("orders", "users", allow=False),
                                Intention("*", "users"), Intention("orders", "*")])

    assert not intentions.allows("orders", "users")
    assert intentions.allows("billing", "users")
    assert intentions.allows("orders", "billing")


def test_no_matching_intention_means_deny() -> None:
    intentions = Intentions.of([Intention("orders", "users")])

    assert intentions.match("billing", "users") is None
    assert not intentions.allows("billing", "users")
    assert not Intentions().allows("orders", "users")


def test_consuls_entries_are_read_with_their_meta_and_bad_ones_are_left_out(
        caplog: pytest.LogCaptureFixture) -> None:
    entries = [{"SourceName": "orders", "DestinationName": "users", "Action": "allow", "Precedence": 9,
                "Meta": {"forward-claims": "true"}},
               {"SourceName": "billing", "DestinationName": "users", "Action": "maybe"},
               "not even an object"]

    with caplog.at_level(logging.WARNING, logger="protomesh.intentions"):
        intentions = Intentions.parse(entries)

    assert intentions.entries == (Intention("orders", "users", forward_claims=True),)
    assert len(caplog.records) == 2


def test_a_body_of_null_holds_no_intention() -> None:
    assert Intentions.parse(None) == Intentions()


@pytest.fixture(scope="module")
def consul(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureConsul]:
    folder = tmp_path_factory.mktemp("intentions")
    with secure_consul(folder, Pki.create(folder)) as agent:
        yield agent


async def test_consul_reports_the_precedence_computed_here(consul: SecureConsul) -> None:
    pairs = [("orders", "users"), ("*", "users"), ("orders", "*"), ("*", "*")]
    await asyncio.to_thread(consul.replace_intentions, [Intention(s, d) for s, d in pairs])

    stored = await consul.intentions_now()

    assert {(i.source, i.destination): i.precedence for i in stored.entries} == {
        pair: precedence(*pair) for pair in pairs}


async def test_access_state_follows_intentions_with_the_services_own_token(consul: SecureConsul) -> None:
    await asyncio.to_thread(consul.replace_intentions, [])
    async with consul.client("users") as client:
        access = await AccessState.open(client)
        changes: list[int] = []
        access.subscribe(lambda: changes.append(len(access.intentions.entries)))
        try:
            took = await until_intentions(consul, [Intention("orders", "users", forward_claims=True)], access)
        finally:
            await access.close()

    # A blocking query answers as soon as the intentions change: well within Consul's wait of 30 s.
    assert took < 5
    assert changes == [1]
    [intention] = access.intentions.entries
    assert intention.forward_claims


async def test_the_policy_key_is_followed_and_a_broken_value_keeps_the_last_good_policy(
        consul: SecureConsul, caplog: pytest.LogCaptureFixture) -> None:
    good = {"rules": {"/thirdparty.echo.v1.EchoService/": {"public": True}}}
    async with consul.client("users") as client:
        access = await AccessState.open(client)
        try:
            await asyncio.to_thread(consul.put_policy, good)
            await poll_until(lambda: access.policy.rules, timeout=5, what="policy followed")
            with caplog.at_level(logging.ERROR, logger="protomesh.access"):
                await asyncio.to_thread(consul.put_policy, {"rules": {"no-slash": {"public": True}}})
                await poll_until(lambda: caplog.records, timeout=5, what="broken policy noticed")
        finally:
            await access.close()

    assert access.policy.rules == {"/thirdparty.echo.v1.EchoService/": Rule(public=True)}
    assert "protomesh/security/policy" in caplog.records[0].getMessage()


async def test_a_token_without_read_access_starts_denying_everything(consul: SecureConsul,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    await asyncio.to_thread(consul.replace_intentions, [Intention("orders", "users")])
    async with consul.client("no-such-token") as client:
        with caplog.at_level(logging.WARNING, logger="protomesh.access"):
            access = await AccessState.open(client, open_timeout_s=0.5)
        await access.close()

    assert access.intentions == Intentions()
    assert access.policy == Policy()
    assert "CONSUL_HTTP_TOKEN" in caplog.text


async def test_the_last_known_intentions_stay_in_force_while_consul_is_down(tmp_path_factory: pytest.TempPathFactory,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path_factory.mktemp("outage")
    with secure_consul(folder, Pki.create(folder)) as agent:
        await asyncio.to_thread(agent.replace_intentions, [Intention("orders", "users")])
        async with agent.client("users") as client:
            access = await AccessState.open(client, wait="1s")
            try:
                assert access.intentions.allows("orders", "users")
                await asyncio.to_thread(agent.agent.stop)
                with caplog.at_level(logging.WARNING, logger="protomesh.consul"):
                    await poll_until(lambda: "intentions: Consul query failed" in caplog.text, timeout=10,
                                     what="the watch noticing Consul is gone")
                assert access.intentions.allows("orders", "users")
            finally:
                await access.close()
