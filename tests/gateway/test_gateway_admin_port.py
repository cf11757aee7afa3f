"""A gateway whose ports it picked itself still starts when one of them is taken before Envoy binds it."""

from __future__ import annotations

import socket
from pathlib import Path

from localmesh.testing import ConsulAgent, Gateway, project_root


def test_envoy_starts_on_a_newly_picked_admin_port_when_the_picked_one_was_taken_meanwhile(tmp_path: Path) -> None:
    consul = ConsulAgent(tmp_path / "logs")
    consul.start()
    gateway = Gateway(tmp_path / "logs", consul_address=consul.address, extra_args=["--plaintext"],
                      descriptor=project_root() / "gen" / "descriptors" / "protomesh.binpb")
    taken = gateway.ports.admin
    squatter = socket.create_server(("127.0.0.1", taken))  # what an outgoing connection's local port does
    try:
        gateway.start()
        assert gateway.ports.admin != taken
        assert "LIVE" in gateway.admin("/ready")
    finally:
        squatter.close()
        gateway.stop()
        consul.stop()
