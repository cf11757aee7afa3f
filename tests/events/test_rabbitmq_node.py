"""The RabbitMQ test node's safety rails, checked without booting one: loud when missing, harmless when stale."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from localmesh.testing import MissingComponentError, RabbitMQNode, find_rabbitmq_script


def test_a_missing_rabbitmq_tool_fails_with_a_message_naming_make_setup() -> None:
    with pytest.raises(MissingComponentError, match=r"rabbitmq-absent is not installed .*make setup"):
        find_rabbitmq_script("rabbitmq-absent")


def test_a_stale_pid_file_naming_another_process_is_never_signalled(tmp_path: Path) -> None:
    node = RabbitMQNode(tmp_path)
    (tmp_path / "node.pid").write_text(str(os.getpid()))  # this very test process: not a RabbitMQ node
    assert not node.running()
    node.stop()  # must neither signal us nor fail
    assert not (tmp_path / "node.pid").exists()


def test_each_test_node_gets_its_own_name_and_ports(tmp_path: Path) -> None:
    first, second = RabbitMQNode(tmp_path / "a"), RabbitMQNode(tmp_path / "b")
    assert first.node_name != second.node_name
    assert first.node_name.startswith("protomesh-test-")
    assert first.node_name.endswith("@localhost")
    assert first.url == f"amqp://guest:guest@127.0.0.1:{first.amqp_port}/"
    assert first.amqp_port != first.dist_port
