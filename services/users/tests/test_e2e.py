"""The users service with the real runtime and a real Consul: in-process via serve(), and as `python -m app`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc
import grpc.aio
from acme.users.v1 import users_pb2, users_service_pb2
from acme.users.v1.users_service_pb2_grpc import UserServiceStub

from app.main import SERVICE, build
from app.settings import UsersSettings
from localmesh.testing import ConsulAgent, ManagedProcess, wait_until
from protomesh import serve
from protomesh.aio import poll_until

SERVICE_DIR = Path(__file__).resolve().parents[1]
USER_SERVICE = "acme.users.v1.UserService"


def create_request(n: int) -> users_service_pb2.CreateUserRequest:
    return users_service_pb2.CreateUserRequest(user=users_pb2.User(email=f"u{n}@example.com", display_name=f"U{n}"))


async def test_served_in_process_it_registers_and_follows_max_page_size_from_consul_kv(
    consul_agent: ConsulAgent, tmp_path: Path
) -> None:
    # Plaintext on purpose: this is about registration and KV; tests/runtime/test_app_secured.py covers mTLS.
    env = {"CONSUL_HTTP_ADDR": consul_agent.address, "USERS_DATABASE_PATH": str(tmp_path / "users.db"),
           "USERS_SECURITY__MODE": "off"}
    async with await serve(SERVICE, UsersSettings, build, env=env) as running:
        await poll_until(lambda: asyncio.to_thread(consul_agent.passing_instances, SERVICE),
                         what="users passing in Consul")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = UserServiceStub(channel)
            for n in range(3):
                await stub.CreateUser(create_request(n), timeout=5)

            await asyncio.to_thread(consul_agent.put, f"/v1/kv/protomesh/config/{SERVICE}/max_page_size", "2")

            async def page_is_capped() -> bool:
                page = await stub.ListUsers(users_service_pb2.ListUsersRequest(page_size=50), timeout=5)
                return len(page.users) == 2

            await poll_until(page_is_capped, timeout=15, what="max_page_size 2 from Consul KV applied")


def test_python_m_app_registers_passing_answers_and_stops_cleanly_on_sigterm(
    consul_agent: ConsulAgent, tmp_path: Path
) -> None:
    env = {**os.environ, "CONSUL_HTTP_ADDR": consul_agent.address,
           "USERS_DATABASE_PATH": str(tmp_path / "users.db"), "USERS_SECURITY__MODE": "off"}
    process = ManagedProcess(SERVICE, [sys.executable, "-m", "app"], log_dir=tmp_path / "logs", env=env,
                             cwd=SERVICE_DIR)
    process.start()
    try:
        instances: list[dict[str, object]] = []

        def registered_passing() -> bool:
            process.ensure_alive()
            instances[:] = consul_agent.passing_instances(SERVICE)
            return bool(instances)

        wait_until(registered_passing, what="users registered and passing in Consul")
        instance = instances[0]
        assert USER_SERVICE in str(instance["Meta"])
        with grpc.insecure_channel(f"{instance['Address']}:{instance['Port']}") as channel:
            stub = UserServiceStub(channel)
            created = stub.CreateUser(create_request(1), timeout=5).user
            fetched = stub.GetUser(users_service_pb2.GetUserRequest(user_id=created.user_id), timeout=5).user
        assert fetched == created
    finally:
        code = process.stop(sig=signal.SIGTERM)

    log = process.log_tail(200)
    assert code == 0, log
    assert "Traceback" not in log, log
    assert consul_agent.passing_instances(SERVICE) == []
    assert (tmp_path / "users.db").is_file()
