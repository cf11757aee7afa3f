"""The ports the local mesh hands its components: free, below the kernel's ephemeral range, never twice."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from localmesh import process
from localmesh.process import PICKED_PORTS_FROM, free_port


class _Sequence:
    """A picker that returns the given ports in order (the real one is random)."""

    def __init__(self, ports: list[int]) -> None:
        self._ports: Iterator[int] = iter(ports)

    def randrange(self, start: int, stop: int) -> int:
        return next(self._ports)


def test_a_picked_port_lies_below_the_ephemeral_range_and_can_be_bound() -> None:
    ephemeral_start = int(process.EPHEMERAL_RANGE_FILE.read_text().split()[0])
    for _ in range(20):
        port = free_port()
        assert PICKED_PORTS_FROM <= port < ephemeral_start
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_a_process_never_hands_out_the_same_port_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def test_a_port_in_use_or_handed_out_before_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        in_use = taken.getsockname()[1]
        given = free_port()
        expected = next(p for p in range(PICKED_PORTS_FROM, PICKED_PORTS_FROM + 1000)
                        if p not in (in_use, given) and process._bindable(p))
        monkeypatch.setattr(process, "_picker", _Sequence([in_use, given, expected]))
        monkeypatch.setattr(process, "_ephemeral_start", lambda: 65536)  # so the taken port is in the range
        assert free_port() == expected
